//! The watch cache: one store watch over `/registry/` feeds a ring of recent events and a
//! broadcast to every client watch. A client watching from revision `R` is served from the
//! ring when `R` is still in it, and gets the in-stream 410 `Expired` otherwise, so clients
//! relist as they do against kube-apiserver. No client ever opens its own store watch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use skiff_store::{EventKind, Revision, Store};
use tokio::sync::broadcast;

/// One change, parsed once and shared by every client.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: Revision,
    pub key: String,
    /// `None` for a delete.
    pub object: Option<Arc<Value>>,
    /// The object before the change (`None` for a create): the same value as the object
    /// of the key's event before, when the cache still holds it.
    pub prev: Option<Arc<Value>>,
    /// `object` and `prev` as JSON with `metadata.resourceVersion` set to this event's
    /// revision, made by the first client that sends them: every watcher of a resource
    /// stored as it is served sends the same bytes.
    object_json: OnceLock<Bytes>,
    prev_json: OnceLock<Bytes>,
}

impl CachedEvent {
    pub fn new(
        revision: Revision,
        key: String,
        object: Option<Value>,
        prev: Option<Value>,
    ) -> Self {
        Self::shared(revision, key, object.map(Arc::new), prev.map(Arc::new))
    }

    fn shared(
        revision: Revision,
        key: String,
        object: Option<Arc<Value>>,
        prev: Option<Arc<Value>>,
    ) -> Self {
        CachedEvent {
            revision,
            key,
            object,
            prev,
            object_json: OnceLock::new(),
            prev_json: OnceLock::new(),
        }
    }

    pub fn is_delete(&self) -> bool {
        self.object.is_none()
    }

    /// The object (or, with `prev`, the one before the change) as JSON, as a watch serves
    /// it at this revision; `None` when there is no such object.
    pub fn json(&self, prev: bool) -> Option<&Bytes> {
        let (value, cell) = if prev {
            (self.prev.as_ref()?, &self.prev_json)
        } else {
            (self.object.as_ref()?, &self.object_json)
        };
        Some(cell.get_or_init(|| {
            let rv = self.revision.to_string();
            Bytes::from(
                serde_json::to_vec(&WithResourceVersion {
                    obj: value,
                    rv: &rv,
                })
                .unwrap_or_default(),
            )
        }))
    }
}

/// Serializes an object with `metadata.resourceVersion` replaced (or added), without
/// copying it.
struct WithResourceVersion<'a> {
    obj: &'a Value,
    rv: &'a str,
}

impl serde::Serialize for WithResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(map) = self.obj else {
            return self.obj.serialize(s);
        };
        let mut out =
            s.serialize_map(Some(map.len() + usize::from(!map.contains_key("metadata"))))?;
        let mut had_meta = false;
        for (k, v) in map {
            match (k.as_str(), v) {
                ("metadata", Value::Object(meta)) => {
                    had_meta = true;
                    out.serialize_entry(k, &MetaWithResourceVersion { meta, rv: self.rv })?;
                }
                _ => out.serialize_entry(k, v)?,
            }
        }
        if !had_meta && !map.contains_key("metadata") {
            out.serialize_entry(
                "metadata",
                &serde_json::json!({ "resourceVersion": self.rv }),
            )?;
        }
        out.end()
    }
}

struct MetaWithResourceVersion<'a> {
    meta: &'a serde_json::Map<String, Value>,
    rv: &'a str,
}

impl serde::Serialize for MetaWithResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let present = self.meta.contains_key("resourceVersion");
        let mut out = s.serialize_map(Some(self.meta.len() + usize::from(!present)))?;
        for (k, v) in self.meta {
            if k == "resourceVersion" {
                out.serialize_entry(k, self.rv)?;
            } else {
                out.serialize_entry(k, v)?;
            }
        }
        if !present {
            out.serialize_entry("resourceVersion", self.rv)?;
        }
        out.end()
    }
}

