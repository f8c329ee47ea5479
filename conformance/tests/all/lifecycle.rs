//! Node lifecycle on two node agents: an agent killed goes Unknown after the grace period
//! (shortened by flag), is tainted unreachable, its pods are evicted after their
//! tolerations and replaced on the other node by their Deployment; its DaemonSet pod,
//! which tolerates that forever, stays. Started again, the node is Ready and untainted.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, Registry};

use crate::agents::nodes_ready;
use crate::daemonsets::placed;
use crate::node::ready;
use crate::workloads::{eventually, items};

fn node_ready(k: &Kubectl, node: &str) -> String {
    k.json(&["get", "node", node])["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn taints(k: &Kubectl, node: &str) -> Vec<String> {
    k.json(&["get", "node", node])["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap_or(""),
                t["effect"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The live (not being deleted) pods of `app` by node, and how many of them are ready.
pub(crate) fn live(k: &Kubectl, app: &str) -> BTreeMap<String, (usize, usize)> {
    placed(k, app)
        .into_iter()
        .map(|(node, pods)| {
            let ready = pods.iter().filter(|p| ready(p)).count();
            (node, (pods.len(), ready))
        })
        .collect()
}

/// A Deployment `web` of four replicas of `image` (with `extra` pod spec lines) and a
/// DaemonSet `agentd` of it, labelled by their names.
pub(crate) fn web_and_daemon(image: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
{extra}      containers:
      - {{name: web, image: {image}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agentd}}
spec:
  selector: {{matchLabels: {{app: agentd}}}}
  template:
    metadata: {{labels: {{app: agentd}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: d, image: {image}}}
"
    )
}

#[test]
fn a_dead_nodes_pods_come_back_elsewhere() {
    let registry = Registry::start();
    let http = registry.push_example("http.wasm", "http");
    let cluster =
        Cluster::start_for_agents_with(Backend::Embedded, &["--node-monitor-grace-period=4s"]);
    let lease = ["--node-lease-duration-seconds", "4"];
    let _a = cluster.start_agent_with("node-a", &lease);
    let mut b = cluster.start_agent_with("node-b", &lease);
    let k = cluster.kubectl("1.33");
    nodes_ready(&k, 2);

    // Four replicas that leave an unreachable node after 2 s, spread over both nodes,
    // and a daemon on each.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &web_and_daemon(
            &http,
            "      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n",
        ),
    );
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    k.ok(&["rollout", "status", "daemonset/agentd", "--timeout=120s"]);
    let before = live(&k, "web");
    assert!(
        before.get("node-b").is_some_and(|(n, _)| *n >= 1),
        "no web pod on node-b to lose: {before:?}"
    );

    // node-b's agent dies: after the grace period the node is Unknown and tainted.
    b.kill();
    eventually("node-b Unknown", || {
        (node_ready(&k, "node-b") == "Unknown").then_some(())
    });
    let t = taints(&k, "node-b");
    assert!(
        t.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
            && t.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{t:?}"
    );
    assert_eq!(node_ready(&k, "node-a"), "True");
    let nodes = k.ok(&["get", "nodes"]);
    assert!(nodes.contains("NotReady"), "{nodes}");

    // Its web pods are evicted and made again on node-a; the daemon stays.
    let after = eventually("four ready web pods, all on node-a", || {
        let by_node = live(&k, "web");
        (by_node.len() == 1 && by_node.get("node-a") == Some(&(4, 4))).then_some(by_node)
    });
    assert_eq!(after.len(), 1);
    let daemons = live(&k, "agentd");
    assert!(daemons.contains_key("node-b"), "{daemons:?}");
    let events = k.ok(&["get", "events", "-A"]);
    assert!(events.contains("TaintManagerEviction"), "{events}");
    assert!(events.contains("NodeNotReady"), "{events}");

    // Back: Ready, the taints gone, the evicted pods' deletion finished by the agent.
    b.restart();
    eventually("node-b Ready and untainted", || {
        (node_ready(&k, "node-b") == "True" && taints(&k, "node-b").is_empty()).then_some(())
    });
    eventually("no pod of web left on node-b", || {
        let pods = items(&k, &["pods", "-l", "app=web"]);
        pods.iter()
            .all(|p: &Value| p["spec"]["nodeName"] != "node-b")
            .then_some(())
    });
    eventually("the daemon ready on both nodes", || {
        let d = live(&k, "agentd");
        (d.get("node-a") == Some(&(1, 1)) && d.get("node-b") == Some(&(1, 1))).then_some(())
    });
}
