//! Persistent volumes: the binder (kube's persistentvolume-binder controller) and Skiff's
//! built-in local provisioner (k3s's local-path, done in the control plane).
//!
//! - A claim binds to an available PersistentVolume that satisfies it (class, access
//!   modes, size), the smallest first; a pre-bound claim (`spec.volumeName`) to that one.
//! - A claim of a class whose provisioner is `skiff.dev/local-path` gets a volume of its
//!   own once a pod that mounts it is scheduled (`WaitForFirstConsumer`): a directory under
//!   that node's local-path root (which its agent announces on the Node), pinned to the
//!   node by the volume's node affinity, so the scheduler sends the pod back there.
//! - A volume whose claim is gone is Released; with reclaim policy Delete it is deleted,
//!   and the agent of its node removes the directory before letting it go (the
//!   `skiff.dev/local-path-cleanup` finalizer); Retain keeps both.
//! - The default StorageClass `local-path` is made when no class is default.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::events::Recorder;
use crate::informer::{Change, Informer};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers};

pub const NAME: &str = "persistentvolume-binder-controller";
pub const PROVISIONER: &str = "skiff.dev/local-path";
pub const DEFAULT_CLASS: &str = "local-path";
/// The Node annotation where an agent says under which directory its local volumes live.
pub const ROOT_ANNOTATION: &str = "skiff.dev/local-path-root";
/// Held by a provisioned volume until its node's agent has removed the directory.
pub const CLEANUP_FINALIZER: &str = "skiff.dev/local-path-cleanup";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const DEFAULT_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// Keys of volumes in the work queue (claims are `namespace/name`).
const PV_KEY: &str = "pv:";

struct Controller {
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    pods: Arc<Informer<Pod>>,
    client: kube::Client,
    events: Recorder,
}

pub fn start(informers: &Arc<Informers>, events: &Recorder, workers: usize) {
    let queue = WorkQueue::new();
    let c = Arc::new(Controller {
        claims: informers.persistentvolumeclaims(),
        volumes: informers.persistentvolumes(),
        pods: informers.pods(),
        client: informers.client().clone(),
        events: events.for_controller(NAME),
    });
    c.claims.enqueue_keys(&queue);
    {
        // A claim gone releases its volume.
        let queue = queue.clone();
        c.claims.subscribe(move |change| {
            if let Change::Deleted(claim) = change
                && let Some(v) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref())
            {
                queue.add(format!("{PV_KEY}{v}"));
            }
        });
    }
    {
        let queue = queue.clone();
        c.volumes.subscribe(move |change| {
            let (pv, old) = match change {
                Change::Added(v) | Change::Deleted(v) => (*v, None),
                Change::Updated { old, new } => (*new, Some(*old)),
            };
            queue.add(format!("{PV_KEY}{}", pv.name_any()));
            // The claim it is (or was) bound to looks again too.
            for v in [Some(pv), old].into_iter().flatten() {
                if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    queue.add(format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default()
                    ));
                }
            }
        });
    }
    {
        // A pod scheduled with a claim that waits for its first consumer.
        let queue = queue.clone();
        c.pods.subscribe(move |change| {
            let pod = match change {
                Change::Added(p) | Change::Updated { new: p, .. } => *p,
                Change::Deleted(_) => return,
            };
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none()
            {
                return;
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
                if let Some(pvc) = &v.persistent_volume_claim {
                    queue.add(format!("{ns}/{}", pvc.claim_name));
                }
            }
        });
    }
    {
        let client = c.client.clone();
        tokio::spawn(async move { ensure_default_class(&client).await });
    }
    let ready = {
        let c = c.clone();
        async move {
            c.claims.synced().await;
            c.volumes.synced().await;
            c.pods.synced().await;
        }
    };
    run_workers(NAME, queue, workers, ready, move |key| {
        let c = c.clone();
        async move {
            match key.strip_prefix(PV_KEY) {
                Some(name) => c.sync_volume(name).await,
                None => c.sync_claim(&key).await,
            }
        }
    });
}