struct Inner {
    ring: VecDeque<Arc<CachedEvent>>,
    /// Every event with a revision above this one is in the ring (or still to come).
    complete_after: Revision,
    /// The revision of the newest event the cache has seen.
    head: Revision,
    tx: broadcast::Sender<Arc<CachedEvent>>,
}

pub struct WatchCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// The revision asked for is older than the cache remembers.
#[derive(Debug, Clone, Copy)]
pub struct Expired {
    pub oldest: Revision,
}

const BROADCAST_CAPACITY: usize = 4096;
/// Keys whose newest object the feed keeps for the next event's `prev`.
const LATEST_KEYS: usize = 4096;

impl WatchCache {
    /// Starts the cache at the store's current revision and the task that feeds it.
    pub async fn start(store: Arc<dyn Store>, capacity: usize) -> skiff_store::Result<Arc<Self>> {
        let rev = store.current_revision().await?;
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cache = Arc::new(WatchCache {
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(1024)),
                complete_after: rev,
                head: rev,
                tx,
            }),
            capacity,
        });
        tokio::spawn(feed(Arc::downgrade(&cache), store, rev));
        Ok(cache)
    }

    pub fn head(&self) -> Revision {
        self.inner.lock().expect("watch cache lock").head
    }

    fn push(&self, ev: CachedEvent) {
        let ev = Arc::new(ev);
        let mut inner = self.inner.lock().expect("watch cache lock");
        if inner.ring.len() == self.capacity
            && let Some(old) = inner.ring.pop_front()
        {
            inner.complete_after = old.revision;
        }
        inner.head = ev.revision;
        inner.ring.push_back(ev.clone());
        // Sent under the lock so that a subscriber's backlog and its live events neither
        // overlap nor leave a gap.
        let _ = inner.tx.send(ev);
    }

    /// Forgets everything: used when the feed lost events it cannot recover. Clients see
    /// their channel close and answer 410, so they relist.
    fn reset(&self, rev: Revision) {
        let mut inner = self.inner.lock().expect("watch cache lock");
        inner.ring.clear();
        inner.complete_after = rev;
        inner.head = rev;
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        inner.tx = tx;
    }

    /// Events after `after`, then live ones.
    pub fn subscribe(self: &Arc<Self>, after: Revision) -> Result<Subscription, Expired> {
        let inner = self.inner.lock().expect("watch cache lock");
        if after < inner.complete_after {
            return Err(Expired {
                oldest: inner.complete_after,
            });
        }
        let backlog: VecDeque<_> = inner
            .ring
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        Ok(Subscription {
            cache: self.clone(),
            backlog,
            rx: inner.tx.subscribe(),
            last: after,
        })
    }
}

pub struct Subscription {
    cache: Arc<WatchCache>,
    backlog: VecDeque<Arc<CachedEvent>>,
    rx: broadcast::Receiver<Arc<CachedEvent>>,
    last: Revision,
}

impl Subscription {
    /// The next event, in revision order.
    pub async fn next(&mut self) -> Result<Arc<CachedEvent>, Expired> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                self.last = ev.revision;
                return Ok(ev);
            }
            match self.rx.recv().await {
                Ok(ev) if ev.revision <= self.last => continue,
                Ok(ev) => {
                    self.last = ev.revision;
                    return Ok(ev);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live channel: catch up from the ring if it still
                    // holds what was missed.
                    let fresh = self.cache.subscribe(self.last)?;
                    self.backlog = fresh.backlog;
                    self.rx = fresh.rx;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Expired { oldest: self.last });
                }
            }
        }
    }

    /// The newest revision this subscriber may claim to have seen (for bookmarks).
    pub fn bookmark_revision(&self) -> Revision {
        self.last.max(self.cache.head())
    }
}

