//! `skiff bench services`: what the service proxy costs and how fast it follows changes,
//! on a `skiff up` node (as root).
//!
//! - Data path: requests/s and latency of keep-alive HTTP requests to two container pods
//!   of the HTTP example (the static Linux build), as many connections to each, by pod
//!   IP, through their Service's cluster IP and through its node port, from the node,
//!   each round every path once (in a rotating order), with a handful of Services in the
//!   table and again with `--services` more (each with 10 endpoints), so per-packet cost
//!   can be compared between the two. A path's share of direct throughput is the median
//!   over rounds of its round's ratio to the direct path's: paired within a round, so
//!   that the VM's drift from round to round cancels.
//! - Rules: from a pod's readiness status write to the proxy's rules showing it (the
//!   proxy's debug line after its `nft` transaction committed), for pods whose status this bench writes itself (bound to a node no
//!   agent runs, so nothing else writes it): the endpointslice controller's and the
//!   proxy's share of a readiness change, which a probe's period comes before.
//! - Scale: the time from the last of the `--services` Services and slices created to the
//!   rules holding all of them, and the time one endpoint change then takes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::bench::{machine, percentile};
use crate::bench_pods::{BenchCluster, LogLines};

const HTTP_SERVER: &str = "bench.local/skiff/http-server:v1";
/// The bench cluster's bridge: its proxy table is `<bridge>-services`.
const TABLE: &str = "skbench0-services";

/// Requests/s and per-request latencies of one load run.
struct Load {
    rps: f64,
    latencies: Vec<Duration>,
}

/// The pods behind the bench's Service.
const PODS: usize = 2;

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = tokio::net::tcp::OwnedWriteHalf;

/// One `GET path` on a keep-alive connection: the body of its 200 answer.
async fn get(read: &mut Reader, write: &mut Writer, path: &str) -> anyhow::Result<Vec<u8>> {
    write
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut line = String::new();
    let mut length = 0usize;
    let mut first = true;
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            bail!("the server closed the connection");
        }
        if first {
            anyhow::ensure!(line.contains(" 200 "), "{line}");
            first = false;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await?;
    Ok(body)
}

async fn open(target: SocketAddr) -> anyhow::Result<(Reader, Writer)> {
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    Ok((BufReader::new(read), write))
}

/// `connections` keep-alive connections to `targets`, round robin. Through a Service (one
/// target), the proxy picks a pod per connection at random, and 16 picks over 2 pods are
/// rarely 8 and 8: the busier pod's queue then shows in the tail latency as if the path
/// cost it. So each connection asks which pod it reached (`GET /env/POD`) and ones over a
/// pod's share are replaced, until each of the `pods` has its share, as the direct path
/// has by construction.
async fn connect(
    targets: &[SocketAddr],
    connections: usize,
    pods: usize,
) -> anyhow::Result<Vec<(Reader, Writer)>> {
    let mut out = Vec::new();
    if targets.len() > 1 {
        for i in 0..connections {
            out.push(open(targets[i % targets.len()]).await?);
        }
        return Ok(out);
    }
    let share = connections.div_ceil(pods);
    let mut per_pod: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for _ in 0..connections * 50 {
        if out.len() == connections {
            return Ok(out);
        }
        let (mut read, mut write) = open(targets[0]).await?;
        let pod = get(&mut read, &mut write, "/env/POD").await?;
        let n = per_pod.entry(pod).or_default();
        if *n < share {
            *n += 1;
            out.push((read, write));
        }
    }
    bail!(
        "{} did not spread {connections} connections over {pods} pods: {per_pod:?}",
        targets[0]
    )
}

