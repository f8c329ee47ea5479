//! The garbage collector, as kube-controller-manager's: an object whose owners are all
//! gone is deleted (Background propagation); an owner deleted with Foreground
//! propagation (`foregroundDeletion` finalizer) waits until its dependents that block it
//! are gone; one deleted with Orphan propagation (`orphan` finalizer) has its reference
//! removed from every dependent first; references to owners that do not exist are removed
//! from objects that have other owners.
//!
//! It follows every resource the API serves that can be listed, watched and deleted
//! (found through discovery, events excepted, as kube's GC ignores them): the kinds the
//! other controllers cache through their shared typed informers, the rest through
//! informers of its own. An owner missing from the caches is looked up through the API
//! before anything is deleted for it, since one kind's watch may run ahead of another's.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{Discovery, verbs};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::events::Recorder;
use crate::informer::{Change, Informer, key_of_meta, split_key};
use crate::{Error, Informers, SyncResult, WorkQueue, run_workers};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// Called with an object's metadata before and after a change.
type MetaHandler = Box<dyn Fn(Option<&ObjectMeta>, Option<&ObjectMeta>) + Send + Sync>;

/// One kind the collector follows, whatever the type its informer holds.
trait Monitor: Send + Sync {
    fn resource(&self) -> &ApiResource;
    fn namespaced(&self) -> bool;
    fn get(&self, key: &str) -> Option<ObjectMeta>;
    fn by_uid(&self, uid: &str) -> Option<ObjectMeta>;
    fn owned_by(&self, uid: &str) -> Vec<ObjectMeta>;
    fn subscribe(&self, f: MetaHandler);
}

/// One followed kind: a typed informer the other controllers share, or one of
/// `DynamicObject`s of the collector's own.
struct Typed<K> {
    informer: Arc<Informer<K>>,
    resource: ApiResource,
    namespaced: bool,
}

impl<K> Monitor for Typed<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    fn resource(&self) -> &ApiResource {
        &self.resource
    }
    fn namespaced(&self) -> bool {
        self.namespaced
    }
    fn get(&self, key: &str) -> Option<ObjectMeta> {
        self.informer.get(key).map(|o| o.meta().clone())
    }
    fn by_uid(&self, uid: &str) -> Option<ObjectMeta> {
        self.informer.get_by_uid(uid).map(|o| o.meta().clone())
    }
    fn owned_by(&self, uid: &str) -> Vec<ObjectMeta> {
        self.informer
            .owned_by(uid)
            .into_iter()
            .map(|o| o.meta().clone())
            .collect()
    }
    fn subscribe(&self, f: MetaHandler) {
        self.informer.subscribe(move |change| match change {
            Change::Added(o) => f(None, Some(o.meta())),
            Change::Updated { old, new } => f(Some(old.meta()), Some(new.meta())),
            Change::Deleted(o) => f(Some(o.meta()), None),
        });
    }
}

struct Collector {
    client: Client,
    monitors: Vec<Arc<dyn Monitor>>,
    queue: Arc<WorkQueue>,
}

/// A work item: a dependent to check (`d|<index>|<key>`) or an owner being deleted
/// (`o|<index>|<key>`), `index` naming its monitor.
fn item(kind: char, index: usize, key: &str) -> String {
    format!("{kind}|{index}|{key}")
}

