//! Two `skiff server`s on one etcd: both serve the API, one leads (runs the scheduler and
//! the controllers). The leader killed in the middle of a rolling update, the other takes
//! the lead and finishes it, with no pod made twice; the node agent, given both servers,
//! moves to the one left.

use std::collections::BTreeSet;

use skiff_conformance::{Backend, Cluster, Registry, repo_root};

use crate::agents::nodes_ready;
use crate::workloads::{PodWatch, eventually, items};

#[test]
fn the_other_server_finishes_a_rollout_when_the_leader_dies() {
    let registry = Registry::start();
    let wasm = repo_root().join("examples/build/http.wasm");
    let v1 = registry.push_tagged(&wasm, "http", "1.0");
    let v2 = registry.push_tagged(&wasm, "http", "2.0");
    // The first server (`skiff up --no-node` on etcd) leads; the second waits.
    let mut first = Cluster::start_for_agents(Backend::Etcd);
    eventually("the first server leading", || {
        first.log().contains("skiff: leading").then_some(())
    });
    let second = cluster_second(&first);
    let node = first.start_agent_on("node-a", &format!("{},{}", first.url, second.url));
    let k = second.kubectl("1.33");
    nodes_ready(&k, 1);
    let lease = k.json(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "skiff-controller-manager",
    ]);
    let leader = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.log().contains(&leader), "{lease}");
    assert!(!second.log().contains("skiff: leading"));

    k.ok(&[
        "create",
        "deployment",
        "web",
        &format!("--image={v1}"),
        "--replicas=4",
    ]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let container = k.json(&["get", "deployment", "web"])["spec"]["template"]["spec"]["containers"]
        [0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // The update starts; the leader dies at once.
    let watch = PodWatch::start(&k, "app=web", 4);
    k.ok(&[
        "set",
        "image",
        "deployment/web",
        &format!("{container}={v2}"),
    ]);
    first.kill();

    // The second server takes the lease and the rollout finishes.
    eventually("the second server leading", || {
        second.log().contains("skiff: leading").then_some(())
    });
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    // The agent moved to the second server, and its node stays Ready there.
    assert!(node.log().contains("moving to"), "{}", node.log());
    nodes_ready(&k, 1);
    let lease = k.json(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "skiff-controller-manager",
    ]);
    assert_ne!(lease["spec"]["holderIdentity"], leader.as_str(), "{lease}");
    assert!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1,
        "{lease}"
    );
    eventually("four pods, all of the new template", || {
        let pods = items(&k, &["pods", "-l", "app=web"]);
        (pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == v2.as_str()))
        .then_some(())
    });
    let (_, highest, _, timeline) = watch.finish();
    // No pod made twice: at most the surge over the four, and exactly four new pods ever.
    assert!(highest <= 5, "{highest} live at once\n{timeline}");
    let rs = items(&k, &["rs", "-l", "app=web"]);
    let new_hash = rs
        .iter()
        .find(|r| r["spec"]["replicas"] == 4)
        .and_then(|r| r["metadata"]["labels"]["pod-template-hash"].as_str())
        .unwrap()
        .to_string();
    let made: BTreeSet<&str> = timeline
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with(&format!("web-{new_hash}-")))
        .collect();
    assert_eq!(made.len(), 4, "{made:?}\n{timeline}");
}

fn cluster_second(first: &Cluster) -> skiff_conformance::SecondServer {
    let second = first.start_second_server();
    eventually("the second server campaigning", || {
        second.log().contains("electing a leader").then_some(())
    });
    second
}
