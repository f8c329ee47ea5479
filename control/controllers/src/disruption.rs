//! The disruption controller: keeps each PodDisruptionBudget's status (how many of its
//! pods are healthy, how many must be, how many may go now), which the API server's
//! `pods/eviction` reads and takes from. A pod evicted but not yet gone stays counted as
//! disrupted for two minutes at most (kube's `DeletionTimeout`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::json;
use skiff_selectors::LabelSelector as Selector;

use crate::events::Recorder;
use crate::informer::{Change, Informer, controller_of, key_of, split_key};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers, util};

pub const NAME: &str = "disruption-controller";
/// How long an evicted pod counts as disrupted while it is not yet being deleted.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

struct Controller {
    pdbs: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    rcs: Arc<Informer<ReplicationController>>,
    statefulsets: Arc<Informer<StatefulSet>>,
    client: kube::Client,
    events: Recorder,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize) {
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        pdbs: informers.poddisruptionbudgets(),
        pods: informers.pods(),
        replicasets: informers.replicasets(),
        deployments: informers.deployments(),
        rcs: informers.replicationcontrollers(),
        statefulsets: informers.statefulsets(),
        client: informers.client().clone(),
        events: events.for_controller(NAME),
    });
    c.pdbs.enqueue_keys(&queue);
    {
        // A pod's budgets: those in its namespace whose selector matches it, before or
        // after the change.
        let (pdbs, queue) = (c.pdbs.clone(), queue.clone());
        c.pods.subscribe(move |change| {
            let (old, new) = match change {
                Change::Added(p) | Change::Deleted(p) => (None, *p),
                Change::Updated { old, new } => (Some(*old), *new),
            };
            let ns = new.metadata.namespace.as_deref().unwrap_or_default();
            for pdb in pdbs.list_namespace(ns) {
                let Ok(Some(sel)) = budget_selector(&pdb) else {
                    continue;
                };
                if sel.matches(util::labels(&**new))
                    || old.is_some_and(|o| sel.matches(util::labels(&**o)))
                {
                    queue.add(key_of(&*pdb));
                }
            }
        });
    }
    let ready = {
        let c = c.clone();
        async move {
            c.pdbs.synced().await;
            c.pods.synced().await;
            c.replicasets.synced().await;
            c.deployments.synced().await;
            c.rcs.synced().await;
            c.statefulsets.synced().await;
        }
    };
    run_workers(NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

/// A budget's selector: `None` selects nothing (no selector); an empty one, every pod in
/// the namespace (policy/v1).
fn budget_selector(pdb: &PodDisruptionBudget) -> Result<Option<Selector>, String> {
    util::selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()))
}

