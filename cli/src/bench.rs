//! `skiff bench`: figures measured side by side on this machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use skiff_store::local_etcd::LocalEtcd;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Durable writes/s and watch latency of the embedded store and of a real etcd
    /// (started here on loopback), and disk use under lease churn.
    Store {
        /// Seconds per write measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Path of the etcd binary (Debian package etcd-server).
        #[arg(long, default_value = "/usr/bin/etcd")]
        etcd: String,
    },
    /// Object creates/s through the full HTTP path from concurrent clients, and watch
    /// delivery latency at that rate.
    Api {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Total creates per second to offer, spread over the clients; 0 means as fast
        /// as they go.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// `embedded` or `etcd` (started here on loopback).
        #[arg(long, default_value = "embedded")]
        store: String,
        #[arg(long, default_value = "/usr/bin/etcd")]
        etcd: String,
    },
    /// Wasm pods on a `skiff up` node (needs root): startup latency (creation to Running
    /// seen through a watch, image present), a burst of short pods, and memory per idle
    /// HTTP pod.
    Pods {
        /// HTTP pods whose startup is measured, created at `--rate` a second.
        #[arg(long, default_value_t = 200)]
        pods: usize,
        #[arg(long, default_value_t = 20)]
        rate: u64,
        /// Short command pods created at once for the burst.
        #[arg(long, default_value_t = 1000)]
        burst: usize,
        /// Idle HTTP pods running when memory is measured (the startup pods count; the
        /// rest are added, and the memory per pod is over those).
        #[arg(long, default_value_t = 1000)]
        idle: usize,
    },
    /// The container shim's create+start+wait+delete of a busybox bundle next to crun and
    /// runc on the same bundle (as root; installs crun and runc with apt-get if missing).
    Runtimes {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// Container pods on a `skiff up` node (as root): startup of the HTTP example as a
    /// static Linux binary in a container next to the same app as Wasm, and a burst of
    /// short container pods. Needs examples/build/http-server-oci
    /// (examples/images/http-server.sh).
    Containers {
        #[arg(long, default_value_t = 200)]
        pods: usize,
        #[arg(long, default_value_t = 20)]
        rate: u64,
        #[arg(long, default_value_t = 1000)]
        burst: usize,
    },
    /// Requests/s of the HTTP example in a Wasm pod (through its pod IP) next to
    /// `wasmtime serve` on the same component (as root; installs wasmtime-cli into
    /// target/tools on first use).
    Http {
        /// Requests per round.
        #[arg(long, default_value_t = 20000)]
        requests: usize,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Rounds for each, alternating; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Deployments on a `skiff up` node (as root): creation to every replica available,
    /// Wasm and container side by side, a rolling update, and deletion to nothing left.
    Deployments {
        /// Runs of each case (interleaved); the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Replicas of the large Wasm Deployment (0 skips it).
        #[arg(long, default_value_t = 1000)]
        large: i32,
    },
    /// The service proxy on a `skiff up` node (as root): requests/s and p99 through a
    /// cluster IP and a node port against the same pods by pod IP, with few Services and
    /// with `--services` more; readiness status write to rules; programming time.
    Services {
        /// Seconds per load run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Rounds of each path, alternating; medians are reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Services (10 endpoints each) added for the second half (0 skips it).
        #[arg(long, default_value_t = 5000)]
        services: usize,
        /// Readiness changes timed to the rules (0 skips it).
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
    /// The cluster DNS of a `skiff up` node (as root): queries/s with `dnsperf` (installed
    /// if missing) against `--services` Services.
    Dns {
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Seconds per dnsperf run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// dnsperf runs; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// dnsperf's clients (sockets).
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
    /// Resident memory of an idle `skiff server`.
    Idle {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

pub async fn run(what: Bench) -> anyhow::Result<()> {
    match what {
        Bench::Store { seconds, etcd } => store_bench(seconds, &etcd).await,
        Bench::Api {
            clients,
            seconds,
            rate,
            store,
            etcd,
        } => api_bench(clients, seconds, rate, &store, &etcd).await,
        Bench::Idle { seconds } => idle_bench(seconds).await,
        Bench::Deployments { runs, large } => crate::bench_deployments::run(runs, large).await,
        Bench::Http {
            requests,
            concurrency,
            rounds,
        } => crate::bench_http::run(requests, concurrency, rounds).await,
        Bench::Pods {
            pods,
            rate,
            burst,
            idle,
        } => crate::bench_pods::run(pods, rate, burst, idle).await,
        Bench::Services {
            seconds,
            connections,
            rounds,
            services,
            changes,
        } => crate::bench_services::run(seconds, connections, rounds, services, changes).await,
        Bench::Dns {
            services,
            seconds,
            runs,
            clients,
        } => crate::bench_dns::run(services, seconds, runs, clients).await,
        Bench::Runtimes { iterations } => crate::bench_containers::runtimes(iterations).await,
        Bench::Containers { pods, rate, burst } => {
            crate::bench_containers::containers(pods, rate, burst).await
        }
    }
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model})")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn local_etcd(binary: &str) -> anyhow::Result<(LocalEtcd, Arc<dyn skiff_store::Store>)> {
    let etcd = LocalEtcd::start(Some(std::path::Path::new(binary)))?;
    let store = etcd.connect().await?;
    Ok((etcd, Arc::new(store)))
}

async fn store_bench(seconds: u64, etcd_bin: &str) -> anyhow::Result<()> {
    use skiff_store::bench;
    println!("machine: {}", machine());
    let dir = tempfile::tempdir()?;
    let embedded: Arc<dyn skiff_store::Store> = Arc::new(
        skiff_store::embedded::EmbeddedStore::open(&dir.path().join("store"))?,
    );
    let (_etcd, etcd_store) = local_etcd(etcd_bin).await?;
    let d = Duration::from_secs(seconds);
    println!("| store | clients | writes/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for clients in [1, 8] {
        for (name, store) in [("embedded", &embedded), ("etcd", &etcd_store)] {
            let r = bench::writes(store.clone(), clients, d).await?;
            println!(
                "| {name} | {clients} | {:.0} | {:?} | {:?} |",
                r.writes_per_sec, r.latency.p50, r.latency.p99
            );
        }
    }
    println!();
    println!("| store | write start to watch delivery p50 | p99 | ack to delivery p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (name, store) in [("embedded", &embedded), ("etcd", &etcd_store)] {
        let r = bench::watch_latency(store.clone(), 2000).await?;
        println!(
            "| {name} | {:?} | {:?} | {:?} | {:?} |",
            r.after_write.p50, r.after_write.p99, r.after_ack.p50, r.after_ack.p99
        );
    }
    println!();
    let churn_dir = tempfile::tempdir()?;
    let churn_store: Arc<dyn skiff_store::Store> = Arc::new(
        skiff_store::embedded::EmbeddedStore::open(churn_dir.path())?,
    );
    let sizes = bench::churn(
        churn_store,
        churn_dir.path(),
        bench::ChurnOptions::default(),
    )
    .await?;
    println!(
        "lease churn (100 nodes renewing every 10 s for one simulated hour, compaction every 5 min):"
    );
    println!("| simulated minute | embedded store on disk |");
    println!("|---|---|");
    for (minute, bytes) in sizes.into_iter().filter(|(m, _)| m % 10 == 0) {
        println!("| {minute} | {:.1} MiB |", bytes as f64 / (1024.0 * 1024.0));
    }
    Ok(())
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn api_bench(
    clients: usize,
    seconds: u64,
    rate: u64,
    store: &str,
    etcd_bin: &str,
) -> anyhow::Result<()> {
    println!("machine: {}", machine());
    let dir = tempfile::tempdir()?;
    let _etcd;
    let store: Arc<dyn skiff_store::Store> = match store {
        "embedded" => Arc::new(skiff_store::embedded::EmbeddedStore::open(
            &dir.path().join("store"),
        )?),
        "etcd" => {
            let (e, s) = local_etcd(etcd_bin).await?;
            _etcd = e;
            s
        }
        other => anyhow::bail!("--store must be embedded or etcd, not {other:?}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server =
        skiff_apiserver::ApiServer::start(store, listener, skiff_apiserver::Config::default())
            .await?;
    let base = format!("http://{}", server.local_addr);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    // Watch the namespace from now on and note when each object's event arrives.
    let start_rv = {
        let resp = client
            .get(format!("{base}/api/v1/namespaces/default/configmaps?limit=1").parse()?)
            .await?;
        let body = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string()
    };
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let delivered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let client = client.clone();
        let delivered = delivered.clone();
        let url = format!(
            "{base}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={start_rv}"
        );
        tokio::spawn(async move {
            let Ok(resp) = client.get(url.parse().expect("url")).await else {
                return;
            };
            let mut body = resp.into_body().into_data_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                let now = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line)
                        && let Some(name) = ev["object"]["metadata"]["name"].as_str()
                    {
                        delivered
                            .lock()
                            .expect("lock")
                            .insert(name.to_string(), now);
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let base = base.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            let mut pace = (rate > 0).then(|| {
                let per_client = (rate as f64 / clients as f64).max(1.0);
                tokio::time::interval(Duration::from_secs_f64(1.0 / per_client))
            });
            while Instant::now() < deadline {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                let name = format!("bench-{c}-{i}");
                i += 1;
                let body = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"bench": "api"}},
                    "data": {"key": "value"},
                });
                let req =
                    http::Request::post(format!("{base}/api/v1/namespaces/default/configmaps"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .expect("request");
                let t = Instant::now();
                let resp = client.request(req).await?;
                let status = resp.status();
                let _ = resp.into_body().collect().await?;
                anyhow::ensure!(status == 201, "create answered {status}");
                let done = Instant::now();
                latencies.push(done - t);
                acked.lock().expect("lock").insert(name, done);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    latencies.sort();
    let n = latencies.len();
    let offered = if rate > 0 {
        format!("{rate}/s offered")
    } else {
        "as fast as they go".into()
    };
    println!(
        "API creates through HTTP ({offered}): {clients} clients, {n} objects in {:.1} s = {:.0} objects/s (create p50 {:?}, p99 {:?})",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let acked = acked.lock().expect("lock");
    let delivered = delivered.lock().expect("lock");
    let mut watch: Vec<Duration> = acked
        .iter()
        .filter_map(|(name, ack)| {
            delivered
                .get(name)
                .map(|d| d.saturating_duration_since(*ack))
        })
        .collect();
    watch.sort();
    println!(
        "watch delivery after the create was acknowledged: {} of {} events seen, p50 {:?}, p99 {:?}",
        watch.len(),
        acked.len(),
        percentile(&watch, 0.5),
        percentile(&watch, 0.99)
    );
    Ok(())
}

async fn idle_bench(seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(uri) = format!("http://127.0.0.1:{port}/readyz").parse()
            && client.get(uri).await.is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(up, "skiff server did not come up");
    // A little work, as a cluster that just started sees: discovery and a list.
    for path in ["/version", "/api", "/apis", "/api/v1/namespaces"] {
        let resp = client
            .get(format!("http://127.0.0.1:{port}{path}").parse()?)
            .await?;
        let _ = resp.into_body().collect().await?;
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let pid = child.id().context("server pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .context("VmRSS")?;
    println!("machine: {}", machine());
    println!(
        "idle skiff server resident memory: {:.1} MB",
        rss as f64 / 1024.0
    );
    child.kill().await?;
    Ok(())
}
