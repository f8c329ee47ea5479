//! Replicas spread over equal nodes.

use serde_json::json;

use crate::harness::{Cluster, wait};
use kube::api::ListParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_pods_spread_evenly_over_three_nodes() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    for name in ["n1", "n2", "n3"] {
        c.add_node(name, "64", "256Gi", json!({})).await?;
    }
    c.start_scheduler();
    // Created while the scheduler runs, so decisions interleave with watch events.
    for i in 0..300 {
        c.create_pod(
            &format!("web-{i}"),
            "100m",
            json!({"metadata": {"labels": {"app": "web"}}}),
        )
        .await?;
    }
    let pods = c.pods();
    wait("all 300 pods bound", || async {
        let list = pods.list(&ListParams::default()).await?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        Ok((bound == 300).then_some(()))
    })
    .await?;
    let per_node = c.pods_per_node().await?;
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    for (node, n) in &per_node {
        assert!((80..=120).contains(n), "{node} got {n} pods: {per_node:?}");
    }
    c.stop_scheduler().await?;
    Ok(())
}
