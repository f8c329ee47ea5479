//! `skiff bench pods`: Wasm pods on a real node, measured from the outside as Kubernetes
//! defines pod startup (creation to Running, seen through a watch, image already present).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

use crate::bench::{machine, percentile};

const HELLO: &str = "bench.local/skiff/hello:v1";
const HTTP: &str = "bench.local/skiff/http:v1";

fn pod(name: &str, image: &str, restart: &str, port: bool) -> Pod {
    let ports = if port {
        r#","ports":[{"containerPort":8080}]"#
    } else {
        ""
    };
    serde_json::from_str(&format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"bench":"pods"}}}},
        "spec":{{"runtimeClassName":"wasmtime","restartPolicy":"{restart}","terminationGracePeriodSeconds":1,
        "containers":[{{"name":"app","image":"{image}","imagePullPolicy":"Never"{ports}}}]}}}}"#
    ))
    .expect("pod json")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .context("VmRSS")
}

/// CPU time a process has used (user and system, all its threads), from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("stat field")?.parse()?) };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(total * 1_000_000 / hz))
}

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Times at which each pod was first seen in `phase` through one watch.
pub(crate) fn watch_phases(api: Api<Pod>, phases: &'static [&'static str]) -> Seen {
    watch_phases_and_binding(api, phases).0
}

/// As [`watch_phases`], and the times at which each pod was first seen bound to a node.
fn watch_phases_and_binding(api: Api<Pod>, phases: &'static [&'static str]) -> (Seen, Seen) {
    let seen: Seen = Arc::default();
    let bound: Seen = Arc::default();
    let out = seen.clone();
    let out_bound = bound.clone();
    tokio::spawn(async move {
        let params = WatchParams::default().labels("bench=pods").timeout(3600);
        let Ok(stream) = api.watch(&params, "0").await else {
            return;
        };
        let mut stream = stream.boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                if p.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    out_bound
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
                let phase = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default();
                if phases.contains(&phase.as_str()) {
                    let name = p.metadata.name.unwrap_or_default();
                    out.lock().unwrap().entry(name).or_insert_with(Instant::now);
                }
            }
        }
    });
    (seen, bound)
}

/// The store's current revision, as a list's resourceVersion tells it.
pub(crate) async fn store_revision(api: &Api<Pod>) -> anyhow::Result<u64> {
    let list = api.list_metadata(&ListParams::default().limit(1)).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    rv.parse()
        .with_context(|| format!("resourceVersion {rv:?} is not a number"))
}

