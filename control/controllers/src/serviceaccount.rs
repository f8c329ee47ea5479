//! The serviceaccount controller: every active namespace has a ServiceAccount named
//! `default`, made when the namespace appears and again if it is deleted (clients such as
//! kubectl wait for it before creating pods in a new namespace).

use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use crate::events::Recorder;
use crate::informer::{Change, key_of};
use crate::{Informers, SyncResult, WorkQueue, run_workers};

const NAME: &str = "default";

pub fn start(informers: &Arc<Informers>, _events: &Recorder, workers: usize) {
    let namespaces = informers.namespaces();
    let accounts = informers.serviceaccounts();
    let queue = WorkQueue::new();
    {
        let queue = queue.clone();
        namespaces.subscribe(move |change| {
            if let Change::Added(ns) | Change::Updated { new: ns, .. } = change {
                queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        });
    }
    {
        let queue = queue.clone();
        accounts.subscribe(move |change| {
            if let Change::Deleted(sa) = change
                && sa.metadata.name.as_deref() == Some(NAME)
            {
                queue.add(sa.metadata.namespace.clone().unwrap_or_default());
            }
        });
    }
    let client = informers.client().clone();
    let ready = {
        let (n, a) = (namespaces.clone(), accounts.clone());
        async move {
            n.synced().await;
            a.synced().await;
        }
    };
    run_workers(
        "serviceaccount-controller",
        queue,
        workers,
        ready,
        move |ns| {
            let (client, namespaces, accounts) =
                (client.clone(), namespaces.clone(), accounts.clone());
            async move {
                let Some(namespace) = namespaces.get(&ns) else {
                    return Ok(None);
                };
                if namespace.metadata.deletion_timestamp.is_some()
                    || accounts.get(&format!("{ns}/{NAME}")).is_some()
                {
                    return Ok(None);
                }
                create(&client, &ns).await
            }
        },
    );
}

async fn create(client: &kube::Client, ns: &str) -> SyncResult {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(created) => {
            tracing::debug!(account = %key_of(&created), "service account created");
            Ok(None)
        }
        // There already (our cache is behind), or the namespace is closing.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
