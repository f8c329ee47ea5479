//! StatefulSets on a node, Wasm and container: pods made in order with stable names, each
//! with its own volume from the default StorageClass (the built-in local provisioner); a
//! pod deleted comes back under its name on the same volume, with the data its first run
//! left; scale down from the highest ordinal; a rolling update with a partition; the
//! claims kept or deleted as the retention policy says, and their volumes released.

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, Registry};

use crate::containers::push_busybox;
use crate::node::{example, ready};
use crate::workloads::{PodWatch, eventually, items};

fn pods(k: &Kubectl, app: &str) -> Vec<Value> {
    items(k, &["pods", "-l", &format!("app={app}")])
}

fn names(items: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = items
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    n.sort();
    n
}

fn claims(k: &Kubectl) -> Vec<String> {
    names(&items(k, &["pvc"]))
}

fn rolled_out(k: &Kubectl, set: &str) {
    let out = k.ok(&[
        "rollout",
        "status",
        &format!("statefulset/{set}"),
        "--timeout=120s",
    ]);
    assert!(out.contains("roll"), "{out}");
}

/// Ordered creation, stable names and claims, data across a pod's deletion, scale down.
#[test]
fn wasm_statefulset_example() {
    let registry = Registry::start();
    registry.push_example("testbed.wasm", "testbed");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    // The default class exists, and a claim that names none gets it.
    let classes = k.ok(&["get", "storageclass"]);
    assert!(classes.contains("local-path (default)"), "{classes}");

    // A class name that cannot be one is refused; a class that does not exist is not (the
    // claim waits for it, as on Kubernetes), and says why it waits.
    let claim = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: {class}\n  resources: {{requests: {{storage: 1Mi}}}}\n"
        )
    };
    let err = k
        .run_stdin(&["apply", "-f", "-"], &claim("bad", "Fast_SSD"))
        .stderr;
    assert!(
        err.contains(r#"PersistentVolumeClaim "bad" is invalid: spec.storageClassName: Invalid value: "Fast_SSD": a lowercase RFC 1123 subdomain"#),
        "{err}"
    );
    k.ok_stdin(&["apply", "-f", "-"], &claim("waiting", "no-such-class"));
    eventually("a ProvisioningFailed event for the missing class", || {
        let out = k.ok(&["describe", "pvc", "waiting"]);
        out.contains(r#"ProvisioningFailed"#)
            .then_some(())
            .filter(|_| out.contains(r#"storageclass.storage.k8s.io "no-such-class" not found"#))
    });
    assert_eq!(
        k.json(&["get", "pvc", "waiting"])["status"]["phase"],
        "Pending"
    );
    k.ok(&["delete", "pvc", "waiting"]);

    // web-0, web-1, web-2 in order: each made only once the one before is ready.
    let watch = PodWatch::start(&k, "app=web-sts", 0);
    k.ok_stdin(
        &["apply", "-f", "-"],
        &example("statefulset.yaml", &registry),
    );
    rolled_out(&k, "web");
    let (_, _, _, timeline) = watch.finish();
    let first = |n: &str| {
        timeline
            .find(&format!("{n} ("))
            .unwrap_or_else(|| panic!("{n} never seen:\n{timeline}"))
    };
    assert!(
        first("web-0") < first("web-1") && first("web-1") < first("web-2"),
        "{timeline}"
    );
    // web-1 appeared only after web-0 was counted ready.
    let before_web1 = &timeline[..first("web-1")];
    assert!(before_web1.contains("1 ready"), "{timeline}");

    assert_eq!(names(&pods(&k, "web-sts")), ["web-0", "web-1", "web-2"]);
    assert_eq!(claims(&k), ["data-web-0", "data-web-1", "data-web-2"]);
    let claim = k.json(&["get", "pvc", "data-web-0"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["spec"]["storageClassName"], "local-path");
    let pv_name = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = k.json(&["get", "pv", &pv_name]);
    let dir = pv["spec"]["local"]["path"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&dir).is_dir(), "{dir}");
    let web0 = k.json(&["get", "pod", "web-0"]);
    assert_eq!(web0["spec"]["hostname"], "web-0");
    assert_eq!(web0["spec"]["subdomain"], "web");
    let first_uid = web0["metadata"]["uid"].as_str().unwrap().to_string();

    // web-0 deleted: back under its name, on its volume, with its first run's file.
    // Without waiting: kubectl 1.33 waits for a DELETED event of whatever pod its
    // informer lists under the name, so when the StatefulSet has already made the new
    // web-0 by then (a Wasm pod ends in milliseconds) it waits forever on the new pod
    // (kubernetes/kubectl#1803, fixed by kubernetes/kubernetes#135563).
    k.ok(&["delete", "pod", "web-0", "--wait=false"]);
    let again = eventually("web-0 back and ready", || {
        // Between the old pod's end and the new one's creation there is no web-0.
        let p = k.try_json(&["get", "pod", "web-0"])?;
        (p["metadata"]["uid"] != first_uid.as_str() && ready(&p)).then_some(p)
    });
    assert_eq!(
        again["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "data")
            .unwrap()["persistentVolumeClaim"]["claimName"],
        "data-web-0"
    );
    let logs = k.ok(&["logs", "web-0", "-c", "remember"]);
    assert!(logs.contains(&format!("run-{first_uid}")), "{logs}");

    // Scale down from the highest ordinal; the claims stay (whenScaled: Retain).
    k.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    eventually("web-2 and web-1 gone", || {
        (names(&pods(&k, "web-sts")) == ["web-0"]).then_some(())
    });
    assert_eq!(claims(&k), ["data-web-0", "data-web-1", "data-web-2"]);

    // A claim deleted with nothing using it: its volume released and deleted (Delete),
    // its directory removed by the node.
    let pv2 = k.json(&["get", "pvc", "data-web-2"])["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_string();
    let dir2 = k.json(&["get", "pv", &pv2])["spec"]["local"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&["delete", "pvc", "data-web-2"]);
    eventually("the released volume deleted and its directory gone", || {
        (k.run(&["get", "pv", &pv2]).code != 0 && !std::path::Path::new(&dir2).exists())
            .then_some(())
    });
    k.ok(&["delete", "statefulset", "web"]);
    eventually("the set's pods gone", || {
        pods(&k, "web-sts").is_empty().then_some(())
    });
}

/// Container pods: a rolling update with a partition leaves the ordinals below it alone,
/// then finishes; `whenDeleted: Delete` takes the claims with the set.
#[test]
fn container_statefulset_rolling_update() {
    let registry = Registry::start();
    let v1 = push_busybox(&registry, "busybox", &[]);
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    let set = |image: &str, partition: i32| {
        format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 3
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {{whenDeleted: Delete, whenScaled: Retain}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{partition: {partition}}}}}
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: {image}
        command: [sh, -c, 'date >> /var/lib/db/runs; exec sleep 3600']
        volumeMounts: [{{name: state, mountPath: /var/lib/db}}]
  volumeClaimTemplates:
  - metadata: {{name: state}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"
        )
    };
    k.ok_stdin(&["apply", "-f", "-"], &set(&v1, 0));
    rolled_out(&k, "db");
    assert_eq!(names(&pods(&k, "db")), ["db-0", "db-1", "db-2"]);
    let revision = |p: &Value| {
        p["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let old = revision(&k.json(&["get", "pod", "db-0"]));

    // Partition 2: only db-2 moves to the new template (a changed command).
    k.ok_stdin(
        &["apply", "-f", "-"],
        &set(&v1, 2).replace("exec sleep 3600", "exec sleep 3601"),
    );
    eventually("db-2 updated, db-0 and db-1 not", || {
        let all = pods(&k, "db");
        let by = |n: &str| all.iter().find(|p| p["metadata"]["name"] == n).cloned();
        let (Some(p0), Some(p1), Some(p2)) = (by("db-0"), by("db-1"), by("db-2")) else {
            return None;
        };
        (revision(&p0) == old && revision(&p1) == old && revision(&p2) != old && ready(&p2))
            .then_some(())
    });
    let out = k.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    assert!(out.contains("partitioned roll out complete"), "{out}");

    // Partition 0: the rest follow, from the highest ordinal down.
    k.ok(&[
        "patch",
        "statefulset",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    rolled_out(&k, "db");
    eventually("every pod at the new revision", || {
        let all = pods(&k, "db");
        (all.len() == 3 && all.iter().all(|p| revision(p) != old && ready(p))).then_some(())
    });
    let s = k.json(&["get", "statefulset", "db"])["status"].clone();
    assert_eq!(s["currentRevision"], s["updateRevision"], "{s}");
    assert_eq!(s["updatedReplicas"], 3, "{s}");
    // db-2 ran twice on its volume.
    let logs = k.ok(&["exec", "db-2", "--", "cat", "/var/lib/db/runs"]);
    assert_eq!(logs.lines().count(), 2, "{logs}");

    // whenDeleted: Delete: the claims go with the set.
    k.ok(&["delete", "statefulset", "db"]);
    eventually("the set's claims deleted with it", || {
        claims(&k).is_empty().then_some(())
    });
}