pub(crate) async fn wait_count(
    seen: &Mutex<HashMap<String, Instant>>,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while seen.lock().unwrap().len() < n {
        anyhow::ensure!(
            start.elapsed() < timeout,
            "only {} of {n} pods got there in {timeout:?}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) async fn clear(api: &Api<Pod>) -> anyhow::Result<()> {
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=pods"),
    )
    .await?;
    let start = Instant::now();
    loop {
        let left = api
            .list(&ListParams::default().labels("bench=pods"))
            .await?
            .items;
        if left.is_empty() {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "{} pods not deleted in 2 minutes, e.g. {:?}",
            left.len(),
            left.iter()
                .take(3)
                .map(|p| (
                    p.metadata.name.clone(),
                    p.status.as_ref().and_then(|s| s.phase.clone())
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Log lines of a bench cluster, with the time each was read.
pub(crate) type LogLines = tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>;

/// A `skiff up` for benchmarks: control plane and node in a child process on a free port,
/// with the example guests already in the node's image store.
pub(crate) struct BenchCluster {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub client: kube::Client,
    _dir: tempfile::TempDir,
}

impl BenchCluster {
    pub async fn start() -> anyhow::Result<BenchCluster> {
        let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/build");
        let guests = [
            (build.join("hello.wasm"), HELLO, "examples/build.sh"),
            (build.join("http.wasm"), HTTP, "examples/build.sh"),
        ];
        Self::start_with(&guests).await
    }

    /// A cluster whose node store holds `images`: `.wasm` files or OCI layout directories
    /// (path, reference, and the script that makes a missing one).
    pub async fn start_with(
        images: &[(std::path::PathBuf, &str, &str)],
    ) -> anyhow::Result<BenchCluster> {
        Ok(Self::start_logged(images, None).await?.0)
    }

    /// As [`BenchCluster::start_with`]; with `log` (a `SKIFF_LOG` filter), the cluster's
    /// log lines come back through the receiver, each with the time it was read.
    pub async fn start_logged(
        images: &[(std::path::PathBuf, &str, &str)],
        log: Option<&str>,
    ) -> anyhow::Result<(BenchCluster, Option<LogLines>)> {
        let dir = tempfile::tempdir()?;
        let store = skiff_images::ImageStore::open(dir.path().join("images"))?;
        for (path, reference, script) in images {
            anyhow::ensure!(path.exists(), "{} is missing: run {script}", path.display());
            if path.is_dir() {
                store.import_layout(path, reference)?;
            } else {
                store.import_wasm(path, reference)?;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["up", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--bridge",
                "skbench0",
                "--cluster-cidr",
                "10.250.0.0/16",
                // 2,046 pod addresses: 1,000 idle pods, the warm pool, and room for
                // addresses held back after the burst's pods.
                "--node-cidr-mask-size",
                "21",
                "--agent-port",
                "0",
            ])
            .args(["--warm-sandboxes", "64"])
            // `SKIFF_BENCH_CONTROLLERS=-deployment,...` (or empty, for none) measures what
            // the controllers cost a burst of bare pods.
            .args(
                std::env::var("SKIFF_BENCH_CONTROLLERS")
                    .map(|c| vec!["--controllers".to_string(), c])
                    .unwrap_or_default(),
            )
            .env(
                "SKIFF_LOG",
                log.map(str::to_string)
                    .or_else(|| std::env::var("SKIFF_BENCH_LOG").ok())
                    .unwrap_or_else(|| "warn".into()),
            )
            .stderr(if log.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::inherit()
            })
            .kill_on_drop(true)
            .spawn()?;
        let mut child = child;
        let lines = child.stderr.take().map(|err| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let pid = child.id().context("skiff pid")?;
        let client = crate::local_client(&format!("http://127.0.0.1:{port}"))?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let start = Instant::now();
        while nodes
            .list(&ListParams::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
        {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "no node came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok((
            BenchCluster {
                child,
                pid,
                client,
                _dir: dir,
            },
            lines,
        ))
    }

    /// Removes the bench's pods and stops the cluster (SIGTERM: the node releases its
    /// bridge).
    pub async fn stop(mut self, api: &Api<Pod>) {
        if let Err(e) = clear(api).await {
            println!("cleanup: {e}");
        }
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

/// Creates pods `0..n` (`make(i)`) at `rate` a second and returns each one's time from
/// creation to Running, as a watch saw it.
pub(crate) async fn startup_latencies(
    api: &Api<Pod>,
    n: usize,
    rate: u64,
    make: impl Fn(usize) -> Pod,
) -> anyhow::Result<Vec<Duration>> {
    let seen = watch_phases(api.clone(), &["Running"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut created = HashMap::new();
    let gap = Duration::from_micros(1_000_000 / rate.max(1));
    let mut next = Instant::now();
    for i in 0..n {
        let pod = make(i);
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        created.insert(
            pod.metadata.name.clone().unwrap_or_default(),
            Instant::now(),
        );
        api.create(&PostParams::default(), &pod).await?;
    }
    let start = Instant::now();
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            created.keys().filter(|n| !seen.contains_key(*n)).count()
        };
        if missing == 0 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(180),
            "{missing} of {n} pods not Running after 3 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap();
    Ok(created
        .iter()
        .map(|(name, t)| seen[name].duration_since(*t))
        .collect())
}

/// Creates pods `0..n` (`make(i)`) from `clients` concurrent clients, each create waiting
/// for its answer as a controller's would.
pub(crate) async fn create_all(
    api: &Api<Pod>,
    n: usize,
    clients: usize,
    make: impl Fn(usize) -> Pod + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let make = Arc::new(make);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (api, make) = (api.clone(), make.clone());
            tokio::spawn(async move {
                for i in (c..n).step_by(clients) {
                    api.create(&PostParams::default(), &make(i)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Creates an HTTP pod of the example app and returns its IP once it is Running.
pub(crate) async fn http_pod(api: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    let seen = watch_phases(api.clone(), &["Running"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.create(&PostParams::default(), &pod(name, HTTP, "Always", true))
        .await?;
    wait_count(&seen, 1, Duration::from_secs(60)).await?;
    let p = api.get(name).await?;
    p.status
        .and_then(|s| s.pod_ip)
        .context("a Running pod without an IP")
}

pub async fn run(pods: usize, rate: u64, burst: usize, idle: usize) -> anyhow::Result<()> {
    let cluster = BenchCluster::start().await?;
    let pid = cluster.pid;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    println!("machine: {}", machine());
    let idle_rss = rss_kib(pid)?;

    // Warm-up: compile each image once (the cache is what a second pod of an image gets).
    let seen = watch_phases(api.clone(), &["Running", "Succeeded"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.create(
        &PostParams::default(),
        &pod("warm-http", HTTP, "Always", true),
    )
    .await?;
    api.create(
        &PostParams::default(),
        &pod("warm-hello", HELLO, "Never", false),
    )
    .await?;
    wait_count(&seen, 2, Duration::from_secs(60)).await?;

    // 1. Startup of HTTP pods at a steady rate.
    let mut lat = startup_latencies(&api, pods, rate, |i| {
        pod(&format!("start-{i}"), HTTP, "Always", true)
    })
    .await?;
    lat.sort();
    println!(
        "wasm pod startup ({pods} pods at {rate}/s, creation to Running via a watch): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );

    // 2. A burst of short command pods, created from 32 clients at once (each create waits
    // for its store commit, so fewer clients leave the pipeline underfed).
    let (seen, bound) = watch_phases_and_binding(api.clone(), &["Succeeded"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rev_before = store_revision(&api).await?;
    let cpu_before = (cpu_time(pid)?, cpu_time(std::process::id())?);
    let t0 = Instant::now();
    let clients: usize = std::env::var("SKIFF_BENCH_CLIENTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    create_all(&api, burst, clients, |i| {
        pod(&format!("burst-{i}"), HELLO, "Never", false)
    })
    .await?;
    let created = t0.elapsed();
    wait_count(&seen, burst, Duration::from_secs(300)).await?;
    let took = t0.elapsed();
    let last_bound = bound
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n.starts_with("burst-"))
        .map(|(_, t)| t.duration_since(t0))
        .max()
        .unwrap_or_default();
    // Where a burst waits (binding or the node), every half second.
    if std::env::var_os("SKIFF_BENCH_TIMELINE").is_some() {
        let b = bound.lock().unwrap();
        let s = seen.lock().unwrap();
        let end = took.as_millis().div_ceil(500) as u64;
        for step in 1..=end {
            let t = Duration::from_millis(step * 500);
            let by = |m: &HashMap<String, Instant>| {
                m.iter()
                    .filter(|(n, x)| n.starts_with("burst-") && x.duration_since(t0) <= t)
                    .count()
            };
            let (nb, ns) = (by(&b), by(&s));
            println!("  t={:.1}s bound {nb} succeeded {ns}", t.as_secs_f64());
        }
    }
    // Every write the cluster made meanwhile (pods, bindings, statuses, events, leases).
    let writes = store_revision(&api).await?.saturating_sub(rev_before);
    let per_pod = |d: Duration| d.as_secs_f64() * 1e3 / burst.max(1) as f64;
    let cluster_cpu = per_pod(cpu_time(pid)?.saturating_sub(cpu_before.0));
    let client_cpu = per_pod(cpu_time(std::process::id())?.saturating_sub(cpu_before.1));
    println!(
        "burst of {burst} short wasm pods: all Succeeded in {:.2} s = {:.0} pods/s (all created after {:.2} s, all bound after {:.2} s; per pod {:.1} store writes, CPU {cluster_cpu:.2} ms in skiff up and {client_cpu:.2} ms in the bench's clients)",
        took.as_secs_f64(),
        burst as f64 / took.as_secs_f64(),
        created.as_secs_f64(),
        last_bound.as_secs_f64(),
        writes as f64 / burst.max(1) as f64
    );

    // 3. Memory per idle HTTP pod.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid)?;
    let seen = watch_phases(api.clone(), &["Running"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // `idle` HTTP pods in all: the startup ones and the warm-up one are idle too.
    let added = idle.saturating_sub(pods + 1);
    for i in 0..added {
        api.create(
            &PostParams::default(),
            &pod(&format!("idle-{i}"), HTTP, "Always", true),
        )
        .await?;
    }
    wait_count(&seen, added + pods + 1, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid)?;
    println!(
        "memory: skiff up (control plane + node) idle {:.1} MB; with {} idle wasm HTTP pods {:.1} MB: {:.0} KB more per pod",
        idle_rss as f64 / 1024.0,
        added + pods + 1,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / added.max(1) as f64
    );
    cluster.stop(&api).await;
    Ok(())
}