/// Makes the `local-path` StorageClass, default, unless some class is default already.
async fn ensure_default_class(client: &kube::Client) {
    let api: Api<StorageClass> = Api::all(client.clone());
    for attempt in 0..30u32 {
        match api.list(&Default::default()).await {
            Ok(list) => {
                // Either default-class annotation counts, the beta one too: a cluster whose
                // default class carries only that gets no second default.
                let has_default = list.items.iter().any(|c| {
                    skiff_apimachinery::is_default_storage_class(|k| {
                        c.annotations().get(k).map(String::as_str)
                    })
                });
                if has_default || list.items.iter().any(|c| c.name_any() == DEFAULT_CLASS) {
                    return;
                }
                let class = StorageClass {
                    metadata: ObjectMeta {
                        name: Some(DEFAULT_CLASS.into()),
                        annotations: Some(
                            [(DEFAULT_ANNOTATION.to_string(), "true".to_string())].into(),
                        ),
                        ..Default::default()
                    },
                    provisioner: PROVISIONER.into(),
                    reclaim_policy: Some("Delete".into()),
                    volume_binding_mode: Some("WaitForFirstConsumer".into()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &class).await {
                    Ok(_) | Err(kube::Error::Api(_)) => return,
                    Err(e) => tracing::debug!("creating the default StorageClass: {e}"),
                }
            }
            Err(e) => tracing::debug!(attempt, "listing StorageClasses: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            200 * u64::from(attempt + 1),
        ))
        .await;
    }
}

/// A quantity's bytes, as far as storage sizes go (`1Gi`, `500M`, `1073741824`).
fn bytes(q: Option<&Quantity>) -> u128 {
    let Some(q) = q else { return 0 };
    skiff_apimachinery::quantity::Quantity::parse(&q.0)
        .map(|v| (v.nanos.max(0) / 1_000_000_000) as u128)
        .unwrap_or(0)
}

fn requested(claim: &PersistentVolumeClaim) -> Option<Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .cloned()
}

