//! Cordon, drain and PodDisruptionBudgets on two node agents: `kubectl drain` stopped by a
//! budget that allows no disruption (with the message kube-apiserver gives, to kubectl
//! and to a raw eviction), then let through one pod at a time once the budget allows it,
//! the pods coming back on the other node; DaemonSet pods left where they are.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, Registry};

use crate::agents::nodes_ready;
use crate::lifecycle::{live, web_and_daemon};
use crate::workloads::eventually;

fn pdb_status(k: &Kubectl) -> Value {
    k.json(&["get", "pdb", "web"])["status"].clone()
}

#[test]
fn drain_respects_disruption_budgets() {
    let registry = Registry::start();
    let http = registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_for_agents(Backend::Embedded);
    let _a = cluster.start_agent("node-a");
    let _b = cluster.start_agent("node-b");
    let k = cluster.kubectl("1.33");
    nodes_ready(&k, 2);
    k.ok_stdin(&["apply", "-f", "-"], &web_and_daemon(&http, ""));
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    k.ok(&["rollout", "status", "daemonset/agentd", "--timeout=120s"]);
    let before = live(&k, "web");
    let on_b = before.get("node-b").map_or(0, |(n, _)| *n);
    assert!(on_b >= 1, "no web pod on node-b to drain: {before:?}");

    // A budget Kubernetes refuses, then one that allows no disruption.
    let err = k
        .run_stdin(
            &["apply", "-f", "-"],
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: both}\nspec: {minAvailable: 1, maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n",
        )
        .stderr;
    assert!(
        err.contains("minAvailable and maxUnavailable cannot be both set"),
        "{err}"
    );
    k.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=4",
    ]);
    eventually("the budget's status", || {
        let s = pdb_status(&k);
        (s["currentHealthy"] == 4 && s["desiredHealthy"] == 4 && s["expectedPods"] == 4)
            .then_some(())
    });
    let s = pdb_status(&k);
    assert_eq!(s["disruptionsAllowed"], 0, "{s}");
    let out = k.ok(&["get", "pdb", "web"]);
    assert!(
        out.contains("MIN AVAILABLE") && out.contains("N/A"),
        "{out}"
    );

    // DaemonSet pods stop a drain that does not ignore them.
    let err = k.fails(&["drain", "node-b", "--timeout=5s"]);
    assert!(
        err.contains("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"),
        "{err}"
    );
    // The budget stops the drain; the node stays cordoned, the pods where they were.
    let err = k.fails(&["drain", "node-b", "--ignore-daemonsets", "--timeout=8s"]);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    let nodes = k.ok(&["get", "nodes"]);
    assert!(nodes.contains("SchedulingDisabled"), "{nodes}");
    assert_eq!(live(&k, "web"), before);

    // A raw eviction gets the Status kube-apiserver writes.
    let victim = k.json(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "--field-selector=spec.nodeName=node-b",
    ])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, status) = cluster.request(
        "POST",
        &format!("/api/v1/namespaces/default/pods/{victim}/eviction"),
        "application/json",
        format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{victim}","namespace":"default"}}}}"#
        ),
    );
    assert_eq!(code, 429, "{status}");
    assert_eq!(status["reason"], "TooManyRequests", "{status}");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "The disruption budget web needs 4 healthy pods and has 4 currently",
        "{status}"
    );

    // One disruption allowed: the drain goes through, a pod at a time, and the pods come
    // back on node-a; the daemon stays on node-b.
    k.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":3}}"#,
    ]);
    eventually("one disruption allowed", || {
        (pdb_status(&k)["disruptionsAllowed"] == 1).then_some(())
    });
    // A server dry run evicts nothing and takes nothing from the budget.
    let out = k.ok(&["drain", "node-b", "--ignore-daemonsets", "--dry-run=server"]);
    assert!(out.contains("(server dry run)"), "{out}");
    assert_eq!(live(&k, "web"), before);
    assert_eq!(pdb_status(&k)["disruptionsAllowed"], 1);
    let out = k.ok(&["drain", "node-b", "--ignore-daemonsets", "--timeout=120s"]);
    assert!(out.contains("node/node-b drained"), "{out}");
    eventually("four ready web pods on node-a", || {
        (live(&k, "web") == BTreeMap::from([("node-a".to_string(), (4, 4))])).then_some(())
    });
    assert!(live(&k, "agentd").contains_key("node-b"));
    let events = k.ok(&["get", "events"]);
    assert!(events.contains("node-b"), "{events}");

    k.ok(&["uncordon", "node-b"]);
    let nodes = k.ok(&["get", "nodes"]);
    assert!(!nodes.contains("SchedulingDisabled"), "{nodes}");
}
