//! The service proxy (kube-proxy's job) of a Skiff node: every Service's cluster IP, node
//! ports, external IPs and load balancer addresses lead to its ready endpoints, wherever
//! they run and whatever their runtime. The data path is the kernel's: one nftables table
//! per node (`model` says what is in it, `ruleset` how it changes), written as one
//! nftables transaction per change through libnftables (`skiff_podnet::run_nft`).
//!
//! The proxy reads Services, EndpointSlices and Nodes through the shared informer layer.
//! A change marks the Service it concerns (a slice's Service, by its label; every Service
//! when a node's pod CIDR changes) and wakes the sync loop, which rebuilds the rules of
//! the marked Services from the caches as they are then (level-triggered: whatever led
//! here, their rules follow what the caches say now) and applies the difference from what
//! it applied last: map elements added or deleted (an endpoint change is elements only),
//! chains made, refilled or removed. A sync costs the Services that changed, not the
//! table. There is no minimum interval between syncs (kube-proxy waits at least a second):
//! a readiness change reaches the rules in the time the informer and one transaction take.
//!
//! At start the table is replaced whole, in one transaction: rules of Services deleted
//! while the agent was down go, and established connections keep going (their NAT lives
//! in conntrack, not in the rules). The table outlives an agent that dies, so Services
//! keep working until the next agent takes over; `Proxy::shutdown` removes it.

pub mod announce;
pub mod model;
pub mod ruleset;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_informer::{Informer, Informers};
use tokio::sync::{Notify, watch};

pub use model::NodeView;
pub use ruleset::{Part, Ruleset};

#[derive(Debug, Clone)]
pub struct Config {
    /// The nftables table (`ip` family) the proxy owns.
    pub table: String,
    pub node_name: String,
    /// Source MAC of the node's shared namespace of address-only pods (`skiff-podnet`).
    pub shared_mac: Option<[u8; 6]>,
}

/// One applied sync: when it finished and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Synced {
    pub at: Instant,
    pub took: Duration,
}

/// A running proxy; its rules stay when it is dropped (see [`Proxy::shutdown`]).
pub struct Proxy {
    table: String,
    task: tokio::task::JoinHandle<()>,
    synced: watch::Receiver<Option<Synced>>,
    _informers: Arc<Informers>,
}

impl Proxy {
    /// Starts following the Services, EndpointSlices and Nodes of `informers`.
    pub fn start(informers: Arc<Informers>, config: Config) -> Proxy {
        let (services, slices, nodes) = (
            informers.services(),
            informers.endpointslices(),
            informers.nodes(),
        );
        let wake = Arc::new(Notify::new());
        // The Services whose rules may have changed since the last sync (all of them when
        // the pod CIDRs changed): a sync rebuilds only those.
        let dirty: Arc<Mutex<Dirty>> = Arc::new(Mutex::new(Dirty {
            keys: HashSet::new(),
            all: true,
        }));
        {
            let (w, d) = (wake.clone(), dirty.clone());
            services.subscribe(move |change| {
                let svc = match change {
                    skiff_informer::Change::Added(s) | skiff_informer::Change::Deleted(s) => s,
                    skiff_informer::Change::Updated { new, .. } => new,
                };
                d.lock()
                    .expect("dirty lock")
                    .keys
                    .insert(model::service_key(svc));
                w.notify_one();
            });
            let (w, d) = (wake.clone(), dirty.clone());
            slices.subscribe(move |change| {
                let mut d = d.lock().expect("dirty lock");
                let touched: Vec<&EndpointSlice> = match change {
                    skiff_informer::Change::Added(s) | skiff_informer::Change::Deleted(s) => {
                        vec![s]
                    }
                    skiff_informer::Change::Updated { old, new } => vec![old, new],
                };
                for s in touched {
                    if let Some(key) = slice_service_key(s) {
                        d.keys.insert(key);
                    }
                }
                w.notify_one();
            });
            let (w, d) = (wake.clone(), dirty.clone());
            nodes.subscribe(move |change| {
                // Only pod CIDRs matter here.
                if let skiff_informer::Change::Updated { old, new } = change {
                    let cidr = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                    if cidr(old) == cidr(new) {
                        return;
                    }
                }
                d.lock().expect("dirty lock").all = true;
                w.notify_one();
            });
        }
        let (tx, synced) = watch::channel(None);
        let table = config.table.clone();
        let task = tokio::spawn(run(config, services, slices, nodes, wake, dirty, tx));
        Proxy {
            table,
            task,
            synced,
            _informers: informers,
        }
    }