pub fn start(informers: &Arc<Informers>, _events: &Recorder, workers: usize) {
    let informers = informers.clone();
    tokio::spawn(async move {
        // Discovery may fail while the API server starts: try again.
        let mut delay = Duration::from_millis(100);
        let discovery = loop {
            match Discovery::new(informers.client().clone()).run().await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::debug!("garbage collector: discovery failed: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        let collector = Arc::new(Collector::new(&informers, &discovery));
        collector.clone().run(workers);
    });
}

fn typed<K>(informer: Arc<Informer<K>>, namespaced: bool) -> Arc<dyn Monitor>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    Arc::new(Typed {
        informer,
        resource: ApiResource::erase::<K>(&()),
        namespaced,
    })
}

impl Collector {
    fn new(informers: &Arc<Informers>, discovery: &Discovery) -> Self {
        use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
        use k8s_openapi::api::core::v1::{Namespace, Pod, ReplicationController, ServiceAccount};
        let client = informers.client().clone();
        let mut monitors: Vec<Arc<dyn Monitor>> = vec![
            typed::<Pod>(informers.pods(), true),
            typed::<ReplicaSet>(informers.replicasets(), true),
            typed::<Deployment>(informers.deployments(), true),
            typed::<ReplicationController>(informers.replicationcontrollers(), true),
            typed::<ServiceAccount>(informers.serviceaccounts(), true),
            typed::<Namespace>(informers.namespaces(), false),
        ];
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let followed = monitors
                    .iter()
                    .any(|m| m.resource().group == ar.group && m.resource().plural == ar.plural);
                if followed
                    || ar.plural == "events"
                    || !caps.supports_operation(verbs::LIST)
                    || !caps.supports_operation(verbs::WATCH)
                    || !caps.supports_operation(verbs::DELETE)
                {
                    continue;
                }
                let informer: Arc<Informer<DynamicObject>> = Informer::new();
                informer.start(
                    Api::all_with(client.clone(), &ar),
                    watcher::Config::default(),
                );
                let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
                monitors.push(Arc::new(Typed {
                    informer,
                    resource: ar,
                    namespaced,
                }));
            }
        }
        Collector {
            client,
            monitors,
            queue: WorkQueue::new(),
        }
    }

    fn run(self: Arc<Self>, workers: usize) {
        for (index, m) in self.monitors.iter().enumerate() {
            let me = Arc::downgrade(&self);
            m.subscribe(Box::new(move |old, new| {
                if let Some(c) = me.upgrade() {
                    c.changed(index, old, new);
                }
            }));
        }
        let queue = self.queue.clone();
        run_workers(
            "garbage-collector-controller",
            queue,
            workers,
            async {},
            move |key| {
                let c = self.clone();
                async move { c.sync(&key).await }
            },
        );
    }

    fn monitor_of(&self, r: &OwnerReference) -> Option<(usize, &Arc<dyn Monitor>)> {
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let _ = version;
        self.monitors
            .iter()
            .enumerate()
            .find(|(_, m)| m.resource().group == group && m.resource().kind == r.kind)
    }

    fn changed(&self, index: usize, old: Option<&ObjectMeta>, new: Option<&ObjectMeta>) {
        match (old, new) {
            (_, Some(meta)) => {
                let key = key_of_meta(meta);
                if meta
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| !o.is_empty())
                {
                    // Only what could change the answer: new owners, or a new object.
                    let refs_changed =
                        old.is_none_or(|o| o.owner_references != meta.owner_references);
                    if refs_changed {
                        self.queue.add(item('d', index, &key));
                    }
                }
                if meta.deletion_timestamp.is_some() && has_gc_finalizer(meta) {
                    self.queue.add(item('o', index, &key));
                }
            }
            (Some(meta), None) => {
                // Its dependents may now have no owner left; an owner waiting on it may go.
                let uid = meta.uid.as_deref().unwrap_or_default();
                for (i, m) in self.monitors.iter().enumerate() {
                    for dep in m.owned_by(uid) {
                        self.queue.add(item('d', i, &key_of_meta(&dep)));
                    }
                }
                for r in meta.owner_references.iter().flatten() {
                    if let Some((i, m)) = self.monitor_of(r)
                        && let Some(owner) = m.by_uid(&r.uid)
                        && owner.deletion_timestamp.is_some()
                    {
                        self.queue.add(item('o', i, &key_of_meta(&owner)));
                    }
                }
            }
            (None, None) => {}
        }
    }

    async fn sync(&self, work: &str) -> SyncResult {
        let mut parts = work.splitn(3, '|');
        let (Some(kind), Some(index), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Some(monitor) = index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.monitors.get(i))
        else {
            return Ok(None);
        };
        match kind {
            "d" => self.sync_dependent(monitor, key).await,
            _ => self.sync_owner(monitor, key).await,
        }
    }

    fn api(&self, monitor: &Arc<dyn Monitor>, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) if monitor.namespaced() => {
                Api::namespaced_with(self.client.clone(), ns, monitor.resource())
            }
            _ => Api::all_with(self.client.clone(), monitor.resource()),
        }
    }

    /// Whether the owner a reference names exists (same uid), asked of the API when the
    /// caches do not have it; and whether it is being deleted in the foreground.
    async fn owner_state(&self, r: &OwnerReference, ns: Option<&str>) -> Result<OwnerState, Error> {
        let monitor = self.monitor_of(r);
        if let Some((_, m)) = monitor
            && let Some(meta) = m.by_uid(&r.uid)
        {
            return Ok(OwnerState::of(&meta));
        }
        // Not cached: ask the API server (its watch may be behind; or the owner's kind is
        // one discovery did not list, found the way kubectl finds a kind).
        let (ar, namespaced) = match monitor {
            Some((_, m)) => (m.resource().clone(), m.namespaced()),
            None => {
                let (group, version) = match r.api_version.split_once('/') {
                    Some((g, v)) => (g.to_string(), v.to_string()),
                    None => (String::new(), r.api_version.clone()),
                };
                let gvk = GroupVersionKind::gvk(&group, &version, &r.kind);
                match kube::discovery::pinned_kind(&self.client, &gvk).await {
                    Ok((ar, caps)) => (ar, caps.scope == kube::discovery::Scope::Namespaced),
                    // A kind the server does not serve: the owner cannot exist.
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok(OwnerState::Absent),
                    Err(kube::Error::Discovery(_)) => return Ok(OwnerState::Absent),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let api: Api<DynamicObject> = match ns {
            Some(ns) if namespaced => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        };
        match api.get_opt(&r.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                Ok(OwnerState::of(&o.metadata))
            }
            _ => Ok(OwnerState::Absent),
        }
    }

    /// kube's `attemptToDeleteItem`.
    async fn sync_dependent(&self, monitor: &Arc<dyn Monitor>, key: &str) -> SyncResult {
        let Some(meta) = monitor.get(key) else {
            return Ok(None);
        };
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() || meta.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let (ns, name) = split_key(key);
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in &refs {
            match self.owner_state(r, ns).await? {
                OwnerState::Absent => dangling.push(r.uid.clone()),
                OwnerState::DeletingForeground => waiting.push(r.uid.clone()),
                OwnerState::Present => solid.push(r.uid.clone()),
            }
        }
        let api = self.api(monitor, ns);
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(None);
            }
            // Keep the object; drop the references that no longer hold it.
            let deletes: Vec<_> = dangling
                .iter()
                .chain(&waiting)
                .map(|uid| json!({"$patch": "delete", "uid": uid}))
                .collect();
            let patch = json!({"metadata": {"ownerReferences": deletes, "uid": meta.uid}});
            let result = if monitor.resource().group.is_empty() || builtin(monitor.resource()) {
                api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
            } else {
                let kept: Vec<_> = refs.iter().filter(|r| solid.contains(&r.uid)).collect();
                let patch = json!({"metadata": {"ownerReferences": kept, "resourceVersion": meta.resource_version}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            };
            return match result {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        // No owner left that keeps it: delete it, in the foreground when an owner waits
        // for it and it has dependents of its own.
        let uid = meta.uid.clone().unwrap_or_default();
        let has_dependents = self.monitors.iter().any(|m| !m.owned_by(&uid).is_empty());
        let propagation = if !waiting.is_empty() && has_dependents {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        let dp = DeleteParams {
            propagation_policy: Some(propagation),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// An owner being deleted with the `orphan` or `foregroundDeletion` finalizer.
    async fn sync_owner(&self, monitor: &Arc<dyn Monitor>, key: &str) -> SyncResult {
        let Some(meta) = monitor.get(key) else {
            return Ok(None);
        };
        if meta.deletion_timestamp.is_none() {
            return Ok(None);
        }
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        let uid = meta.uid.clone().unwrap_or_default();
        let dependents: Vec<(usize, ObjectMeta)> = self
            .monitors
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.owned_by(&uid).into_iter().map(move |d| (i, d)))
            .collect();
        let (ns, name) = split_key(key);
        let done = if finalizers.iter().any(|f| f == ORPHAN) {
            // Orphan: every dependent loses its reference to this owner.
            for (i, dep) in &dependents {
                let m = &self.monitors[*i];
                let api = self.api(m, dep.namespace.as_deref());
                let kept: Vec<&OwnerReference> = dep
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .collect();
                let patch = json!({"metadata": {
                    "ownerReferences": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) },
                    "resourceVersion": dep.resource_version,
                }});
                match api
                    .patch(
                        dep.name.as_deref().unwrap_or_default(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            ORPHAN
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            // Foreground: dependents are deleted; the owner goes once none that blocks
            // it is left.
            let mut blocking = 0;
            for (i, dep) in &dependents {
                let blocks = dep
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                self.queue.add(item('d', *i, &key_of_meta(dep)));
            }
            if blocking > 0 {
                return Ok(None);
            }
            FOREGROUND
        } else {
            return Ok(None);
        };
        let kept: Vec<&String> = finalizers.iter().filter(|f| f.as_str() != done).collect();
        let patch = json!({"metadata": {
            "finalizers": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) },
            "resourceVersion": meta.resource_version,
        }});
        match self
            .api(monitor, ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Kubernetes' own API groups, which know strategic merge patches.
fn builtin(ar: &ApiResource) -> bool {
    !ar.group.contains('.') || ar.group.ends_with(".k8s.io")
}

enum OwnerState {
    Absent,
    Present,
    DeletingForeground,
}

impl OwnerState {
    fn of(meta: &ObjectMeta) -> Self {
        if meta.deletion_timestamp.is_some()
            && meta.finalizers.iter().flatten().any(|f| f == FOREGROUND)
        {
            OwnerState::DeletingForeground
        } else {
            OwnerState::Present
        }
    }
}

fn has_gc_finalizer(meta: &ObjectMeta) -> bool {
    meta.finalizers
        .iter()
        .flatten()
        .any(|f| f == FOREGROUND || f == ORPHAN)
}
