//! List-then-watch of one resource, feeding the scheduler's cache: the watch resumes from
//! the last resourceVersion seen and relists when the server answers 410 Gone.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::core::{ObjectList, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;

/// What changed in one resource: an object created or updated, deleted, or the whole set
/// replaced by a relist (objects missing from it are gone).
#[derive(Debug)]
pub(crate) enum Change<K> {
    Applied(K),
    Deleted(K),
    Relisted(Vec<K>),
}

/// How long to wait before retrying after a failed list or watch (not after a watch that
/// merely timed out): the server is down or restarting.
const RETRY: Duration = Duration::from_secs(1);

pub(crate) async fn list<K>(api: &Api<K>, fields: &str) -> Result<ObjectList<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut lp = ListParams::default();
    if !fields.is_empty() {
        lp = lp.fields(fields);
    }
    api.list(&lp).await
}

/// Follows `api` from `resource_version` until the receiver goes away, sending every
/// change through `wrap`.
pub(crate) async fn follow<K, M>(
    api: Api<K>,
    fields: &'static str,
    mut resource_version: String,
    tx: UnboundedSender<M>,
    wrap: fn(Box<Change<K>>) -> M,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let kind = std::any::type_name::<K>();
    loop {
        if tx.is_closed() {
            return;
        }
        if resource_version.is_empty() {
            match list(&api, fields).await {
                Ok(list) => {
                    resource_version = list.metadata.resource_version.unwrap_or_default();
                    if tx
                        .send(wrap(Box::new(Change::Relisted(list.items))))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "relist failed, retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let mut wp = WatchParams::default();
        if !fields.is_empty() {
            wp = wp.fields(fields);
        }
        let stream = match api.watch(&wp, &resource_version).await {
            Ok(s) => s,
            Err(kube::Error::Api(status)) if status.code == 410 => {
                resource_version.clear();
                continue;
            }
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed, retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let change = match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                    resource_version = o.meta().resource_version.clone().unwrap_or_default();
                    Change::Applied(o)
                }
                Ok(WatchEvent::Deleted(o)) => {
                    resource_version = o.meta().resource_version.clone().unwrap_or_default();
                    Change::Deleted(o)
                }
                Ok(WatchEvent::Bookmark(b)) => {
                    resource_version = b.metadata.resource_version;
                    continue;
                }
                Ok(WatchEvent::Error(status)) => {
                    if status.code == 410 {
                        resource_version.clear();
                    } else {
                        tracing::warn!(%kind, message = %status.message, "watch error");
                        tokio::time::sleep(RETRY).await;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "watch stream broke");
                    break;
                }
            };
            if tx.send(wrap(Box::new(change))).is_err() {
                return;
            }
        }
    }
}
