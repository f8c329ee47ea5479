//! Housekeeping the API server does for itself: the system namespaces, Skiff's
//! RuntimeClasses and store compaction. (Emptying a terminating namespace is the namespace
//! controller's, an API client in `skiff-controllers`.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skiff_store::Store;

use crate::object;
use crate::registry::{self, Resource};

fn namespaces() -> &'static Resource {
    registry::find("", "v1", "namespaces").expect("namespaces are served")
}

/// Creates `default`, `kube-system`, `kube-public` and `kube-node-lease` if missing.
pub async fn ensure_system_namespaces(store: &Arc<dyn Store>) -> skiff_store::Result<()> {
    let res = namespaces();
    for ns in crate::SYSTEM_NAMESPACES {
        let key = res.key(None, ns);
        if store.get(&key).await?.is_some() {
            continue;
        }
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": object::now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": ns},
                "generation": 1,
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        match store.create(&key, object::encode(res, &obj)).await {
            Ok(_) | Err(skiff_store::Error::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// RuntimeClasses for the runtimes Skiff's node agents offer. Each schedules onto nodes
/// whose agent runs that handler (`runtime.skiff.dev/<handler>=true`, set by the agent).
pub const RUNTIME_HANDLERS: &[&str] = &["wasmtime", "youki"];

/// Creates Skiff's RuntimeClasses if missing (a user's edits to them are kept).
pub async fn ensure_runtime_classes(store: &Arc<dyn Store>) -> skiff_store::Result<()> {
    let res =
        registry::find("node.k8s.io", "v1", "runtimeclasses").expect("runtimeclasses are served");
    for handler in RUNTIME_HANDLERS {
        let key = res.key(None, handler);
        if store.get(&key).await?.is_some() {
            continue;
        }
        let obj = json!({
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {
                "name": handler,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": object::now_rfc3339(),
                "labels": {"app.kubernetes.io/managed-by": "skiff"},
            },
            "handler": handler,
            "scheduling": {"nodeSelector": {format!("runtime.skiff.dev/{handler}"): "true"}},
        });
        match store.create(&key, object::encode(res, &obj)).await {
            Ok(_) | Err(skiff_store::Error::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn spawn(store: Arc<dyn Store>, compaction_interval: Duration) {
    tokio::spawn(compactor(store, compaction_interval));
}

/// Compacts the store to the revision it had one interval ago, as kube-apiserver compacts
/// etcd, so history (and the disk it takes) stays bounded under churn.
async fn compactor(store: Arc<dyn Store>, interval: Duration) {
    let mut seen: VecDeque<i64> = VecDeque::new();
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let Ok(rev) = store.current_revision().await else {
            continue;
        };
        seen.push_back(rev);
        if seen.len() > 2 {
            seen.pop_front();
        }
        if seen.len() == 2 {
            let target = seen[0];
            match store.compact(target).await {
                Ok(()) => tracing::debug!(revision = target, "store compacted"),
                Err(skiff_store::Error::Compacted { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed"),
            }
        }
    }
}
