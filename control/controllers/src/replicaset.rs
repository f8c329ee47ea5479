//! The ReplicaSet and ReplicationController controllers (one implementation, as in
//! Kubernetes): keep `replicas` pods matching the selector, adopting orphans that match and
//! releasing owned pods that stopped matching, and report what they see in status.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use skiff_selectors::LabelSelector as Selector;

use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informer::{Change, Informer, controller_of, key_of, split_key};
use crate::pods::PodControl;
use crate::util::{self, count, num};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers};

/// At most this many pods are created or deleted in one sync (kube's `burstReplicas`).
const BURST_REPLICAS: usize = 500;

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait ReplicaKind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    const NAME: &'static str;
    fn informer(informers: &Informers) -> Arc<Informer<Self>>;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    /// The selector; `Ok(None)` selects nothing.
    fn selector(&self) -> Result<Option<Selector>, String>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn status(&self) -> Value;
}

/// The accessors ReplicaSet and ReplicationController share: the same fields in specs of
/// two types.
macro_rules! replica_fields {
    () => {
        fn replicas(&self) -> i32 {
            self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
        }
        fn min_ready_seconds(&self) -> i32 {
            self.spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
        }
        fn template(&self) -> Option<&PodTemplateSpec> {
            self.spec.as_ref()?.template.as_ref()
        }
        fn status(&self) -> Value {
            serde_json::to_value(&self.status).unwrap_or(Value::Null)
        }
    };
}

impl ReplicaKind for ReplicaSet {
    const NAME: &'static str = "replicaset-controller";
    fn informer(informers: &Informers) -> Arc<Informer<Self>> {
        informers.replicasets()
    }
    fn selector(&self) -> Result<Option<Selector>, String> {
        util::selector(self.spec.as_ref().map(|s| &s.selector))
    }
    replica_fields!();
}

impl ReplicaKind for ReplicationController {
    const NAME: &'static str = "replicationcontroller-controller";
    fn informer(informers: &Informers) -> Arc<Informer<Self>> {
        informers.replicationcontrollers()
    }
    fn selector(&self) -> Result<Option<Selector>, String> {
        let spec = self.spec.as_ref();
        // The API server defaults an RC's selector to its template's labels.
        let labels = spec.and_then(|s| s.selector.clone()).or_else(|| {
            spec.and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
        });
        match labels {
            Some(l) if !l.is_empty() => Selector::from_parts(&l, &[]).map(Some).map_err(|e| e.0),
            _ => Ok(None),
        }
    }
    replica_fields!();
}

struct Controller<K: ReplicaKind> {
    owners: Arc<Informer<K>>,
    pods: Arc<Informer<Pod>>,
    client: kube::Client,
    queue: Arc<WorkQueue>,
    expectations: Expectations,
    events: Recorder,
}

