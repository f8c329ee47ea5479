use super::*;

fn now() -> Now {
    parse_time("2026-01-01T01:00:00Z").unwrap()
}

fn names(group: &str, kind: &str) -> Vec<String> {
    column_definitions(group, kind)
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Names of the columns kubectl shows without `-o wide`.
fn narrow(group: &str, kind: &str) -> Vec<String> {
    column_definitions(group, kind)
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap().to_uppercase())
        .collect()
}

fn wide_only(group: &str, kind: &str) -> Vec<String> {
    column_definitions(group, kind)
        .iter()
        .filter(|c| c["priority"] == 1)
        .map(|c| c["name"].as_str().unwrap().to_uppercase())
        .collect()
}

fn cells(group: &str, kind: &str, obj: Value) -> Vec<Value> {
    row_cells(group, kind, &obj, now())
}

const KINDS: [(&str, &str); 27] = [
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "Service"),
    ("", "Endpoints"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "Event"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("", "LimitRange"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("storage.k8s.io", "StorageClass"),
    ("coordination.k8s.io", "Lease"),
    ("node.k8s.io", "RuntimeClass"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("events.k8s.io", "Event"),
    ("rbac.authorization.k8s.io", "Role"),
];

#[test]
fn every_row_has_a_cell_per_column() {
    for (g, k) in KINDS.iter().copied().chain([("x.io", "Other")]) {
        let row = cells(g, k, json!({"metadata": {"name": "n"}}));
        assert_eq!(row.len(), column_definitions(g, k).len(), "{g}/{k}");
    }
}

#[test]
fn name_columns_are_marked_as_names() {
    for (g, k) in KINDS {
        let defs = column_definitions(g, k);
        let name = defs.iter().find(|c| c["name"] == "Name").unwrap();
        assert_eq!(name["format"], "name", "{g}/{k}");
        assert!(
            name["description"]
                .as_str()
                .unwrap()
                .starts_with("Name must be unique within a namespace.")
        );
        for c in &defs {
            if c["name"] != "Name" && c["name"] != "Attacher" {
                assert_eq!(c["format"], "", "{g}/{k} {}", c["name"]);
            }
        }
    }
}

#[test]
fn headers_kubectl_users_see() {
    let h = |g, k| narrow(g, k).join(" ");
    assert_eq!(h("", "Pod"), "NAME READY STATUS RESTARTS AGE");
    assert_eq!(
        wide_only("", "Pod").join(" "),
        "IP NODE NOMINATED NODE READINESS GATES"
    );
    assert_eq!(h("", "Namespace"), "NAME STATUS AGE");
    assert_eq!(h("", "Node"), "NAME STATUS ROLES AGE VERSION");
    assert_eq!(
        wide_only("", "Node").join(" "),
        "INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME"
    );
    assert_eq!(
        h("", "Service"),
        "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE"
    );
    assert_eq!(wide_only("", "Service"), ["SELECTOR"]);
    assert_eq!(h("", "Endpoints"), "NAME ENDPOINTS AGE");
    assert_eq!(h("", "ConfigMap"), "NAME DATA AGE");
    assert_eq!(h("", "Secret"), "NAME TYPE DATA AGE");
    assert_eq!(h("", "ServiceAccount"), "NAME SECRETS AGE");
    assert_eq!(h("", "Event"), "LAST SEEN TYPE REASON OBJECT MESSAGE");
    assert_eq!(
        wide_only("", "Event").join(" "),
        "SUBOBJECT SOURCE FIRST SEEN COUNT NAME"
    );
    assert_eq!(names("events.k8s.io", "Event"), names("", "Event"));
    assert_eq!(
        h("", "PersistentVolume"),
        "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE"
    );
    assert_eq!(
        h("", "PersistentVolumeClaim"),
        "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE"
    );
    assert_eq!(
        h("apps", "Deployment"),
        "NAME READY UP-TO-DATE AVAILABLE AGE"
    );
    assert_eq!(
        wide_only("apps", "Deployment").join(" "),
        "CONTAINERS IMAGES SELECTOR"
    );
    assert_eq!(h("apps", "ReplicaSet"), "NAME DESIRED CURRENT READY AGE");
    assert_eq!(
        h("", "ReplicationController"),
        "NAME DESIRED CURRENT READY AGE"
    );
    assert_eq!(h("apps", "StatefulSet"), "NAME READY AGE");
    assert_eq!(
        h("apps", "DaemonSet"),
        "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE"
    );
    assert_eq!(
        h("apps", "ControllerRevision"),
        "NAME CONTROLLER REVISION AGE"
    );
    assert_eq!(h("batch", "Job"), "NAME STATUS COMPLETIONS DURATION AGE");
    assert_eq!(
        h("batch", "CronJob"),
        "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE"
    );
    assert_eq!(h("coordination.k8s.io", "Lease"), "NAME HOLDER AGE");
    assert_eq!(
        h("policy", "PodDisruptionBudget"),
        "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE"
    );
    assert_eq!(
        h("storage.k8s.io", "StorageClass"),
        "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE"
    );
    assert_eq!(h("node.k8s.io", "RuntimeClass"), "NAME HANDLER AGE");
    assert_eq!(
        h("discovery.k8s.io", "EndpointSlice"),
        "NAME ADDRESSTYPE PORTS ENDPOINTS AGE"
    );
    assert_eq!(h("", "PodTemplate"), "NAME CONTAINERS IMAGES POD LABELS");
    assert_eq!(h("rbac.authorization.k8s.io", "Role"), "NAME CREATED AT");
    assert_eq!(h("x.io", "Other"), "NAME AGE");
}

#[test]
fn column_types_follow_the_printers() {
    let ty = |g, k, n: &str| {
        column_definitions(g, k)
            .into_iter()
            .find(|c| c["name"] == n)
            .unwrap()["type"]
            .clone()
    };
    assert_eq!(ty("apps", "ReplicaSet", "Desired"), "integer");
    assert_eq!(ty("apps", "Deployment", "Available"), "string");
    assert_eq!(ty("batch", "CronJob", "Suspend"), "boolean");
    assert_eq!(ty("", "Pod", "Restarts"), "string");
    assert_eq!(
        ty("rbac.authorization.k8s.io", "ClusterRole", "Created At"),
        "date"
    );
}

#[test]
fn pending_pod() {
    let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:59:15Z"},
        "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
    assert_eq!(
        cells("", "Pod", pod),
        [
            json!("p"),
            json!("0/1"),
            json!("Pending"),
            json!("0"),
            json!("45s"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn crash_looping_pod_shows_last_restart() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"finishedAt": "2026-01-01T00:55:00Z", "exitCode": 1}}}]}});
    let row = cells("", "Pod", pod);
    assert_eq!(
        row[1..4],
        [json!("1/2"), json!("CrashLoopBackOff"), json!("5 (5m ago)")]
    );
    assert_eq!(row[4], "<unknown>");
}

