//! RuntimeClass handlers, kept from one watch so a pod's start does not wait for a GET.
//!
//! A name the cache does not hold (not listed yet, or created a moment ago) is read from
//! the API server, so the cache never refuses a RuntimeClass that exists.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};

#[derive(Default)]
pub struct RuntimeClasses {
    handlers: RwLock<HashMap<String, String>>,
}

impl RuntimeClasses {
    /// The handler of RuntimeClass `name`, or None when there is no such RuntimeClass.
    pub async fn handler(
        &self,
        client: &kube::Client,
        name: &str,
    ) -> Result<Option<String>, kube::Error> {
        if let Some(h) = self.handlers.read().expect("runtime classes").get(name) {
            return Ok(Some(h.clone()));
        }
        let api: Api<RuntimeClass> = Api::all(client.clone());
        Ok(api.get_opt(name).await?.map(|rc| rc.handler))
    }

    fn set(&self, rc: &RuntimeClass) {
        self.handlers
            .write()
            .expect("runtime classes")
            .insert(rc.name_any(), rc.handler.clone());
    }

    fn remove(&self, rc: &RuntimeClass) {
        self.handlers
            .write()
            .expect("runtime classes")
            .remove(&rc.name_any());
    }

    /// Lists and watches RuntimeClasses for as long as the agent runs.
    pub async fn follow(self: Arc<Self>, client: kube::Client) {
        let api: Api<RuntimeClass> = Api::all(client);
        loop {
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("listing runtime classes: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            *self.handlers.write().expect("runtime classes") = list
                .items
                .iter()
                .map(|rc| (rc.name_any(), rc.handler.clone()))
                .collect();
            let mut rv = list.metadata.resource_version.unwrap_or_default();
            let params = WatchParams::default().timeout(290);
            'watch: loop {
                let Ok(stream) = api.watch(&params, &rv).await else {
                    break;
                };
                let mut stream = stream.boxed();
                loop {
                    match stream.try_next().await {
                        Ok(Some(WatchEvent::Added(rc) | WatchEvent::Modified(rc))) => {
                            rv = rc.resource_version().unwrap_or_default();
                            self.set(&rc);
                        }
                        Ok(Some(WatchEvent::Deleted(rc))) => {
                            rv = rc.resource_version().unwrap_or_default();
                            self.remove(&rc);
                        }
                        Ok(Some(WatchEvent::Bookmark(b))) => rv = b.metadata.resource_version,
                        // Timed out: watch again from where it was.
                        Ok(None) => continue 'watch,
                        // Too old, or the connection failed: list again.
                        Ok(Some(WatchEvent::Error(_))) | Err(_) => break 'watch,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
