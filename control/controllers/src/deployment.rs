//! The Deployment controller, as kube-controller-manager's: a ReplicaSet per pod template
//! (named by the template's hash), rolled by the RollingUpdate or Recreate strategy,
//! numbered by revision, scaled proportionally while a rollout is under way, paused and
//! resumed, old ReplicaSets kept up to `revisionHistoryLimit`, and the status fields and
//! conditions `kubectl rollout status` reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::events::Recorder;
use crate::informer::{Change, Informer, controller_of, key_of, split_key};
use crate::util::{self, count, num, scaled};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

struct Controller {
    deployments: Arc<Informer<Deployment>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    client: kube::Client,
    events: Recorder,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize) {
    let deployments = informers.deployments();
    let replicasets = informers.replicasets();
    let pods = informers.pods();
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        deployments: deployments.clone(),
        replicasets: replicasets.clone(),
        pods: pods.clone(),
        client: informers.client().clone(),
        events: events.for_controller("deployment-controller"),
    });
    deployments.enqueue_keys(&queue);
    {
        let (queue, c) = (queue.clone(), c.clone());
        replicasets.subscribe(move |change| {
            let (old, new) = match change {
                Change::Added(rs) | Change::Deleted(rs) => (None, *rs),
                Change::Updated { old, new } => (Some(*old), *new),
            };
            for key in c
                .owners_of_rs(new)
                .into_iter()
                .chain(old.into_iter().flat_map(|o| c.owners_of_rs(o)))
            {
                queue.add(key);
            }
        });
    }
    {
        // Recreate waits for the old pods to be gone.
        let (queue, c) = (queue.clone(), c.clone());
        pods.subscribe(move |change| {
            if let Change::Deleted(pod) = change
                && let Some(r) = controller_of(&***pod)
                && r.kind == "ReplicaSet"
                && let Some(rs) = c.replicasets.get_by_uid(&r.uid)
            {
                for key in c.owners_of_rs(&rs) {
                    queue.add(key);
                }
            }
        });
    }
    let ready = {
        let (d, rs, p) = (deployments.clone(), replicasets.clone(), pods.clone());
        async move {
            d.synced().await;
            rs.synced().await;
            p.synced().await;
        }
    };
    run_workers("deployment-controller", queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map_or(0, |s| s.replicas),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

/// The available pods a ReplicaSet can be counted on for: its status's count, but never
/// more than its replicas. A ReplicaSet just scaled down still reports the pods it is
/// about to delete as available until its controller catches up; counting them would
/// scale the old ReplicaSets down a second time and drop below maxUnavailable.
fn dependable(rs: &ReplicaSet) -> i32 {
    rs_status(rs).2.min(rs_replicas(rs)).max(0)
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// maxSurge and maxUnavailable resolved against the replicas (kube's
/// `ResolveFenceposts`): surge rounds up, unavailable down, and both zero means one may
/// be unavailable.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let n = replicas(d);
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), n, true);
    let mut unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), n, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) { 0 } else { fenceposts(d).0 }
}

fn max_unavailable(d: &Deployment) -> i32 {
    let n = replicas(d);
    if is_recreate(d) || n == 0 {
        return 0;
    }
    fenceposts(d).1.min(n)
}

/// The template without its `pod-template-hash` label, for comparing a ReplicaSet's
/// template with the Deployment's.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            t.metadata.as_mut().expect("metadata").labels = None;
        }
    }
    t
}

/// The `pod-template-hash` of a template: FNV-1a of its JSON (and of the collision count,
/// when there is one), written with kube's alphabet of consonants and digits.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&without_hash(t)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[(d as usize) % ALPHABET.len()] as char)
        .collect()
}

impl Controller {
    /// The Deployments that own (or, for an orphan, would adopt) `rs`.
    fn owners_of_rs(&self, rs: &ReplicaSet) -> Vec<String> {
        if let Some(r) = controller_of(rs) {
            if r.kind != "Deployment" {
                return Vec::new();
            }
            return self
                .deployments
                .get_by_uid(&r.uid)
                .map(|d| vec![key_of(&*d)])
                .unwrap_or_default();
        }
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let labels = util::labels(rs);
        self.deployments
            .list_namespace(ns)
            .into_iter()
            .filter(|d| {
                matches!(util::selector(d.spec.as_ref().map(|s| &s.selector)), Ok(Some(s)) if !s.is_empty() && s.matches(labels))
            })
            .map(|d| key_of(&*d))
            .collect()
    }