#[test]
fn pod_status_variants() {
    let status = |spec: Value, status: Value, meta: Value| {
        let mut m = json!({"name": "p"});
        m.as_object_mut()
            .unwrap()
            .extend(meta.as_object().unwrap().clone());
        cells(
            "",
            "Pod",
            json!({"metadata": m, "spec": spec, "status": status}),
        )[2]
        .clone()
    };
    let one = json!({"containers": [{"name": "a"}]});
    let init =
        json!({"initContainers": [{"name": "i"}, {"name": "j"}], "containers": [{"name": "a"}]});
    assert_eq!(
        status(
            init.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"terminated": {"exitCode": 0}}},
            {"name": "j", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
            json!({})
        ),
        "Init:1/2"
    );
    assert_eq!(
        status(
            init.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
            json!({})
        ),
        "Init:ImagePullBackOff"
    );
    assert_eq!(
        status(
            init.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"terminated": {"exitCode": 3}}}]}),
            json!({})
        ),
        "Init:ExitCode:3"
    );
    assert_eq!(
        status(
            init,
            json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
            json!({})
        ),
        "Init:Signal:9"
    );
    assert_eq!(
        status(
            one.clone(),
            json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}),
            json!({})
        ),
        "Completed"
    );
    assert_eq!(
        status(
            one.clone(),
            json!({"phase": "Failed", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 2}}}]}),
            json!({})
        ),
        "ExitCode:2"
    );
    assert_eq!(
        status(
            one.clone(),
            json!({"phase": "Running"}),
            json!({"deletionTimestamp": "2026-01-01T00:00:00Z"})
        ),
        "Terminating"
    );
    // A finished pod being deleted keeps its final status.
    assert_eq!(
        status(
            one.clone(),
            json!({"phase": "Succeeded"}),
            json!({"deletionTimestamp": "2026-01-01T00:00:00Z"})
        ),
        "Succeeded"
    );
    assert_eq!(
        status(
            one.clone(),
            json!({"phase": "Running", "reason": "NodeLost"}),
            json!({"deletionTimestamp": "2026-01-01T00:00:00Z"})
        ),
        "Unknown"
    );
    assert_eq!(
        status(
            one.clone(),
            json!({"phase": "Failed", "reason": "Evicted"}),
            json!({})
        ),
        "Evicted"
    );
    assert_eq!(
        status(
            one,
            json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
            json!({})
        ),
        "SchedulingGated"
    );
    // One container done, one still running and ready: the pod reads as running.
    let two = json!({"containers": [{"name": "a"}, {"name": "b"}]});
    let mixed = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "a", "ready": true, "state": {"running": {}}},
            {"name": "b", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]});
    assert_eq!(status(two, mixed, json!({})), "Running");
}

