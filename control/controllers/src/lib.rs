//! Skiff's controllers (kube-controller-manager's job): each an API client that reads
//! through the shared informer layer (`skiff_informer`, which the scheduler reads through
//! too), works through a queue of keys (`queue`), and writes through the API, never to the store.
//!
//! A controller is a reconcile function of one key, level-triggered and idempotent: it
//! looks at what the caches say now and makes one step towards the spec, whatever events
//! led there. Handlers on the informers only turn changes into keys.

pub mod cloud;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod job;
pub mod leader;
pub mod mirroring;
pub mod namespace;
pub mod nodelifecycle;
mod pods;
mod refs;
pub mod replicaset;
mod revisions;
pub mod serviceaccount;
pub mod statefulset;
mod util;
pub mod volumes;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use kube::Client;

pub use skiff_informer::{Informer, Informers, WorkQueue, informer, queue};

/// The controllers, by the names kube-controller-manager's `--controllers` takes, with the
/// older short names it also accepts.
pub const CONTROLLERS: &[(&str, &str)] = &[
    ("replicaset-controller", "replicaset"),
    ("replicationcontroller-controller", "replicationcontroller"),
    ("deployment-controller", "deployment"),
    ("garbage-collector-controller", "garbagecollector"),
    ("namespace-controller", "namespace"),
    ("serviceaccount-controller", "serviceaccount"),
    ("job-controller", "job"),
    ("ttl-after-finished-controller", "ttl-after-finished"),
    ("cronjob-controller", "cronjob"),
    ("daemonset-controller", "daemonset"),
    ("node-lifecycle-controller", "nodelifecycle"),
    ("disruption-controller", "disruption"),
    ("endpoints-controller", "endpoint"),
    ("endpointslice-controller", "endpointslice"),
    (
        "endpointslice-mirroring-controller",
        "endpointslicemirroring",
    ),
    ("statefulset-controller", "statefulset"),
    (
        "persistentvolume-binder-controller",
        "persistentvolume-binder",
    ),
    // cloud-controller-manager's.
    ("service-lb-controller", "service"),
];

/// Which controllers run, from a `--controllers` list as kube-controller-manager reads it:
/// `*` is every controller, `name` turns one on, `-name` turns one off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled(BTreeSet<&'static str>);

impl Enabled {
    pub fn all() -> Self {
        Enabled(CONTROLLERS.iter().map(|(n, _)| *n).collect())
    }

    pub fn parse(list: &str) -> Result<Self, String> {
        let mut on = BTreeSet::new();
        let mut off = BTreeSet::new();
        let mut star = false;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                star = true;
                continue;
            }
            let (negate, name) = match item.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, item),
            };
            let Some((canonical, _)) = CONTROLLERS
                .iter()
                .find(|(full, short)| *full == name || *short == name)
            else {
                let known: Vec<&str> = CONTROLLERS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "--controllers: {name:?} is not a controller; known: {}",
                    known.join(", ")
                ));
            };
            if negate {
                off.insert(*canonical);
            } else {
                on.insert(*canonical);
            }
        }
        let mut enabled = if star { Self::all().0 } else { on.clone() };
        enabled.extend(on);
        for name in off {
            enabled.remove(name);
        }
        Ok(Enabled(enabled))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// What the controller manager is given.
#[derive(Debug, Clone)]
pub struct Options {
    pub enabled: Enabled,
    /// Workers per controller (kube-controller-manager's `--concurrent-*-syncs`: 5).
    pub workers: usize,
    /// How long a node may go without a heartbeat before it is Unknown
    /// (`--node-monitor-grace-period`, Kubernetes' default 50 s).
    pub node_monitor_grace_period: Duration,
    /// The local load balancer provider's addresses (first, last), inclusive.
    pub load_balancer_pool: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            enabled: Enabled::all(),
            workers: 5,
            node_monitor_grace_period: Duration::from_secs(50),
            load_balancer_pool: Vec::new(),
        }
    }
}

/// The result of one reconcile: `Ok(Some(d))` asks to look again after `d` (a deadline, a
/// minReadySeconds), `Err` retries with back-off.
pub type SyncResult = Result<Option<Duration>, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

