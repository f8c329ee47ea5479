//! The namespace controller, as kube-controller-manager's: a namespace being deleted has
//! everything in it deleted through the API (each resource discovery lists, with the
//! deletion every other client gets: pods their grace period, objects with finalizers
//! left to them), and once nothing is left, the `kubernetes` finalizer is removed through
//! `namespaces/<name>/finalize`, after which the API server removes the namespace.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, PropagationPolicy};
use kube::discovery::{Discovery, Scope, verbs};

use crate::events::Recorder;
use crate::informer::Change;
use crate::{Informers, SyncResult, WorkQueue, run_workers};

/// The finalizer the API server puts on every namespace.
const FINALIZER: &str = "kubernetes";

/// How soon a namespace still holding objects (pods in their grace period, objects with
/// finalizers) is looked at again.
const AGAIN: Duration = Duration::from_secs(1);

pub fn start(informers: &Arc<Informers>, _events: &Recorder, workers: usize) {
    let namespaces = informers.namespaces();
    let queue = WorkQueue::new();
    {
        let queue = queue.clone();
        namespaces.subscribe(move |change| {
            let ns = match change {
                Change::Added(n) => *n,
                Change::Updated { new, .. } => *new,
                Change::Deleted(_) => return,
            };
            if ns.metadata.deletion_timestamp.is_some() {
                queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        });
    }
    let client = informers.client().clone();
    let ready = {
        let namespaces = namespaces.clone();
        async move { namespaces.synced().await }
    };
    run_workers("namespace-controller", queue, workers, ready, move |name| {
        let (client, namespaces) = (client.clone(), namespaces.clone());
        async move {
            let Some(ns) = namespaces.get(&name) else {
                return Ok(None);
            };
            sync(&client, &ns).await
        }
    });
}

async fn sync(client: &kube::Client, ns: &Namespace) -> SyncResult {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut left = 0;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &ar);
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            let lp = ListParams::default();
            if caps.supports_operation(verbs::DELETE_COLLECTION) {
                api.delete_collection(&dp, &lp).await?;
            } else {
                for obj in api.list_metadata(&lp).await? {
                    let n = obj.metadata.name.unwrap_or_default();
                    match api.delete(&n, &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            left += api.list_metadata(&lp.limit(1)).await?.items.len();
        }
    }
    if left > 0 {
        return Ok(Some(AGAIN));
    }
    let mut done = ns.clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &done)
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
