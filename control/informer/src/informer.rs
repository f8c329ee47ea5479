//! The shared informer layer: one list-and-watch per resource kind, a local cache of what it
//! saw, indexed by namespace, by uid and by owner (and, where asked, by a value of the
//! kind's own and by the namespaces' orphans), and the handlers every controller
//! registers on it (client-go's `SharedIndexInformer`).
//!
//! The list, the watch, resuming from the last resourceVersion, bookmarks, relisting on 410
//! Gone and backing off from a failing server are kube-runtime's `watcher`. Its
//! `reflector::Store` has no secondary index and one stream per consumer, while every
//! controller here asks "the pods this ReplicaSet owns" and several controllers follow
//! the same kind; so the cache, its indexes and the fan-out to handlers are this module's.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::task::AbortHandle;

/// An object's cache key: `namespace/name`, or `name` for a cluster-scoped object.
pub fn key_of<K: Resource>(obj: &K) -> String {
    key_of_meta(obj.meta())
}

/// `key_of` from the object's metadata.
pub fn key_of_meta(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// The namespace and name in a key.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// What changed in the cache, as handlers see it.
pub enum Change<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

struct Cache<K> {
    objects: HashMap<String, Arc<K>>,
    by_namespace: Index,
    by_uid: HashMap<String, String>,
    /// Owner uid to the keys of the objects that name it in their ownerReferences.
    by_owner: Index,
    /// Namespace to the keys of its objects that have no controller (candidates for
    /// adoption), so that a controller claiming its objects need not scan the namespace.
    /// Kept only when asked for (the shared pod informer).
    orphans: Option<Index>,
    /// An index of the kind's own (a pod's node), when the informer has one.
    index: Option<fn(&K) -> Option<&str>>,
    by_index: Index,
}

/// An index of the cache: a value (a namespace, an owner uid, ...) to the keys of the
/// objects that have it.
#[derive(Default)]
struct Index(HashMap<String, HashSet<String>>);

impl Index {
    fn add(&mut self, value: &str, key: &str) {
        self.0
            .entry(value.to_string())
            .or_default()
            .insert(key.to_string());
    }

    fn remove(&mut self, value: &str, key: &str) {
        if let Some(keys) = self.0.get_mut(value) {
            keys.remove(key);
            if keys.is_empty() {
                self.0.remove(value);
            }
        }
    }

    fn keys(&self, value: &str) -> impl Iterator<Item = &String> {
        self.0.get(value).into_iter().flatten()
    }
}

impl<K: Resource> Cache<K> {
    fn insert(&mut self, key: String, obj: Arc<K>) -> Option<Arc<K>> {
        let old = self.objects.insert(key.clone(), obj.clone());
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        if let Some(uid) = &obj.meta().uid {
            self.by_uid.insert(uid.clone(), key.clone());
        }
        self.each_index(&obj, |index, value| index.add(value, &key));
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    fn unindex(&mut self, key: &str, obj: &K) {
        if let Some(uid) = &obj.meta().uid
            && self.by_uid.get(uid).is_some_and(|k| k == key)
        {
            self.by_uid.remove(uid);
        }
        self.each_index(obj, |index, value| index.remove(value, key));
    }

    /// Calls `f` with each index and the value `obj` has in it.
    fn each_index(&mut self, obj: &K, mut f: impl FnMut(&mut Index, &str)) {
        let meta = obj.meta();
        if let Some(ns) = &meta.namespace {
            f(&mut self.by_namespace, ns);
            if let Some(orphans) = &mut self.orphans
                && controller_of(obj).is_none()
            {
                f(orphans, ns);
            }
        }
        for owner in meta.owner_references.iter().flatten() {
            f(&mut self.by_owner, &owner.uid);
        }
        if let Some(value) = self.index.and_then(|own| own(obj)) {
            f(&mut self.by_index, value);
        }
    }
}

/// Whether an update changed neither the generation (the spec) nor the metadata a
/// controller acts on: only the status, the resourceVersion or the managed fields.
fn status_only(
    old: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    new: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    old.generation == new.generation
        && old.labels == new.labels
        && old.annotations == new.annotations
        && old.owner_references == new.owner_references
        && old.finalizers == new.finalizers
        && old.deletion_timestamp == new.deletion_timestamp
}

/// One kind's cache and the handlers that follow it. Cheap to share (`Arc`).
pub struct Informer<K> {
    cache: RwLock<Cache<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new() -> Arc<Self> {
        Self::with_indexes(None, false)
    }

    /// An informer that also indexes its objects by `index` (see [`Informer::indexed`]) and,
    /// with `orphans`, keeps each namespace's objects that have no controller (see
    /// [`Informer::orphans`]).
    pub fn with_indexes(index: Option<fn(&K) -> Option<&str>>, orphans: bool) -> Arc<Self> {
        Arc::new(Informer {
            cache: RwLock::new(Cache {
                objects: HashMap::new(),
                by_namespace: Index::default(),
                by_uid: HashMap::new(),
                by_owner: Index::default(),
                orphans: orphans.then(Index::default),
                index,
                by_index: Index::default(),
            }),
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::channel(false).0,
        })
    }

    /// Follows `api` (with `config`'s selectors) until the returned handle aborts it.
    pub fn start(self: &Arc<Self>, api: Api<K>, config: watcher::Config) -> AbortHandle {
        let me = self.clone();
        tokio::spawn(async move { me.run(api, config).await }).abort_handle()
    }

    async fn run(&self, api: Api<K>, config: watcher::Config) {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut relist: Option<HashMap<String, Arc<K>>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(obj)) => self.apply(Arc::new(obj)),
                Ok(Event::Delete(obj)) => self.delete(&key_of(&obj)),
                Ok(Event::Init) => relist = Some(HashMap::new()),
                Ok(Event::InitApply(obj)) => {
                    relist
                        .get_or_insert_with(HashMap::new)
                        .insert(key_of(&obj), Arc::new(obj));
                }
                Ok(Event::InitDone) => {
                    self.replace(relist.take().unwrap_or_default());
                    self.synced.send_replace(true);
                }
                Err(e) => tracing::debug!("watch failed, retrying: {e}"),
            }
        }
    }

    fn apply(&self, obj: Arc<K>) {
        let key = key_of(&*obj);
        let old = self
            .cache
            .write()
            .expect("cache lock")
            .insert(key, obj.clone());
        let change = match &old {
            Some(old) => Change::Updated { old, new: &obj },
            None => Change::Added(&obj),
        };
        self.notify(&change);
    }

    fn delete(&self, key: &str) {
        let old = self.cache.write().expect("cache lock").remove(key);
        if let Some(old) = old {
            self.notify(&Change::Deleted(&old));
        }
    }

    /// A relist: objects not in it are gone, the others added or updated.
    fn replace(&self, listed: HashMap<String, Arc<K>>) {
        let gone: Vec<String> = {
            let cache = self.cache.read().expect("cache lock");
            cache
                .objects
                .keys()
                .filter(|k| !listed.contains_key(*k))
                .cloned()
                .collect()
        };
        for key in gone {
            self.delete(&key);
        }
        for (_, obj) in listed {
            let unchanged = {
                let cache = self.cache.read().expect("cache lock");
                cache
                    .objects
                    .get(&key_of(&*obj))
                    .is_some_and(|old| old.meta().resource_version == obj.meta().resource_version)
            };
            if !unchanged {
                self.apply(obj);
            }
        }
    }

    fn notify(&self, change: &Change<'_, K>) {
        for handler in self.handlers.read().expect("handlers lock").iter() {
            handler(change);
        }
    }

    /// Registers a handler. Objects already cached are handed to it as added first, as
    /// client-go does for a handler added to a running informer.
    pub fn subscribe(&self, handler: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        let mut handlers = self.handlers.write().expect("handlers lock");
        let existing: Vec<Arc<K>> = self
            .cache
            .read()
            .expect("cache lock")
            .objects
            .values()
            .cloned()
            .collect();
        for obj in &existing {
            handler(&Change::Added(obj));
        }
        handlers.push(Box::new(handler));
    }

    /// Queues the key of every object that is added, changed or deleted: how a controller
    /// follows its own kind. An update that leaves the object's generation and metadata as
    /// they were (a status write, most often the controller's own) is queued batched
    /// ([`WorkQueue::add_batched`](crate::queue::WorkQueue::add_batched)): otherwise every status write would start the next sync at once,
    /// which writes the status again while pods keep changing, a loop as fast as the API
    /// server answers.
    pub fn enqueue_keys(&self, queue: &Arc<crate::queue::WorkQueue>) {
        let queue = queue.clone();
        self.subscribe(move |change| match change {
            Change::Added(o) | Change::Deleted(o) => queue.add(key_of(&***o)),
            Change::Updated { old, new } if status_only(old.meta(), new.meta()) => {
                queue.add_batched(key_of(&***new))
            }
            Change::Updated { new, .. } => queue.add(key_of(&***new)),
        });
    }

    /// Waits until the first list has been cached.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.cache
            .read()
            .expect("cache lock")
            .objects
            .get(key)
            .cloned()
    }

    pub fn get_by_uid(&self, uid: &str) -> Option<Arc<K>> {
        let cache = self.cache.read().expect("cache lock");
        cache
            .by_uid
            .get(uid)
            .and_then(|k| cache.objects.get(k))
            .cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        let cache = self.cache.read().expect("cache lock");
        cache.objects.values().cloned().collect()
    }

    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.lookup(|c| &c.by_namespace, namespace)
    }

    /// The objects whose index value (given to [`Informer::with_indexes`]) is `value`: for
    /// the shared pod informer, the pods bound to node `value`.
    pub fn indexed(&self, value: &str) -> Vec<Arc<K>> {
        self.lookup(|c| &c.by_index, value)
    }

    /// The namespace's objects that have no controller reference (none unless the
    /// informer keeps them: [`Informer::with_indexes`]).
    pub fn orphans(&self, namespace: &str) -> Vec<Arc<K>> {
        let cache = self.cache.read().expect("cache lock");
        let Some(orphans) = &cache.orphans else {
            return Vec::new();
        };
        orphans
            .keys(namespace)
            .filter_map(|k| cache.objects.get(k).cloned())
            .collect()
    }

    /// The objects that name `owner_uid` among their ownerReferences.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<Arc<K>> {
        self.lookup(|c| &c.by_owner, owner_uid)
    }

    fn lookup(&self, index: fn(&Cache<K>) -> &Index, value: &str) -> Vec<Arc<K>> {
        let cache = self.cache.read().expect("cache lock");
        index(&cache)
            .keys(value)
            .filter_map(|k| cache.objects.get(k).cloned())
            .collect()
    }
}

