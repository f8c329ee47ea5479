//! The scheduling loop: a cache of nodes, RuntimeClasses and the pods placed on each node,
//! fed by watches; a queue of pending pods; and bindings sent concurrently.
//!
//! One task owns all of it, so no lock is taken on the scheduling path. A decision is
//! made in memory and *assumed* at once (the pod's requests are added to its node before
//! the binding is even sent), so a burst of pods spreads correctly without waiting for the
//! watch to report each binding, as kube-scheduler's assume cache does.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use rand::Rng;
use skiff_informer::key_of;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::framework::{self, NodeInfo, PodInfo, Requirements, Unfit};
use crate::report::{self, Report};

/// A pod's namespace and name.
type PodKey = String;

/// Backoff after a failed attempt: 1 s, doubling per attempt, at most 10 s
/// (kube-scheduler's podInitialBackoffSeconds and podMaxBackoffSeconds).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What changed in one kind the scheduler follows, from its informer.
#[derive(Debug)]
pub(crate) enum Change<K> {
    Applied(K),
    Deleted(K),
}

pub(crate) enum Msg {
    Pods(Box<Change<Pod>>),
    Nodes(Box<Change<Node>>),
    RuntimeClasses(Box<Change<RuntimeClass>>),
    Claims(Box<Change<PersistentVolumeClaim>>),
    Volumes(Box<Change<PersistentVolume>>),
    Bound {
        key: PodKey,
        node: String,
        result: Result<(), BindFailure>,
    },
}

#[derive(Debug)]
pub(crate) enum BindFailure {
    /// The pod is gone, or already bound elsewhere: nothing to retry.
    Final,
    /// Anything else: try again after a backoff.
    Retry,
}

#[derive(Default)]
struct NodeEntry {
    /// `None` while pods are known on a node whose object is not (or no longer) there.
    node: Option<Node>,
    info: NodeInfo,
}

/// A pod counted on a node: bound (seen bound through the watch) or assumed.
struct Placed {
    node: String,
    info: PodInfo,
    /// While the binding is in flight: the latest pending version of the pod and its
    /// attempts, to requeue it if the binding fails.
    assumed: Option<(Arc<Pod>, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    /// Failed; waits for a cluster change that might make room.
    Unschedulable,
}

struct Queued {
    pod: Arc<Pod>,
    info: PodInfo,
    attempts: u32,
    state: State,
    backoff_until: Instant,
    /// Bumped on every state change; queue entries of older generations are stale.
    generation: u64,
}

/// kube-scheduler's scheduling queue: active pods in arrival order, pods in backoff by
/// deadline, and unschedulable pods that move back on a cluster change.
#[derive(Default)]
struct Queue {
    pods: HashMap<PodKey, Queued>,
    active: VecDeque<(PodKey, u64)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, PodKey)>>,
    generation: u64,
}

impl Queue {
    fn set_state(&mut self, key: &str, state: State) {
        let Some(q) = self.pods.get_mut(key) else {
            return;
        };
        self.generation += 1;
        q.generation = self.generation;
        q.state = state;
        match state {
            State::Active => self.active.push_back((key.to_string(), self.generation)),
            State::Backoff => {
                self.backoff
                    .push(Reverse((q.backoff_until, self.generation, key.to_string())));
            }
            State::Unschedulable => {}
        }
    }

    /// Active if its backoff is over, else into backoff.
    fn activate(&mut self, key: &str, now: Instant) {
        let Some(q) = self.pods.get(key) else {
            return;
        };
        let state = if q.backoff_until <= now {
            State::Active
        } else {
            State::Backoff
        };
        self.set_state(key, state);
    }

    fn pop_active(&mut self) -> Option<PodKey> {
        while let Some((key, generation)) = self.active.pop_front() {
            if self
                .pods
                .get(&key)
                .is_some_and(|q| q.generation == generation && q.state == State::Active)
            {
                return Some(key);
            }
        }
        None
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((deadline, generation, _))) = self.backoff.peek() {
            if *deadline > now {
                return;
            }
            let generation = *generation;
            let Some(Reverse((_, _, key))) = self.backoff.pop() else {
                return;
            };
            if self
                .pods
                .get(&key)
                .is_some_and(|q| q.generation == generation && q.state == State::Backoff)
            {
                self.set_state(&key, State::Active);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((d, _, _))| *d)
    }

