use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use serde_json::{Value, json};

use super::{Unfit, feasible, score};

/// A Ready node with 4 cpus, 8 GiB and 110 pods allocatable, plus `extra` merged in.
fn node(name: &str, extra: Value) -> Node {
    let mut n = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    });
    merge(&mut n, extra);
    serde_json::from_value(n).unwrap()
}

/// A pod with one container requesting `cpu` and `memory` (empty: no request).
fn pod(cpu: &str, memory: &str, extra: Value) -> Pod {
    let mut requests = serde_json::Map::new();
    if !cpu.is_empty() {
        requests.insert("cpu".into(), json!(cpu));
    }
    if !memory.is_empty() {
        requests.insert("memory".into(), json!(memory));
    }
    let mut p = json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": requests}}]}
    });
    merge(&mut p, extra);
    serde_json::from_value(p).unwrap()
}

fn rc(scheduling: Value) -> RuntimeClass {
    serde_json::from_value(
        json!({"metadata": {"name": "wasm"}, "handler": "wasm", "scheduling": scheduling}),
    )
    .unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn fits(p: &Pod, n: &Node) -> Result<(), Unfit> {
    feasible(p, n, &[], None)
}

fn affinity(terms: Value) -> Value {
    json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
    }}}})
}

#[test]
fn a_ready_node_with_room_fits() {
    assert_eq!(
        fits(&pod("1", "1Gi", json!({})), &node("a", json!({}))),
        Ok(())
    );
}

#[test]
fn a_node_that_is_not_ready_counts_as_tainted() {
    let not_ready = node(
        "a",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    assert_eq!(
        fits(&pod("", "", json!({})), &not_ready),
        Err(Unfit::UntoleratedTaint {
            key: "node.kubernetes.io/not-ready".into(),
            value: String::new()
        })
    );
    let unknown = node(
        "a",
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
    );
    assert_eq!(
        fits(&pod("", "", json!({})), &unknown)
            .unwrap_err()
            .to_string(),
        "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"
    );
    let tolerant = pod(
        "",
        "",
        json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}
        ]}}),
    );
    assert_eq!(fits(&tolerant, &not_ready), Ok(()));
    let no_conditions = node("a", json!({"status": {"conditions": []}}));
    assert!(fits(&pod("", "", json!({})), &no_conditions).is_err());
}

#[test]
fn a_cordoned_node_takes_only_pods_that_tolerate_it() {
    let cordoned = node("a", json!({"spec": {"unschedulable": true}}));
    let err = fits(&pod("", "", json!({})), &cordoned).unwrap_err();
    assert_eq!(err, Unfit::Unschedulable);
    assert_eq!(err.to_string(), "node(s) were unschedulable");
    let tolerant = pod(
        "",
        "",
        json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}
        ]}}),
    );
    assert_eq!(fits(&tolerant, &cordoned), Ok(()));
}

#[test]
fn requests_are_checked_against_allocatable_minus_pods_on_the_node() {
    let n = node("a", json!({}));
    let running = pod("3", "6Gi", json!({}));
    assert_eq!(
        feasible(&pod("1", "2Gi", json!({})), &n, &[&running], None),
        Ok(())
    );
    assert_eq!(
        feasible(&pod("1500m", "1Gi", json!({})), &n, &[&running], None),
        Err(Unfit::Insufficient(vec!["Insufficient cpu".into()]))
    );
    let err = feasible(&pod("2", "3Gi", json!({})), &n, &[&running], None).unwrap_err();
    assert_eq!(err.reasons(), ["Insufficient cpu", "Insufficient memory"]);
    assert!(err.resolvable_by_preemption());
}

#[test]
fn limits_alone_count_as_requests() {
    let p = pod(
        "",
        "",
        json!({"spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"limits": {"cpu": "5"}}}
        ]}}),
    );
    assert_eq!(
        fits(&p, &node("a", json!({}))),
        Err(Unfit::Insufficient(vec!["Insufficient cpu".into()]))
    );
}