/// `connections` keep-alive connections ([`connect`]), sending GETs of `/` back to back
/// for `seconds`.
async fn load(targets: &[SocketAddr], connections: usize, seconds: f64) -> anyhow::Result<Load> {
    let streams = connect(targets, connections, PODS).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (mut read, mut write) in streams {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let start = Instant::now();
                get(&mut read, &mut write, "/").await?;
                latencies.push(start.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds);
    latencies.sort();
    Ok(Load {
        rps: latencies.len() as f64 / elapsed,
        latencies,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn container_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods", "app": "bench-web"}},
        "spec": {
            "runtimeClassName": "youki",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": HTTP_SERVER,
                "imagePullPolicy": "Never",
                "ports": [{"containerPort": 8080}],
                // Which pod a connection reached: `GET /env/POD`.
                "env": [{"name": "POD", "value": name}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            }],
        },
    }))
    .expect("pod")
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "{what}: timed out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ready endpoints of `service`'s slices.
async fn ready_endpoints(slices: &Api<EndpointSlice>, service: &str) -> usize {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    slices
        .list(&lp)
        .await
        .map(|l| {
            l.items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count()
        })
        .unwrap_or(0)
}

/// When the cluster logs that it applied service rules for `service` (10 s at most), and
/// how long the proxy's sync took by its own count.
async fn applied_for(log: &mut LogLines, service: &str) -> anyhow::Result<(Instant, Duration)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, log.recv()).await {
            Ok(Some((at, line)))
                if line.contains("service rules applied") && line.contains(service) =>
            {
                let line = strip_ansi(&line);
                let took = line
                    .split("took_ms=")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                return Ok((at, Duration::from_millis(took)));
            }
            Ok(Some((_, line))) => {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("{line}");
                }
            }
            Ok(None) => bail!("the cluster's log ended"),
            Err(_) => bail!("no rules applied for {service} in 10 s"),
        }
    }
}

/// `line` without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn drain(log: &mut LogLines) {
    while log.try_recv().is_ok() {}
}

/// A pod bound to a node no agent runs, whose status this bench writes.
fn ghost_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods", "app": "bench-ghost"}},
        "spec": {
            "nodeName": "bench-ghost-node",
            "containers": [{"name": "app", "image": "none", "ports": [{"containerPort": 8080}]}],
        },
    }))
    .expect("pod")
}

fn ghost_status(ip: &str, ready: bool) -> serde_json::Value {
    json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }})
}

/// Readiness status writes to rules: `changes` flips of one of 10 pods' readiness.
async fn rules_latency(
    client: &kube::Client,
    changes: usize,
    log: &mut LogLines,
) -> anyhow::Result<Vec<(Duration, Duration)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let n = 10;
    for i in 0..n {
        let name = format!("ghost-{i}");
        pods.create(&PostParams::default(), &ghost_pod(&name))
            .await?;
        let status = ghost_status(&format!("10.249.0.{}", i + 10), true);
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bench-ghost"},
        "spec": {"selector": {"app": "bench-ghost"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    wait_for("ten ghost endpoints", async || {
        (ready_endpoints(&slices, "bench-ghost").await == n).then_some(())
    })
    .await?;
    let mut out = Vec::new();
    for c in 0..changes {
        // Down one, then up again.
        let i = c / 2 % n;
        let ready = c % 2 == 1;
        let ip = format!("10.249.0.{}", i + 10);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drain(log);
        let status = ghost_status(&ip, ready);
        let start = Instant::now();
        pods.patch_status(
            &format!("ghost-{i}"),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
        let (at, took) = applied_for(log, "default/bench-ghost").await?;
        out.push((at.saturating_duration_since(start), took));
    }
    services.delete("bench-ghost", &Default::default()).await?;
    Ok(out)
}

/// Creates `count` Services (with a slice each, when `make` gives one) in `default`, 16
/// clients at once.
pub(crate) async fn create_services<F>(
    client: &kube::Client,
    count: usize,
    make: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> anyhow::Result<(Service, Option<EndpointSlice>)> + Send + Sync + 'static,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, next, make) = (client.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let services: Api<Service> = Api::namespaced(client.clone(), "default");
            let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let (svc, slice) = make(i)?;
                services.create(&PostParams::default(), &svc).await?;
                if let Some(slice) = slice {
                    slices.create(&PostParams::default(), &slice).await?;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Service `i` of `count` without a selector and its slice of 10 ready endpoints (addresses
/// nothing answers at: only the rules are measured).
pub(crate) fn service_with_endpoints(
    i: usize,
    spec: serde_json::Value,
    port_name: &str,
) -> anyhow::Result<(Service, Option<EndpointSlice>)> {
    let name = format!("many-{i}");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"bench": "many"}},
        "spec": spec,
    }))?;
    let endpoints: Vec<serde_json::Value> = (0..10)
        .map(|e| {
            json!({"addresses": [format!("10.248.{}.{}", i / 25, (i % 25) * 10 + e)],
                   "conditions": {"ready": true}})
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"),
                     "labels": {"bench": "many", "kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": 8080, "protocol": "TCP"}],
    }))?;
    Ok((svc, Some(slice)))
}

