//! Pods that fit nowhere: what users see, and how they get scheduled once room appears.

use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use crate::harness::{Cluster, wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_is_reported_then_placed_on_a_new_node() -> anyhow::Result<()> {
    let c = Cluster::with_scheduler().await?;
    c.add_node(
        "gold-small",
        "1",
        "2Gi",
        json!({"metadata": {"labels": {"tier": "gold"}}}),
    )
    .await?;
    c.add_node("silver-1", "8", "16Gi", json!({})).await?;
    c.add_node("silver-2", "8", "16Gi", json!({})).await?;
    c.create_pod(
        "picky",
        "2",
        json!({"spec": {"nodeSelector": {"tier": "gold"}}}),
    )
    .await?;
    let expected = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. \
                    preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
                    2 Preemption is not helpful for scheduling.";
    assert_eq!(c.failed_scheduling("picky").await?, expected);
    let pods = c.pods();
    let condition = wait("the PodScheduled=False condition", || async {
        let pod = pods.get("picky").await?;
        Ok(pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled"))
    })
    .await?;
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(condition.message.as_deref(), Some(expected));
    assert_eq!(
        pods.get("picky").await?.spec.and_then(|s| s.node_name),
        None
    );

    // A node that fits joins: the scheduler retries on that change, no new pod event needed.
    c.add_node(
        "gold-big",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"tier": "gold"}}}),
    )
    .await?;
    assert_eq!(c.bound_node("picky").await?, "gold-big");
    let pod = pods.get("picky").await?;
    let conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True"),
        "{conditions:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_overfills_a_node() -> anyhow::Result<()> {
    let mut c = Cluster::start().await?;
    for name in ["n1", "n2"] {
        c.add_node_with_status(
            name,
            json!({}),
            json!({"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "3"},
                   "conditions": [{"type": "Ready", "status": "True"}]}),
        )
        .await?;
    }
    // All eight are pending before the scheduler starts: it must count its own
    // not-yet-confirmed bindings to stop at three per node.
    for i in 0..8 {
        c.create_pod(&format!("p{i}"), "", json!({})).await?;
    }
    c.start_scheduler();
    let pods = c.pods();
    let failed = wait("six pods bound and two refused", || async {
        let list = pods.list(&ListParams::default()).await?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let refused: Vec<String> = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "PodScheduled" && c.status == "False")
                    })
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        Ok((bound == 6 && refused.len() == 2).then_some(refused))
    })
    .await?;
    assert_eq!(
        c.pods_per_node().await?.into_values().collect::<Vec<_>>(),
        [3, 3]
    );
    assert_eq!(
        c.failed_scheduling(&failed[0]).await?,
        "0/2 nodes are available: 2 Too many pods. \
         preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    // A finished or deleted pod frees its slot, and a waiting pod takes it.
    let victim = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .and_then(|p| p.metadata.name)
        .expect("a bound pod");
    pods.delete(&victim, &DeleteParams::default().grace_period(0))
        .await?;
    let waiting = failed.clone();
    let node = wait("a waiting pod to take the freed slot", || async {
        for name in &waiting {
            if let Some(n) = pods.get(name).await?.spec.and_then(|s| s.node_name) {
                return Ok(Some(n));
            }
        }
        Ok(None)
    })
    .await?;
    assert!(node == "n1" || node == "n2");
    c.stop_scheduler().await?;
    Ok(())
}
