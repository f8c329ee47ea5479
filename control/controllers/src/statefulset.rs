//! The StatefulSet controller: pods with stable names (`<set>-<ordinal>`) and hostnames,
//! each with its own PersistentVolumeClaims from the volume claim templates; made in
//! order and each only once the one before is running and ready (OrderedReady), or all at
//! once (Parallel); removed from the highest ordinal down; updated from the highest
//! ordinal down to the partition, one pod at a time (RollingUpdate) or when deleted
//! (OnDelete); ControllerRevisions for history and undo; the claims kept or deleted as
//! `persistentVolumeClaimRetentionPolicy` says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::deployment::template_hash;
use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informer::{Change, Informer, controller_of, key_of, split_key};
use crate::pods::PodControl;
use crate::revisions::{self, REVISION_LABEL, revision_of};
use crate::util::{self, count};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers};

pub const NAME: &str = "statefulset-controller";
/// The label on a StatefulSet's ControllerRevisions (the pods carry the revision's name
/// under `controller-revision-hash`).
const HASH_LABEL: &str = "controller.kubernetes.io/hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Controller {
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    revisions: Arc<Informer<ControllerRevision>>,
    client: kube::Client,
    expectations: Expectations,
    events: Recorder,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize) {
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        sets: informers.statefulsets(),
        pods: informers.pods(),
        claims: informers.persistentvolumeclaims(),
        revisions: informers.controllerrevisions(),
        client: informers.client().clone(),
        expectations: Expectations::default(),
        events: events.for_controller(NAME),
    });
    c.sets.enqueue_keys(&queue);
    {
        let (c2, queue) = (c.clone(), queue.clone());
        c.pods.subscribe(move |change| {
            let (pod, created, gone) = match change {
                Change::Added(p) => (*p, true, false),
                Change::Updated { old, new } => (
                    *new,
                    false,
                    new.metadata.deletion_timestamp.is_some()
                        && old.metadata.deletion_timestamp.is_none(),
                ),
                Change::Deleted(p) => (*p, false, true),
            };
            if let Some(r) = controller_of(&**pod).filter(|r| r.kind == "StatefulSet")
                && let Some(set) = c2.sets.get_by_uid(&r.uid)
            {
                let key = key_of(&*set);
                if created {
                    c2.expectations.creation_observed(&key);
                }
                if gone {
                    c2.expectations.deletion_observed(&key, &key_of(&**pod));
                }
                queue.add(key);
            }
        });
    }
    let ready = {
        let c = c.clone();
        async move {
            c.sets.synced().await;
            c.pods.synced().await;
            c.claims.synced().await;
            c.revisions.synced().await;
        }
    };
    run_workers(NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
}

/// The ordinal in a pod's name, if it is `<set>-<n>`.
fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && util::is_ready(p)
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The claim of template `template` for the pod of ordinal `i`.
fn claim_name(template: &str, set: &str, i: i32) -> String {
    format!("{template}-{set}-{i}")
}

