//! Claiming what an owner controls, as kube's `ControllerRefManager`: objects whose
//! controller reference names the owner are its own while its selector matches them and
//! are released (the reference removed) when it stops matching; matching objects with no
//! controller are adopted. Both are strategic patches guarded by the object's uid, so a
//! new object under the same name is never touched.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::Error;
use crate::informer::controller_of;
use crate::util;

/// The objects among `candidates` that `owner` controls once adoptions and releases are
/// done; `matches` is the owner's selector.
pub async fn claim<O, C>(
    client: &kube::Client,
    owner: &O,
    ns: &str,
    candidates: Vec<Arc<C>>,
    matches: impl Fn(&C) -> bool,
) -> Result<Vec<Arc<C>>, Error>
where
    O: Resource<DynamicType = ()>,
    C: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let api: Api<C> = Api::namespaced(client.clone(), ns);
    let mut claimed = Vec::new();
    for obj in candidates {
        let matching = matches(&obj);
        let reference = match controller_of(&*obj) {
            Some(r) if r.uid == uid => {
                if matching || deleting {
                    claimed.push(obj);
                    continue;
                }
                // Release.
                json!([{"$patch": "delete", "uid": uid}])
            }
            None if matching && !deleting && obj.meta().deletion_timestamp.is_none() => {
                // Adopt.
                json!([util::controller_ref(owner)])
            }
            _ => continue,
        };
        let adopting = matching;
        let patch = json!({"metadata": {"ownerReferences": reference, "uid": obj.meta().uid}});
        match api
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(adopted) if adopting => claimed.push(Arc::new(adopted)),
            Ok(_) => {}
            // Gone, replaced under its name, or adopted by another owner meanwhile.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(claimed)
}

/// The pods `owner` controls, after adoptions and releases: the ones it already controls
/// (finished ones too) and the namespace's active orphans, judged by `matches`.
pub async fn claim_pods<O>(
    client: &kube::Client,
    pods: &crate::informer::Informer<k8s_openapi::api::core::v1::Pod>,
    owner: &O,
    matches: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool,
) -> Result<Vec<Arc<k8s_openapi::api::core::v1::Pod>>, Error>
where
    O: Resource<DynamicType = ()>,
{
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let mut candidates: Vec<Arc<k8s_openapi::api::core::v1::Pod>> = pods
        .owned_by(&uid)
        .into_iter()
        .filter(|p| controller_of(&**p).is_some_and(|r| r.uid == uid))
        .collect();
    candidates.extend(pods.orphans(&ns).into_iter().filter(|p| util::is_active(p)));
    claim(client, owner, &ns, candidates, matches).await
}
