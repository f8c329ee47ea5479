//! DaemonSets on two node agents, Wasm and container side by side: one pod per node, a
//! node's NoExecute taint taking its daemons away and its removal bringing them back, a
//! cordoned node keeping its daemon, a rolling update that never has more than one node
//! without a ready daemon (watched pod by pod), history and undo, and deletion.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, Registry, repo_root};

use crate::agents::nodes_ready;
use crate::node::{example, ready};
use crate::workloads::{PodWatch, eventually, items};

/// The live (not being deleted) pods of `app` by node.
pub(crate) fn placed(k: &Kubectl, app: &str) -> BTreeMap<String, Vec<Value>> {
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in items(k, &["pods", "-l", &format!("app={app}")]) {
        if p["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        by_node.entry(node).or_default().push(p);
    }
    by_node
}

/// Waits until the DaemonSet runs one ready pod on each of `nodes` and none elsewhere.
fn one_ready_on(k: &Kubectl, app: &str, nodes: &[&str]) -> BTreeMap<String, Vec<Value>> {
    eventually(
        &format!("{app}: one ready pod on each of {nodes:?}"),
        || {
            let by_node = placed(k, app);
            let fits = by_node.len() == nodes.len()
                && nodes.iter().all(|n| {
                    by_node
                        .get(*n)
                        .is_some_and(|ps| ps.len() == 1 && ready(&ps[0]))
                });
            fits.then_some(by_node)
        },
    )
}

fn image_of(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn rolled_out(k: &Kubectl, ds: &str) {
    let out = k.ok(&[
        "rollout",
        "status",
        &format!("daemonset/{ds}"),
        "--timeout=120s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn daemonsets_on_two_nodes() {
    let registry = Registry::start();
    let wasm = repo_root().join("examples/build/http.wasm");
    registry.push_tagged(&wasm, "http", "v1");
    let wasm_v2 = registry.push_tagged(&wasm, "http", "v2");
    let layout = repo_root().join("examples/build/http-server-oci");
    let container_v1 = registry.push_tagged(&layout, "http-server", "1.0");
    let container_v2 = registry.push_tagged(&layout, "http-server", "2.0");
    let cluster = Cluster::start_for_agents(Backend::Embedded);
    let _a = cluster.start_agent("node-a");
    let _b = cluster.start_agent("node-b");
    let k = cluster.kubectl("1.33");
    nodes_ready(&k, 2);

    // The example (Wasm) and a container DaemonSet: one pod on every node.
    k.ok_stdin(&["apply", "-f", "-"], &example("daemonset.yaml", &registry));
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: node-box}}
spec:
  selector: {{matchLabels: {{app: node-box}}}}
  template:
    metadata: {{labels: {{app: node-box}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: box
        image: {container_v1}
"
        ),
    );
    let both = ["node-a", "node-b"];
    for (ds, app) in [("node-web", "node-web"), ("node-box", "node-box")] {
        rolled_out(&k, ds);
        one_ready_on(&k, app, &both);
        let s = k.json(&["get", "daemonset", ds])["status"].clone();
        assert_eq!(
            (
                &s["desiredNumberScheduled"],
                &s["currentNumberScheduled"],
                &s["numberReady"],
                &s["numberAvailable"],
                &s["updatedNumberScheduled"],
                &s["numberMisscheduled"],
            ),
            (
                &Value::from(2),
                &Value::from(2),
                &Value::from(2),
                &Value::from(2),
                &Value::from(2),
                &Value::from(0)
            ),
            "{s}"
        );
    }

    // A NoExecute taint the daemons do not tolerate takes them off node-b; removing it
    // brings them back.
    k.ok(&["taint", "node", "node-b", "dedicated=db:NoExecute"]);
    for app in ["node-web", "node-box"] {
        one_ready_on(&k, app, &["node-a"]);
    }
    eventually("desiredNumberScheduled 1", || {
        (k.json(&["get", "daemonset", "node-web"])["status"]["desiredNumberScheduled"] == 1)
            .then_some(())
    });
    k.ok(&["taint", "node", "node-b", "dedicated=db:NoExecute-"]);
    for app in ["node-web", "node-box"] {
        one_ready_on(&k, app, &both);
    }

    // A cordoned node keeps its daemon: one deleted there comes back there.
    k.ok(&["cordon", "node-b"]);
    let on_b = placed(&k, "node-box")["node-b"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&["delete", "pod", &on_b, "--wait=false"]);
    let again = one_ready_on(&k, "node-box", &both);
    assert_ne!(again["node-b"][0]["metadata"]["name"], on_b.as_str());
    k.ok(&["uncordon", "node-b"]);

    // A rolling update, one node at a time: never more than one node without a ready
    // daemon, never two daemons on a node.
    for (ds, app, container, image) in [
        ("node-web", "node-web", "web", wasm_v2.as_str()),
        ("node-box", "node-box", "box", container_v2.as_str()),
    ] {
        let watch = PodWatch::start(&k, &format!("app={app}"), 2);
        k.ok(&[
            "set",
            "image",
            &format!("daemonset/{ds}"),
            &format!("{container}={image}"),
        ]);
        rolled_out(&k, ds);
        let by_node = eventually("only updated daemons left", || {
            let by_node = one_ready_on(&k, app, &both);
            by_node
                .values()
                .all(|ps| image_of(&ps[0]) == image)
                .then_some(by_node)
        });
        let (lowest, highest, events, timeline) = watch.finish();
        assert!(events > 2, "{timeline}");
        assert!(
            lowest >= 1,
            "{ds}: {lowest} ready at the lowest\n{timeline}"
        );
        assert!(
            highest <= 2,
            "{ds}: {highest} live at the highest\n{timeline}"
        );
        assert_eq!(by_node.len(), 2);
    }

    // Two revisions; undo goes back to the first template, as the third.
    let history = k.ok(&["rollout", "history", "daemonset/node-box"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    k.ok(&["rollout", "undo", "daemonset/node-box"]);
    rolled_out(&k, "node-box");
    eventually("the first image back on both nodes", || {
        let by_node = one_ready_on(&k, "node-box", &both);
        by_node
            .values()
            .all(|ps| image_of(&ps[0]) == container_v1)
            .then_some(())
    });
    let history = k.ok(&["rollout", "history", "daemonset/node-box"]);
    assert!(history.contains("3 "), "{history}");

    // Deleting a DaemonSet deletes its pods and revisions.
    k.ok(&["delete", "daemonset", "node-web", "node-box"]);
    eventually("the daemons gone", || {
        (placed(&k, "node-web").is_empty()
            && placed(&k, "node-box").is_empty()
            && k.json(&["get", "controllerrevisions"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty))
        .then_some(())
    });
}
