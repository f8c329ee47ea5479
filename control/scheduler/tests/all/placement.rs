//! Pods land on the nodes their constraints allow.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::harness::{Cluster, wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_where_there_is_room() -> anyhow::Result<()> {
    let c = Cluster::with_scheduler().await?;
    c.add_node("small", "1", "1Gi", json!({})).await?;
    c.add_node("big", "4", "8Gi", json!({})).await?;
    c.create_pod("needs-two", "2", json!({})).await?;
    assert_eq!(c.bound_node("needs-two").await?, "big");
    // Memory only as a limit counts as a request too.
    c.create_pod(
        "limits",
        "",
        json!({"spec": {"containers": [
            {"name": "app", "image": "x", "resources": {"limits": {"memory": "4Gi"}}}
        ]}}),
    )
    .await?;
    assert_eq!(c.bound_node("limits").await?, "big");
    // The bound pod shows PodScheduled=True and a Scheduled event.
    let pod = c.pods().get("needs-two").await?;
    let cond = pod.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        cond.iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True"),
        "{cond:?}"
    );
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let lp = ListParams::default().fields("involvedObject.name=needs-two,reason=Scheduled");
    let event = wait("the Scheduled event", || async {
        Ok(events.list(&lp).await?.items.into_iter().next())
    })
    .await?;
    assert_eq!(
        event.message.as_deref(),
        Some("Successfully assigned default/needs-two to big")
    );
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(
        event.reporting_component.as_deref(),
        Some("default-scheduler")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_and_node_affinity() -> anyhow::Result<()> {
    let c = Cluster::with_scheduler().await?;
    c.add_node(
        "ssd",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"disk": "ssd", "cores": "8"}}}),
    )
    .await?;
    c.add_node(
        "hdd",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"disk": "hdd", "cores": "2"}}}),
    )
    .await?;
    c.add_node("plain", "4", "8Gi", json!({})).await?;
    c.create_pod(
        "selector",
        "",
        json!({"spec": {"nodeSelector": {"disk": "hdd"}}}),
    )
    .await?;
    c.create_pod(
        "required",
        "",
        json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}
            ]}
        }}}}),
    )
    .await?;
    c.create_pod(
        "by-name",
        "",
        json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["plain"]}]}
            ]}
        }}}}),
    )
    .await?;
    c.create_pod("preferred", "", json!({"spec": {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
        ]
    }}}}))
    .await?;
    assert_eq!(c.bound_node("selector").await?, "hdd");
    assert_eq!(c.bound_node("required").await?, "ssd");
    assert_eq!(c.bound_node("by-name").await?, "plain");
    assert_eq!(c.bound_node("preferred").await?, "ssd");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_cordons_and_readiness_keep_pods_off() -> anyhow::Result<()> {
    let c = Cluster::with_scheduler().await?;
    c.add_node(
        "tainted",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
    )
    .await?;
    c.add_node(
        "cordoned",
        "4",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    )
    .await?;
    c.add_node_with_status(
        "not-ready",
        json!({}),
        json!({"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
               "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}),
    )
    .await?;
    c.add_node("open", "1", "1Gi", json!({})).await?;
    for i in 0..4 {
        c.create_pod(&format!("plain-{i}"), "", json!({})).await?;
    }
    c.create_pod("tolerant", "", json!({"spec": {
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": "tainted"}
    }}))
    .await?;
    for i in 0..4 {
        assert_eq!(c.bound_node(&format!("plain-{i}")).await?, "open");
    }
    assert_eq!(c.bound_node("tolerant").await?, "tainted");
    // A pod that needs more than the open node has: every other node says why not.
    c.create_pod("too-big", "2", json!({})).await?;
    let message = c.failed_scheduling("too-big").await?;
    assert_eq!(
        message,
        "0/4 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: db}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable. \
         preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, \
         3 Preemption is not helpful for scheduling."
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_class_scheduling_steers_pods() -> anyhow::Result<()> {
    let c = Cluster::with_scheduler().await?;
    c.add_node(
        "wasm-node",
        "4",
        "8Gi",
        json!({
            "metadata": {"labels": {"skiff.dev/runtime": "wasm"}},
            "spec": {"taints": [{"key": "skiff.dev/wasm-only", "effect": "NoSchedule"}]}
        }),
    )
    .await?;
    c.add_node("linux-node", "4", "8Gi", json!({})).await?;
    let rc: RuntimeClass = serde_json::from_value(json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "wasm"}, "handler": "wasmtime",
        "scheduling": {
            "nodeSelector": {"skiff.dev/runtime": "wasm"},
            "tolerations": [{"key": "skiff.dev/wasm-only", "operator": "Exists", "effect": "NoSchedule"}]
        }
    }))?;
    Api::<RuntimeClass>::all(c.client.clone())
        .create(&PostParams::default(), &rc)
        .await?;
    // The scheduler learns of the class through its watch; a pod created before that
    // would be retried on the RuntimeClass event, so no ordering is needed here.
    c.create_pod(
        "wasm-app",
        "",
        json!({"spec": {"runtimeClassName": "wasm"}}),
    )
    .await?;
    c.create_pod("linux-app", "", json!({})).await?;
    assert_eq!(c.bound_node("wasm-app").await?, "wasm-node");
    assert_eq!(c.bound_node("linux-app").await?, "linux-node");
    // A pod naming a class that does not exist is unschedulable, and says so.
    c.create_pod(
        "no-class",
        "",
        json!({"spec": {"runtimeClassName": "missing"}}),
    )
    .await?;
    assert_eq!(
        c.failed_scheduling("no-class").await?,
        "0/2 nodes are available: runtimeclasses.node.k8s.io \"missing\" not found. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_for_other_schedulers_are_left_alone() -> anyhow::Result<()> {
    let c = Cluster::with_scheduler().await?;
    c.add_node("n1", "4", "8Gi", json!({})).await?;
    c.create_pod(
        "other",
        "",
        json!({"spec": {"schedulerName": "my-scheduler"}}),
    )
    .await?;
    c.create_pod(
        "mine",
        "",
        json!({"spec": {"schedulerName": "default-scheduler"}}),
    )
    .await?;
    assert_eq!(c.bound_node("mine").await?, "n1");
    // Pods are taken in order, so "other" was seen (and skipped) before "mine" was bound.
    let other = c.pods().get("other").await?;
    assert_eq!(other.spec.and_then(|s| s.node_name), None);
    Ok(())
}
