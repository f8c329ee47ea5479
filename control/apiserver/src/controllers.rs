//! Housekeeping the API server does for itself: the system namespaces, Skiff's
//! RuntimeClasses, store compaction and the expiry of events. (Emptying a terminating namespace is the namespace
//! controller's, an API client in `skiff-controllers`.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skiff_store::Store;

use crate::object;
use crate::registry::{self, Resource};
use crate::watch::WatchCache;

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

pub fn spawn(
    store: Arc<dyn Store>,
    cache: Arc<WatchCache>,
    compaction_interval: Duration,
    event_ttl: Duration,
    kubernetes: KubernetesService,
) {
    tokio::spawn(compactor(store.clone(), compaction_interval));
    tokio::spawn(service_repair(store.clone()));
    tokio::spawn(kubernetes_service(store.clone(), kubernetes));
    tokio::spawn(event_reaper(store, cache, event_ttl));
}

/// kube-apiserver's ClusterIP and NodePort repair loops (`serviceips::repair`), a pass a
/// minute.
async fn service_repair(store: Arc<dyn Store>) {
    let mut suspects = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = crate::serviceips::repair(&*store, &mut suspects).await {
            tracing::warn!("repairing service reservations: {e}");
        }
    }
}

/// The `kubernetes` Service in `default` and where it leads, as kube-apiserver keeps them.
#[derive(Debug, Clone)]
pub struct KubernetesService {
    /// The range's first address.
    pub cluster_ip: std::net::Ipv4Addr,
    /// The server's address for pods, when it has one (not loopback).
    pub advertise: Option<std::net::SocketAddr>,
    /// The port the server listens on (the Service's targetPort).
    pub port: u16,
}

const KUBERNETES_RECONCILE: Duration = Duration::from_secs(10);

/// Keeps the `kubernetes` Service (recreated if deleted; its port put back if changed),
/// and its Endpoints and EndpointSlice naming this server, every 10 seconds as
/// kube-apiserver's endpoint reconciler does. A server listening on loopback only
/// publishes the Service without endpoints: no pod could reach it.
async fn kubernetes_service(store: Arc<dyn Store>, k: KubernetesService) {
    let mut tick = tokio::time::interval(KUBERNETES_RECONCILE);
    loop {
        tick.tick().await;
        if let Err(e) = ensure_kubernetes_service(&store, &k).await {
            tracing::warn!("keeping the kubernetes Service: {e}");
        }
    }
}

pub async fn ensure_kubernetes_service(
    store: &Arc<dyn Store>,
    k: &KubernetesService,
) -> skiff_store::Result<()> {
    let ip = k.cluster_ip.to_string();
    let port = k.advertise.map_or(k.port, |a| a.port());
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    });
    let services = registry::find("", "v1", "services").expect("services are served");
    // Its address is reserved when it is written; a tick that finds it as it was writes
    // nothing (the repair pass records a reservation lost otherwise).
    if let Some(written) = keep(store, services, svc, &["spec"]).await? {
        crate::serviceips::record(&**store, &written).await?;
    }
    let Some(addr) = k.advertise else {
        return Ok(());
    };
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [{
            "addresses": [{"ip": addr.ip().to_string()}],
            "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}],
        }],
    });
    let res = registry::find("", "v1", "endpoints").expect("endpoints are served");
    keep(store, res, endpoints, &["subsets"]).await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}],
    });
    let res = registry::find("discovery.k8s.io", "v1", "endpointslices")
        .expect("endpointslices are served");
    keep(store, res, slice, &["endpoints", "ports"]).await?;
    Ok(())
}