/// Runs `workers` workers taking keys from `queue` and handing each to `sync`, after
/// `ready` (the informers' first lists) is done.
pub fn run_workers<F, Fut>(
    name: &'static str,
    queue: Arc<WorkQueue>,
    workers: usize,
    ready: impl Future<Output = ()> + Send + 'static,
    sync: F,
) where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SyncResult> + Send + 'static,
{
    let sync = Arc::new(sync);
    tokio::spawn(async move {
        ready.await;
        tracing::debug!(controller = name, "caches synced, starting workers");
        for _ in 0..workers.max(1) {
            let queue = queue.clone();
            let sync = sync.clone();
            tokio::spawn(async move {
                while let Some(key) = queue.get().await {
                    let result = sync(key.clone()).await;
                    match result {
                        Ok(again) => {
                            queue.forget(&key);
                            if let Some(d) = again {
                                queue.add_after(key.clone(), d);
                            }
                        }
                        Err(e) => {
                            let failures = queue.failures(&key);
                            if failures < 5 {
                                tracing::debug!(controller = name, %key, "sync failed: {e}");
                            } else {
                                tracing::warn!(controller = name, %key, failures, "sync failed: {e}");
                            }
                            queue.add_rate_limited(key.clone());
                        }
                    }
                    queue.done(&key);
                }
            });
        }
    });
}

/// Starts the enabled controllers on `client` (in `skiff server` and `skiff up`, a client
/// that reaches the API server's router in process). They run until the process ends.
pub fn start(client: Client, options: Options) -> Arc<Informers> {
    let informers = Informers::new(client.clone());
    let events = events::Recorder::new(client);
    let enabled = &options.enabled;
    if enabled.has("replicaset-controller") {
        replicaset::start::<ReplicaSet>(&informers, &events, options.workers);
    }
    if enabled.has("replicationcontroller-controller") {
        replicaset::start::<ReplicationController>(&informers, &events, options.workers);
    }
    if enabled.has("deployment-controller") {
        deployment::start(&informers, &events, options.workers);
    }
    if enabled.has("garbage-collector-controller") {
        gc::start(&informers, &events, options.workers);
    }
    if enabled.has("namespace-controller") {
        namespace::start(&informers, &events, options.workers);
    }
    if enabled.has("serviceaccount-controller") {
        serviceaccount::start(&informers, &events, options.workers);
    }
    if enabled.has("job-controller") {
        job::start(
            &informers,
            &events,
            options.workers,
            enabled.has("ttl-after-finished-controller"),
        );
    }
    if enabled.has("daemonset-controller") {
        daemonset::start(&informers, &events, options.workers);
    }
    if enabled.has("node-lifecycle-controller") {
        nodelifecycle::start(
            &informers,
            &events,
            options.workers,
            options.node_monitor_grace_period,
        );
    }
    if enabled.has(cloud::SERVICE_LB) {
        let pool = cloud::LocalPool::new(options.load_balancer_pool.clone());
        cloud::start(&informers, &events, Arc::new(pool));
    }
    if enabled.has("disruption-controller") {
        disruption::start(&informers, &events, options.workers);
    }
    if enabled.has("statefulset-controller") {
        statefulset::start(&informers, &events, options.workers);
    }
    if enabled.has("persistentvolume-binder-controller") {
        volumes::start(&informers, &events, options.workers);
    }
    if enabled.has(endpoints::ENDPOINTS) {
        endpoints::start_endpoints(&informers, &events, options.workers);
    }
    if enabled.has(endpoints::SLICES) {
        endpoints::start_slices(&informers, &events, options.workers);
    }
    if enabled.has(mirroring::MIRRORING) {
        mirroring::start(&informers, &events, options.workers);
    }
    if enabled.has("cronjob-controller") {
        cronjob::start(&informers, &events, options.workers);
    }
    informers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag_reads_as_kube_controller_managers() {
        assert_eq!(Enabled::parse("*").unwrap(), Enabled::all());
        let e = Enabled::parse("*,-deployment").unwrap();
        assert!(!e.has("deployment-controller"));
        assert!(e.has("replicaset-controller"));
        let e = Enabled::parse("replicaset-controller").unwrap();
        assert!(e.has("replicaset-controller"));
        assert!(!e.has("garbage-collector-controller"));
        let err = Enabled::parse("*,-nope").unwrap_err();
        assert!(err.contains("\"nope\" is not a controller"), "{err}");
        assert!(err.contains("deployment-controller"), "{err}");
    }
}
