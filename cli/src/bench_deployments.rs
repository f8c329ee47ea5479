//! `skiff bench deployments`: how long the workload controllers take to make a Deployment
//! available, Wasm and container side by side on one node, to roll it, and to delete it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;

use crate::bench::machine;
use crate::bench_pods::BenchCluster;

const HTTP_WASM: &str = "bench.local/skiff/http:v1";
const HTTP_SERVER: &str = "bench.local/skiff/http-server:v1";

fn deployment(name: &str, image: &str, replicas: i32, wasm: bool) -> Deployment {
    let runtime = if wasm { "wasmtime" } else { "youki" };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "bench": "deployments"}},
                "spec": {
                    "runtimeClassName": runtime,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": image, "imagePullPolicy": "Never",
                                    "ports": [{"containerPort": 8080}]}],
                },
            },
        },
    }))
    .expect("deployment")
}

/// Whether the rollout is done as `kubectl rollout status` decides it.
fn rolled_out(d: Option<&Deployment>, replicas: i32) -> bool {
    let Some(d) = d else { return false };
    let Some(s) = &d.status else { return false };
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
}

async fn until_rolled_out(api: &Api<Deployment>, name: &str, replicas: i32) -> anyhow::Result<()> {
    tokio::time::timeout(
        Duration::from_secs(300),
        await_condition(api.clone(), name, move |d: Option<&Deployment>| {
            rolled_out(d, replicas)
        }),
    )
    .await
    .with_context(|| format!("{name} not rolled out in 5 minutes"))??;
    Ok(())
}

/// Time from creating a Deployment of `replicas` to all of them available.
async fn create(
    client: &kube::Client,
    name: &str,
    image: &str,
    replicas: i32,
    wasm: bool,
) -> anyhow::Result<Duration> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    api.create(
        &PostParams::default(),
        &deployment(name, image, replicas, wasm),
    )
    .await?;
    until_rolled_out(&api, name, replicas).await?;
    Ok(start.elapsed())
}

/// Time from changing the template to every replica replaced and available.
async fn roll(client: &kube::Client, name: &str, replicas: i32) -> anyhow::Result<Duration> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"bench/rev": "2"}}}}});
    let start = Instant::now();
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    until_rolled_out(&api, name, replicas).await?;
    Ok(start.elapsed())
}

/// Time from deleting a Deployment to none of its ReplicaSets, pods, or events about any
/// of them (or it) left.
async fn delete(client: &kube::Client, name: &str) -> anyhow::Result<Duration> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let selector = ListParams::default().labels(&format!("app={name}"));
    let prefix = format!("{name}-");
    let start = Instant::now();
    deployments
        .delete(name, &DeleteParams::background())
        .await?;
    loop {
        let rs = replicasets.list_metadata(&selector).await?.items.len();
        let p = pods.list_metadata(&selector).await?.items.len();
        // Events are only listed once the objects are gone: there are thousands.
        let e = if rs == 0 && p == 0 {
            let about = events.list(&ListParams::default()).await?.items;
            Some(
                about
                    .iter()
                    .filter(|e| {
                        let n = e.involved_object.name.as_deref().unwrap_or_default();
                        n == name || n.starts_with(&prefix)
                    })
                    .count(),
            )
        } else {
            None
        };
        if e == Some(0) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "{name}: {rs} ReplicaSets, {p} pods and {} events left after 2 minutes",
            e.map_or("its".to_string(), |n| n.to_string())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With `SKIFF_BENCH_TIMELINE` set: every 250 ms of the large case, how many of its pods
/// exist, are bound, have an IP, run and are ready (from one watch of them), to see which
/// stage holds the rest back.
async fn timeline(client: kube::Client, name: String, replicas: i32) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::collections::HashMap;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let config = watcher::Config::default().labels(&format!("app={name}"));
    let mut events = std::pin::pin!(watcher(pods, config).default_backoff().touched_objects());
    let mut seen: HashMap<String, [bool; 4]> = HashMap::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(Ok(pod)) = event else { continue };
                let status = pod.status.as_ref();
                let stages = [
                    pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(),
                    status.and_then(|s| s.pod_ip.as_ref()).is_some(),
                    status.and_then(|s| s.phase.as_deref()) == Some("Running"),
                    status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
                ];
                seen.insert(pod.metadata.name.clone().unwrap_or_default(), stages);
            }
            _ = tick.tick() => {
                let count = |i: usize| seen.values().filter(|s| s[i]).count();
                eprintln!(
                    "  {:>5.2} s: {} of {replicas} pods, {} bound, {} with an IP, {} running, {} ready",
                    start.elapsed().as_secs_f64(),
                    seen.len(),
                    count(0),
                    count(1),
                    count(2),
                    count(3),
                );
            }
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn row(case: &str, runs: Vec<Duration>) -> String {
    let each: Vec<String> = runs
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    format!(
        "  {case:<56} median {:>6.2} s   runs: {}",
        median(runs).as_secs_f64(),
        each.join(", ")
    )
}

