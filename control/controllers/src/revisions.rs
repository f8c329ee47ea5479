//! ControllerRevisions (kube's `history` package), as DaemonSets and StatefulSets keep
//! them: one per pod template, named `<owner>-<hash>`, holding the template as the patch
//! `kubectl rollout undo` applies, numbered in the order templates were used. A template
//! used again (an undo) becomes the newest revision rather than a new one.

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::informer::{Informer, controller_of};
use crate::{Error, util};

/// What [`ensure`] found or made.
pub enum Current {
    /// The revision of the template, by name.
    Revision { name: String },
    /// Another object holds the name this template hashes to: the owner's
    /// `status.collisionCount` must go up so that the hash changes.
    Collision,
}

/// The label a DaemonSet's and a StatefulSet's pods carry with the name (hash) of the
/// ControllerRevision they were made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// A pod's `controller-revision-hash`.
pub fn revision_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// The owner's revisions, oldest first.
pub fn owned<K: Resource>(
    revisions: &Informer<ControllerRevision>,
    owner: &K,
) -> Vec<Arc<ControllerRevision>> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let mut owned: Vec<Arc<ControllerRevision>> = revisions
        .owned_by(&uid)
        .into_iter()
        .filter(|r| controller_of(&**r).is_some_and(|o| o.uid == uid))
        .collect();
    owned.sort_by_key(|r| r.revision);
    owned
}

/// The revision of `template` (hash `hash`, recorded under the label `hash_label`),
/// found, renumbered as the newest, or made; then revisions past `limit` that no pod
/// uses (`in_use`, by name) are deleted, oldest first.
#[allow(clippy::too_many_arguments)]
pub async fn ensure<K>(
    client: &kube::Client,
    revisions: &Informer<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    hash: &str,
    hash_label: &str,
    in_use: &[&str],
    limit: usize,
) -> Result<Current, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let name = format!(
        "{}-{hash}",
        owner.meta().name.as_deref().unwrap_or_default()
    );
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let owned = owned(revisions, owner);
    let newest = owned.last().map_or(0, |r| r.revision);
    match owned.iter().find(|r| r.name_any() == name) {
        Some(r) if r.revision == newest => {}
        Some(r) => {
            api.patch(
                &r.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"revision": newest + 1})),
            )
            .await?;
        }
        None => {
            let mut data = serde_json::to_value(template).unwrap_or_default();
            data["$patch"] = json!("replace");
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(hash_label.into(), hash.into());
            let cr = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![util::controller_ref(owner)]),
                    ..Default::default()
                },
                data: Some(RawExtension(json!({"spec": {"template": data}}))),
                revision: newest + 1,
            };
            match api.create(&PostParams::default(), &cr).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // Ours, not yet in the cache: fine next time. Another's: a collision.
                    let existing = api.get_opt(&name).await?;
                    let mine = existing
                        .as_ref()
                        .is_some_and(|r| controller_of(r).is_some_and(|o| o.uid == uid));
                    if mine {
                        return Err(Error::Other(format!(
                            "controller revision {name} not yet cached"
                        )));
                    }
                    return Ok(Current::Collision);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let old: Vec<&Arc<ControllerRevision>> = owned
        .iter()
        .filter(|r| {
            let n = r.name_any();
            n != name && !in_use.contains(&n.as_str())
        })
        .collect();
    if old.len() > limit {
        for r in &old[..old.len() - limit] {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: r.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&r.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Current::Revision { name })
}