pub fn start<K: ReplicaKind>(informers: &Arc<Informers>, events: &Recorder, workers: usize) {
    let owners = K::informer(informers);
    let pods = informers.pods();
    let queue = WorkQueue::new();
    let c = Arc::new(Controller::<K> {
        owners: owners.clone(),
        pods: pods.clone(),
        client: informers.client().clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        events: events.for_controller(K::NAME),
    });
    owners.enqueue_keys(&queue);
    {
        let c = c.clone();
        pods.subscribe(move |change| c.pod_changed(change));
    }
    let ready = {
        let (owners, pods) = (owners.clone(), pods.clone());
        async move {
            owners.synced().await;
            pods.synced().await;
        }
    };
    run_workers(K::NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

impl<K: ReplicaKind> Controller<K> {
    /// The owner of `pod` this controller runs, by its controller reference.
    fn owner_of(&self, pod: &Pod) -> Option<Arc<K>> {
        let r = controller_of(pod)?;
        if r.kind != K::kind(&()) {
            return None;
        }
        let owner = self.owners.get_by_uid(&r.uid)?;
        (owner.meta().namespace == pod.metadata.namespace).then_some(owner)
    }

    /// Owners in the pod's namespace whose selector matches it (for an orphan).
    fn matching_owners(&self, pod: &Pod) -> Vec<Arc<K>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = util::labels(pod);
        self.owners
            .list_namespace(ns)
            .into_iter()
            .filter(|o| matches!(o.selector(), Ok(Some(s)) if !s.is_empty() && s.matches(labels)))
            .collect()
    }

    fn pod_changed(&self, change: &Change<'_, Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    return self.pod_gone(pod);
                }
                if let Some(owner) = self.owner_of(pod) {
                    let key = key_of(&*owner);
                    let satisfied = self.expectations.creation_observed(&key);
                    self.enqueue_observed(key, satisfied);
                } else if controller_of(&***pod).is_none() {
                    for owner in self.matching_owners(pod) {
                        self.queue.add(key_of(&*owner));
                    }
                }
            }
            Change::Updated { old, new } => {
                if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none()
                {
                    return self.pod_gone(new);
                }
                let old_owner = self.owner_of(old);
                let new_owner = self.owner_of(new);
                if let Some(o) = &old_owner
                    && new_owner
                        .as_ref()
                        .is_none_or(|n| n.meta().uid != o.meta().uid)
                {
                    self.queue.add(key_of(&**o));
                }
                if let Some(owner) = new_owner {
                    let same_owner = old_owner
                        .as_ref()
                        .is_some_and(|o| o.meta().uid == owner.meta().uid);
                    // What the owner's sync reads of its pods: their labels (selector and
                    // fully-labeled count), whether they count (finished or not), whether
                    // they are ready. Binding, addresses, container states and the other
                    // status updates of a starting pod are not: with a thousand pods
                    // starting, each would be one more full sync of their owner.
                    // (Scale-down ranks pods by phase, node and restarts, but only in a
                    // sync that something else started.)
                    let reshaped = old.metadata.labels != new.metadata.labels
                        || util::is_active(old) != util::is_active(new);
                    let ready_changed = util::is_ready(old) != util::is_ready(new);
                    let status_only = same_owner && !reshaped;
                    if status_only && !ready_changed {
                        return;
                    }
                    let key = key_of(&*owner);
                    // A pod that became ready is available minReadySeconds later.
                    let min_ready = owner.min_ready_seconds();
                    if min_ready > 0 && ready_changed && util::is_ready(new) {
                        self.queue
                            .add_after(key.clone(), Duration::from_secs(min_ready as u64 + 1));
                    }
                    if status_only {
                        self.queue.add_batched(key);
                    } else {
                        self.queue.add(key);
                    }
                } else if controller_of(&***new).is_none()
                    && (old.metadata.labels != new.metadata.labels
                        || controller_of(&***old).is_some())
                {
                    for owner in self.matching_owners(new) {
                        self.queue.add(key_of(&*owner));
                    }
                }
            }
            Change::Deleted(pod) => self.pod_gone(pod),
        }
    }

    fn pod_gone(&self, pod: &Pod) {
        if let Some(owner) = self.owner_of(pod) {
            let key = key_of(&*owner);
            let satisfied = self.expectations.deletion_observed(&key, &key_of(pod));
            self.enqueue_observed(key, satisfied);
        }
    }

    /// After a creation or deletion the owner waited for: its sync now, when that was the
    /// last it waited for (`satisfied`: the next batch of pods may be due), else within the
    /// status batch window (the sync would only count pods).
    fn enqueue_observed(&self, key: String, satisfied: bool) {
        if satisfied {
            self.queue.add(key);
        } else {
            self.queue.add_batched(key);
        }
    }

    async fn sync(&self, key: &str) -> SyncResult {
        let Some(owner) = self.owners.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or_default();
        let selector = match owner.selector() {
            Ok(s) => s,
            Err(e) => {
                self.events.warning(
                    owner.object_ref(&()),
                    "InvalidSelector",
                    "Sync",
                    format!("invalid selector: {e}"),
                );
                return Ok(None);
            }
        };
        let needs_sync = self.expectations.satisfied(key);
        let pods = self.claim(&owner, selector.as_ref(), ns).await?;
        let mut manage_error = None;
        if needs_sync && owner.meta().deletion_timestamp.is_none() {
            manage_error = self.manage(&owner, key, ns, &pods).await.err();
        }
        let again = self
            .write_status(&owner, &pods, manage_error.as_ref())
            .await?;
        match manage_error {
            Some(e) => Err(e),
            None => Ok(again),
        }
    }

    /// The active pods this owner controls, after adopting matching orphans and releasing
    /// owned pods that no longer match (as kube's `PodControllerRefManager`).
    async fn claim(
        &self,
        owner: &K,
        selector: Option<&Selector>,
        ns: &str,
    ) -> Result<Vec<Arc<Pod>>, Error> {
        // Its own pods (the owner index) and the namespace's orphans: a pod another
        // controller owns is never a candidate, and is skipped without reading its labels.
        let uid = owner.meta().uid.as_deref().unwrap_or_default();
        let mut active: Vec<Arc<Pod>> = self
            .pods
            .owned_by(uid)
            .into_iter()
            .filter(|p| util::is_active(p) && controller_of(&**p).is_some_and(|r| r.uid == uid))
            .collect();
        active.extend(
            self.pods
                .orphans(ns)
                .into_iter()
                .filter(|p| util::is_active(p)),
        );
        crate::refs::claim(&self.client, owner, ns, active, |pod: &Pod| {
            selector.is_some_and(|s| !s.is_empty() && s.matches(util::labels(pod)))
        })
        .await
    }

    /// Creates or deletes pods until `replicas` are active.
    async fn manage(&self, owner: &K, key: &str, ns: &str, pods: &[Arc<Pod>]) -> Result<(), Error> {
        let want = owner.replicas().max(0) as usize;
        let have = pods.len();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let control = PodControl {
            api: &api,
            expectations: &self.expectations,
            events: &self.events,
            owner: owner.object_ref(&()),
        };
        if have < want {
            let n = (want - have).min(BURST_REPLICAS);
            let Some(template) = owner.template() else {
                return Ok(());
            };
            let pods = vec![pod_from_template(owner, template); n];
            control.create(key, &pods).await?;
        } else if have > want {
            let n = (have - want).min(BURST_REPLICAS);
            let mut ranked: Vec<&Arc<Pod>> = pods.iter().collect();
            ranked.sort_by(|a, b| deletion_rank(a, b));
            ranked.truncate(n);
            control.delete(key, &ranked).await?;
        }
        Ok(())
    }

    /// Writes status when what the pods say differs from it; returns when to look again
    /// for pods that will become available.
    async fn write_status(
        &self,
        owner: &K,
        pods: &[Arc<Pod>],
        manage_error: Option<&Error>,
    ) -> Result<Option<Duration>, Error> {
        let template_labels: BTreeMap<String, String> = owner
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let min_ready = owner.min_ready_seconds();
        let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
        let mut again: Option<Duration> = None;
        for pod in pods {
            let labels = util::labels(&**pod);
            if template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            {
                fully_labeled += 1;
            }
            if util::is_ready(pod) {
                ready += 1;
            }
            match util::available(pod, min_ready) {
                (true, _) => available += 1,
                (false, Some(left)) => again = Some(again.map_or(left, |a| a.min(left))),
                _ => {}
            }
        }
        let current = owner.status();
        let mut conditions: Vec<Value> = current
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let had_failure = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
        conditions.retain(|c| c["type"] != "ReplicaFailure");
        if let Some(e) = manage_error {
            let previous = current
                .get("conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "ReplicaFailure"))
                .cloned();
            let reason = if pods.len() < owner.replicas().max(0) as usize {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(previous.unwrap_or_else(|| {
                json!({"type": "ReplicaFailure", "status": "True", "reason": reason,
                       "message": e.to_string(), "lastTransitionTime": util::now()})
            }));
        }
        let replicas = pods.len() as i32;
        let observed = owner.meta().generation;
        let same = num(&current, "replicas") == i64::from(replicas)
            && num(&current, "fullyLabeledReplicas") == i64::from(fully_labeled)
            && num(&current, "readyReplicas") == i64::from(ready)
            && num(&current, "availableReplicas") == i64::from(available)
            && current.get("observedGeneration").and_then(Value::as_i64) == observed
            && manage_error.is_none()
            && !had_failure;
        if same {
            return Ok(again);
        }
        let patch = json!({"status": {
            "replicas": replicas,
            "fullyLabeledReplicas": count(fully_labeled),
            "readyReplicas": count(ready),
            "availableReplicas": count(available),
            "observedGeneration": observed,
            "conditions": if conditions.is_empty() { Value::Null } else { Value::Array(conditions) },
        }});
        match util::merge_patch_status(&self.client, owner, &patch).await {
            Ok(_) => Ok(again),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The pod an owner makes from its template (kube's `GetPodFromTemplate`).
fn pod_from_template<K: ReplicaKind>(owner: &K, template: &PodTemplateSpec) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let name = owner.meta().name.clone().unwrap_or_default();
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![util::controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Which pod goes first on scale-down, as kube's `ActivePods` orders them: unscheduled
/// before scheduled, pending before unknown before running, not ready before ready, a
/// lower `controller.kubernetes.io/pod-deletion-cost` first, ready for less time first,
/// more restarts first, newer first.
fn deletion_rank(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let assigned = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let cost = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
            .and_then(|c| c.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let ready_since = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.as_millisecond())
    };
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| {
                cs.iter().map(|c| c.restart_count).max().unwrap_or(0)
            })
    };
    let created = |p: &Pod| {
        p.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
    };
    assigned(a)
        .cmp(&assigned(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| util::is_ready(a).cmp(&util::is_ready(b)))
        .then_with(|| cost(a).cmp(&cost(b)))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            // Ready more recently goes first.
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}
