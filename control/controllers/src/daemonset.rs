//! The DaemonSet controller: one pod on every node the DaemonSet's pod fits (its node
//! selector, required node affinity and taints, judged by the scheduler's own filters),
//! none elsewhere; rolling updates node by node within maxUnavailable and maxSurge; a
//! ControllerRevision per template, so `kubectl rollout history` and `undo` work.
//!
//! As in Kubernetes the controller does not bind its pods itself: each is made with a
//! required node affinity on its node's name and the tolerations a daemon needs, and the
//! scheduler places it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::deployment::template_hash;
use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informer::{Change, Informer, controller_of, key_of, split_key};
use crate::pods::PodControl;
use crate::revisions::{self, REVISION_LABEL, revision_of};
use crate::util::{self, count, num};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers};

pub const NAME: &str = "daemonset-controller";
const GENERATION_LABEL: &str = "pod-template-generation";
/// A failed daemon pod is replaced after this, doubling to `MAX_BACKOFF` (kube's).
const BASE_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

struct Controller {
    daemonsets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    client: kube::Client,
    expectations: Expectations,
    events: Recorder,
    /// (DaemonSet key, node) to failures in a row and the last one's time.
    failures: Mutex<HashMap<(String, String), (u32, Instant)>>,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize) {
    let daemonsets = informers.daemonsets();
    let pods = informers.pods();
    let nodes = informers.nodes();
    let revisions = informers.controllerrevisions();
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        daemonsets: daemonsets.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        revisions: revisions.clone(),
        client: informers.client().clone(),
        expectations: Expectations::default(),
        events: events.for_controller(NAME),
        failures: Mutex::default(),
    });
    daemonsets.enqueue_keys(&queue);
    {
        let (c, queue) = (c.clone(), queue.clone());
        pods.subscribe(move |change| {
            let (pod, created, gone) = match change {
                Change::Added(p) => (*p, true, p.metadata.deletion_timestamp.is_some()),
                Change::Updated { old, new } => (
                    *new,
                    false,
                    new.metadata.deletion_timestamp.is_some()
                        && old.metadata.deletion_timestamp.is_none(),
                ),
                Change::Deleted(p) => (*p, false, true),
            };
            if let Some(ds) = c.owner_of(pod) {
                let key = key_of(&*ds);
                if created {
                    c.expectations.creation_observed(&key);
                }
                if gone {
                    c.expectations.deletion_observed(&key, &key_of(&**pod));
                }
                queue.add(key);
            }
        });
    }
    {
        // A node's labels, taints or readiness change where daemons belong: every
        // DaemonSet looks again.
        let (daemonsets, queue) = (daemonsets.clone(), queue.clone());
        nodes.subscribe(move |change| {
            let relevant = match change {
                Change::Updated { old, new } => {
                    old.metadata.labels != new.metadata.labels
                        || old.spec.as_ref().map(|s| &s.taints)
                            != new.spec.as_ref().map(|s| &s.taints)
                        || util::node_ready(old) != util::node_ready(new)
                }
                _ => true,
            };
            if relevant {
                for ds in daemonsets.list() {
                    queue.add(key_of(&*ds));
                }
            }
        });
    }
    {
        let (daemonsets, queue) = (daemonsets.clone(), queue.clone());
        revisions.subscribe(move |change| {
            let cr = match change {
                Change::Added(o) | Change::Deleted(o) => *o,
                Change::Updated { new, .. } => *new,
            };
            if let Some(r) = controller_of(&**cr).filter(|r| r.kind == "DaemonSet")
                && let Some(ds) = daemonsets.get_by_uid(&r.uid)
            {
                queue.add(key_of(&*ds));
            }
        });
    }
    let ready = {
        let (d, p, n, r) = (
            daemonsets.clone(),
            pods.clone(),
            nodes.clone(),
            revisions.clone(),
        );
        async move {
            d.synced().await;
            p.synced().await;
            n.synced().await;
            r.synced().await;
        }
    };
    run_workers(NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

/// The node a daemon pod is on, or is meant for (its node-name affinity, before the
/// scheduler binds it).
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

/// The tolerations every daemon pod gets (kube's `AddOrUpdateDaemonPodTolerations`): it
/// stays on a node that is not ready or unreachable, under pressure or cordoned.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut t: Vec<(&str, &str)> = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    t.into_iter()
        .map(|(key, effect)| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        })
        .collect()
}