fn parse(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

async fn feed(cache: std::sync::Weak<WatchCache>, store: Arc<dyn Store>, mut rev: Revision) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // The newest object of each key the feed has seen (a bounded number of keys): an
        // update's previous object is the one parsed for the key's event before, so it
        // is not parsed again.
        let mut latest: HashMap<String, (Revision, Arc<Value>)> = HashMap::new();
        let mut stream = match store.watch("/registry/", rev).await {
            Ok(s) => s,
            Err(skiff_store::Error::Compacted { .. }) => {
                let Some(c) = cache.upgrade() else { return };
                rev = store.current_revision().await.unwrap_or(rev);
                tracing::warn!(
                    revision = rev,
                    "watch cache fell behind compaction; resetting"
                );
                c.reset(rev);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: store watch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if cache.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        while let Some(item) = stream.next().await {
            let Some(c) = cache.upgrade() else { return };
            match item {
                Ok(ev) => {
                    rev = ev.revision();
                    let object = match ev.kind {
                        EventKind::Put => parse(&ev.kv.value).map(Arc::new),
                        EventKind::Delete => None,
                    };
                    if ev.kind == EventKind::Put && object.is_none() {
                        tracing::error!(key = %ev.kv.key, "watch cache: stored value is not JSON");
                        continue;
                    }
                    let known = latest.remove(&ev.kv.key);
                    let prev = ev.prev.as_ref().and_then(|p| match known {
                        Some((at, value)) if at == p.mod_revision => Some(value),
                        _ => parse(&p.value).map(Arc::new),
                    });
                    if let Some(object) = &object {
                        if latest.len() >= LATEST_KEYS {
                            latest.clear();
                        }
                        latest.insert(ev.kv.key.clone(), (rev, object.clone()));
                    }
                    c.push(CachedEvent::shared(rev, ev.kv.key.clone(), object, prev));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache: store watch ended");
                    break;
                }
            }
        }
        if cache.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn an_updates_previous_object_is_the_object_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(skiff_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let cache = WatchCache::start(store.clone(), 16).await.unwrap();
        let mut sub = cache.subscribe(cache.head()).unwrap();
        let version = |n: i32| Bytes::from(json!({"kind": "Pod", "n": n}).to_string());
        let key = "/registry/pods/ns/p";
        let mut rev = store.create(key, version(0)).await.unwrap().mod_revision;
        for n in 1..4 {
            rev = store
                .update(key, rev, version(n))
                .await
                .unwrap()
                .mod_revision;
        }
        store.delete(key, None).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let ev = sub.next().await.unwrap();
            let n = |v: &Option<Arc<Value>>| v.as_ref().map(|v| v["n"].as_i64().unwrap());
            seen.push((n(&ev.object), n(&ev.prev)));
        }
        assert_eq!(
            seen,
            [
                (Some(0), None),
                (Some(1), Some(0)),
                (Some(2), Some(1)),
                (Some(3), Some(2)),
                (None, Some(3)),
            ]
        );
    }

    #[test]
    fn events_are_served_at_their_revision() {
        let stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "5", "uid": "u"}, "spec": {"a": 1}});
        let prev = json!({"kind": "Pod", "metadata": {"name": "p"}});
        let ev = CachedEvent::new(
            42,
            "/registry/pods/ns/p".into(),
            Some(stored.clone()),
            Some(prev),
        );
        let sent: Value = serde_json::from_slice(ev.json(false).unwrap()).unwrap();
        let mut want = stored;
        want["metadata"]["resourceVersion"] = json!("42");
        assert_eq!(sent, want);
        let sent_prev: Value = serde_json::from_slice(ev.json(true).unwrap()).unwrap();
        assert_eq!(
            sent_prev,
            json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "42"}})
        );
        // Encoded once.
        assert!(std::ptr::eq(
            ev.json(false).unwrap(),
            ev.json(false).unwrap()
        ));
        let bare = CachedEvent::new(7, "k".into(), Some(json!({"kind": "X"})), None);
        let sent: Value = serde_json::from_slice(bare.json(false).unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({"kind": "X", "metadata": {"resourceVersion": "7"}})
        );
        assert!(bare.json(true).is_none());
        let deleted = CachedEvent::new(8, "k".into(), None, Some(json!({"kind": "X"})));
        assert!(deleted.json(false).is_none() && deleted.is_delete());
    }
}