#[test]
fn sidecars_count_as_containers() {
    let pod = json!({"metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 2,
                "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2026-01-01T00:30:00Z"}}}],
            "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}]}});
    let row = cells("", "Pod", pod);
    assert_eq!(
        row[1..4],
        [json!("2/2"), json!("Running"), json!("2 (30m ago)")]
    );
}

#[test]
fn pod_wide_cells() {
    let pod = json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [], "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.9"}, {"ip": "fd00::9"}],
            "nominatedNodeName": "n2",
            "conditions": [{"type": "a", "status": "True"}, {"type": "b", "status": "False"}]}});
    assert_eq!(
        cells("", "Pod", pod)[5..],
        [json!("10.0.0.9"), json!("n1"), json!("n2"), json!("1/2")]
    );
}

#[test]
fn human_durations() {
    let d = chrono::Duration::seconds;
    let cases = [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600 + 60, "3h1m"),
        (7 * 3600, "7h"),
        (20 * 3600, "20h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (8 * 86400 + 3600, "8d"),
        (100 * 86400, "100d"),
        (3 * 365 * 86400, "3y"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (9 * 365 * 86400 + 10 * 86400, "9y"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(d(secs)), want, "{secs}s");
    }
}

#[test]
fn selector_strings() {
    let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["b", "a"]},
        {"key": "old", "operator": "DoesNotExist"}]});
    assert_eq!(selector_string(Some(&sel)), "app=web,!old,tier in (a,b)");
    assert_eq!(selector_string(Some(&json!({}))), "<none>");
    assert_eq!(selector_string(None), "<none>");
    let bad = json!({"matchExpressions": [{"key": "a", "operator": "In"}]});
    assert_eq!(selector_string(Some(&bad)), "<error>");
}

#[test]
fn services() {
    let lb = json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"],
        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
        "selector": {"tier": "f", "app": "web"}}});
    let row = cells("", "Service", lb.clone());
    assert_eq!(
        row[1..5],
        [
            json!("LoadBalancer"),
            json!("10.0.0.1"),
            json!("<pending>"),
            json!("80:30080/TCP,53/UDP")
        ]
    );
    assert_eq!(row[6], "app=web,tier=f");
    let mut ready = lb;
    ready["status"] =
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "a.example"}]}});
    ready["spec"]["externalIPs"] = json!(["198.51.100.1"]);
    assert_eq!(
        cells("", "Service", ready)[3],
        "203.0.113.9,a.example,198.51.100.1"
    );
    let headless = json!({"metadata": {"name": "a"}, "spec": {"clusterIP": "None"}});
    assert_eq!(
        cells("", "Service", headless)[1..7],
        [
            json!("ClusterIP"),
            json!("None"),
            json!("<none>"),
            json!("<none>"),
            json!("<unknown>"),
            json!("<none>")
        ]
    );
    let node_port = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "externalIPs": ["1.2.3.4"]}});
    assert_eq!(cells("", "Service", node_port)[3], "1.2.3.4");
    let ext = json!({"metadata": {"name": "a"}, "spec": {"type": "ExternalName", "externalName": "db.example"}});
    assert_eq!(
        cells("", "Service", ext)[2..4],
        [json!("<none>"), json!("db.example")]
    );
}

