//! RuntimeClass handlers, read from the shared informer layer's cache so a pod's start
//! does not wait for a GET.
//!
//! A name the cache does not hold (not listed yet, or created a moment ago) is read from
//! the API server, so the cache never refuses a RuntimeClass that exists.

use std::sync::Arc;

use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::runtime::watcher;
use skiff_informer::{AbortOnDrop, Informer};

pub struct RuntimeClasses {
    cache: Arc<Informer<RuntimeClass>>,
    _watch: AbortOnDrop,
}

impl RuntimeClasses {
    /// Starts following RuntimeClasses; the watch ends when this is dropped.
    pub fn follow(client: kube::Client) -> RuntimeClasses {
        let cache = Informer::new();
        let task = cache.start(Api::all(client), watcher::Config::default());
        RuntimeClasses {
            cache,
            _watch: AbortOnDrop(task),
        }
    }

    /// The handler of RuntimeClass `name`, or None when there is no such RuntimeClass.
    pub async fn handler(
        &self,
        client: &kube::Client,
        name: &str,
    ) -> Result<Option<String>, kube::Error> {
        if let Some(rc) = self.cache.get(name) {
            return Ok(Some(rc.handler.clone()));
        }
        let api: Api<RuntimeClass> = Api::all(client.clone());
        Ok(api.get_opt(name).await?.map(|rc| rc.handler))
    }
}