    /// The last applied sync, as it happens.
    pub fn synced(&self) -> watch::Receiver<Option<Synced>> {
        self.synced.clone()
    }

    /// Stops syncing and removes the table.
    pub async fn shutdown(self) -> Result<(), skiff_podnet::Error> {
        self.task.abort();
        let _ = self.task.await;
        skiff_podnet::delete_nft_table(&self.table).await
    }
}

/// The Services whose rules differ between `old` and `new`.
fn changed_services<'a>(old: &Ruleset, new: &'a Ruleset) -> Vec<&'a String> {
    new.parts
        .iter()
        .filter(|(k, p)| {
            old.parts
                .get(*k)
                .is_none_or(|o| !Arc::ptr_eq(o, p) && o != *p)
        })
        .map(|(k, _)| k)
        .collect()
}

/// Services whose rules a sync rebuilds.
struct Dirty {
    keys: HashSet<String>,
    all: bool,
}

/// The `namespace/name` of the Service a slice belongs to.
fn slice_service_key(slice: &EndpointSlice) -> Option<String> {
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    Some(format!(
        "{}/{name}",
        slice.metadata.namespace.as_deref().unwrap_or_default()
    ))
}

async fn run(
    config: Config,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    nodes: Arc<Informer<Node>>,
    wake: Arc<Notify>,
    dirty: Arc<Mutex<Dirty>>,
    synced: watch::Sender<Option<Synced>>,
) {
    services.synced().await;
    slices.synced().await;
    nodes.synced().await;
    let mut applied: Option<Ruleset> = None;
    // The rules as the caches say, kept from sync to sync: each sync rebuilds the parts
    // of the Services that changed since the last one, so its cost is theirs, not the
    // table's.
    let mut desired = Ruleset::default();
    loop {
        let start = Instant::now();
        let view = NodeView {
            node_name: config.node_name.clone(),
            pod_cidrs: nodes
                .list()
                .iter()
                .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok())
                .collect(),
            shared_mac: config.shared_mac,
        };
        let (keys, all) = {
            let mut d = dirty.lock().expect("dirty lock");
            (
                std::mem::take(&mut d.keys),
                std::mem::replace(&mut d.all, false),
            )
        };
        let keys: Vec<String> = if all {
            let mut every: HashSet<String> = desired.parts.keys().cloned().collect();
            every.extend(services.list().iter().map(|s| model::service_key(s)));
            every.into_iter().collect()
        } else {
            keys.into_iter().collect()
        };
        for key in keys {
            let part = services.get(&key).map(|svc| {
                let (ns, name) = skiff_informer::split_key(&key);
                let theirs: Vec<Arc<EndpointSlice>> = slices
                    .indexed(name)
                    .into_iter()
                    .filter(|s| s.metadata.namespace.as_deref() == ns)
                    .collect();
                let refs: Vec<&EndpointSlice> = theirs.iter().map(|s| &**s).collect();
                Arc::new(model::service_part(&svc, &refs, &view))
            });
            desired.set_part(&key, part);
        }
        desired.pod_cidrs = view.pod_cidrs.iter().map(|c| c.to_string()).collect();
        let desired = desired.clone();
        let script = match &applied {
            None => ruleset::full(&config.table, &desired),
            Some(old) => ruleset::diff(&config.table, old, &desired),
        };
        if script.is_empty() {
            applied = Some(desired);
        } else {
            match skiff_podnet::run_nft(&script).await {
                Ok(()) => {
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let changed: Vec<&String> = match &applied {
                            None => desired.parts.keys().collect(),
                            Some(old) => changed_services(old, &desired),
                        };
                        tracing::debug!(
                            took_ms = start.elapsed().as_millis() as u64,
                            lines = script.lines().count(),
                            "service rules applied for {changed:?}"
                        );
                    }
                    applied = Some(desired);
                    let _ = synced.send(Some(Synced {
                        at: Instant::now(),
                        took: start.elapsed(),
                    }));
                }
                Err(e) => {
                    // The next sync writes the whole table again.
                    tracing::warn!(table = config.table, "service rules: {e}");
                    applied = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        wake.notified().await;
    }
}
