//! Housekeeping the API server does for itself: the system namespaces, Skiff's
//! RuntimeClasses, store compaction and the expiry of events. (Emptying a terminating namespace is the namespace
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

pub fn spawn(store: Arc<dyn Store>, compaction_interval: Duration, event_ttl: Duration) {
    tokio::spawn(compactor(store.clone(), compaction_interval));
    tokio::spawn(event_reaper(store, event_ttl));
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

/// Deletes events an `event_ttl` after their last write, as kube-apiserver stores every
/// event under an etcd lease of `--event-ttl` (1 h by default) renewed by each write: a
/// busy node's events would otherwise pile up in the store for ever. Write times are what
/// this task sees through a watch of the events' prefix, not the events' own fields, which
/// a client sets as it likes; events there when it starts count as written then.
async fn event_reaper(store: Arc<dyn Store>, ttl: Duration) {
    let events = registry::find("", "v1", "events").expect("events are served");
    let prefix = events.prefix(None);
    let period = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if let Err(e) = reap_events(&*store, &prefix, ttl, period).await {
            tracing::warn!(error = %e, "expiring events failed, starting over");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Lists the events, then follows their writes and deletes each one `ttl` after its last
/// write, looking every `period`. Returns only on a store error (a compacted watch too).
async fn reap_events(
    store: &dyn Store,
    prefix: &str,
    ttl: Duration,
    period: Duration,
) -> skiff_store::Result<()> {
    use futures::StreamExt;
    let mut expiry = Expiry::default();
    let now = tokio::time::Instant::now();
    // One list at one revision, so that the watch from it misses no write.
    let listed = store
        .list(prefix, skiff_store::ListOptions::default())
        .await?;
    for kv in &listed.items {
        expiry.written(&kv.key, kv.mod_revision, now);
    }
    let revision = listed.revision;
    let mut watch = store.watch(prefix, revision).await?;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = watch.next() => match event {
                Some(Ok(e)) => match e.kind {
                    skiff_store::EventKind::Put => {
                        expiry.written(&e.kv.key, e.kv.mod_revision, tokio::time::Instant::now())
                    }
                    skiff_store::EventKind::Delete => expiry.deleted(&e.kv.key),
                },
                Some(Err(e)) => return Err(e),
                None => return Err(skiff_store::Error::Backend("the event watch ended".into())),
            },
            _ = tick.tick() => {
                for (key, revision) in expiry.due(tokio::time::Instant::now(), ttl) {
                    // Only if not written since: a newer write renews it (its watch event
                    // is on the way).
                    match store.delete(&key, Some(revision)).await {
                        Ok(_) => expiry.deleted(&key),
                        Err(skiff_store::Error::Conflict { .. } | skiff_store::Error::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// The last write of each event: its time and revision.
#[derive(Default)]
struct Expiry {
    written: std::collections::HashMap<String, (tokio::time::Instant, i64)>,
}

impl Expiry {
    fn written(&mut self, key: &str, revision: i64, at: tokio::time::Instant) {
        self.written.insert(key.to_string(), (at, revision));
    }

    fn deleted(&mut self, key: &str) {
        self.written.remove(key);
    }

    /// The events whose last write is more than `ttl` before `now`, with its revision.
    fn due(&self, now: tokio::time::Instant, ttl: Duration) -> Vec<(String, i64)> {
        self.written
            .iter()
            .filter(|(_, (at, _))| now.saturating_duration_since(*at) > ttl)
            .map(|(k, (_, rev))| (k.clone(), *rev))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_due_a_ttl_after_their_last_write() {
        let t0 = tokio::time::Instant::now();
        let ttl = Duration::from_secs(3600);
        let mut e = Expiry::default();
        e.written("/registry/core/events/default/a", 5, t0);
        e.written("/registry/core/events/default/b", 6, t0);
        e.written(
            "/registry/core/events/default/b",
            9,
            t0 + Duration::from_secs(1800),
        );
        e.written("/registry/core/events/default/c", 7, t0);
        e.deleted("/registry/core/events/default/c");
        assert!(e.due(t0 + ttl, ttl).is_empty(), "not past the TTL yet");
        assert_eq!(
            e.due(t0 + ttl + Duration::from_secs(1), ttl),
            [("/registry/core/events/default/a".to_string(), 5)]
        );
        let mut later = e.due(t0 + 2 * ttl, ttl);
        later.sort();
        assert_eq!(
            later,
            [
                ("/registry/core/events/default/a".to_string(), 5),
                ("/registry/core/events/default/b".to_string(), 9),
            ],
            "b renewed by its second write, at its revision"
        );
    }
}
