//! Scheduling throughput against Skiff's API server in process (embedded store, durable
//! writes), as kube-scheduler's perf tests measure it: pods bound per second.
//!
//! `cargo run --release -p skiff-scheduler --example scheduler_bench -- [pods] [nodes] [parallelism]`
//!
//! Two figures: a backlog (all pods pending before the scheduler starts, timed from its
//! start to the last binding seen through a watch) and a burst (pods created by 16
//! clients while the scheduler runs, timed from the first create to the last binding).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use skiff_scheduler::SchedulerOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .context("arguments are numbers: pods nodes parallelism")
        })
        .collect::<anyhow::Result<_>>()?;
    let pods = args.first().copied().unwrap_or(1000);
    let nodes = args.get(1).copied().unwrap_or(3);
    let parallelism = args.get(2).copied().unwrap_or(32);

    let dir = tempfile::tempdir()?;
    let store = skiff_store::embedded::EmbeddedStore::open(&dir.path().join("store"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = skiff_apiserver::ApiServer::start(
        Arc::new(store),
        listener,
        skiff_apiserver::Config::default(),
    )
    .await?;
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{}", server.local_addr).parse()?,
    ))?;
    let node_api: Api<Node> = Api::all(client.clone());
    for i in 0..nodes {
        let name = format!("node-{i}");
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        node_api.create(&PostParams::default(), &node).await?;
        let status = json!({"status": {
            "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "100000"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }});
        node_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    println!("{pods} pods, {nodes} nodes, {parallelism} bindings in flight");

    // Backlog: every pod pending before the scheduler starts.
    let ns = namespace(&client, "backlog").await?;
    create_pods(&ns, pods).await?;
    let start = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(skiff_scheduler::run(
        client.clone(),
        SchedulerOptions {
            name: "default-scheduler".into(),
            parallelism,
        },
        async {
            let _ = stopped.await;
        },
    ));
    wait_bound(&ns, pods).await?;
    let elapsed = start.elapsed();
    println!(
        "backlog: {pods} pods bound in {:.0} ms: {:.0} pods/s",
        elapsed.as_secs_f64() * 1000.0,
        pods as f64 / elapsed.as_secs_f64()
    );

    let mut per_node = std::collections::BTreeMap::new();
    for p in ns.list(&ListParams::default()).await? {
        let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        *per_node.entry(node).or_insert(0) += 1;
    }
    println!("backlog: pods per node {per_node:?}");

    // Burst: pods created while the scheduler runs.
    let ns = namespace(&client, "burst").await?;
    let start = Instant::now();
    let (created, bound) = tokio::join!(create_pods(&ns, pods), wait_bound(&ns, pods));
    created?;
    bound?;
    let elapsed = start.elapsed();
    println!(
        "burst: {pods} pods created and bound in {:.0} ms: {:.0} pods/s",
        elapsed.as_secs_f64() * 1000.0,
        pods as f64 / elapsed.as_secs_f64()
    );
    let _ = stop.send(());
    scheduler.await?;
    Ok(())
}

async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<Api<Pod>> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(Api::namespaced(client.clone(), name))
}

async fn create_pods(api: &Api<Pod>, n: usize) -> anyhow::Result<()> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "app", "image": "example/app",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            }))?;
            api.create(&PostParams::default(), &pod).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

/// Waits until `n` pods of the namespace are bound, as a watch reports them.
async fn wait_bound(api: &Api<Pod>, n: usize) -> anyhow::Result<()> {
    let list = api.list(&ListParams::default()).await?;
    let mut bound: HashSet<String> = list
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let rv = list.metadata.resource_version.unwrap_or_default();
    let stream = api.watch(&WatchParams::default(), &rv).await?;
    let mut stream = std::pin::pin!(stream);
    while bound.len() < n {
        match stream.next().await.context("the watch ended")?? {
            WatchEvent::Added(p) | WatchEvent::Modified(p)
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() =>
            {
                bound.insert(p.metadata.name.unwrap_or_default());
            }
            WatchEvent::Error(e) => anyhow::bail!("watch error: {}", e.message),
            _ => {}
        }
    }
    Ok(())
}