#[test]
fn init_containers_count_at_their_peak_not_their_sum() {
    let n = node("a", json!({}));
    // Two init containers of 3 cpus run one after the other: the peak is 3, which fits.
    let p = pod(
        "1",
        "",
        json!({"spec": {"initContainers": [
            {"name": "i1", "image": "i", "resources": {"requests": {"cpu": "3"}}},
            {"name": "i2", "image": "i", "resources": {"requests": {"cpu": "3"}}}
        ]}}),
    );
    assert_eq!(fits(&p, &n), Ok(()));
    // An init container bigger than the app containers sets the request.
    let big = pod(
        "1",
        "",
        json!({"spec": {"initContainers": [
            {"name": "i1", "image": "i", "resources": {"requests": {"cpu": "5"}}}
        ]}}),
    );
    assert!(fits(&big, &n).is_err());
    // A sidecar (restartPolicy Always) keeps running next to the app containers.
    let sidecar = pod(
        "3",
        "",
        json!({"spec": {"initContainers": [
            {"name": "s", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "2"}}}
        ]}}),
    );
    assert!(fits(&sidecar, &n).is_err());
}

#[test]
fn the_pod_count_is_a_resource() {
    let n = node("a", json!({"status": {"allocatable": {"pods": "1"}}}));
    let running = pod("", "", json!({}));
    assert_eq!(feasible(&pod("", "", json!({})), &n, &[], None), Ok(()));
    assert_eq!(
        feasible(&pod("", "", json!({})), &n, &[&running], None)
            .unwrap_err()
            .to_string(),
        "Too many pods"
    );
}

#[test]
fn extended_resources_must_be_allocatable() {
    let p = pod(
        "",
        "",
        json!({"spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "1"}}}
        ]}}),
    );
    assert_eq!(
        fits(&p, &node("a", json!({}))).unwrap_err().to_string(),
        "Insufficient example.com/gpu"
    );
    let gpu = node(
        "a",
        json!({"status": {"allocatable": {"example.com/gpu": "2"}}}),
    );
    assert_eq!(fits(&p, &gpu), Ok(()));
}

#[test]
fn node_selector_must_match_every_label() {
    let n = node(
        "a",
        json!({"metadata": {"labels": {"disk": "ssd", "zone": "z1"}}}),
    );
    let ok = pod(
        "",
        "",
        json!({"spec": {"nodeSelector": {"disk": "ssd", "zone": "z1"}}}),
    );
    let bad = pod(
        "",
        "",
        json!({"spec": {"nodeSelector": {"disk": "ssd", "zone": "z2"}}}),
    );
    assert_eq!(fits(&ok, &n), Ok(()));
    let err = fits(&bad, &n).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node(s) didn't match Pod's node affinity/selector"
    );
    assert!(!err.resolvable_by_preemption());
}

#[test]
fn required_node_affinity_operators() {
    let n = node(
        "a",
        json!({"metadata": {"labels": {"disk": "ssd", "cores": "8"}}}),
    );
    let check = |expr: Value| {
        fits(
            &pod("", "", affinity(json!([{"matchExpressions": [expr]}]))),
            &n,
        )
        .is_ok()
    };
    assert!(check(
        json!({"key": "disk", "operator": "In", "values": ["hdd", "ssd"]})
    ));
    assert!(!check(
        json!({"key": "disk", "operator": "In", "values": ["hdd"]})
    ));
    assert!(check(
        json!({"key": "disk", "operator": "NotIn", "values": ["hdd"]})
    ));
    assert!(!check(
        json!({"key": "disk", "operator": "NotIn", "values": ["ssd"]})
    ));
    assert!(check(
        json!({"key": "gpu", "operator": "NotIn", "values": ["x"]})
    ));
    assert!(check(json!({"key": "disk", "operator": "Exists"})));
    assert!(!check(json!({"key": "gpu", "operator": "Exists"})));
    assert!(check(json!({"key": "gpu", "operator": "DoesNotExist"})));
    assert!(!check(json!({"key": "disk", "operator": "DoesNotExist"})));
    assert!(check(
        json!({"key": "cores", "operator": "Gt", "values": ["4"]})
    ));
    assert!(!check(
        json!({"key": "cores", "operator": "Gt", "values": ["8"]})
    ));
    assert!(check(
        json!({"key": "cores", "operator": "Lt", "values": ["16"]})
    ));
    assert!(!check(
        json!({"key": "cores", "operator": "Lt", "values": ["8"]})
    ));
    assert!(
        !check(json!({"key": "disk", "operator": "Gt", "values": ["1"]})),
        "not a number"
    );
}

