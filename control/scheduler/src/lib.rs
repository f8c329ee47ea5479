//! Skiff's scheduler: binds pending pods to nodes through the public API, as
//! kube-scheduler does, with its default filters and scores.
//!
//! It needs nothing from the API server beyond what kube-scheduler needs: list and watch of
//! pods, nodes and RuntimeClasses, `pods/binding`, `pods/status` and events.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use tokio::sync::mpsc;

pub mod framework;
mod quantity;
mod report;
mod scheduler;
mod watch;

use scheduler::{Msg, Scheduler};
use watch::Change;

/// Pods that have finished hold no resources: like kube-scheduler's pod informer, the
/// scheduler watches every other pod, bound or not, in one ordered stream.
const LIVE_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The first list failed: the API server is unreachable or refuses the scheduler.
    /// Later failures are retried, never returned.
    #[error("listing {resource}")]
    List {
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// Most pods decided between two yields to the runtime.
const BATCH: usize = 256;
/// Longest time spent deciding between two yields.
const BATCH_TIME: Duration = Duration::from_millis(2);

/// Schedules pods until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    opts: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let runtime_classes: Api<RuntimeClass> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let list_err = |resource| move |source| Error::List { resource, source };
    // Lists first, so no pod is judged against a half-known cluster.
    let node_list = watch::list(&nodes, "").await.map_err(list_err("nodes"))?;
    let rc_list = watch::list(&runtime_classes, "")
        .await
        .map_err(list_err("runtimeclasses"))?;
    let claim_list = watch::list(&claims, "")
        .await
        .map_err(list_err("persistentvolumeclaims"))?;
    let volume_list = watch::list(&volumes, "")
        .await
        .map_err(list_err("persistentvolumes"))?;
    let pod_list = watch::list(&pods, LIVE_PODS)
        .await
        .map_err(list_err("pods"))?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(report::run(
        client.clone(),
        opts.name.clone(),
        opts.parallelism.div_ceil(4),
        report_rx,
    ));
    let mut scheduler = Scheduler::new(opts.name, client, opts.parallelism, tx.clone(), report_tx);
    let rv = |m: &kube::core::ListMeta| m.resource_version.clone().unwrap_or_default();
    tasks.spawn(watch::follow(
        nodes,
        "",
        rv(&node_list.metadata),
        tx.clone(),
        Msg::Nodes,
    ));
    tasks.spawn(watch::follow(
        runtime_classes,
        "",
        rv(&rc_list.metadata),
        tx.clone(),
        Msg::RuntimeClasses,
    ));
    tasks.spawn(watch::follow(
        claims,
        "",
        rv(&claim_list.metadata),
        tx.clone(),
        Msg::Claims,
    ));
    tasks.spawn(watch::follow(
        volumes,
        "",
        rv(&volume_list.metadata),
        tx.clone(),
        Msg::Volumes,
    ));
    tasks.spawn(watch::follow(
        pods,
        LIVE_PODS,
        rv(&pod_list.metadata),
        tx,
        Msg::Pods,
    ));
    scheduler.handle(Msg::Nodes(Box::new(Change::Relisted(node_list.items))));
    scheduler.handle(Msg::RuntimeClasses(Box::new(Change::Relisted(
        rc_list.items,
    ))));
    scheduler.handle(Msg::Claims(Box::new(Change::Relisted(claim_list.items))));
    scheduler.handle(Msg::Volumes(Box::new(Change::Relisted(volume_list.items))));
    scheduler.handle(Msg::Pods(Box::new(Change::Relisted(pod_list.items))));

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
    Ok(())
}