    async fn sync(&self, key: &str) -> SyncResult {
        let Some(d) = self.deployments.get(key) else {
            return Ok(None);
        };
        let d = (*d).clone();
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or_default().to_string();
        let selector = match util::selector(d.spec.as_ref().map(|s| &s.selector)) {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.events
                    .warning(d.object_ref(&()), "InvalidSelector", "Sync", e);
                return Ok(None);
            }
        };
        if selector.is_empty() {
            self.events.warning(
                d.object_ref(&()),
                "SelectingAll",
                "Sync",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(None);
        }
        let rs_list = self.claim(&d, &selector, &ns).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self.split(&d, &rs_list);
            self.write_status(&d, &old, new_rs.as_ref(), false).await?;
            return Ok(None);
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let mut d = d;
        self.paused_condition(&mut d, paused).await?;
        if paused || self.is_scaling_event(&d, &rs_list) {
            return self.scale_only(&d, rs_list, paused).await;
        }
        if is_recreate(&d) {
            self.recreate(&d, rs_list).await
        } else {
            self.rolling(&d, rs_list).await
        }
    }

    /// The ReplicaSets this Deployment controls, adopting matching orphans and releasing
    /// owned ones that no longer match.
    async fn claim(
        &self,
        d: &Deployment,
        selector: &skiff_selectors::LabelSelector,
        ns: &str,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let candidates = self.replicasets.list_namespace(ns);
        let mut out: Vec<ReplicaSet> =
            crate::refs::claim(&self.client, d, ns, candidates, |rs: &ReplicaSet| {
                selector.matches(util::labels(rs))
            })
            .await?
            .into_iter()
            .map(|rs| (*rs).clone())
            .collect();
        out.sort_by(|a, b| {
            let t = |rs: &ReplicaSet| {
                rs.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
            };
            t(a).cmp(&t(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
        Ok(out)
    }

    /// The ReplicaSet whose template is the Deployment's (the oldest, if several) and the
    /// others.
    fn split(
        &self,
        d: &Deployment,
        rs_list: &[ReplicaSet],
    ) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = d.spec.as_ref().map(|s| without_hash(&s.template));
        let mut new_rs = None;
        let mut old = Vec::new();
        for rs in rs_list {
            let t = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(without_hash);
            if new_rs.is_none() && t.is_some() && t == template {
                new_rs = Some(rs.clone());
            } else {
                old.push(rs.clone());
            }
        }
        (new_rs, old)
    }

    fn is_scaling_event(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> bool {
        let want = replicas(d).to_string();
        rs_list
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| annotation(&rs.metadata, DESIRED_REPLICAS).is_some_and(|v| v != want))
    }

    /// Progressing=Unknown with DeploymentPaused when paused, DeploymentResumed after.
    async fn paused_condition(&self, d: &mut Deployment, paused: bool) -> Result<(), Error> {
        let cond = progressing(d);
        let reason = cond
            .as_ref()
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str);
        let new = if paused && reason != Some("DeploymentPaused") {
            Some(("DeploymentPaused", "Deployment is paused"))
        } else if !paused && reason == Some("DeploymentPaused") {
            Some(("DeploymentResumed", "Deployment is resumed"))
        } else {
            None
        };
        if let Some((reason, message)) = new {
            let mut status = status_value(d);
            set_condition(&mut status, "Progressing", "Unknown", reason, message);
            self.patch_status(d, status.clone()).await?;
            d.status = serde_json::from_value(status).ok();
        }
        Ok(())
    }

    /// A paused Deployment or a change of replicas: the active ReplicaSets are resized,
    /// nothing is rolled.
    async fn scale_only(
        &self,
        d: &Deployment,
        rs_list: Vec<ReplicaSet>,
        paused: bool,
    ) -> SyncResult {
        let (new_rs, old) = self.split(d, &rs_list);
        self.scale(d, new_rs.as_ref(), &old).await?;
        let (new_rs, old) = self.split(d, &self.fresh(&rs_list));
        if paused {
            self.cleanup(d, &old).await?;
        }
        self.write_status(d, &old, new_rs.as_ref(), false).await?;
        Ok(None)
    }

    /// The ReplicaSets as the cache has them now (after this sync's own writes landed there,
    /// or as they were).
    fn fresh(&self, rs_list: &[ReplicaSet]) -> Vec<ReplicaSet> {
        rs_list
            .iter()
            .map(|rs| {
                self.replicasets
                    .get(&key_of(rs))
                    .filter(|c| c.metadata.uid == rs.metadata.uid)
                    .map_or_else(|| rs.clone(), |c| (*c).clone())
            })
            .collect()
    }

    async fn scale(
        &self,
        d: &Deployment,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), Error> {
        let want = replicas(d);
        // One active ReplicaSet (or none): it takes every replica.
        let mut all: Vec<&ReplicaSet> = old.iter().chain(new_rs).collect();
        let active: Vec<&ReplicaSet> = all
            .iter()
            .copied()
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        let only = match active.len() {
            0 => new_rs.or_else(|| {
                old.iter().max_by_key(|rs| {
                    rs.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond())
                })
            }),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(rs) = only {
            if rs_replicas(rs) != want || self.annotations_stale(d, rs) {
                self.scale_rs(d, rs, want).await?;
            }
            return Ok(());
        }
        // The new ReplicaSet saturated: the old ones go to zero.
        if let Some(n) = new_rs
            && annotation(&n.metadata, DESIRED_REPLICAS) == Some(want.to_string())
            && rs_status(n).2 == want
            && rs_replicas(n) == want
        {
            for rs in old.iter().filter(|rs| rs_replicas(rs) > 0) {
                self.scale_rs(d, rs, 0).await?;
            }
            return Ok(());
        }
        if is_recreate(d) {
            return Ok(());
        }
        // Proportional scaling during a rollout (kube's `scale`): what is added or removed
        // is shared by the active ReplicaSets in proportion to their size.
        all.retain(|rs| rs_replicas(rs) > 0);
        let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - total;
        let created = |rs: &ReplicaSet| {
            rs.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
        };
        if to_add > 0 {
            all.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| created(b).cmp(&created(a)))
            });
        } else {
            all.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| created(a).cmp(&created(b)))
            });
        }
        let mut sizes: Vec<i32> = Vec::new();
        let mut added = 0;
        for rs in &all {
            let mut p = 0;
            if to_add != 0 && to_add != added {
                let annotated = annotation(&rs.metadata, MAX_REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
                let fraction = if want == 0 {
                    -rs_replicas(rs)
                } else if annotated == 0 {
                    0
                } else {
                    let target = (f64::from(rs_replicas(rs)) * f64::from(want + max_surge(d))
                        / f64::from(annotated))
                    .round() as i32;
                    target - rs_replicas(rs)
                };
                let left = to_add - added;
                p = if to_add > 0 {
                    fraction.min(left)
                } else {
                    fraction.max(left)
                };
            }
            added += p;
            sizes.push(rs_replicas(rs) + p);
        }
        if to_add != added && !sizes.is_empty() {
            sizes[0] = (sizes[0] + to_add - added).max(0);
        }
        for (rs, size) in all.iter().zip(sizes) {
            if size != rs_replicas(rs) || self.annotations_stale(d, rs) {
                self.scale_rs(d, rs, size.max(0)).await?;
            }
        }
        Ok(())
    }

    fn annotations_stale(&self, d: &Deployment, rs: &ReplicaSet) -> bool {
        annotation(&rs.metadata, DESIRED_REPLICAS) != Some(replicas(d).to_string())
            || annotation(&rs.metadata, MAX_REPLICAS)
                != Some((replicas(d) + max_surge(d)).to_string())
    }

    /// Sets a ReplicaSet's replicas (and the desired/max annotations), with an event.
    async fn scale_rs(&self, d: &Deployment, rs: &ReplicaSet, size: i32) -> Result<(), Error> {
        let from = rs_replicas(rs);
        let patch = json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS: replicas(d).to_string(),
                MAX_REPLICAS: (replicas(d) + max_surge(d)).to_string(),
            }},
            "spec": {"replicas": size},
        });
        util::merge_patch(&self.client, rs, &patch).await?;
        if size != from {
            let dir = if size > from { "up" } else { "down" };
            self.events.normal(
                d.object_ref(&()),
                "ScalingReplicaSet",
                "Scaling",
                format!(
                    "Scaled {dir} replica set {} from {from} to {size}",
                    rs.name_any()
                ),
            );
        }
        Ok(())
    }

    /// The new ReplicaSet, made (scaled as far as maxSurge allows) when there is none, and
    /// the revision annotations brought up to date.
    async fn new_replica_set(
        &self,
        d: &Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, Error> {
        let (existing, old) = self.split(d, rs_list);
        let max_old = old.iter().map(revision).max().unwrap_or(0);
        let new_revision = max_old + 1;
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        if let Some(rs) = existing {
            // A reused template (a rollback) takes the next revision.
            let mut annotations = copied_annotations(d, &rs);
            if revision(&rs) < new_revision {
                annotations.insert(REVISION.into(), Value::String(new_revision.to_string()));
            }
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let rs = if !annotations.is_empty()
                || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0)
            {
                let patch = json!({"metadata": {"annotations": annotations}, "spec": {"minReadySeconds": min_ready}});
                util::merge_patch(&self.client, &rs, &patch).await?
            } else {
                rs
            };
            self.set_revision(d, &rs).await?;
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let spec = d.spec.clone().unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut annotations: BTreeMap<String, String> = d
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(REVISION.into(), new_revision.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), replicas(d).to_string());
        annotations.insert(
            MAX_REPLICAS.into(),
            (replicas(d) + max_surge(d)).to_string(),
        );
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![util::controller_ref(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let surge_room = if is_recreate(d) {
            replicas(d)
        } else {
            let current: i32 = old.iter().map(|rs| self.occupied(rs)).sum();
            let max_total = replicas(d) + max_surge(d);
            (max_total - current).clamp(0, replicas(d))
        };
        rs.spec.as_mut().expect("spec").replicas = Some(surge_room);
        let created = match api.create(&PostParams::default(), &rs).await {
            Ok(rs) => rs,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Ours already, not yet in the cache; or a hash collision.
                let found = api.get(&rs.name_any()).await?;
                let ours =
                    controller_of(&found).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = found
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .map(without_hash)
                    == Some(without_hash(&spec.template));
                if ours && same {
                    return Ok(Some(found));
                }
                let mut status = status_value(d);
                status["collisionCount"] = json!(collision.unwrap_or(0) + 1);
                self.patch_status(d, status).await?;
                return Err(Error::Other(format!(
                    "hash collision for the new replica set of {}",
                    d.name_any()
                )));
            }
            Err(e) => {
                self.events.warning(
                    d.object_ref(&()),
                    "FailedCreate",
                    "Create",
                    format!("Failed to create new replica set {:?}: {e}", rs.name_any()),
                );
                return Err(e.into());
            }
        };
        if surge_room > 0 {
            self.events.normal(
                d.object_ref(&()),
                "ScalingReplicaSet",
                "Scaling",
                format!(
                    "Scaled up replica set {} from 0 to {surge_room}",
                    created.name_any()
                ),
            );
        }
        self.set_revision(d, &created).await?;
        let mut status = status_value(d);
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set {:?}", created.name_any()),
        );
        self.patch_status(d, status).await?;
        Ok(Some(created))
    }

    /// The pods a ReplicaSet takes up for maxSurge: its replicas, or more while pods it
    /// is scaling down are not yet being deleted. Kubernetes counts replicas alone, so a
    /// rollout can briefly run more than `replicas + maxSurge` pods; counting the pods too
    /// keeps that bound for what runs, not only for what is asked.
    fn occupied(&self, rs: &ReplicaSet) -> i32 {
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let active = self
            .pods
            .owned_by(uid)
            .iter()
            .filter(|p| util::is_active(p))
            .count() as i32;
        rs_replicas(rs).max(active)
    }

    /// The Deployment's revision annotation follows its new ReplicaSet's.
    async fn set_revision(&self, d: &Deployment, rs: &ReplicaSet) -> Result<(), Error> {
        let rev = revision(rs).to_string();
        if annotation(&d.metadata, REVISION).as_deref() == Some(rev.as_str()) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        util::merge_patch(&self.client, d, &patch).await?;
        Ok(())
    }

    async fn rolling(&self, d: &Deployment, rs_list: Vec<ReplicaSet>) -> SyncResult {
        let new_rs = self.new_replica_set(d, &rs_list, true).await?;
        let rs_list = self.with(self.fresh(&rs_list), new_rs.clone());
        let (new_rs, old) = self.split(d, &rs_list);
        let Some(new_rs) = new_rs else {
            return Ok(None);
        };
        // Scale up the new ReplicaSet as far as maxSurge allows.
        let want = replicas(d);
        let new_size = rs_replicas(&new_rs);
        if new_size > want {
            self.scale_rs(d, &new_rs, want).await?;
            return self.rollout_status(d, &rs_list).await;
        }
        if new_size < want {
            let total: i32 = rs_list.iter().map(|rs| self.occupied(rs)).sum();
            let max_total = want + max_surge(d);
            if total < max_total {
                let up = (max_total - total).min(want - new_size);
                self.scale_rs(d, &new_rs, new_size + up).await?;
                return self.rollout_status(d, &self.fresh(&rs_list)).await;
            }
        }
        // Scale down old ones as far as maxUnavailable allows.
        if self.scale_down_old(d, &new_rs, &old).await? {
            return self.rollout_status(d, &self.fresh(&rs_list)).await;
        }
        let (_, old) = self.split(d, &rs_list);
        if complete(d, &calculate_status(d, &old, Some(&new_rs))) {
            self.cleanup(d, &old).await?;
        }
        self.rollout_status(d, &rs_list).await
    }

    /// kube's `reconcileOldReplicaSets`: unhealthy old pods go first, then old replicas
    /// while the available count stays at or above `replicas - maxUnavailable`.
    async fn scale_down_old(
        &self,
        d: &Deployment,
        new_rs: &ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<bool, Error> {
        let old_count: i32 = old.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count: i32 = old_count + rs_replicas(new_rs);
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable = rs_replicas(new_rs) - dependable(new_rs);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut old: Vec<ReplicaSet> = old.to_vec();
        let mut sizes: HashMap<String, i32> = old
            .iter()
            .map(|rs| (rs.name_any(), rs_replicas(rs)))
            .collect();
        // Unhealthy replicas of old ReplicaSets first, oldest first.
        let mut cleaned = 0;
        for rs in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = sizes[&rs.name_any()];
            let avail = dependable(rs);
            if size == 0 || size <= avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - avail);
            sizes.insert(rs.name_any(), size - down);
            cleaned += down;
        }
        // Then available ones, as long as enough stay available.
        let available: i32 = old.iter().map(dependable).sum::<i32>() + dependable(new_rs);
        let mut scaled_down = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in &old {
                if scaled_down >= total {
                    break;
                }
                let size = sizes[&rs.name_any()];
                if size == 0 {
                    continue;
                }
                let down = size.min(total - scaled_down);
                sizes.insert(rs.name_any(), size - down);
                scaled_down += down;
            }
        }
        let mut changed = false;
        for rs in old.iter_mut() {
            let size = sizes[&rs.name_any()];
            if size != rs_replicas(rs) {
                self.scale_rs(d, rs, size).await?;
                changed = true;
            }
        }
        Ok(changed)
    }

    async fn recreate(&self, d: &Deployment, rs_list: Vec<ReplicaSet>) -> SyncResult {
        let (new_rs, old) = self.split(d, &rs_list);
        let mut scaled = false;
        for rs in old.iter().filter(|rs| rs_replicas(rs) > 0) {
            self.scale_rs(d, rs, 0).await?;
            scaled = true;
        }
        if scaled {
            return self.rollout_status(d, &self.fresh(&rs_list)).await;
        }
        // Every old pod must be gone (or finished) before new ones start.
        let old_running = old.iter().any(|rs| {
            self.pods
                .owned_by(rs.metadata.uid.as_deref().unwrap_or_default())
                .iter()
                .any(|p| {
                    !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
        });
        if old_running {
            return self.rollout_status(d, &rs_list).await;
        }
        let new_rs = match new_rs {
            Some(rs) => Some(rs),
            None => self.new_replica_set(d, &rs_list, true).await?,
        };
        let rs_list = self.with(self.fresh(&rs_list), new_rs.clone());
        if let Some(rs) = &new_rs
            && rs_replicas(rs) != replicas(d)
        {
            self.scale_rs(d, rs, replicas(d)).await?;
        }
        let (new_rs, old) = self.split(d, &rs_list);
        if complete(d, &calculate_status(d, &old, new_rs.as_ref())) {
            self.cleanup(d, &old).await?;
        }
        self.rollout_status(d, &self.fresh(&rs_list)).await
    }

    /// `rs_list` with `rs` in it (a ReplicaSet just made, not in the cache yet).
    fn with(&self, mut rs_list: Vec<ReplicaSet>, rs: Option<ReplicaSet>) -> Vec<ReplicaSet> {
        if let Some(rs) = rs {
            match rs_list
                .iter_mut()
                .find(|r| r.metadata.uid == rs.metadata.uid)
            {
                Some(slot) => {
                    let newer = |a: &ReplicaSet| {
                        a.metadata
                            .resource_version
                            .as_deref()
                            .and_then(|v| v.parse::<u64>().ok())
                    };
                    if newer(&rs) > newer(slot) {
                        *slot = rs;
                    }
                }
                None => rs_list.push(rs),
            }
        }
        rs_list
    }

    /// Old ReplicaSets beyond `revisionHistoryLimit` with no replicas left are deleted,
    /// lowest revision first.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i32 - limit.max(0);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| revision(rs));
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        );
        for rs in cleanable.into_iter().take(excess as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status(rs).0 != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&rs.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Status with the Progressing condition (kube's `syncRolloutStatus`); a rollout under
    /// way is looked at again when its progress deadline passes.
    async fn rollout_status(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> SyncResult {
        let (new_rs, old) = self.split(d, rs_list);
        self.write_status(d, &old, new_rs.as_ref(), true).await
    }

    async fn write_status(
        &self,
        d: &Deployment,
        old: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
        progress: bool,
    ) -> SyncResult {
        let current = status_value(d);
        let mut status = calculate_status(d, old, new_rs);
        let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
        let mut again = None;
        if progress {
            match deadline {
                None => remove_condition(&mut status, "Progressing"),
                Some(secs) => {
                    let cond = progressing(d);
                    let reason = cond
                        .as_ref()
                        .and_then(|c| c.get("reason"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let done = status["replicas"] == status["updatedReplicas"]
                        && reason.as_deref() == Some("NewReplicaSetAvailable");
                    if !done {
                        let rs_name = new_rs.map(|rs| rs.name_any()).unwrap_or_default();
                        if complete(d, &status) {
                            set_condition(
                                &mut status,
                                "Progressing",
                                "True",
                                "NewReplicaSetAvailable",
                                &format!("ReplicaSet {rs_name:?} has successfully progressed."),
                            );
                        } else if making_progress(&current, &status) {
                            set_condition(
                                &mut status,
                                "Progressing",
                                "True",
                                "ReplicaSetUpdated",
                                &format!("ReplicaSet {rs_name:?} is progressing."),
                            );
                            again = Some(Duration::from_secs(secs.max(0) as u64 + 1));
                        } else if reason.as_deref() == Some("ProgressDeadlineExceeded") {
                        } else {
                            let since = cond
                                .as_ref()
                                .and_then(|c| c.get("lastUpdateTime"))
                                .and_then(Value::as_str)
                                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                                .map(|t| t.with_timezone(&chrono::Utc));
                            if let Some(since) = since {
                                let due = since + chrono::Duration::seconds(i64::from(secs));
                                let now = chrono::Utc::now();
                                if now >= due {
                                    set_condition(
                                        &mut status,
                                        "Progressing",
                                        "False",
                                        "ProgressDeadlineExceeded",
                                        &format!(
                                            "ReplicaSet {rs_name:?} has timed out progressing."
                                        ),
                                    );
                                } else {
                                    again = Some(
                                        (due - now).to_std().unwrap_or_default()
                                            + Duration::from_secs(1),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        // A ReplicaSet's failure to create or delete pods shows on the Deployment.
        let failure = old.iter().chain(new_rs).find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .cloned()
        });
        match failure {
            Some(c) => set_condition(
                &mut status,
                "ReplicaFailure",
                "True",
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or(""),
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if same_status(&current, &status) {
            return Ok(again);
        }
        self.patch_status(d, status).await?;
        Ok(again)
    }

    async fn patch_status(&self, d: &Deployment, mut status: Value) -> Result<(), Error> {
        for field in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ] {
            if let Some(n) = status.get(field).and_then(Value::as_i64) {
                status[field] = count(n as i32);
            }
        }
        if status
            .get("conditions")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            status["conditions"] = Value::Null;
        }
        match util::merge_patch_status(&self.client, d, &json!({"status": status})).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn copied_annotations(d: &Deployment, rs: &ReplicaSet) -> serde_json::Map<String, Value> {
    let have = rs.metadata.annotations.clone().unwrap_or_default();
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

fn status_value(d: &Deployment) -> Value {
    let mut v = serde_json::to_value(&d.status).unwrap_or(Value::Null);
    if !v.is_object() {
        v = json!({});
    }
    v
}

fn progressing(d: &Deployment) -> Option<Value> {
    status_value(d)
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing").cloned())
}

/// Kube's `calculateStatus`, as JSON (with the existing conditions and the Available one).
fn calculate_status(d: &Deployment, old: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> Value {
    let all: Vec<&ReplicaSet> = old.iter().chain(new_rs).collect();
    let available: i32 = all.iter().map(|rs| rs_status(rs).2).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let mut status = status_value(d);
    status["observedGeneration"] = json!(d.metadata.generation);
    status["replicas"] = json!(all.iter().map(|rs| rs_status(rs).0).sum::<i32>());
    status["updatedReplicas"] = json!(new_rs.map_or(0, |rs| rs_status(rs).0));
    status["readyReplicas"] = json!(all.iter().map(|rs| rs_status(rs).1).sum::<i32>());
    status["availableReplicas"] = json!(available);
    status["unavailableReplicas"] = json!((total - available).max(0));
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        );
    }
    status
}

/// Kube's `DeploymentComplete`.
fn complete(d: &Deployment, status: &Value) -> bool {
    let want = i64::from(replicas(d));
    num(status, "updatedReplicas") == want
        && num(status, "replicas") == want
        && num(status, "availableReplicas") == want
        && num(status, "observedGeneration") >= d.metadata.generation.unwrap_or(0)
}

/// Kube's `DeploymentProgressing`: more updated, fewer old, or more ready or available
/// replicas than the status said.
fn making_progress(old: &Value, new: &Value) -> bool {
    let old_old = num(old, "replicas") - num(old, "updatedReplicas");
    let new_old = num(new, "replicas") - num(new, "updatedReplicas");
    num(new, "updatedReplicas") > num(old, "updatedReplicas")
        || new_old < old_old
        || num(new, "readyReplicas") > num(old, "readyReplicas")
        || num(new, "availableReplicas") > num(old, "availableReplicas")
}

/// Sets a condition as kube's `SetDeploymentCondition`: one with the same status and
/// reason stays as it is; a new status moves lastTransitionTime.
fn set_condition(status: &mut Value, type_: &str, state: &str, reason: &str, message: &str) {
    let now = util::now();
    let conditions = status
        .as_object_mut()
        .expect("status object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("array");
    let existing = list.iter().position(|c| c["type"] == type_);
    if let Some(i) = existing {
        let c = &list[i];
        if c["status"] == state && c["reason"] == reason {
            return;
        }
        let transition = if c["status"] == state {
            c["lastTransitionTime"].clone()
        } else {
            json!(now)
        };
        list[i] = json!({"type": type_, "status": state, "reason": reason, "message": message,
                         "lastUpdateTime": now, "lastTransitionTime": transition});
    } else {
        list.push(
            json!({"type": type_, "status": state, "reason": reason, "message": message,
                         "lastUpdateTime": now, "lastTransitionTime": now}),
        );
    }
}

fn remove_condition(status: &mut Value, type_: &str) {
    if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        list.retain(|c| c["type"] != type_);
    }
}

/// Whether two statuses say the same (counts missing and zero alike).
fn same_status(a: &Value, b: &Value) -> bool {
    let fields = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "collisionCount",
    ];
    fields.iter().all(|f| num(a, f) == num(b, f))
        && a.get("conditions")
            .filter(|c| c.as_array().is_some_and(|l| !l.is_empty()))
            == b.get("conditions")
                .filter(|c| c.as_array().is_some_and(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_hash_ignores_the_hash_label_and_follows_the_collision_count() {
        let mut t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "a:1"}]}
        }))
        .unwrap();
        let h = template_hash(&t, None);
        assert!(
            !h.is_empty() && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), h.clone());
        assert_eq!(template_hash(&t, None), h);
        assert_ne!(template_hash(&t, Some(1)), h);
        t.spec.as_mut().unwrap().containers[0].image = Some("a:2".into());
        assert_ne!(template_hash(&t, None), h);
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 10, "selector": {}, "template": {},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}
        }))
        .unwrap();
        assert_eq!(fenceposts(&d), (3, 2));
        let d0: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 3, "selector": {}, "template": {},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}
        }))
        .unwrap();
        assert_eq!(fenceposts(&d0), (0, 1));
    }
}
