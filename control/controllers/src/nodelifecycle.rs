//! The node lifecycle controller, with kube's taint-based eviction folded in:
//!
//! - A node whose agent stops renewing its Lease (and posting status) for
//!   `--node-monitor-grace-period` (Kubernetes: 50 s) has its conditions set to Unknown and
//!   its pods marked not ready.
//! - Node conditions become taints (kube's TaintNodesByCondition and
//!   TaintBasedEvictions): not ready or unreachable, NoSchedule and NoExecute; memory, disk
//!   and PID pressure and a cordon, NoSchedule. Taints other controllers or users set are
//!   left alone.
//! - A pod on a node with a NoExecute taint it does not tolerate is deleted; one that
//!   tolerates it for `tolerationSeconds` (300 s by the API server's default) is deleted
//!   that long after the taint was added. Its controller then makes a replacement, which
//!   the scheduler places on a node that is up.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use skiff_scheduler::framework::tolerates;

use crate::events::Recorder;
use crate::informer::{Change, Informer};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers, util};

pub const NAME: &str = "node-lifecycle-controller";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taints this controller owns: (key, effect).
const MANAGED: &[(&str, &str)] = &[
    (NOT_READY, "NoExecute"),
    (UNREACHABLE, "NoExecute"),
    (NOT_READY, "NoSchedule"),
    (UNREACHABLE, "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
/// How often a node is looked at again (kube's `--node-monitor-period`).
const MONITOR_PERIOD: Duration = Duration::from_secs(5);

struct Controller {
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<Pod>>,
    client: kube::Client,
    events: Recorder,
    grace: Duration,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize, grace: Duration) {
    let nodes = informers.nodes();
    let leases = informers.leases();
    let pods = informers.pods();
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        nodes: nodes.clone(),
        leases: leases.clone(),
        pods: pods.clone(),
        client: informers.client().clone(),
        events: events.for_controller(NAME),
        grace,
    });
    nodes.enqueue_keys(&queue);
    {
        let queue = queue.clone();
        leases.subscribe(move |change| {
            let lease = match change {
                Change::Added(l) | Change::Deleted(l) => *l,
                Change::Updated { new, .. } => *new,
            };
            if lease.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE) {
                queue.add(lease.name_any());
            }
        });
    }
    {
        // A pod bound to a node that carries NoExecute taints may have to go.
        let (queue, nodes) = (queue.clone(), nodes.clone());
        pods.subscribe(move |change| {
            if let Change::Added(p) | Change::Updated { new: p, .. } = change
                && let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                && nodes.get(node).is_some_and(|n| !no_execute(&n).is_empty())
            {
                queue.add(node.to_string());
            }
        });
    }
    let ready = {
        let (n, l, p) = (nodes.clone(), leases.clone(), pods.clone());
        async move {
            n.synced().await;
            l.synced().await;
            p.synced().await;
        }
    };
    run_workers(NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

fn no_execute(node: &Node) -> Vec<&Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
        .collect()
}

/// The taints a node's conditions call for, by (key, effect).
pub fn condition_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut want = Vec::new();
    match util::node_condition(node, "Ready") {
        // A node that has not posted yet is judged after the grace period.
        Some("True") | None => {}
        Some("Unknown") => {
            want.push((UNREACHABLE, "NoExecute"));
            want.push((UNREACHABLE, "NoSchedule"));
        }
        _ => {
            want.push((NOT_READY, "NoExecute"));
            want.push((NOT_READY, "NoSchedule"));
        }
    }
    for (cond, key) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    ] {
        if util::node_condition(node, cond) == Some("True") {
            want.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        want.push(("node.kubernetes.io/unschedulable", "NoSchedule"));
    }
    want
}

/// When a pod must leave a node with these NoExecute taints: `Some(0)` now, `Some(d)` `d`
/// from now, `None` never (kube's `getMinTolerationTime` over the taints' added times).
pub fn eviction_in(pod: &Pod, taints: &[&Taint], now_ms: i64) -> Option<Duration> {
    let tolerations: Vec<&Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let mut soonest: Option<i64> = None;
    for taint in taints {
        let matching: Vec<&&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // The shortest of the tolerations' limits; one without a limit tolerates forever.
        let Some(secs) = matching
            .iter()
            .map(|t| t.toleration_seconds)
            .try_fold(i64::MAX, |m, s| s.map(|s| m.min(s)))
        else {
            continue;
        };
        let added = taint
            .time_added
            .as_ref()
            .map_or(now_ms, |t| t.0.as_millisecond());
        let due = added + secs.max(0) * 1000;
        soonest = Some(soonest.map_or(due, |s| s.min(due)));
    }
    soonest.map(|due| Duration::from_millis((due - now_ms).max(0) as u64))
}

impl Controller {
    async fn sync(&self, name: &str) -> SyncResult {
        let Some(node) = self.nodes.get(name) else {
            return Ok(None);
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut again = Some(MONITOR_PERIOD);

        // 1. Heartbeats: the Lease's renewal or the Ready condition's, whichever is later.
        let lease = self.leases.get(&format!("{LEASE_NAMESPACE}/{name}"));
        let renewed = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
            .map(|t| t.0.as_millisecond());
        let posted = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.as_millisecond());
        let created = node
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond());
        let last = renewed.max(posted).or(created).unwrap_or(now_ms);
        let silent = Duration::from_millis((now_ms - last).max(0) as u64);
        let mut node = (*node).clone();
        if silent > self.grace && util::node_condition(&node, "Ready") != Some("Unknown") {
            node = self.mark_unknown(&node).await?;
        } else if let Some(left) = self.grace.checked_sub(silent) {
            again = Some(left.min(MONITOR_PERIOD));
        }