/// The pod the DaemonSet makes for `node` (or, without a node, the pod it would make,
/// to judge nodes by).
fn daemon_pod(ds: &DaemonSet, template: &PodTemplateSpec, hash: &str, node: Option<&str>) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert(
        GENERATION_LABEL.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let mut spec = template.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations(spec.host_network == Some(true)) {
        if !tolerations
            .iter()
            .any(|have| have.key == t.key && have.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    if let Some(node) = node {
        // Kube's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the node's name replaces the
        // required terms (they were checked against the node already).
        let term = NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            ..Default::default()
        };
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        let node_affinity = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![term],
        });
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![util::controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// What is on one node that the DaemonSet should run on.
#[derive(Default)]
struct OnNode<'a> {
    new: Vec<&'a Arc<Pod>>,
    old: Vec<&'a Arc<Pod>>,
}

impl Controller {
    fn owner_of(&self, pod: &Pod) -> Option<Arc<DaemonSet>> {
        let r = controller_of(pod)?;
        if r.kind != "DaemonSet" {
            return None;
        }
        let ds = self.daemonsets.get_by_uid(&r.uid)?;
        (ds.meta().namespace == pod.metadata.namespace).then_some(ds)
    }

    async fn sync(&self, key: &str) -> SyncResult {
        let Some(ds) = self.daemonsets.get(key) else {
            self.expectations.forget(key);
            self.failures
                .lock()
                .expect("failures")
                .retain(|(set, _), _| set != key);
            return Ok(None);
        };
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or_default().to_string();
        let selector = match util::selector(ds.spec.as_ref().map(|s| &s.selector)) {
            Ok(s) => s,
            Err(e) => {
                self.events.warning(
                    ds.object_ref(&()),
                    "InvalidSelector",
                    "Sync",
                    format!("invalid selector: {e}"),
                );
                return Ok(None);
            }
        };
        // Read before the pods are (see the Job controller).
        let satisfied = self.expectations.satisfied(key);
        let spec = ds.spec.clone().unwrap_or_default();
        let template = spec.template.clone();
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&template, collisions);

        // Its pods: its own and matching orphans (adopted); finished ones too, so failed
        // daemons are seen and replaced.
        let pods = crate::refs::claim_pods(&self.client, &self.pods, &*ds, |pod: &Pod| {
            selector
                .as_ref()
                .is_some_and(|s| !s.is_empty() && s.matches(util::labels(pod)))
        })
        .await?;
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        self.ensure_revision(&ds, &hash, &pods).await?;

        let mut by_node: BTreeMap<String, Vec<&Arc<Pod>>> = BTreeMap::new();
        for p in &pods {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(n) = node_of(p) {
                by_node.entry(n).or_default().push(p);
            }
        }
        let probe = daemon_pod(&ds, &template, &hash, None);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let control = PodControl {
            api: &api,
            expectations: &self.expectations,
            events: &self.events,
            owner: ds.object_ref(&()),
        };
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<&Arc<Pod>> = Vec::new();
        let mut placed: BTreeMap<String, OnNode> = BTreeMap::new();
        let mut again: Option<Duration> = None;
        let (mut misscheduled, mut desired) = (0, 0);
        for node in self.nodes.list() {
            let name = node.name_any();
            let (should_run, keep) = skiff_scheduler::framework::daemon_fits(&probe, &node);
            let here = by_node.remove(&name).unwrap_or_default();
            let (dead, live): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
                here.into_iter().partition(|p| failed(p));
            if should_run {
                desired += 1;
            } else if !live.is_empty() {
                misscheduled += 1;
            }
            if !keep {
                delete.extend(live.iter().copied());
                delete.extend(dead);
                continue;
            }
            if !should_run {
                continue;
            }
            for p in &dead {
                self.events.warning(
                    ds.object_ref(&()),
                    "FailedDaemonPod",
                    "Sync",
                    format!(
                        "Found failed daemon pod {ns}/{} on node {name}, will try to kill it",
                        p.name_any()
                    ),
                );
                let mut failures = self.failures.lock().expect("failures");
                let e = failures
                    .entry((key.to_string(), name.clone()))
                    .or_insert((0, Instant::now()));
                *e = (e.0 + 1, Instant::now());
            }
            delete.extend(dead);
            let mut on = OnNode::default();
            for p in live {
                if revision_of(p) == Some(hash.as_str()) {
                    on.new.push(p);
                } else {
                    on.old.push(p);
                }
            }
            // More than one current pod: the oldest stays.
            if on.new.len() > 1 {
                on.new
                    .sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                delete.extend(on.new.drain(1..));
            }
            if on.new.is_empty() && on.old.is_empty() {
                match self.backoff_left(key, &name) {
                    Some(left) => again = Some(again.map_or(left, |a: Duration| a.min(left))),
                    None => create_on.push(name.clone()),
                }
            }
            placed.insert(name, on);
        }
        if satisfied {
            let pods_for: Vec<Pod> = create_on
                .iter()
                .map(|n| daemon_pod(&ds, &template, &hash, Some(n)))
                .collect();
            let created = control.create(key, &pods_for).await;
            let deleted = control.delete(key, &delete).await;
            created?;
            deleted?;
            if spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.type_.as_deref())
                != Some("OnDelete")
            {
                let rolled = self
                    .roll(&ds, key, &hash, &template, &placed, desired, &control)
                    .await?;
                again = util::min_some(again, rolled);
            }
        }
        let status_again = self
            .write_status(&ds, &hash, &placed, desired, misscheduled)
            .await?;
        Ok(util::min_some(again, status_again))
    }

    fn backoff_left(&self, key: &str, node: &str) -> Option<Duration> {
        let failures = self.failures.lock().expect("failures");
        let (n, at) = *failures.get(&(key.to_string(), node.to_string()))?;
        let delay = BASE_BACKOFF
            .saturating_mul(1 << (n.max(1) - 1).min(12))
            .min(MAX_BACKOFF);
        delay.checked_sub(at.elapsed())
    }

    /// One step of a rolling update: old pods go (and, with maxSurge, new ones come first)
    /// within the unavailability and surge budgets. Returns when to look again.
    #[allow(clippy::too_many_arguments)]
    async fn roll(
        &self,
        ds: &DaemonSet,
        key: &str,
        hash: &str,
        template: &PodTemplateSpec,
        placed: &BTreeMap<String, OnNode<'_>>,
        desired: i32,
        control: &PodControl<'_>,
    ) -> Result<Option<Duration>, Error> {
        let spec = ds.spec.clone().unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let ru = spec.update_strategy.and_then(|s| s.rolling_update);
        let surge = util::scaled(
            ru.as_ref().and_then(|r| r.max_surge.as_ref()),
            desired,
            true,
        );
        let mut unavailable_budget = util::scaled(
            ru.as_ref().and_then(|r| r.max_unavailable.as_ref()),
            desired,
            true,
        );
        if surge == 0 && unavailable_budget == 0 {
            unavailable_budget = 1;
        }
        let mut again = None;
        let mut available = |p: &Pod| match util::available(p, min_ready) {
            (true, _) => true,
            (false, left) => {
                again = util::min_some(again, left);
                false
            }
        };
        let mut unavailable = 0;
        for on in placed.values() {
            if !on.new.iter().chain(&on.old).any(|p| available(p)) {
                unavailable += 1;
            }
        }
        let mut delete: Vec<&Arc<Pod>> = Vec::new();
        let mut create_on: Vec<&str> = Vec::new();
        if surge == 0 {
            // Old pods that are not available go first: they cost nothing.
            let mut old_available = Vec::new();
            for on in placed.values() {
                for p in &on.old {
                    if available(p) {
                        old_available.push(*p);
                    } else {
                        delete.push(p);
                    }
                }
            }
            for p in old_available {
                if unavailable >= unavailable_budget {
                    break;
                }
                delete.push(p);
                unavailable += 1;
            }
        } else {
            let mut surging = placed
                .values()
                .filter(|on| !on.old.is_empty() && !on.new.is_empty())
                .count() as i32;
            for (node, on) in placed {
                if on.old.is_empty() {
                    continue;
                }
                let new_ready = on.new.iter().any(|p| available(p));
                let old_ready = on.old.iter().any(|p| available(p));
                if new_ready || !old_ready {
                    // The new pod serves, or the old one does not anyway.
                    if new_ready || on.new.is_empty() && unavailable < unavailable_budget {
                        delete.extend(on.old.iter().copied());
                    }
                } else if on.new.is_empty() && surging < surge {
                    create_on.push(node);
                    surging += 1;
                }
            }
        }
        let pods_for: Vec<Pod> = create_on
            .iter()
            .map(|n| daemon_pod(ds, template, hash, Some(n)))
            .collect();
        control.create(key, &pods_for).await?;
        control.delete(key, &delete).await?;
        Ok(again)
    }

    /// The ControllerRevision of the current template (see `revisions`); a hash taken by
    /// another object raises the collision count, so the next sync hashes anew.
    async fn ensure_revision(
        &self,
        ds: &DaemonSet,
        hash: &str,
        pods: &[Arc<Pod>],
    ) -> Result<(), Error> {
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let in_use: Vec<String> = pods
            .iter()
            .filter_map(|p| revision_of(p))
            .map(|h| format!("{}-{h}", ds.name_any()))
            .collect();
        let in_use: Vec<&str> = in_use.iter().map(String::as_str).collect();
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        match revisions::ensure(
            &self.client,
            &self.revisions,
            ds,
            &template,
            hash,
            REVISION_LABEL,
            &in_use,
            limit,
        )
        .await?
        {
            revisions::Current::Revision { .. } => Ok(()),
            revisions::Current::Collision => {
                let collisions = ds
                    .status
                    .as_ref()
                    .and_then(|s| s.collision_count)
                    .unwrap_or(0);
                util::merge_patch_status(
                    &self.client,
                    ds,
                    &json!({"status": {"collisionCount": collisions + 1}}),
                )
                .await?;
                Err(Error::Other(format!(
                    "controller revision {}-{hash} belongs to another object",
                    ds.name_any()
                )))
            }
        }
    }

    async fn write_status(
        &self,
        ds: &DaemonSet,
        hash: &str,
        placed: &BTreeMap<String, OnNode<'_>>,
        desired: i32,
        misscheduled: i32,
    ) -> Result<Option<Duration>, Error> {
        let min_ready = ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let (mut current, mut ready, mut updated, mut available) = (0, 0, 0, 0);
        let mut again = None;
        for on in placed.values() {
            let all: Vec<&&Arc<Pod>> = on.new.iter().chain(&on.old).collect();
            if all.is_empty() {
                continue;
            }
            current += 1;
            if all.iter().any(|p| util::is_ready(p)) {
                ready += 1;
            }
            if on.new.iter().any(|p| revision_of(p) == Some(hash)) {
                updated += 1;
            }
            let mut avail = false;
            for p in &all {
                match util::available(p, min_ready) {
                    (true, _) => avail = true,
                    (false, left) => again = util::min_some(again, left),
                }
            }
            if avail {
                available += 1;
            }
        }
        let status = serde_json::to_value(&ds.status).unwrap_or_default();
        let observed = ds.metadata.generation;
        let same = num(&status, "desiredNumberScheduled") == i64::from(desired)
            && num(&status, "currentNumberScheduled") == i64::from(current)
            && num(&status, "numberMisscheduled") == i64::from(misscheduled)
            && num(&status, "numberReady") == i64::from(ready)
            && num(&status, "updatedNumberScheduled") == i64::from(updated)
            && num(&status, "numberAvailable") == i64::from(available)
            && num(&status, "numberUnavailable") == i64::from(desired - available)
            && status.get("observedGeneration").and_then(|v| v.as_i64()) == observed;
        if same {
            return Ok(again);
        }
        // The four counts Kubernetes always writes, the rest left out when zero.
        let patch = json!({"status": {
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "updatedNumberScheduled": count(updated),
            "numberAvailable": count(available),
            "numberUnavailable": count(desired - available),
            "observedGeneration": observed,
        }});
        match util::merge_patch_status(&self.client, ds, &patch).await {
            Ok(_) => Ok(again),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_pods_are_pinned_to_their_node_and_tolerate_what_daemons_do() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {
                "metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "i"}],
                         "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}],
                         "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                             "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}}}
        }))
        .unwrap();
        let template = ds.spec.as_ref().unwrap().template.clone();
        let pod = daemon_pod(&ds, &template, "h1", Some("node-b"));
        assert_eq!(node_of(&pod).as_deref(), Some("node-b"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[REVISION_LABEL], "h1");
        assert_eq!(labels[GENERATION_LABEL], "3");
        let tolerations = pod.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        // The template's own cordon toleration is not doubled.
        assert_eq!(tolerations.len(), 6);
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")
                    && t.effect.as_deref() == Some("NoExecute")
                    && t.toleration_seconds.is_none())
        );
    }
}
