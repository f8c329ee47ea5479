//! Skiff's scheduler: binds pending pods to nodes through the public API, as
//! kube-scheduler does, with its default filters and scores.
//!
//! It needs nothing from the API server beyond what kube-scheduler needs: list and watch of
//! pods, nodes and RuntimeClasses, `pods/binding`, `pods/status` and events.

use std::future::Future;
use std::time::{Duration, Instant};

use std::sync::Arc;

use futures::FutureExt;
use skiff_informer::{Informer, Informers, informer};
use tokio::sync::mpsc;

pub mod framework;
mod quantity;
mod report;
mod scheduler;

use scheduler::Change;
use scheduler::{Msg, Scheduler};

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// The scheduler's name: it takes pods whose `spec.schedulerName` is this (or empty),
    /// and signs its events with it. kube-scheduler's is `default-scheduler`.
    pub name: String,
    /// How many bindings may be in flight at once (32 by default: on a 2-core machine
    /// against the embedded store, 16 left the store's group commit underfed).
    pub parallelism: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            name: "default-scheduler".into(),
            parallelism: 32,
        }
    }
}

/// Most pods decided between two yields to the runtime.
const BATCH: usize = 256;
/// Longest time spent deciding between two yields.
const BATCH_TIME: Duration = Duration::from_millis(2);

/// Schedules pods until `shutdown` completes, on informers of its own.
pub async fn run(
    client: kube::Client,
    opts: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    run_on(Informers::new(client), opts, shutdown).await
}

/// Schedules pods until `shutdown` completes, reading the cluster through `informers`,
/// which the controllers of the same process share (one watch per kind for all of them).
pub async fn run_on(
    informers: Arc<Informers>,
    opts: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let client = informers.client().clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (nodes, classes, claims, volumes, pods) = (
        informers.nodes(),
        informers.runtimeclasses(),
        informers.persistentvolumeclaims(),
        informers.persistentvolumes(),
        informers.pods(),
    );
    forward(&nodes, &tx, Msg::Nodes, |_| true);
    forward(&classes, &tx, Msg::RuntimeClasses, |_| true);
    forward(&claims, &tx, Msg::Claims, |_| true);
    forward(&volumes, &tx, Msg::Volumes, |_| true);
    // Pods that have finished hold no resources: to the scheduler they are gone, as to
    // kube-scheduler, whose pod informer selects only pods not Succeeded or Failed.
    forward(&pods, &tx, Msg::Pods, |p| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    });
    // The first lists before the first decision, so no pod is judged against a
    // half-known cluster: everything they held is in the channel by then.
    futures::join!(
        nodes.synced(),
        classes.synced(),
        claims.synced(),
        volumes.synced(),
        pods.synced(),
    );

    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(report::run(
        client.clone(),
        opts.name.clone(),
        opts.parallelism.div_ceil(4),
        report_rx,
    ));
    let mut scheduler = Scheduler::new(opts.name, client, opts.parallelism, tx, report_tx);

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while let Ok(msg) = rx.try_recv() {
            scheduler.handle(msg);
        }
        let deadline = scheduler.flush_backoff();
        // Decisions take microseconds; a yield on a busy runtime waits for every other
        // runnable task. So decide a batch (bounded in count and time, so that watches and
        // binding tasks still run often), then yield.
        let batch_start = Instant::now();
        let mut decided = 0;
        while decided < BATCH && batch_start.elapsed() < BATCH_TIME && scheduler.schedule_next() {
            decided += 1;
        }
        if decided > 0 {
            if shutdown.as_mut().now_or_never().is_some() {
                break;
            }
            tokio::task::yield_now().await;
            continue;
        }
        let backoff = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.as_mut() => break,
            msg = rx.recv() => match msg {
                Some(msg) => scheduler.handle(msg),
                None => break,
            },
            _ = backoff => {}
        }
    }
    tasks.shutdown().await;
}

/// Hands the scheduler every change of one informer's objects, in the informer's order;
/// an object that stops being `live` is deleted to it.
fn forward<K>(
    informer: &Informer<K>,
    tx: &mpsc::UnboundedSender<Msg>,
    wrap: fn(Box<Change<K>>) -> Msg,
    live: fn(&K) -> bool,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let tx = tx.clone();
    informer.subscribe(move |change| {
        let change = match change {
            informer::Change::Added(o) | informer::Change::Updated { new: o, .. } if live(o) => {
                Change::Applied((***o).clone())
            }
            informer::Change::Added(_) => return,
            informer::Change::Updated { new: o, .. } | informer::Change::Deleted(o) => {
                Change::Deleted((***o).clone())
            }
        };
        let _ = tx.send(wrap(Box::new(change)));
    });
}