        // 2. Taints from conditions.
        node = self.reconcile_taints(&node).await?;

        // 3. Pods that may not stay.
        let taints = no_execute(&node);
        if !taints.is_empty() {
            for pod in self.pods.indexed(name) {
                if pod.metadata.deletion_timestamp.is_some() || !util::is_active(&pod) {
                    continue;
                }
                match eviction_in(&pod, &taints, now_ms) {
                    Some(d) if d.is_zero() => self.evict(&pod).await?,
                    Some(d) => again = util::min_some(again, Some(d)),
                    None => {}
                }
            }
        }
        Ok(again)
    }

    /// Sets every condition of a silent node to Unknown and its pods to not ready.
    async fn mark_unknown(&self, node: &Node) -> Result<Node, Error> {
        let now = util::now();
        let conditions: Vec<serde_json::Value> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                if c.status != "Unknown" {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(now.clone());
                }
                serde_json::to_value(c).unwrap_or_default()
            })
            .collect::<Vec<_>>();
        let mut conditions = conditions;
        if util::node_condition(node, "Ready").is_none() {
            conditions.push(json!({"type": "Ready", "status": "Unknown",
                "reason": "NodeStatusNeverUpdated", "message": "Kubelet never posted node status.",
                "lastHeartbeatTime": node.metadata.creation_timestamp, "lastTransitionTime": now}));
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions}});
        let node = nodes
            .patch_status(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await?;
        self.events.normal(
            node.object_ref(&()),
            "NodeNotReady",
            "NodeNotReady",
            format!("Node {} status is now: NodeNotReady", node.name_any()),
        );
        // Its pods are not ready any more (kube's MarkPodsNotReady).
        let name = node.name_any();
        for pod in self.pods.indexed(&name) {
            if !util::is_ready(&pod) {
                continue;
            }
            let api: Api<Pod> = util::api_of(&self.client, &*pod);
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now},
            ]}});
            match api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(node)
    }

    /// Writes the taints the node's conditions call for, keeping everyone else's and the
    /// time each of ours was first added.
    async fn reconcile_taints(&self, node: &Node) -> Result<Node, Error> {
        let want = condition_taints(node);
        let have: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let managed = |t: &Taint| MANAGED.iter().any(|(k, e)| t.key == *k && t.effect == *e);
        let mut taints: Vec<Taint> = have
            .iter()
            .filter(|t| !managed(t) || want.iter().any(|(k, e)| t.key == *k && t.effect == *e))
            .cloned()
            .collect();
        for (key, effect) in &want {
            if !taints.iter().any(|t| t.key == *key && t.effect == *effect) {
                taints.push(Taint {
                    key: (*key).into(),
                    effect: (*effect).into(),
                    time_added: (*effect == "NoExecute").then(util::now),
                    value: None,
                });
            }
        }
        if taints == have {
            return Ok(node.clone());
        }
        // Guarded by the resourceVersion read: a taint someone adds meanwhile is not lost.
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }},
        });
        let nodes: Api<Node> = Api::all(self.client.clone());
        Ok(nodes
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?)
    }

    /// Deletes a pod its node's NoExecute taints send away, noting why on the pod first
    /// (the `DisruptionTarget` condition) as Kubernetes does.
    async fn evict(&self, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> = util::api_of(&self.client, pod);
        let name = pod.name_any();
        self.events.normal(
            pod.object_ref(&()),
            "TaintManagerEviction",
            "Delete",
            format!(
                "Marking for deletion Pod {}/{name}",
                pod.namespace().unwrap_or_default()
            ),
        );
        let patch = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": util::now(),
        }]}});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
    }

    fn taint(key: &str, added_ms: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(added_ms).unwrap(),
            )),
            value: None,
        }
    }

    #[test]
    fn pods_leave_when_their_tolerations_run_out() {
        let now = 1_000_000_000;
        let unreachable = taint(UNREACHABLE, now - 1_000);
        let taints = [&unreachable];
        // No toleration: now.
        assert_eq!(
            eviction_in(&pod(json!([])), &taints, now),
            Some(Duration::ZERO)
        );
        // 300 s from when the taint was added, one second ago.
        let p = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(
            eviction_in(&p, &taints, now),
            Some(Duration::from_secs(299))
        );
        // Without a limit (a DaemonSet's pod): never.
        let p = pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(eviction_in(&p, &taints, now), None);
        // Tolerating one taint and not another: now.
        let other = taint("dedicated", now);
        assert_eq!(
            eviction_in(&p, &[&unreachable, &other], now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn conditions_become_taints() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "Ready", "status": "Unknown"},
                {"type": "DiskPressure", "status": "True"},
                {"type": "MemoryPressure", "status": "False"}]}}))
        .unwrap();
        assert_eq!(
            condition_taints(&node),
            [
                (UNREACHABLE, "NoExecute"),
                (UNREACHABLE, "NoSchedule"),
                ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ]
        );
    }
}