#[test]
fn nodes() {
    let node = json!({"metadata": {"name": "n1", "labels": {
            "node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge", "node-role.kubernetes.io/": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}}});
    assert_eq!(
        cells("", "Node", node)[1..],
        [
            json!("NotReady,SchedulingDisabled"),
            json!("control-plane,edge"),
            json!("<unknown>"),
            json!("v1.33.0"),
            json!("192.168.1.5"),
            json!("<none>"),
            json!("Debian"),
            json!("<unknown>"),
            json!("<unknown>")
        ]
    );
    let fresh = json!({"metadata": {"name": "n"}});
    assert_eq!(
        cells("", "Node", fresh)[1..3],
        [json!("Unknown"), json!("<none>")]
    );
}

#[test]
fn endpoints_and_slices() {
    let eps = json!({"metadata": {"name": "e"}, "subsets": [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        cells("", "Endpoints", eps)[1],
        "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
    );
    let v6 = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
    assert_eq!(cells("", "Endpoints", v6)[1], "[fd00::1]:80");
    let headless =
        json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
    assert_eq!(cells("", "Endpoints", headless)[1], "10.0.0.1");
    assert_eq!(
        cells("", "Endpoints", json!({"metadata": {"name": "e"}}))[1],
        "<none>"
    );
    let unready = json!({"metadata": {"name": "e"}, "subsets": [{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
    assert_eq!(cells("", "Endpoints", unready)[1], "");

    let slice = json!({"metadata": {"name": "s"}, "addressType": "IPv4",
        "ports": [{"port": 80}, {"name": "dns"}, {}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", slice)[1..4],
        [json!("IPv4"), json!("80,dns,*"), json!("10.0.0.1,10.0.0.2")]
    );
    let empty = json!({"metadata": {"name": "s"}, "addressType": "IPv4"});
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", empty)[2..4],
        [json!("<unset>"), json!("<unset>")]
    );
}

#[test]
fn configmaps_secrets_serviceaccounts_namespaces() {
    let cm =
        json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
    assert_eq!(cells("", "ConfigMap", cm)[1], 3);
    let sec = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": ""}});
    assert_eq!(cells("", "Secret", sec)[1..3], [json!("Opaque"), json!(1)]);
    let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "x"}]});
    assert_eq!(cells("", "ServiceAccount", sa)[1], 1);
    let ns = json!({"metadata": {"name": "dev", "creationTimestamp": "2025-12-31T01:00:00Z"}, "status": {"phase": "Active"}});
    assert_eq!(
        cells("", "Namespace", ns),
        [json!("dev"), json!("Active"), json!("24h")]
    );
}

#[test]
fn core_events() {
    let ev = json!({"metadata": {"name": "e.1"}, "type": "Normal", "reason": "Scheduled", "message": " ok\n",
        "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2026-01-01T00:50:00Z", "lastTimestamp": "2026-01-01T00:58:00Z", "count": 2});
    assert_eq!(
        cells("", "Event", ev),
        [
            json!("2m"),
            json!("Normal"),
            json!("Scheduled"),
            json!("pod/p"),
            json!("spec.containers{a}"),
            json!("kubelet, n1"),
            json!("ok"),
            json!("10m"),
            json!(2),
            json!("e.1")
        ]
    );
    // New-style events: eventTime only, no count, reporter instead of source.
    let ev = json!({"metadata": {"name": "e.2"}, "type": "Warning", "reason": "X",
        "involvedObject": {"kind": "Node"}, "eventTime": "2026-01-01T00:59:30.000000Z",
        "reportingComponent": "ctl"});
    let row = cells("", "Event", ev);
    assert_eq!(row[0], "30s");
    assert_eq!(row[3], "node");
    assert_eq!(row[5], "ctl");
    assert_eq!(row[7..9], [json!("30s"), json!(1)]);
}

#[test]
fn events_api_events_and_series() {
    let ev = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Pulled", "note": "done",
        "regarding": {"kind": "Pod", "name": "p"}, "reportingController": "kubelet", "reportingInstance": "n1",
        "eventTime": "2026-01-01T00:40:00.000000Z",
        "series": {"count": 7, "lastObservedTime": "2026-01-01T00:59:00.000000Z"}});
    let row = cells("events.k8s.io", "Event", ev);
    assert_eq!(
        row[..9],
        [
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/p"),
            json!(""),
            json!("kubelet, n1"),
            json!("done"),
            json!("20m"),
            json!(7)
        ]
    );
}

#[test]
fn persistent_volumes_and_claims() {
    let pv = json!({"metadata": {"name": "pv1", "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "ns", "name": "c"},
            "storageClassName": "fast", "volumeMode": "Filesystem"},
        "status": {"phase": "Bound"}});
    assert_eq!(
        cells("", "PersistentVolume", pv)[1..],
        [
            json!("5Gi"),
            json!("RWO,RWX"),
            json!("Retain"),
            json!("Bound"),
            json!("ns/c"),
            json!("old"),
            json!("<unset>"),
            json!(""),
            json!("<unknown>"),
            json!("Filesystem")
        ]
    );
    let pending = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": "fast",
        "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending", "capacity": {"storage": "1Gi"}}});
    assert_eq!(
        cells("", "PersistentVolumeClaim", pending)[1..],
        [
            json!("Pending"),
            json!(""),
            json!(""),
            json!(""),
            json!("fast"),
            json!("<unset>"),
            json!("<unknown>"),
            json!("<unset>")
        ]
    );
    let bound = json!({"metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound", "capacity": {"storage": "5Gi"},
        "accessModes": ["ReadWriteOncePod"]}});
    assert_eq!(
        cells("", "PersistentVolumeClaim", bound)[1..5],
        [
            json!("Terminating"),
            json!("pv1"),
            json!("5Gi"),
            json!("RWOP")
        ]
    );
}