#[test]
fn required_node_affinity_terms_are_ored_and_expressions_anded() {
    let n = node("a", json!({"metadata": {"labels": {"disk": "ssd"}}}));
    let one_of = affinity(json!([
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}
    ]));
    assert_eq!(fits(&pod("", "", one_of), &n), Ok(()));
    let both = affinity(json!([{"matchExpressions": [
        {"key": "disk", "operator": "In", "values": ["ssd"]},
        {"key": "zone", "operator": "Exists"}
    ]}]));
    assert_eq!(fits(&pod("", "", both), &n), Err(Unfit::NodeAffinity));
    assert_eq!(
        fits(&pod("", "", affinity(json!([{}]))), &n),
        Err(Unfit::NodeAffinity),
        "an empty term matches nothing"
    );
}

#[test]
fn match_fields_select_by_node_name() {
    let p = pod(
        "",
        "",
        affinity(json!([{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["b"]}
        ]}])),
    );
    assert_eq!(fits(&p, &node("a", json!({}))), Err(Unfit::NodeAffinity));
    assert_eq!(fits(&p, &node("b", json!({}))), Ok(()));
}

#[test]
fn taints_need_tolerations() {
    let tainted = |effect: &str| {
        node(
            "a",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": effect}]}}),
        )
    };
    let plain = pod("", "", json!({}));
    let err = fits(&plain, &tainted("NoSchedule")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node(s) had untolerated taint {dedicated: db}"
    );
    assert!(fits(&plain, &tainted("NoExecute")).is_err());
    assert_eq!(
        fits(&plain, &tainted("PreferNoSchedule")),
        Ok(()),
        "a preference only"
    );
    let with = |t: Value| pod("", "", json!({"spec": {"tolerations": [t]}}));
    let n = tainted("NoSchedule");
    assert!(fits(&with(json!({"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"})), &n).is_ok());
    assert!(
        fits(&with(json!({"key": "dedicated", "value": "db"})), &n).is_ok(),
        "Equal by default, any effect"
    );
    assert!(
        fits(
            &with(json!({"key": "dedicated", "operator": "Equal", "value": "web"})),
            &n
        )
        .is_err()
    );
    assert!(fits(&with(json!({"key": "dedicated", "operator": "Exists"})), &n).is_ok());
    assert!(
        fits(&with(json!({"operator": "Exists"})), &n).is_ok(),
        "empty key with Exists tolerates all"
    );
    assert!(
        fits(
            &with(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})),
            &n
        )
        .is_err()
    );
    assert!(fits(&with(json!({"key": "other", "operator": "Exists"})), &n).is_err());
}

#[test]
fn runtime_class_scheduling_is_merged_into_the_pod() {
    let wasm_node = node(
        "a",
        json!({
            "metadata": {"labels": {"skiff.dev/wasm": "true"}},
            "spec": {"taints": [{"key": "skiff.dev/wasm-only", "effect": "NoSchedule"}]}
        }),
    );
    let plain_node = node("b", json!({}));
    let class = rc(json!({
        "nodeSelector": {"skiff.dev/wasm": "true"},
        "tolerations": [{"key": "skiff.dev/wasm-only", "operator": "Exists"}]
    }));
    let p = pod("", "", json!({"spec": {"runtimeClassName": "wasm"}}));
    assert_eq!(feasible(&p, &wasm_node, &[], Some(&class)), Ok(()));
    assert_eq!(
        feasible(&p, &plain_node, &[], Some(&class)),
        Err(Unfit::NodeAffinity)
    );
    // Without the class, the taint keeps the pod off.
    assert!(fits(&pod("", "", json!({})), &wasm_node).is_err());
    // A class that does not exist fits nowhere, with a reason that says so.
    let err = feasible(&p, &plain_node, &[], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "runtimeclasses.node.k8s.io \"wasm\" not found"
    );
}

#[test]
fn preferred_affinity_raises_the_score_by_weight() {
    let p = pod(
        "",
        "",
        json!({"spec": {"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}}
            ]
        }}}}),
    );
    let none = node("a", json!({}));
    let ssd = node("b", json!({"metadata": {"labels": {"disk": "ssd"}}}));
    let zone = node("c", json!({"metadata": {"labels": {"zone": "z1"}}}));
    let both = node(
        "d",
        json!({"metadata": {"labels": {"disk": "ssd", "zone": "z1"}}}),
    );
    let s: Vec<i64> = [&none, &ssd, &zone, &both]
        .iter()
        .map(|n| score(&p, n, &[]))
        .collect();
    assert!(s[0] < s[1] && s[1] < s[2] && s[2] < s[3], "{s:?}");
}

