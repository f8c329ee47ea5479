//! The service proxy (kube-proxy's job) of a Skiff node: every Service's cluster IP, node
//! ports, external IPs and load balancer addresses lead to its ready endpoints, wherever
//! they run and whatever their runtime. The data path is the kernel's: one nftables table
//! per node (`model` says what is in it, `ruleset` how it changes), written by the `nft`
//! command as one transaction per change.
//!
//! The proxy reads Services, EndpointSlices and Nodes through the shared informer layer.
//! Any change wakes the sync loop, which rebuilds the rules from the caches (level-
//! triggered: whatever led here, the rules follow what the caches say now) and applies the
//! difference from what it applied last: changed chains flushed and refilled, map elements
//! added or deleted. There is no minimum interval between syncs (kube-proxy waits at least
//! a second): a readiness change reaches the rules in the time the informer and one `nft`
//! run take.
//!
//! At start the table is replaced whole, in one transaction: rules of Services deleted
//! while the agent was down go, and established connections keep going (their NAT lives
//! in conntrack, not in the rules). The table outlives an agent that dies, so Services
//! keep working until the next agent takes over; `Proxy::shutdown` removes it.

pub mod announce;
pub mod model;
pub mod ruleset;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
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
        {
            let w = wake.clone();
            services.subscribe(move |_| w.notify_one());
            let w = wake.clone();
            slices.subscribe(move |_| w.notify_one());
            let w = wake.clone();
            nodes.subscribe(move |change| {
                // Only pod CIDRs matter here.
                if let skiff_informer::Change::Updated { old, new } = change {
                    let cidr = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                    if cidr(old) == cidr(new) {
                        return;
                    }
                }
                w.notify_one();
            });
        }
        let (tx, synced) = watch::channel(None);
        let table = config.table.clone();
        let task = tokio::spawn(run(config, services, slices, nodes, wake, tx));
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

/// What a Service's part is built from: its version, its slices' versions, and whether
/// the rules know the pod CIDRs.
fn fingerprint(svc: &Service, slices: &[&EndpointSlice], cidrs: bool) -> String {
    let mut versions: Vec<(&str, &str)> = slices
        .iter()
        .map(|s| {
            (
                s.metadata.name.as_deref().unwrap_or_default(),
                s.metadata.resource_version.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    versions.sort_unstable();
    format!(
        "{}|{versions:?}|{cidrs}",
        svc.metadata.resource_version.as_deref().unwrap_or_default()
    )
}

async fn run(
    config: Config,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    nodes: Arc<Informer<Node>>,
    wake: Arc<Notify>,
    synced: watch::Sender<Option<Synced>>,
) {
    services.synced().await;
    slices.synced().await;
    nodes.synced().await;
    let mut applied: Option<Ruleset> = None;
    // Each Service's part as last built, with what it was built from: a Service whose
    // object and slices are unchanged is not built again.
    let mut cache: HashMap<String, (String, Arc<Part>)> = HashMap::new();
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
        let (svcs, sls) = (services.list(), slices.list());
        let slice_refs: Vec<&EndpointSlice> = sls.iter().map(|s| &**s).collect();
        let by_service = model::slices_by_service(&slice_refs);
        let mut parts = BTreeMap::new();
        let mut next = HashMap::with_capacity(svcs.len());
        for svc in &svcs {
            let key = model::service_key(svc);
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            let print = fingerprint(svc, slices, !view.pod_cidrs.is_empty());
            let part = match cache.remove(&key) {
                Some((p, part)) if p == print => part,
                _ => Arc::new(model::service_part(svc, slices, &view)),
            };
            parts.insert(key.clone(), part.clone());
            next.insert(key, (print, part));
        }
        cache = next;
        let desired = Ruleset::assemble(parts, &view.pod_cidrs);
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