#[test]
fn deployments_and_replica_sets() {
    let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"containers": [{"name": "a", "image": "i:1"}, {"name": "b", "image": "j:2"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    let row = cells("apps", "Deployment", d);
    assert_eq!(row[1..4], [json!("2/3"), json!(3), json!(2)]);
    assert_eq!(row[5..], [json!("a,b"), json!("i:1,j:2"), json!("app=web")]);
    // A deployment's empty selector prints bare; a replica set's as `<none>`.
    let empty = json!({"metadata": {"name": "x"}, "spec": {"selector": {}}});
    assert_eq!(cells("apps", "Deployment", empty.clone())[7], "");
    assert_eq!(cells("apps", "ReplicaSet", empty.clone())[7], "<none>");
    assert_eq!(cells("apps", "Deployment", empty)[1], "0/1");
    let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
        "status": {"replicas": 2, "readyReplicas": 1}});
    assert_eq!(
        cells("apps", "ReplicaSet", rs)[1..4],
        [json!(2), json!(2), json!(1)]
    );
    let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": 0, "selector": {"app": "x"}}});
    let row = cells("", "ReplicationController", rc);
    assert_eq!(row[1], 0);
    assert_eq!(row[5..], [json!(""), json!(""), json!("app=x")]);
}

#[test]
fn stateful_and_daemon_sets() {
    let ss = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
    assert_eq!(cells("apps", "StatefulSet", ss)[1], "3/3");
    let ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
        "template": {"spec": {"nodeSelector": {"os": "linux"}, "containers": [{"name": "c", "image": "i"}]}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
            "updatedNumberScheduled": 2, "numberAvailable": 1}});
    assert_eq!(
        cells("apps", "DaemonSet", ds)[1..],
        [
            json!(2),
            json!(2),
            json!(1),
            json!(2),
            json!(1),
            json!("os=linux"),
            json!("<unknown>"),
            json!("c"),
            json!("i"),
            json!("app=a")
        ]
    );
}