#[test]
fn the_less_allocated_node_scores_higher() {
    let p = pod("500m", "512Mi", json!({}));
    let n = node("a", json!({}));
    let busy = pod("2", "4Gi", json!({"metadata": {"name": "busy"}}));
    assert!(score(&p, &n, &[]) > score(&p, &n, &[&busy]));
    // Pods that request nothing still count, so they do not pile onto one node.
    let empty = pod("", "", json!({"metadata": {"name": "e"}}));
    assert!(score(&empty, &n, &[]) > score(&empty, &n, &[&empty]));
}

#[test]
fn replicas_spread_across_nodes() {
    let owned = |name: &str| {
        pod(
            "",
            "",
            json!({"metadata": {"name": name, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}
            ]}}),
        )
    };
    let other = pod(
        "",
        "",
        json!({"metadata": {"name": "x", "labels": {"app": "other"}}}),
    );
    let n = node("a", json!({}));
    let p = owned("new");
    let sibling = owned("s1");
    // One sibling weighs more than one unrelated pod of the same size.
    assert!(score(&p, &n, &[&other]) > score(&p, &n, &[&sibling]));
    // Without an owner, pods with the same labels in one namespace are replicas.
    let labelled = |name: &str| {
        pod(
            "",
            "",
            json!({"metadata": {"name": name, "labels": {"app": "web"}}}),
        )
    };
    assert!(score(&labelled("a"), &n, &[&other]) > score(&labelled("a"), &n, &[&labelled("b")]));
}

#[test]
fn prefer_no_schedule_taints_lower_the_score_unless_tolerated() {
    let soft = node(
        "a",
        json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}}),
    );
    let clean = node("b", json!({}));
    let p = pod("", "", json!({}));
    assert!(score(&p, &clean, &[]) > score(&p, &soft, &[]));
    let tolerant = pod(
        "",
        "",
        json!({"spec": {"tolerations": [{"key": "spot", "operator": "Exists"}]}}),
    );
    assert_eq!(score(&tolerant, &clean, &[]), score(&tolerant, &soft, &[]));
}

#[test]
fn the_failure_message_counts_reasons_like_kube_scheduler() {
    use super::unschedulable_message;
    let unfit = [
        Unfit::NodeAffinity,
        Unfit::Insufficient(vec!["Insufficient cpu".into()]),
        Unfit::NodeAffinity,
    ];
    assert_eq!(
        unschedulable_message(3, &unfit),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling."
    );
    assert_eq!(
        unschedulable_message(2, &[Unfit::RuntimeClassNotFound("wasm".into())]),
        "0/2 nodes are available: runtimeclasses.node.k8s.io \"wasm\" not found. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    assert_eq!(
        unschedulable_message(0, &[]),
        "no nodes available to schedule pods"
    );
}

#[test]
fn host_ports_taken_on_a_node_keep_a_pod_off_it() {
    let n = node("n1", json!({}));
    let with_ports = |ports: Value| {
        pod(
            "",
            "",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]}}),
        )
    };
    let web = with_ports(json!([{"containerPort": 80, "hostPort": 80}]));
    // The same port and protocol on all addresses: taken.
    assert_eq!(feasible(&web, &n, &[&web], None), Err(Unfit::NodePorts));
    assert_eq!(
        Unfit::NodePorts.to_string(),
        "node(s) didn't have free ports for the requested pod ports"
    );
    // Another port, or another protocol: free.
    let other = with_ports(json!([{"containerPort": 81, "hostPort": 81}]));
    assert_eq!(feasible(&other, &n, &[&web], None), Ok(()));
    let udp = with_ports(json!([{"containerPort": 80, "hostPort": 80, "protocol": "UDP"}]));
    assert_eq!(feasible(&udp, &n, &[&web], None), Ok(()));
    // Two different addresses do not clash; an address and all addresses do.
    let on_a = with_ports(json!([{"containerPort": 80, "hostPort": 80, "hostIP": "10.0.0.1"}]));
    let on_b = with_ports(json!([{"containerPort": 80, "hostPort": 80, "hostIP": "10.0.0.2"}]));
    assert_eq!(feasible(&on_b, &n, &[&on_a], None), Ok(()));
    assert_eq!(feasible(&web, &n, &[&on_a], None), Err(Unfit::NodePorts));
    // A containerPort alone takes no host port.
    let plain = with_ports(json!([{"containerPort": 80}]));
    assert_eq!(feasible(&plain, &n, &[&web], None), Ok(()));
}