pub async fn run(runs: usize, large: i32) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/build");
    let imports = [
        (root.join("http.wasm"), HTTP_WASM, "examples/build.sh"),
        (
            root.join("http-server-oci"),
            HTTP_SERVER,
            "examples/images/http-server.sh",
        ),
    ];
    let cluster = BenchCluster::start_with(&imports).await?;
    let client = cluster.client.clone();
    println!("machine: {}", machine());
    // Warm-up: each image once (compiled, unpacked).
    create(&client, "warm-wasm", HTTP_WASM, 1, true).await?;
    create(&client, "warm-container", HTTP_SERVER, 1, false).await?;
    delete(&client, "warm-wasm").await?;
    delete(&client, "warm-container").await?;

    let (mut wasm100, mut roll100, mut del100) = (Vec::new(), Vec::new(), Vec::new());
    let (mut linux100, mut del_linux) = (Vec::new(), Vec::new());
    let (mut wasm_large, mut del_large) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let name = format!("wasm-{i}");
        wasm100.push(create(&client, &name, HTTP_WASM, 100, true).await?);
        roll100.push(roll(&client, &name, 100).await?);
        del100.push(delete(&client, &name).await?);
        let name = format!("container-{i}");
        linux100.push(create(&client, &name, HTTP_SERVER, 100, false).await?);
        del_linux.push(delete(&client, &name).await?);
        if large > 0 {
            let name = format!("wasm-large-{i}");
            let timeline = std::env::var_os("SKIFF_BENCH_TIMELINE")
                .map(|_| tokio::spawn(timeline(client.clone(), name.clone(), large)));
            wasm_large.push(create(&client, &name, HTTP_WASM, large, true).await?);
            if let Some(t) = timeline {
                t.abort();
            }
            del_large.push(delete(&client, &name).await?);
        }
    }
    println!(
        "Deployments on one node ({runs} runs each, interleaved; creation to every replica available as `kubectl rollout status` decides):"
    );
    println!("{}", row("100 Wasm replicas available", wasm100));
    println!("{}", row("100 container replicas available", linux100));
    if large > 0 {
        println!(
            "{}",
            row(&format!("{large} Wasm replicas available"), wasm_large)
        );
    }
    println!(
        "{}",
        row("rolling update of the 100 Wasm (25%/25%)", roll100)
    );
    println!(
        "{}",
        row("delete 100 Wasm: no ReplicaSet, pod or event left", del100)
    );
    println!(
        "{}",
        row(
            "delete 100 containers: no ReplicaSet, pod or event left",
            del_linux
        )
    );
    if large > 0 {
        println!(
            "{}",
            row(
                &format!("delete {large} Wasm: no ReplicaSet, pod or event left"),
                del_large
            )
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    cluster.stop(&pods).await;
    Ok(())
}