#[test]
fn jobs() {
    let job = |spec: Value, status: Value| {
        cells(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"}, "spec": spec, "status": status}),
        )
    };
    let row = job(
        json!({"completions": 3}),
        json!({"succeeded": 1, "startTime": "2026-01-01T00:58:00Z"}),
    );
    assert_eq!(row[1..4], [json!("Running"), json!("1/3"), json!("2m")]);
    let done = job(
        json!({"parallelism": 1}),
        json!({"succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:42Z",
            "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    assert_eq!(done[1..4], [json!("Complete"), json!("1/1"), json!("42s")]);
    let parallel = job(json!({"parallelism": 4}), json!({}));
    assert_eq!(
        parallel[1..4],
        [json!("Running"), json!("0/1 of 4"), json!("")]
    );
    let failed = job(
        json!({}),
        json!({"conditions": [
        {"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}),
    );
    assert_eq!(failed[1], "Failed");
    let suspended = job(
        json!({}),
        json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
    );
    assert_eq!(suspended[1], "Suspended");
}

#[test]
fn cron_jobs() {
    let cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "suspend": false,
        "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "c-1"}], "lastScheduleTime": "2026-01-01T00:55:00Z"}});
    assert_eq!(
        cells("batch", "CronJob", cj)[1..],
        [
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("5m"),
            json!("<unknown>"),
            json!("x"),
            json!("busybox"),
            json!("<none>")
        ]
    );
    let never = json!({"metadata": {"name": "c"}, "spec": {"timeZone": "Etc/UTC"}});
    assert_eq!(
        cells("batch", "CronJob", never)[2..6],
        [
            json!("Etc/UTC"),
            json!("<unset>"),
            json!(0),
            json!("<none>")
        ]
    );
}

#[test]
fn controller_revisions_leases_runtime_classes() {
    let cr = json!({"metadata": {"name": "web-5d", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "x"},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
    assert_eq!(
        cells("apps", "ControllerRevision", cr)[1..3],
        [json!("statefulset.apps/web"), json!(2)]
    );
    let orphan = json!({"metadata": {"name": "r"}, "revision": 1});
    assert_eq!(cells("apps", "ControllerRevision", orphan)[1], "<none>");
    let lease =
        json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "node-a_1"}});
    assert_eq!(cells("coordination.k8s.io", "Lease", lease)[1], "node-a_1");
    let rc = json!({"metadata": {"name": "wasm"}, "handler": "wasmtime"});
    assert_eq!(cells("node.k8s.io", "RuntimeClass", rc)[1], "wasmtime");
}

#[test]
fn storage_classes() {
    let default = json!({"metadata": {"name": "standard", "creationTimestamp": "2026-01-01T00:00:00Z",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path"});
    assert_eq!(
        cells("storage.k8s.io", "StorageClass", default),
        [
            json!("standard (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("Immediate"),
            json!(false),
            json!("60m")
        ]
    );
    let beta = json!({"metadata": {"name": "old", "annotations":
        {"storageclass.beta.kubernetes.io/is-default-class": "true"}}, "provisioner": "p"});
    assert_eq!(
        cells("storage.k8s.io", "StorageClass", beta)[0],
        "old (default)"
    );
    let set = json!({"metadata": {"name": "fast", "annotations":
        {"storageclass.kubernetes.io/is-default-class": "false"}},
        "provisioner": "example.com/fast", "reclaimPolicy": "Retain",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true});
    assert_eq!(
        cells("storage.k8s.io", "StorageClass", set)[..5],
        [
            json!("fast"),
            json!("example.com/fast"),
            json!("Retain"),
            json!("WaitForFirstConsumer"),
            json!(true)
        ]
    );
}

#[test]
fn kinds_without_a_printer() {
    let role = json!({"metadata": {"name": "r", "creationTimestamp": "2025-06-01T10:00:00Z"}});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "Role", role),
        [json!("r"), json!("2025-06-01T10:00:00Z")]
    );
    assert_eq!(
        cells("", "LimitRange", json!({"metadata": {"name": "l"}}))[1],
        "0001-01-01T00:00:00Z"
    );
    let widget = json!({"metadata": {"name": "w", "creationTimestamp": "2026-01-01T00:00:00Z"}});
    assert_eq!(cells("x.io", "Widget", widget), [json!("w"), json!("60m")]);
}

#[test]
fn pod_templates() {
    let pt = json!({"metadata": {"name": "t"}, "template": {"metadata": {"labels": {"b": "2", "a": "1"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}});
    assert_eq!(
        cells("", "PodTemplate", pt),
        [json!("t"), json!("c"), json!("i"), json!("a=1,b=2")]
    );
}