/// `count` Services without selectors, each with a slice of 10 endpoints.
async fn many_services(client: &kube::Client, count: usize) -> anyhow::Result<()> {
    create_services(client, count, |i| {
        service_with_endpoints(i, json!({"ports": [{"port": 80, "targetPort": 8080}]}), "")
    })
    .await
}

/// The bench node's address on its pod bridge (the first of its pod CIDR): a local
/// address of the node's, where its node ports and its DNS answer.
pub(crate) async fn node_gateway(client: &kube::Client) -> anyhow::Result<std::net::Ipv4Addr> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = nodes.list(&ListParams::default()).await?.items.remove(0);
    let cidr: ipnet::Ipv4Net = node
        .spec
        .and_then(|s| s.pod_cidr)
        .context("pod CIDR")?
        .parse()?;
    Ok(std::net::Ipv4Addr::from(u32::from(cidr.network()) + 1))
}

/// Elements of the proxy's `cluster-ips` map now.
async fn cluster_ip_elements() -> anyhow::Result<usize> {
    let out = tokio::process::Command::new("nft")
        .args(["-j", "list", "map", "ip", TABLE, "cluster-ips"])
        .output()
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["map"]["elem"].as_array())
        .map(Vec::len)
        .sum())
}

pub async fn run(
    seconds: f64,
    connections: usize,
    rounds: usize,
    services: usize,
    changes: usize,
) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/build");
    // The proxy logs each applied change: the rules' side of the readiness measurement.
    let (cluster, log) = BenchCluster::start_logged(
        &[(
            root.join("http-server-oci"),
            HTTP_SERVER,
            "examples/images/http-server.sh",
        )],
        Some("warn,skiff_proxy=debug"),
    )
    .await?;
    let mut log = log.context("the cluster's log")?;
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let result = async {
        for i in 0..PODS {
            pods.create(&PostParams::default(), &container_pod(&format!("web-{i}")))
                .await?;
        }
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "bench-web"},
            "spec": {"type": "NodePort", "selector": {"app": "bench-web"},
                     "ports": [{"port": 80, "targetPort": 8080}]},
        }))?;
        let svc = svcs.create(&PostParams::default(), &svc).await?;
        wait_for("two ready endpoints", async || {
            (ready_endpoints(&slices, "bench-web").await == PODS).then_some(())
        })
        .await?;
        let mut direct = Vec::new();
        for i in 0..PODS {
            let p = pods.get(&format!("web-{i}")).await?;
            let ip = p.status.and_then(|s| s.pod_ip).context("pod IP")?;
            direct.push(SocketAddr::new(ip.parse()?, 8080));
        }
        let spec = svc.spec.context("spec")?;
        let cluster_ip: SocketAddr =
            SocketAddr::new(spec.cluster_ip.context("cluster IP")?.parse()?, 80);
        let node_port = spec.ports.context("ports")?[0]
            .node_port
            .context("node port")?;
        let gateway = node_gateway(&client).await?;
        let node_port = SocketAddr::new(gateway.into(), u16::try_from(node_port)?);

        println!("machine: {}", machine());
        println!(
            "load: {connections} keep-alive connections from the node (as many to each pod), GET / of the HTTP example's static Linux build in 2 container pods, {seconds} s a run, {rounds} rounds, each path once a round"
        );
        let paths: [(&str, Vec<SocketAddr>); 3] = [
            ("pod IPs (direct)", direct),
            ("cluster IP", vec![cluster_ip]),
            ("node port", vec![node_port]),
        ];
        let mut table: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for phase in ["few", "many"] {
            if phase == "many" {
                if services == 0 {
                    break;
                }
                let before = cluster_ip_elements().await?;
                let started = Instant::now();
                many_services(&client, services).await?;
                let created = started.elapsed();
                let t = Instant::now();
                wait_for("the rules of every Service", async || {
                    (cluster_ip_elements().await.ok()? >= before + services).then_some(())
                })
                .await?;
                println!(
                    "{services} more Services with 10 endpoints each: created through the API in {:.1} s; in the rules {:.0} ms after the last was created",
                    created.as_secs_f64(),
                    t.elapsed().as_secs_f64() * 1000.0
                );
            }
            // Warm each path.
            for (_, targets) in &paths {
                load(targets, connections, 0.5).await?;
            }
            let mut rps: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
            let mut p99: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
            // Each round runs every path once, back to back, starting with a different
            // one each round: a path is compared with the direct one of its own round,
            // so the VM's drift between rounds (10 to 25% here) cancels out, and no path
            // always runs first or last.
            for round in 0..rounds {
                for k in 0..paths.len() {
                    let i = (round + k) % paths.len();
                    let l = load(&paths[i].1, connections, seconds).await?;
                    rps[i].push(l.rps);
                    p99[i].push(percentile(&l.latencies, 0.99).as_secs_f64() * 1e6);
                }
            }
            let services_now = cluster_ip_elements().await?;
            println!("with {services_now} Service ports in the rules:");
            for (i, (name, _)) in paths.iter().enumerate() {
                let (r, p) = (median(rps[i].clone()), median(p99[i].clone()));
                // Per round: this path's throughput over the direct one's, and its p99's
                // difference; the medians of those, and their range.
                let ratios: Vec<f64> = (0..rounds).map(|k| rps[i][k] / rps[0][k]).collect();
                let diffs: Vec<f64> = (0..rounds)
                    .map(|k| (p99[i][k] - p99[0][k]) / p99[0][k])
                    .collect();
                let range = |v: &[f64]| {
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (lo, hi)
                };
                let ((rlo, rhi), (dlo, dhi)) = (range(&ratios), range(&diffs));
                println!(
                    "  {name:<18} {r:>8.0} requests/s ({:>5.1}% of direct, rounds {:.1} to {:.1}), p99 {p:>6.0} µs ({:+.1}%, rounds {:+.1} to {:+.1})   runs: {:.0?} / {:.0?}",
                    100.0 * median(ratios.clone()),
                    100.0 * rlo,
                    100.0 * rhi,
                    100.0 * median(diffs.clone()),
                    100.0 * dlo,
                    100.0 * dhi,
                    rps[i],
                    p99[i],
                );
                table.insert(format!("{phase} {name}"), (r, p));
            }
        }
        if let (Some(few), Some(many)) = (
            table.get("few cluster IP"),
            table.get("many cluster IP"),
        ) {
            println!(
                "cluster IP with {services} more Services: {:+.1}% requests/s, {:+.1}% p99",
                100.0 * (many.0 - few.0) / few.0,
                100.0 * (many.1 - few.1) / few.1
            );
        }
        if changes > 0 {
            let lat = rules_latency(&client, changes, &mut log).await;
            // No agent will end them: gone at once, whatever happened.
            let _ = pods
                .delete_collection(
                    &kube::api::DeleteParams::default().grace_period(0),
                    &ListParams::default().labels("app=bench-ghost"),
                )
                .await;
            let lat = lat?;
            let mut sorted: Vec<Duration> = lat.iter().map(|l| l.0).collect();
            sorted.sort();
            let mut syncs: Vec<Duration> = lat.iter().map(|l| l.1).collect();
            syncs.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "readiness status write -> rules ({changes} changes, {} Service ports in the rules): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                cluster_ip_elements().await?,
                ms(percentile(&sorted, 0.5)),
                ms(percentile(&sorted, 0.9)),
                ms(percentile(&sorted, 0.99)),
                ms(*sorted.last().unwrap_or(&Duration::ZERO)),
            );
            println!(
                "  of which the proxy's sync (informer caches to nft committed): p50 {:.1} ms, p99 {:.1} ms",
                ms(percentile(&syncs, 0.5)),
                ms(percentile(&syncs, 0.99)),
            );
        }
        anyhow::Ok(())
    }
    .await;
    // Services and slices go with the cluster; its pods are stopped first.
    cluster.stop(&pods).await;
    result
}