impl Controller {
    /// The replicas the controllers of `pods` ask for (kube's `getExpectedScale`), or why
    /// that cannot be known.
    fn expected_scale(&self, pods: &[Arc<Pod>]) -> Result<i32, String> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for pod in pods {
            let Some(r) = controller_of(&**pod) else {
                return Err(format!("found no controllers for pod {:?}", pod.name_any()));
            };
            // A Deployment's ReplicaSets count once, as their Deployment.
            let (uid, replicas) = match r.kind.as_str() {
                "ReplicaSet" => {
                    let rs = self
                        .replicasets
                        .get_by_uid(&r.uid)
                        .ok_or_else(|| format!("replicaset {} not found", r.name))?;
                    match controller_of(&*rs).filter(|o| o.kind == "Deployment") {
                        Some(d) => {
                            let d = self
                                .deployments
                                .get_by_uid(&d.uid)
                                .ok_or_else(|| format!("deployment {} not found", d.name))?;
                            (
                                d.metadata.uid.clone(),
                                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                            )
                        }
                        None => (
                            rs.metadata.uid.clone(),
                            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        ),
                    }
                }
                "ReplicationController" => {
                    let rc = self
                        .rcs
                        .get_by_uid(&r.uid)
                        .ok_or_else(|| format!("replicationcontroller {} not found", r.name))?;
                    (
                        rc.metadata.uid.clone(),
                        rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    )
                }
                "StatefulSet" => {
                    let ss = self
                        .statefulsets
                        .get_by_uid(&r.uid)
                        .ok_or_else(|| format!("statefulset {} not found", r.name))?;
                    (
                        ss.metadata.uid.clone(),
                        ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    )
                }
                other => {
                    return Err(format!(
                        "pod {:?} is controlled by a {other}, which has no scale this controller knows",
                        pod.name_any()
                    ));
                }
            };
            if seen.insert(uid) {
                total += replicas;
            }
        }
        Ok(total)
    }

    async fn sync(&self, key: &str) -> SyncResult {
        let Some(pdb) = self.pdbs.get(key) else {
            return Ok(None);
        };
        let (ns, _) = split_key(key);
        let spec = pdb.spec.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = match budget_selector(&pdb) {
            Ok(Some(sel)) => self
                .pods
                .list_namespace(ns.unwrap_or_default())
                .into_iter()
                .filter(|p| sel.matches(util::labels(&**p)))
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                self.events.warning(
                    pdb.object_ref(&()),
                    "InvalidSelector",
                    "Sync",
                    format!("invalid selector: {e}"),
                );
                return Ok(None);
            }
        };
        let counted: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
            (Some(max), _) => match self.expected_scale(&counted) {
                Ok(scale) => (scale, (scale - util::scaled(Some(max), scale, true)).max(0)),
                Err(e) => return self.failed(&pdb, e).await,
            },
            (None, Some(IntOrString::Int(min))) => (counted.len() as i32, *min),
            (None, Some(min)) => match self.expected_scale(&counted) {
                Ok(scale) => (scale, util::scaled(Some(min), scale, true)),
                Err(e) => return self.failed(&pdb, e).await,
            },
            (None, None) => (counted.len() as i32, 0),
        };

        // Evictions not yet seen as deletions still count against the budget, for a while.
        let now = chrono::Utc::now().timestamp_millis();
        let mut again: Option<Duration> = None;
        let mut disrupted: BTreeMap<String, k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> =
            BTreeMap::new();
        for (name, at) in pdb
            .status
            .as_ref()
            .and_then(|s| s.disrupted_pods.clone())
            .unwrap_or_default()
        {
            let live = counted.iter().any(|p| p.name_any() == name);
            let expires = at.0.as_millisecond() + DELETION_TIMEOUT.as_millis() as i64;
            if live && expires > now {
                again = util::min_some(again, Some(Duration::from_millis((expires - now) as u64)));
                disrupted.insert(name, at);
            }
        }
        let healthy = counted
            .iter()
            .filter(|p| util::is_ready(p) && !disrupted.contains_key(&p.name_any()))
            .count() as i32;
        let allowed = (healthy - desired).max(0);
        let condition = if allowed > 0 {
            json!({"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods", "message": ""})
        } else {
            json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": ""})
        };
        self.write(&pdb, json!({
            "observedGeneration": pdb.metadata.generation,
            "disruptedPods": if disrupted.is_empty() { serde_json::Value::Null } else { json!(disrupted) },
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
        }), condition)
        .await?;
        Ok(again)
    }

    /// A budget whose expected count cannot be known allows nothing, and says why.
    async fn failed(&self, pdb: &PodDisruptionBudget, why: String) -> SyncResult {
        self.events.warning(
            pdb.object_ref(&()),
            "CalculateExpectedPodCountFailed",
            "Sync",
            format!("Failed to calculate the number of expected pods: {why}"),
        );
        self.write(
            pdb,
            json!({"observedGeneration": pdb.metadata.generation, "disruptionsAllowed": 0}),
            json!({"type": "DisruptionAllowed", "status": "False", "reason": "SyncFailed", "message": why}),
        )
        .await?;
        Ok(None)
    }

    /// Writes the status, guarded by the resourceVersion it was computed from so that an
    /// eviction taken meanwhile is never given back.
    async fn write(
        &self,
        pdb: &PodDisruptionBudget,
        mut status: serde_json::Value,
        condition: serde_json::Value,
    ) -> Result<(), Error> {
        let current = serde_json::to_value(&pdb.status).unwrap_or_default();
        let old_condition = current
            .get("conditions")
            .and_then(|c| c.as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"));
        let mut condition = condition;
        condition["lastTransitionTime"] = match old_condition {
            Some(c) if c["status"] == condition["status"] && c["reason"] == condition["reason"] => {
                c["lastTransitionTime"].clone()
            }
            _ => json!(util::now()),
        };
        condition["observedGeneration"] = json!(pdb.metadata.generation);
        status["conditions"] = json!([condition]);
        let same = status.as_object().is_some_and(|m| {
            m.iter()
                .all(|(k, v)| current.get(k).unwrap_or(&serde_json::Value::Null) == v)
        });
        if same {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": pdb.metadata.resource_version},
            "status": status,
        });
        match util::merge_patch_status(&self.client, pdb, &patch).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