fn class_of_claim(claim: &PersistentVolumeClaim) -> String {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn claim_ref(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: claim.metadata.name.clone(),
        namespace: claim.metadata.namespace.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Whether `pv` can serve `claim`: unclaimed (or claimed by it), same class, every access
/// mode asked for, at least the size asked for.
fn satisfies(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = pv.spec.as_ref() else {
        return false;
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if let Some(r) = &spec.claim_ref
        && (r.name != claim.metadata.name || r.namespace != claim.metadata.namespace)
    {
        return false;
    }
    if spec.storage_class_name.clone().unwrap_or_default() != class_of_claim(claim) {
        return false;
    }
    let modes = spec.access_modes.clone().unwrap_or_default();
    let wanted = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    if !wanted.iter().all(|m| modes.contains(m)) {
        return false;
    }
    let size = bytes(spec.capacity.as_ref().and_then(|c| c.get("storage")));
    size >= bytes(requested(claim).as_ref())
}

impl Controller {
    async fn sync_claim(&self, key: &str) -> SyncResult {
        let Some(claim) = self.claims.get(key) else {
            return Ok(None);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let bound_to = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
        // Bound already: the status follows.
        if let Some(name) = &bound_to
            && let Some(pv) = self.volumes.get(name)
            && pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| r.uid.as_ref())
                == claim.metadata.uid.as_ref()
        {
            return self.claim_bound(&claim, &pv).await;
        }
        // An existing volume that fits, the smallest first (or the one it names).
        let mut fits: Vec<Arc<PersistentVolume>> = self
            .volumes
            .list()
            .into_iter()
            .filter(|pv| bound_to.as_ref().is_none_or(|n| *n == pv.name_any()))
            .filter(|pv| satisfies(pv, &claim))
            .collect();
        fits.sort_by_key(|pv| {
            bytes(
                pv.spec
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage")),
            )
        });
        if let Some(pv) = fits.first() {
            return self.bind(&claim, pv).await;
        }
        if bound_to.is_some() {
            return Ok(None);
        }
        // Provision, if its class is ours.
        let class_name = class_of_claim(&claim);
        if class_name.is_empty() {
            return Ok(None);
        }
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        let Some(class) = classes.get_opt(&class_name).await? else {
            self.events.warning(
                claim.object_ref(&()),
                "ProvisioningFailed",
                "Provision",
                format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            );
            return Ok(None);
        };
        if class.provisioner != PROVISIONER {
            self.events.normal(
                claim.object_ref(&()),
                "ExternalProvisioning",
                "Provision",
                format!(
                    "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                    class.provisioner
                ),
            );
            return Ok(None);
        }
        let node = claim
            .annotations()
            .get(SELECTED_NODE)
            .cloned()
            .or_else(|| self.consumer_node(&claim));
        let Some(node) = node else {
            self.events.normal(
                claim.object_ref(&()),
                "WaitForFirstConsumer",
                "Provision",
                "waiting for first consumer to be created before binding".into(),
            );
            return Ok(None);
        };
        self.provision(&claim, &class, &node).await
    }

    /// The node of a scheduled pod that mounts the claim.
    fn consumer_node(&self, claim: &PersistentVolumeClaim) -> Option<String> {
        let ns = claim.metadata.namespace.as_deref().unwrap_or_default();
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        self.pods.list_namespace(ns).into_iter().find_map(|p| {
            let spec = p.spec.as_ref()?;
            let mounts = spec.volumes.iter().flatten().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == name)
            });
            mounts.then(|| spec.node_name.clone()).flatten()
        })
    }

    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: &StorageClass,
        node_name: &str,
    ) -> SyncResult {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let Some(node) = nodes.get_opt(node_name).await? else {
            return Ok(None);
        };
        let Some(root) = node.annotations().get(ROOT_ANNOTATION).cloned() else {
            self.events.warning(
                claim.object_ref(&()),
                "ProvisioningFailed",
                "Provision",
                format!("node {node_name} offers no local volumes (its agent sets no {ROOT_ANNOTATION} annotation)"),
            );
            return Ok(None);
        };
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let pv_name = format!("pvc-{uid}");
        let path = format!(
            "{}/{pv_name}_{ns}_{}",
            root.trim_end_matches('/'),
            claim.name_any()
        );
        self.events.normal(
            claim.object_ref(&()),
            "Provisioning",
            "Provision",
            format!(
                "External provisioner is provisioning volume for claim \"{ns}/{}\"",
                claim.name_any()
            ),
        );
        let hostname = node
            .labels()
            .get("kubernetes.io/hostname")
            .cloned()
            .unwrap_or_else(|| node_name.to_string());
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(pv_name.clone()),
                annotations: Some(
                    [(
                        "pv.kubernetes.io/provisioned-by".to_string(),
                        PROVISIONER.to_string(),
                    )]
                    .into(),
                ),
                finalizers: Some(vec![CLEANUP_FINALIZER.into()]),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(
                    [(
                        "storage".to_string(),
                        requested(claim).unwrap_or_else(|| Quantity("1Gi".into())),
                    )]
                    .into(),
                ),
                access_modes: claim.spec.as_ref().and_then(|s| s.access_modes.clone()),
                persistent_volume_reclaim_policy: Some(
                    class
                        .reclaim_policy
                        .clone()
                        .unwrap_or_else(|| "Delete".into()),
                ),
                storage_class_name: Some(class.name_any()),
                volume_mode: Some("Filesystem".into()),
                local: Some(LocalVolumeSource {
                    path,
                    fs_type: None,
                }),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "kubernetes.io/hostname".into(),
                                operator: "In".into(),
                                values: Some(vec![hostname]),
                            }]),
                            ..Default::default()
                        }],
                    }),
                }),
                claim_ref: Some(claim_ref(claim)),
                ..Default::default()
            }),
            status: None,
        };
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = match api.create(&PostParams::default(), &pv).await {
            Ok(pv) => pv,
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&pv_name).await? {
                Some(pv) => pv,
                None => return Err(Error::Other(format!("{pv_name} vanished"))),
            },
            Err(e) => {
                self.events.warning(
                    claim.object_ref(&()),
                    "ProvisioningFailed",
                    "Provision",
                    format!(
                        "failed to provision volume with StorageClass \"{}\": {e}",
                        class.name_any()
                    ),
                );
                return Err(e.into());
            }
        };
        self.events.normal(
            claim.object_ref(&()),
            "ProvisioningSucceeded",
            "Provision",
            format!("Successfully provisioned volume {pv_name}"),
        );
        // The selected node noted on the claim, as Kubernetes' scheduler notes it.
        let annotation = json!({"metadata": {"annotations": {SELECTED_NODE: node_name}}});
        let _ = crate::util::merge_patch(&self.client, claim, &annotation).await;
        self.bind(claim, &pv).await
    }

    /// Binds both ways: the volume's claimRef, then the claim's volumeName, then their
    /// statuses.
    async fn bind(&self, claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> SyncResult {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut pv = pv.clone();
        let referenced = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| r.uid == claim.metadata.uid);
        if !referenced {
            let patch = json!({
                "metadata": {"resourceVersion": pv.metadata.resource_version},
                "spec": {"claimRef": claim_ref(claim)},
            });
            pv = pvs
                .patch(
                    &pv.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            pvs.patch_status(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await?;
        }
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(&pv.name_any()) {
            let patch = json!({
                "metadata": {"annotations": {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes",
                }},
                "spec": {"volumeName": pv.name_any()},
            });
            let updated = claims
                .patch(
                    &claim.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            return self.claim_bound(&updated, &pv).await;
        }
        self.claim_bound(claim, &pv).await
    }

    async fn claim_bound(
        &self,
        claim: &PersistentVolumeClaim,
        pv: &PersistentVolume,
    ) -> SyncResult {
        let status = claim.status.as_ref();
        if status.and_then(|s| s.phase.as_deref()) == Some("Bound") {
            return Ok(None);
        }
        let spec = pv.spec.clone().unwrap_or_default();
        crate::util::merge_patch_status(
            &self.client,
            claim,
            &json!({"status": {
                "phase": "Bound",
                "accessModes": spec.access_modes,
                "capacity": spec.capacity,
            }}),
        )
        .await?;
        Ok(None)
    }

    /// A volume: Available without a claim, Released once its claim is gone, and deleted
    /// then if its policy says Delete.
    async fn sync_volume(&self, name: &str) -> SyncResult {
        let Some(pv) = self.volumes.get(name) else {
            return Ok(None);
        };
        if pv.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let phase = pv
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let set_phase = |phase: &'static str| {
            let pvs = pvs.clone();
            async move {
                pvs.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": phase}})),
                )
                .await
            }
        };
        let Some(r) = spec.claim_ref.as_ref() else {
            if phase != "Available" {
                set_phase("Available").await?;
            }
            return Ok(None);
        };
        let key = format!(
            "{}/{}",
            r.namespace.as_deref().unwrap_or_default(),
            r.name.as_deref().unwrap_or_default()
        );
        let claim = match self.claims.get(&key) {
            Some(c) => Some(c),
            // Not in the cache: gone, or made a moment ago. A read tells which.
            None => Api::<PersistentVolumeClaim>::namespaced(
                self.client.clone(),
                r.namespace.as_deref().unwrap_or_default(),
            )
            .get_opt(r.name.as_deref().unwrap_or_default())
            .await
            .ok()
            .flatten()
            .map(Arc::new),
        };
        let claim_alive = claim
            .as_ref()
            .is_some_and(|c| r.uid.is_none() || c.metadata.uid == r.uid);
        if claim_alive {
            return Ok(None);
        }
        if phase != "Released" {
            set_phase("Released").await?;
        }
        if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pv.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pvs.delete(name, &dp).await {
                Ok(_) => self.events.normal(
                    pv.object_ref(&()),
                    "VolumeDelete",
                    "Delete",
                    format!("Deleted volume {name}: its claim {key} is gone"),
                ),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(class: &str, size: &str, modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "pv"}, "spec": {
            "storageClassName": class, "capacity": {"storage": size}, "accessModes": modes}}))
        .unwrap()
    }

    fn claim(class: &str, size: &str, modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "ns"}, "spec": {
            "storageClassName": class, "resources": {"requests": {"storage": size}}, "accessModes": modes}}))
        .unwrap()
    }

    #[test]
    fn a_volume_serves_a_claim_of_its_class_size_and_modes() {
        let c = claim("manual", "1Gi", &["ReadWriteOnce"]);
        assert!(satisfies(
            &pv("manual", "2Gi", &["ReadWriteOnce", "ReadOnlyMany"]),
            &c
        ));
        assert!(!satisfies(&pv("manual", "512Mi", &["ReadWriteOnce"]), &c));
        assert!(!satisfies(&pv("other", "2Gi", &["ReadWriteOnce"]), &c));
        assert!(!satisfies(&pv("manual", "2Gi", &["ReadOnlyMany"]), &c));
    }
}