/// The pod of ordinal `i`, at revision `revision`.
fn pod_for(set: &StatefulSet, i: i32, revision: &str) -> Pod {
    let spec = set.spec.clone().unwrap_or_default();
    let name = format!("{}-{i}", set.name_any());
    let meta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), i.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        pod_spec.subdomain = spec.service_name.clone();
    }
    // Each claim template becomes the pod's own claim, in place of a volume of that name.
    let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != tname);
        volumes.push(Volume {
            name: tname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&tname, &set.name_any(), i),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![util::controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// An owner reference that is not a controller reference: a claim deleted with its set or
/// with its pod, as the retention policy says.
fn plain_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        controller: None,
        block_owner_deletion: Some(true),
        ..util::controller_ref(owner)
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let Some(set) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        // Read before the pods are (see the Job controller).
        let satisfied = self.expectations.satisfied(key);
        let (ns, _) = split_key(key);
        let ns = ns.unwrap_or_default().to_string();
        let spec = set.spec.clone().unwrap_or_default();
        let selector = match util::selector(Some(&spec.selector)) {
            Ok(s) => s,
            Err(e) => {
                self.events.warning(
                    set.object_ref(&()),
                    "InvalidSelector",
                    "Sync",
                    format!("invalid selector: {e}"),
                );
                return Ok(None);
            }
        };
        let set_name = set.name_any();
        let pods = crate::refs::claim_pods(&self.client, &self.pods, &*set, |pod: &Pod| {
            selector
                .as_ref()
                .is_some_and(|s| !s.is_empty() && s.matches(util::labels(pod)))
                && ordinal(&set_name, &pod.name_any()).is_some()
        })
        .await?;
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }

        // The revision of the template now.
        let hash = template_hash(
            &spec.template,
            set.status.as_ref().and_then(|s| s.collision_count),
        );
        let in_use: Vec<&str> = pods.iter().filter_map(|p| revision_of(p)).collect();
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let update_revision = match revisions::ensure(
            &self.client,
            &self.revisions,
            &*set,
            &spec.template,
            &hash,
            HASH_LABEL,
            &in_use,
            limit,
        )
        .await?
        {
            revisions::Current::Revision { name, .. } => name,
            revisions::Current::Collision => {
                let collisions = set
                    .status
                    .as_ref()
                    .and_then(|s| s.collision_count)
                    .unwrap_or(0);
                util::merge_patch_status(
                    &self.client,
                    &*set,
                    &json!({"status": {"collisionCount": collisions + 1}}),
                )
                .await?;
                return Err(Error::Other(format!(
                    "controller revision of {set_name} collides"
                )));
            }
        };
        let current_revision = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| update_revision.clone());

        let replicas = spec.replicas.unwrap_or(1).max(0);
        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in &pods {
            if let Some(i) = ordinal(&set_name, &p.name_any()) {
                by_ordinal.insert(i, p.clone());
            }
        }
        if satisfied {
            self.manage(
                &set,
                key,
                &ns,
                &by_ordinal,
                replicas,
                &current_revision,
                &update_revision,
            )
            .await?;
        }
        self.write_status(
            &set,
            &by_ordinal,
            replicas,
            &current_revision,
            &update_revision,
        )
        .await
    }

    /// One step towards `replicas` pods at the right revisions.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        set: &StatefulSet,
        key: &str,
        ns: &str,
        pods: &BTreeMap<i32, Arc<Pod>>,
        replicas: i32,
        current_revision: &str,
        update_revision: &str,
    ) -> Result<(), Error> {
        let spec = set.spec.clone().unwrap_or_default();
        let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let control = PodControl {
            api: &api,
            expectations: &self.expectations,
            events: &self.events,
            owner: set.object_ref(&()),
        };
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            != Some("OnDelete");

        // Make or replace the pods of 0..replicas, in order.
        let mut create = Vec::new();
        let mut delete: Vec<&Arc<Pod>> = Vec::new();
        for i in 0..replicas {
            match pods.get(&i) {
                None => {
                    // A pod made again gets the revision its ordinal is at: below the
                    // partition, the current one.
                    let revision = if rolling && i >= partition {
                        update_revision
                    } else {
                        current_revision
                    };
                    self.ensure_claims(set, i).await?;
                    create.push(pod_for(set, i, revision));
                    if ordered {
                        break;
                    }
                }
                Some(p) if finished(p) && p.metadata.deletion_timestamp.is_none() => {
                    self.events.warning(
                        set.object_ref(&()),
                        "RecreatingFailedPod",
                        "Sync",
                        format!(
                            "StatefulSet {ns}/{} is recreating failed Pod {}",
                            set.name_any(),
                            p.name_any()
                        ),
                    );
                    delete.push(p);
                    if ordered {
                        break;
                    }
                }
                Some(p) if ordered && !running_and_ready(p) => break,
                Some(_) => {}
            }
        }
        let pods_for: Vec<Pod> = create;
        control.create(key, &pods_for).await?;
        control.delete(key, &delete).await?;
        if !pods_for.is_empty() || !delete.is_empty() {
            return Ok(());
        }

        // Scale down from the highest ordinal; in order, one at a time once every other
        // pod is running and ready.
        let condemned: Vec<&Arc<Pod>> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
        if !condemned.is_empty() {
            let healthy = pods
                .values()
                .all(|p| p.metadata.deletion_timestamp.is_none() && running_and_ready(p));
            let doomed: Vec<&Arc<Pod>> = if ordered {
                if !healthy {
                    return Ok(());
                }
                condemned.into_iter().take(1).collect()
            } else {
                condemned
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect()
            };
            let scaled_delete = spec
                .persistent_volume_claim_retention_policy
                .as_ref()
                .and_then(|r| r.when_scaled.as_deref())
                == Some("Delete");
            for p in &doomed {
                if scaled_delete && let Some(i) = ordinal(&set.name_any(), &p.name_any()) {
                    self.claims_owned_by(set, i, p).await?;
                }
            }
            control.delete(key, &doomed).await?;
            return Ok(());
        }

        // Roll: the highest ordinal not at the update revision, at or above the partition,
        // once every pod is running and ready.
        if !rolling {
            return Ok(());
        }
        let healthy = pods
            .range(..replicas)
            .all(|(_, p)| p.metadata.deletion_timestamp.is_none() && running_and_ready(p));
        if !healthy {
            return Ok(());
        }
        if let Some((_, p)) = pods
            .range(partition.max(0)..replicas)
            .rev()
            .find(|(_, p)| revision_of(p) != Some(update_revision))
        {
            control.delete(key, &[p]).await?;
        }
        Ok(())
    }

    /// Makes the claims of ordinal `i` that do not exist yet.
    async fn ensure_claims(&self, set: &StatefulSet, i: i32) -> Result<(), Error> {
        let spec = set.spec.clone().unwrap_or_default();
        let ns = set.namespace().unwrap_or_default();
        let deleted_with_set = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|r| r.when_deleted.as_deref())
            == Some("Delete");
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for t in spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(
                t.metadata.name.as_deref().unwrap_or_default(),
                &set.name_any(),
                i,
            );
            if self.claims.get(&format!("{ns}/{name}")).is_some() {
                continue;
            }
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: deleted_with_set.then(|| vec![plain_ref(set)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => self.events.normal(
                    set.object_ref(&()),
                    "SuccessfulCreate",
                    "Create",
                    format!(
                        "create Claim {name} Pod {}-{i} in StatefulSet {} success",
                        set.name_any(),
                        set.name_any()
                    ),
                ),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    self.events.warning(
                        set.object_ref(&()),
                        "FailedCreate",
                        "Create",
                        format!("create Claim {name} for Pod {}-{i} in StatefulSet {} failed error: {e}", set.name_any(), set.name_any()),
                    );
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Gives the claims of ordinal `i` the pod as an owner, so they go when it goes
    /// (`whenScaled: Delete`).
    async fn claims_owned_by(&self, set: &StatefulSet, i: i32, pod: &Pod) -> Result<(), Error> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for t in set
            .spec
            .iter()
            .flat_map(|s| s.volume_claim_templates.iter().flatten())
        {
            let name = claim_name(
                t.metadata.name.as_deref().unwrap_or_default(),
                &set.name_any(),
                i,
            );
            let patch = json!({"metadata": {"ownerReferences": [plain_ref(pod)]}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn write_status(
        &self,
        set: &StatefulSet,
        pods: &BTreeMap<i32, Arc<Pod>>,
        replicas: i32,
        current_revision: &str,
        update_revision: &str,
    ) -> SyncResult {
        let min_ready = set
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let live: Vec<&Arc<Pod>> = pods
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready = live.iter().filter(|p| util::is_ready(p)).count() as i32;
        let mut again: Option<Duration> = None;
        let mut available = 0;
        for p in &live {
            match util::available(p, min_ready) {
                (true, _) => available += 1,
                (false, left) => again = util::min_some(again, left),
            }
        }
        let updated = live
            .iter()
            .filter(|p| revision_of(p) == Some(update_revision))
            .count() as i32;
        let mut current = live
            .iter()
            .filter(|p| revision_of(p) == Some(current_revision))
            .count() as i32;
        // Every pod updated and ready: the update revision is the current one now.
        let mut current_revision = current_revision.to_string();
        if updated == replicas && ready == replicas && live.len() as i32 == replicas {
            current_revision = update_revision.to_string();
            current = updated;
        }
        let status = json!({
            "observedGeneration": set.metadata.generation,
            "replicas": live.len(),
            "readyReplicas": count(ready),
            "availableReplicas": available,
            "currentReplicas": count(current),
            "updatedReplicas": count(updated),
            "currentRevision": current_revision,
            "updateRevision": update_revision,
        });
        let old = serde_json::to_value(&set.status).unwrap_or_default();
        let same = status.as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| {
                let o = old.get(k).unwrap_or(&serde_json::Value::Null);
                o == v
                    || (v.is_null() && o.as_i64() == Some(0))
                    || (v.as_i64() == Some(0) && o.is_null())
            })
        });
        if same {
            return Ok(again);
        }
        match util::merge_patch_status(&self.client, set, &json!({"status": status})).await {
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
    fn pods_are_named_by_ordinal_with_their_own_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                             "volumes": [{"name": "data", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
        }))
        .unwrap();
        let pod = pod_for(&set, 2, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let volumes = spec.volumes.unwrap();
        assert_eq!(
            volumes.len(),
            1,
            "the template's volume of the claim's name is replaced"
        );
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data-web-2"
        );
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
    }
}