    /// kube-scheduler's "move to active queue on cluster event".
    fn move_unschedulable(&mut self, now: Instant) {
        let keys: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, q)| q.state == State::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.activate(&key, now);
        }
    }
}

fn backoff(attempts: u32) -> Duration {
    INITIAL_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

pub(crate) struct Scheduler {
    name: String,
    client: kube::Client,
    nodes: BTreeMap<String, NodeEntry>,
    placed: HashMap<PodKey, Placed>,
    runtime_classes: HashMap<String, RuntimeClass>,
    /// PersistentVolumeClaims by namespace/name and PersistentVolumes by name, for pods
    /// that mount claims.
    claims: HashMap<String, PersistentVolumeClaim>,
    volumes: HashMap<String, PersistentVolume>,
    queue: Queue,
    /// Where binding tasks report back.
    tx: UnboundedSender<Msg>,
    bind_slots: Arc<Semaphore>,
    reports: UnboundedSender<Report>,
}

impl Scheduler {
    pub fn new(
        name: String,
        client: kube::Client,
        parallelism: usize,
        tx: UnboundedSender<Msg>,
        reports: UnboundedSender<Report>,
    ) -> Scheduler {
        Scheduler {
            name,
            client,
            nodes: BTreeMap::new(),
            placed: HashMap::new(),
            runtime_classes: HashMap::new(),
            claims: HashMap::new(),
            volumes: HashMap::new(),
            queue: Queue::default(),
            tx,
            bind_slots: Arc::new(Semaphore::new(parallelism.max(1))),
            reports,
        }
    }

    pub fn handle(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Pods(change) => self.pods_changed(*change, now),
            Msg::Nodes(change) => self.nodes_changed(*change, now),
            Msg::RuntimeClasses(change) => self.runtime_classes_changed(*change, now),
            Msg::Claims(change) => {
                apply_change(&mut self.claims, *change);
                self.queue.move_unschedulable(now);
            }
            Msg::Volumes(change) => {
                apply_change(&mut self.volumes, *change);
                self.queue.move_unschedulable(now);
            }
            Msg::Bound { key, node, result } => self.bound(key, node, result, now),
        }
    }

    fn pods_changed(&mut self, change: Change<Pod>, now: Instant) {
        match change {
            Change::Applied(pod) => self.pod_applied(pod, now),
            Change::Deleted(pod) => self.pod_deleted(&key_of(&pod), now),
        }
    }

    fn nodes_changed(&mut self, change: Change<Node>, now: Instant) {
        match change {
            Change::Applied(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                self.nodes.entry(name).or_default().node = Some(node);
                self.queue.move_unschedulable(now);
            }
            Change::Deleted(node) => {
                self.node_gone(node.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    fn runtime_classes_changed(&mut self, change: Change<RuntimeClass>, now: Instant) {
        match change {
            Change::Applied(rc) => {
                let name = rc.metadata.name.clone().unwrap_or_default();
                self.runtime_classes.insert(name, rc);
            }
            Change::Deleted(rc) => {
                self.runtime_classes
                    .remove(rc.metadata.name.as_deref().unwrap_or_default());
            }
        }
        self.queue.move_unschedulable(now);
    }

    fn node_gone(&mut self, name: &str) {
        if let Some(entry) = self.nodes.get_mut(name) {
            entry.node = None;
            if entry.info.pods == 0 {
                self.nodes.remove(name);
            }
        }
    }

    fn pod_applied(&mut self, pod: Pod, now: Instant) {
        let key = key_of(&pod);
        if let Some(node) = node_name(&pod) {
            // Bound: count it on its node (again, if it was assumed or has changed).
            self.queue.pods.remove(&key);
            let node = node.to_string();
            let info = PodInfo::new(&pod);
            self.unplace(&key);
            self.nodes.entry(node.clone()).or_default().info.add(&info);
            self.placed.insert(
                key,
                Placed {
                    node,
                    info,
                    assumed: None,
                },
            );
            return;
        }
        let ours = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|s| s.is_empty() || s == self.name);
        if !ours || pod.metadata.deletion_timestamp.is_some() {
            self.queue.pods.remove(&key);
            return;
        }
        if let Some(placed) = self.placed.get_mut(&key)
            && let Some((assumed, _)) = placed.assumed.as_mut()
        {
            // Its binding is in flight; keep the newest version in case it fails.
            *assumed = Arc::new(pod);
            return;
        }
        match self.queue.pods.get_mut(&key) {
            Some(q) => {
                let changed =
                    q.pod.spec != pod.spec || q.pod.metadata.labels != pod.metadata.labels;
                q.pod = Arc::new(pod);
                if changed {
                    q.info = PodInfo::new(&q.pod);
                    if q.state == State::Unschedulable {
                        self.queue.activate(&key, now);
                    }
                }
            }
            None => {
                let info = PodInfo::new(&pod);
                self.queue.pods.insert(
                    key.clone(),
                    Queued {
                        pod: Arc::new(pod),
                        info,
                        attempts: 0,
                        state: State::Active,
                        backoff_until: now,
                        generation: 0,
                    },
                );
                self.queue.set_state(&key, State::Active);
            }
        }
    }

    fn pod_deleted(&mut self, key: &str, now: Instant) {
        self.queue.pods.remove(key);
        if self.unplace(key) {
            // Room was freed.
            self.queue.move_unschedulable(now);
        }
    }

    /// Stops counting a pod on its node; whether it was counted.
    fn unplace(&mut self, key: &str) -> bool {
        let Some(old) = self.placed.remove(key) else {
            return false;
        };
        if let Some(entry) = self.nodes.get_mut(&old.node) {
            entry.info.remove(&old.info);
            if entry.node.is_none() && entry.info.pods == 0 {
                self.nodes.remove(&old.node);
            }
        }
        true
    }

    fn bound(&mut self, key: PodKey, node: String, result: Result<(), BindFailure>, now: Instant) {
        let Err(failure) = result else {
            // The watch confirms the binding.
            return;
        };
        let still_assumed = self
            .placed
            .get(&key)
            .is_some_and(|p| p.node == node && p.assumed.is_some());
        if !still_assumed {
            return;
        }
        let assumed = self.placed.get_mut(&key).and_then(|p| p.assumed.take());
        self.unplace(&key);
        if let (BindFailure::Retry, Some((pod, attempts))) = (failure, assumed) {
            let attempts = attempts + 1;
            let info = PodInfo::new(&pod);
            self.queue.pods.insert(
                key.clone(),
                Queued {
                    pod,
                    info,
                    attempts,
                    state: State::Backoff,
                    backoff_until: now + backoff(attempts),
                    generation: 0,
                },
            );
            self.queue.set_state(&key, State::Backoff);
        }
        self.queue.move_unschedulable(now);
    }

    /// Moves pods whose backoff ended to the active queue; the next deadline, if any.
    pub fn flush_backoff(&mut self) -> Option<Instant> {
        self.queue.flush_backoff(Instant::now());
        self.queue.next_deadline()
    }

    /// Schedules the next active pod; false when there is none.
    pub fn schedule_next(&mut self) -> bool {
        let Some(key) = self.queue.pop_active() else {
            return false;
        };
        let Some(q) = self.queue.pods.get(&key) else {
            return true;
        };
        let pod = q.pod.clone();
        let decision = self.decide(&pod, &q.info);
        match decision {
            Ok(node) => self.assume_and_bind(key, pod, node),
            Err(message) => {
                let now = Instant::now();
                let Some(q) = self.queue.pods.get_mut(&key) else {
                    return true;
                };
                q.attempts += 1;
                q.backoff_until = now + backoff(q.attempts);
                self.queue.set_state(&key, State::Unschedulable);
                tracing::debug!(pod = %key, %message, "unschedulable");
                let set_condition = !report::has_condition(&pod, &message);
                let _ = self.reports.send(Report::Unschedulable {
                    pod,
                    message,
                    set_condition,
                });
            }
        }
        true
    }

    /// The PersistentVolumes the pod's bound claims use; a claim that does not exist is
    /// the reason no node fits. Unbound claims wait for this decision: the volume
    /// controller provisions a local volume on the node chosen.
    fn claimed_volumes(&self, pod: &Pod) -> Result<Vec<&PersistentVolume>, Unfit> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(pvc) = &v.persistent_volume_claim else {
                continue;
            };
            let claim = self
                .claims
                .get(&format!("{ns}/{}", pvc.claim_name))
                .ok_or_else(|| Unfit::ClaimNotFound(pvc.claim_name.clone()))?;
            if let Some(pv) = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .and_then(|n| self.volumes.get(n))
            {
                out.push(pv);
            }
        }
        Ok(out)
    }

    /// The best node for the pod (a random one among equals), or the failure message.
    fn decide(&self, pod: &Pod, info: &PodInfo) -> Result<String, String> {
        let nodes = self.nodes.values().filter(|e| e.node.is_some()).count();
        let volumes = self
            .claimed_volumes(pod)
            .map_err(|unfit| framework::unschedulable_message(nodes, &[unfit]))?;
        let runtime_class = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .and_then(|n| self.runtime_classes.get(n));
        let requirements = Requirements::new(pod, runtime_class)
            .map_err(|unfit| framework::unschedulable_message(nodes, &[unfit]))?;
        let mut best: Vec<&str> = Vec::new();
        let mut best_score = i64::MIN;
        let mut unfit: Vec<Unfit> = Vec::new();
        for (name, entry) in &self.nodes {
            let Some(node) = entry.node.as_ref() else {
                continue;
            };
            let fits = framework::feasible_on(pod, &requirements, info, node, &entry.info)
                .and_then(|()| {
                    if framework::volumes_fit(&volumes, node) {
                        Ok(())
                    } else {
                        Err(Unfit::VolumeNodeAffinity)
                    }
                });
            match fits {
                Ok(()) => {
                    let score = framework::score_on(pod, info, node, &entry.info);
                    if score > best_score {
                        best_score = score;
                        best.clear();
                    }
                    if score == best_score {
                        best.push(name);
                    }
                }
                Err(u) => unfit.push(u),
            }
        }
        match best.len() {
            0 => Err(framework::unschedulable_message(nodes, &unfit)),
            1 => Ok(best[0].to_string()),
            n => Ok(best[rand::rng().random_range(0..n)].to_string()),
        }
    }

    fn assume_and_bind(&mut self, key: PodKey, pod: Arc<Pod>, node: String) {
        let Some(q) = self.queue.pods.remove(&key) else {
            return;
        };
        self.nodes
            .entry(node.clone())
            .or_default()
            .info
            .add(&q.info);
        self.placed.insert(
            key.clone(),
            Placed {
                node: node.clone(),
                info: q.info,
                assumed: Some((pod.clone(), q.attempts)),
            },
        );
        let client = self.client.clone();
        let slots = self.bind_slots.clone();
        let tx = self.tx.clone();
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            let result = bind(client, &pod, &node).await;
            if result.is_ok() {
                let _ = reports.send(Report::Scheduled {
                    pod,
                    node: node.clone(),
                });
            }
            let _ = tx.send(Msg::Bound { key, node, result });
        });
    }
}

/// Applies a watch change to a cache keyed by `namespace/name`.
fn apply_change<T: kube::Resource>(cache: &mut HashMap<String, T>, change: Change<T>) {
    match change {
        Change::Applied(o) => {
            cache.insert(key_of(&o), o);
        }
        Change::Deleted(o) => {
            cache.remove(&key_of(&o));
        }
    }
}

/// POST pods/<name>/binding, as kube-scheduler's default binder does.
async fn bind(client: kube::Client, pod: &Pod, node: &str) -> Result<(), BindFailure> {
    let meta = &pod.metadata;
    let name = meta.name.as_deref().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client, meta.namespace.as_deref().unwrap_or_default());
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            tracing::debug!(pod = name, node, message = %status.message, "binding refused");
            Err(BindFailure::Final)
        }
        Err(e) => {
            tracing::warn!(pod = name, node, error = %e, "binding failed");
            Err(BindFailure::Retry)
        }
    }
}