/// Creates `obj` if it is missing, or puts back its `fields` if they differ; returns what
/// it wrote, `None` when the stored object already had them.
async fn keep(
    store: &Arc<dyn Store>,
    res: &'static Resource,
    mut obj: serde_json::Value,
    fields: &[&str],
) -> skiff_store::Result<Option<serde_json::Value>> {
    let ns = object::meta_str(&obj, "namespace").map(str::to_string);
    let key = res.key(ns.as_deref(), object::name(&obj));
    for _ in 0..4 {
        match store.get(&key).await? {
            None => {
                let meta = obj["metadata"].as_object_mut().expect("metadata");
                meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
                if res.has_spec {
                    meta.insert("generation".into(), json!(1));
                }
                match store.create(&key, object::encode(res, &obj)).await {
                    Ok(_) => return Ok(Some(obj)),
                    Err(skiff_store::Error::AlreadyExists) => continue,
                    Err(e) => return Err(e),
                }
            }
            Some(kv) => {
                let Ok(mut stored) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
                    return Ok(None);
                };
                if fields.iter().all(|f| stored.get(*f) == obj.get(*f)) {
                    return Ok(None);
                }
                for f in fields {
                    stored[*f] = obj[*f].clone();
                }
                if res.has_spec {
                    let g = stored
                        .pointer("/metadata/generation")
                        .and_then(serde_json::Value::as_i64)
                        .unwrap_or(0);
                    stored["metadata"]["generation"] = json!(g + 1);
                }
                match store
                    .update(&key, kv.mod_revision, object::encode(res, &stored))
                    .await
                {
                    Ok(_) => return Ok(Some(stored)),
                    Err(skiff_store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(None)
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
/// this task sees through the watch cache, not the events' own fields, which a client sets
/// as it likes; events there when it starts count as written then.
///
/// Unlike kube-apiserver, events also go with the object they are about when nothing
/// lives on that they are the history of (see [`Expiry::object_deleted`]): the events whose
/// `involvedObject.uid` is its uid, and any such event written in the ten minutes after (a
/// node reporting its last container stopped). A deleted Deployment of a thousand pods
/// leaves no event of theirs for an hour; an evicted pod's events stay.
async fn event_reaper(store: Arc<dyn Store>, cache: Arc<WatchCache>, ttl: Duration) {
    let events = registry::find("", "v1", "events").expect("events are served");
    let prefix = events.prefix(None);
    let period = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    // Deletions run on their own task, so that a thousand of them never hold up the
    // cache subscription (which would then fall behind and start over).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64)>();
    {
        let store = store.clone();
        tokio::spawn(async move {
            while let Some((key, revision)) = rx.recv().await {
                // Only if not written since; a newer write is on its way to the reaper.
                match store.delete(&key, Some(revision)).await {
                    Ok(_)
                    | Err(skiff_store::Error::Conflict { .. } | skiff_store::Error::NotFound) => {}
                    Err(e) => tracing::warn!(error = %e, %key, "deleting an event failed"),
                }
            }
        });
    }
    loop {
        if let Err(e) = reap_events(&*store, &cache, &prefix, ttl, period, &tx).await {
            tracing::warn!(error = %e, "expiring events failed, starting over");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Lists the events, then follows every write through the watch cache: events' writes
/// renew them, deletions of other objects take their events along; each event is
/// deleted `ttl` after its last write, looking every `period`. Returns only on a store
/// error or when it fell behind the cache.
async fn reap_events(
    store: &dyn Store,
    cache: &Arc<WatchCache>,
    prefix: &str,
    ttl: Duration,
    period: Duration,
    delete: &tokio::sync::mpsc::UnboundedSender<(String, i64)>,
) -> Result<(), String> {
    let mut book = Expiry::default();
    let now = tokio::time::Instant::now();
    // One list at one revision, so that following the cache from it misses no write.
    let listed = store
        .list(prefix, skiff_store::ListOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    for kv in &listed.items {
        let uid = serde_json::from_slice::<serde_json::Value>(&kv.value)
            .ok()
            .and_then(|v| involved_uid(&v));
        book.written(&kv.key, kv.mod_revision, now, uid.as_deref());
    }
    let mut watch = cache.subscribe(listed.revision).map_err(|e| {
        format!(
            "the watch cache starts after revision {} (listed at {})",
            e.oldest, listed.revision
        )
    })?;
    let send = |due: Vec<(String, i64)>| {
        for d in due {
            let _ = delete.send(d);
        }
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = watch.next() => {
                let event = event.map_err(|e| format!("fell behind the watch cache (it starts after {})", e.oldest))?;
                let now = tokio::time::Instant::now();
                match (&event.object, event.key.starts_with(prefix)) {
                    (Some(e), true) => {
                        let uid = involved_uid(e);
                        send(book.written(&event.key, event.revision, now, uid.as_deref()));
                    }
                    (None, true) => book.deleted(&event.key),
                    (None, false) => {
                        if let Some(prev) = event.prev.as_deref()
                            && let Some(uid) = object_uid(prev)
                        {
                            send(book.object_deleted(uid, controller_uid(prev), now));
                        }
                    }
                    (Some(obj), false) => {
                        if object::is_deleting(obj)
                            && let Some(uid) = object_uid(obj)
                        {
                            book.dying(uid);
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                send(book.due(now, ttl));
                book.forget_gone(now);
            }
        }
    }
}

fn object_uid(obj: &serde_json::Value) -> Option<&str> {
    object::meta_str(obj, "uid").filter(|u| !u.is_empty())
}

/// The uid of the object's controller (its owner reference marked `controller`).
fn controller_uid(obj: &serde_json::Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?
        .get("uid")?
        .as_str()
}

fn involved_uid(event: &serde_json::Value) -> Option<String> {
    object::field_value(event, "involvedObject.uid").filter(|u| !u.is_empty())
}

/// How long a deleted object is remembered: its events written meanwhile are deleted as
/// soon as they come, and its dependents deleted meanwhile take theirs along.
const GONE_WINDOW: Duration = Duration::from_secs(600);

/// The last write of each event (its time and revision), the events of each involved
/// object, the objects being deleted (a deletionTimestamp seen), and those deleted within
/// [`GONE_WINDOW`] whose events went with them.
#[derive(Default)]
struct Expiry {
    written: HashMap<String, Written>,
    about: HashMap<String, HashSet<String>>,
    dying: HashSet<String>,
    gone: HashMap<String, tokio::time::Instant>,
    /// Deleted objects whose events were kept (their controller lived on), by controller:
    /// they go when the controller goes.
    kept: HashMap<String, HashSet<String>>,
    /// The same, each kept object to its controller and when it was deleted. One with
    /// no event yet is remembered for [`GONE_WINDOW`]: events about it may still come
    /// (a pod scaled away before the scheduler's or the node's events were written).
    kept_by: HashMap<String, (String, tokio::time::Instant)>,
}

struct Written {
    at: tokio::time::Instant,
    revision: i64,
    involved: Option<String>,
}

impl Expiry {
    /// Records a write; returns the event to delete at once when it is about an object
    /// deleted within the window.
    fn written(
        &mut self,
        key: &str,
        revision: i64,
        at: tokio::time::Instant,
        involved: Option<&str>,
    ) -> Vec<(String, i64)> {
        // A renewal (most writes: the event's count goes up): only its time and revision.
        // (An object still indexed here is not gone: its deletion took its events.)
        if let Some(w) = self.written.get_mut(key)
            && w.involved.as_deref() == involved
        {
            w.at = at;
            w.revision = revision;
            return Vec::new();
        }
        self.unindex(key);
        if let Some(uid) = involved {
            if self.gone.contains_key(uid) {
                return vec![(key.to_string(), revision)];
            }
            self.about
                .entry(uid.to_string())
                .or_default()
                .insert(key.to_string());
        }
        self.written.insert(
            key.to_string(),
            Written {
                at,
                revision,
                involved: involved.map(String::from),
            },
        );
        Vec::new()
    }

    /// An event deleted: forgotten, and so is a deleted object whose last event it was.
    fn deleted(&mut self, key: &str) {
        if let Some(uid) = self.unindex(key) {
            self.unkeep(&uid);
        }
    }

    /// Forgets a kept object.
    fn unkeep(&mut self, uid: &str) {
        if let Some((controller, _)) = self.kept_by.remove(uid)
            && let Some(uids) = self.kept.get_mut(&controller)
        {
            uids.remove(uid);
            if uids.is_empty() {
                self.kept.remove(&controller);
            }
        }
    }

    /// Forgets the event's write; returns its object's uid when that has no event left.
    fn unindex(&mut self, key: &str) -> Option<String> {
        let uid = self.written.remove(key)?.involved?;
        let keys = self.about.get_mut(&uid)?;
        keys.remove(key);
        if !keys.is_empty() {
            return None;
        }
        self.about.remove(&uid);
        Some(uid)
    }

    /// An object is being deleted (its owner's deletion may be waiting for it).
    fn dying(&mut self, uid: &str) {
        if !self.dying.contains(uid) {
            self.dying.insert(uid.to_string());
        }
    }

    /// An object was deleted: its events, to delete now (each at the revision seen), when
    /// nothing lives on that they are the history of: the object had no controller (the
    /// user deleted it), or its controller is being deleted or gone (a cascade). A pod
    /// that its ReplicaSet replaces (evicted, rolled, scaled down) keeps its events for
    /// the TTL, as on Kubernetes: they are the history of a workload still there.
    fn object_deleted(
        &mut self,
        uid: &str,
        controller: Option<&str>,
        now: tokio::time::Instant,
    ) -> Vec<(String, i64)> {
        self.dying.remove(uid);
        let cascade =
            controller.is_none_or(|c| self.dying.contains(c) || self.gone.contains_key(c));
        if !cascade {
            if let Some(c) = controller {
                self.kept
                    .entry(c.to_string())
                    .or_default()
                    .insert(uid.to_string());
                self.kept_by.insert(uid.to_string(), (c.to_string(), now));
            }
            return Vec::new();
        }
        // Its events, and those of its dependents deleted before it (a pod its ReplicaSet
        // replaced, then the ReplicaSet).
        let mut due = Vec::new();
        let mut uids = vec![uid.to_string()];
        while let Some(uid) = uids.pop() {
            self.gone.insert(uid.clone(), now);
            for dependent in self.kept.remove(&uid).unwrap_or_default() {
                self.kept_by.remove(&dependent);
                uids.push(dependent);
            }
            for k in self.about.remove(&uid).unwrap_or_default() {
                if let Some(w) = self.written.remove(&k) {
                    due.push((k, w.revision));
                }
            }
        }
        due
    }

    fn forget_gone(&mut self, now: tokio::time::Instant) {
        self.gone
            .retain(|_, at| now.saturating_duration_since(*at) <= GONE_WINDOW);
        let stale: Vec<String> = self
            .kept_by
            .iter()
            .filter(|(uid, (_, at))| {
                now.saturating_duration_since(*at) > GONE_WINDOW && !self.about.contains_key(*uid)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in stale {
            self.unkeep(&uid);
        }
    }

    /// The events whose last write is more than `ttl` before `now`, with its revision.
    fn due(&self, now: tokio::time::Instant, ttl: Duration) -> Vec<(String, i64)> {
        self.written
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.at) > ttl)
            .map(|(k, w)| (k.clone(), w.revision))
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
        e.written("/registry/core/events/default/a", 5, t0, None);
        e.written("/registry/core/events/default/b", 6, t0, None);
        e.written(
            "/registry/core/events/default/b",
            9,
            t0 + Duration::from_secs(1800),
            None,
        );
        e.written("/registry/core/events/default/c", 7, t0, None);
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

    #[test]
    fn events_go_with_their_object_when_nothing_lives_on() {
        let t0 = tokio::time::Instant::now();
        let mut e = Expiry::default();
        let key = |n: &str| format!("/registry/core/events/default/{n}");
        assert!(e.written(&key("d"), 4, t0, Some("deploy")).is_empty());
        assert!(e.written(&key("a1"), 5, t0, Some("pod-a")).is_empty());
        e.written(&key("a2"), 6, t0, Some("pod-a"));
        e.written(&key("a2"), 8, t0, Some("pod-a"));
        e.written(&key("b"), 7, t0, Some("pod-b"));
        e.written(&key("rs"), 3, t0, Some("rs"));
        e.written(&key("x"), 2, t0, Some("pod-x"));
        // A pod its ReplicaSet replaces keeps its events, until the ReplicaSet goes too.
        assert!(e.object_deleted("pod-b", Some("rs"), t0).is_empty());
        assert!(e.object_deleted("pod-x", Some("rs-other"), t0).is_empty());
        // The Deployment, deleted by the user (no controller), takes its own; then its
        // ReplicaSet and that one's pods, a cascade, take theirs, with the replaced pod's.
        assert_eq!(e.object_deleted("deploy", None, t0), [(key("d"), 4)]);
        let mut rs = e.object_deleted("rs", Some("deploy"), t0);
        rs.sort();
        assert_eq!(rs, [(key("b"), 7), (key("rs"), 3)]);
        let mut gone = e.object_deleted("pod-a", Some("rs"), t0);
        gone.sort();
        assert_eq!(gone, [(key("a1"), 5), (key("a2"), 8)]);
        // Written after the deletion: deleted at once, within the window.
        assert_eq!(
            e.written(&key("a3"), 9, t0 + Duration::from_secs(5), Some("pod-a")),
            [(key("a3"), 9)]
        );
        e.forget_gone(t0 + GONE_WINDOW + Duration::from_secs(1));
        assert!(
            e.written(&key("a4"), 10, t0 + GONE_WINDOW * 2, Some("pod-a"))
                .is_empty()
        );
        // Foreground: the owner is only being deleted when its dependents go.
        e.written(&key("c"), 11, t0, Some("pod-c"));
        e.dying("rs-2");
        assert_eq!(
            e.object_deleted("pod-c", Some("rs-2"), t0),
            [(key("c"), 11)]
        );
        // A pod scaled away before any event about it was written, and events about it
        // written after: they go with its ReplicaSet.
        assert!(e.object_deleted("pod-y", Some("rs-3"), t0).is_empty());
        assert!(e.written(&key("y"), 12, t0, Some("pod-y")).is_empty());
        assert_eq!(e.object_deleted("rs-3", None, t0), [(key("y"), 12)]);
        // One that never had an event is forgotten after the window.
        assert!(e.object_deleted("pod-z", Some("rs-4"), t0).is_empty());
        e.forget_gone(t0 + GONE_WINDOW * 2);
        assert!(!e.kept_by.contains_key("pod-z") && !e.kept.contains_key("rs-4"));
        // A replaced pod's events expire as before while its owner lives (a4, written
        // later, not yet).
        let ttl = Duration::from_secs(3600);
        assert_eq!(
            e.due(t0 + ttl + Duration::from_secs(1), ttl),
            [(key("x"), 2)]
        );
    }
}