/// Aborts an informer's watch ([`Informer::start`]'s handle) when dropped: for an owner
/// whose informer should not outlive it.
pub struct AbortOnDrop(pub AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The controller reference of an object: its owner reference with `controller: true`.
pub fn controller_of<K: Resource>(
    obj: &K,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, node: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn sorted_names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut v: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_own_index_follows_updates_and_deletes() {
        let pods = Informer::<Pod>::with_indexes(
            Some(|p: &Pod| p.spec.as_ref()?.node_name.as_deref()),
            false,
        );
        let names = |node: &str| sorted_names(pods.indexed(node));
        pods.apply(pod("a", Some("n1")));
        pods.apply(pod("b", None));
        pods.apply(pod("c", Some("n1")));
        assert_eq!(names("n1"), ["a", "c"]);
        pods.apply(pod("b", Some("n2")));
        pods.apply(pod("c", Some("n2")));
        assert_eq!(names("n1"), ["a"]);
        assert_eq!(names("n2"), ["b", "c"]);
        pods.delete("default/b");
        assert_eq!(names("n2"), ["c"]);
        assert!(pods.indexed("n3").is_empty());
    }

    #[test]
    fn orphans_are_the_objects_without_a_controller() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let pods = Informer::<Pod>::with_indexes(None, true);
        let owned = |name: &str, controller: Option<bool>| {
            let mut p = (*pod(name, None)).clone();
            p.metadata.owner_references = Some(vec![OwnerReference {
                uid: "rs-1".into(),
                controller,
                ..Default::default()
            }]);
            Arc::new(p)
        };
        let names = |ns: &str| sorted_names(pods.orphans(ns));
        pods.apply(pod("a", None));
        pods.apply(owned("b", Some(true)));
        // An owner reference that is not a controller's leaves it an orphan.
        pods.apply(owned("c", None));
        assert_eq!(names("default"), ["a", "c"]);
        // Adopted, then released.
        pods.apply(owned("a", Some(true)));
        assert_eq!(names("default"), ["c"]);
        pods.apply(pod("b", None));
        assert_eq!(names("default"), ["b", "c"]);
        pods.delete("default/c");
        assert_eq!(names("default"), ["b"]);
        assert!(pods.orphans("other").is_empty());
    }
}
