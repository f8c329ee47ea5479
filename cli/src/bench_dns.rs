//! `skiff bench dns`: queries per second of a node's cluster DNS, measured with `dnsperf`
//! (the tool CoreDNS's published figures come from), on a `skiff up` node (as root).
//!
//! The cluster holds `--services` Services (every tenth headless, with 10 ready
//! endpoints); `dnsperf` runs on the same machine, from the node, against the DNS on the
//! node's pod gateway, with a mix of the names pods ask: A of Services (70%), AAAA of the
//! same (10%, answered empty), SRV of their named port (10%) and names that do not exist
//! (10%, NXDOMAIN). The load generator shares the machine's cores with the server, as it
//! would not in CoreDNS's figure (33,669 queries/s on 2 vCPUs, client elsewhere).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, bail};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use kube::Api;
use serde_json::json;

use crate::bench::machine;
use crate::bench_pods::BenchCluster;
use crate::bench_services::{create_services, node_gateway, service_with_endpoints};

/// `count` Services without selectors in `default` (`many-<i>`), every tenth headless with a
/// slice of 10 ready endpoints.
async fn services(client: &kube::Client, count: usize) -> anyhow::Result<()> {
    create_services(client, count, |i| {
        let ports = json!([{"name": "http", "port": 80, "targetPort": 8080}]);
        if i % 10 == 9 {
            service_with_endpoints(i, json!({"clusterIP": "None", "ports": ports}), "http")
        } else {
            let (svc, _) = service_with_endpoints(i, json!({"ports": ports}), "http")?;
            Ok((svc, None))
        }
    })
    .await
}

/// The response code and answer count of one query of `name` at `server`.
fn ask(server: SocketAddr, name: &str) -> anyhow::Result<(ResponseCode, usize)> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(&q.to_vec()?, server)?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf)?;
    let reply = Message::from_vec(&buf[..n])?;
    Ok((reply.metadata.response_code, reply.answers.len()))
}

/// dnsperf, installed from Debian's packages when it is missing.
async fn dnsperf() -> anyhow::Result<&'static str> {
    let found = |cmd: &str| std::process::Command::new(cmd).arg("-h").output().is_ok();
    if found("dnsperf") {
        return Ok("dnsperf");
    }
    eprintln!("skiff bench dns: installing dnsperf (apt-get install dnsperf)");
    let status = tokio::process::Command::new("apt-get")
        .args(["install", "-y", "-q", "dnsperf"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await;
    if !matches!(status, Ok(s) if s.success()) || !found("dnsperf") {
        bail!("dnsperf is missing and apt-get could not install it: install dnsperf and run again");
    }
    Ok("dnsperf")
}

/// One dnsperf run: (queries/s, average latency in µs, lost queries).
async fn dnsperf_run(
    bin: &str,
    server: SocketAddr,
    queries: &std::path::Path,
    seconds: u64,
    clients: usize,
) -> anyhow::Result<(f64, f64, u64)> {
    let out = tokio::process::Command::new(bin)
        .arg("-s")
        .arg(server.ip().to_string())
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", &clients.to_string()])
        .args(["-T", "1", "-q", "100"])
        .output()
        .await
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let qps: f64 = field("Queries per second:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("dnsperf printed no rate:\n{text}"))?;
    let latency: f64 = field("Average Latency (s):")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let lost: u64 = field("Queries lost:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((qps, latency * 1e6, lost))
}

pub async fn run(
    services_count: usize,
    seconds: u64,
    runs: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let bin = dnsperf().await?;
    let (cluster, _log) = BenchCluster::start_logged(&[], None).await?;
    let client = cluster.client.clone();
    let result = measure(bin, &client, services_count, seconds, runs, clients).await;
    cluster.stop(&Api::namespaced(client, "default")).await;
    result
}

async fn measure(
    bin: &str,
    client: &kube::Client,
    services_count: usize,
    seconds: u64,
    runs: usize,
    clients: usize,
) -> anyhow::Result<()> {
    // The node's DNS listens on its pod gateway.
    let server = SocketAddr::new(node_gateway(client).await?.into(), 53);
    services(client, services_count).await?;
    let last = format!(
        "many-{}.default.svc.cluster.local",
        services_count.saturating_sub(2)
    );
    let started = std::time::Instant::now();
    loop {
        if let Ok((ResponseCode::NoError, n)) = ask(server, &last)
            && n > 0
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{last} did not resolve at {server} within a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir()?;
    let queries = dir.path().join("queries");
    let mut text = String::new();
    for i in 0..20_000usize {
        let n = (i * 7919) % services_count.max(1);
        let line = match i % 10 {
            0..=6 => format!("many-{n}.default.svc.cluster.local A\n"),
            7 => format!("many-{n}.default.svc.cluster.local AAAA\n"),
            8 => format!("_http._tcp.many-{n}.default.svc.cluster.local SRV\n"),
            _ => format!("nope-{n}.default.svc.cluster.local A\n"),
        };
        text.push_str(&line);
    }
    std::fs::write(&queries, text)?;
    println!("machine: {}", machine());
    println!(
        "cluster DNS of a skiff up node at {server}: {services_count} Services (every tenth headless with 10 endpoints); dnsperf from the node, {clients} clients, {seconds} s a run, {runs} runs; names: 70% A, 10% AAAA, 10% SRV, 10% NXDOMAIN"
    );
    // Warm up.
    dnsperf_run(bin, server, &queries, 1, clients).await?;
    let mut rates = Vec::new();
    for run in 0..runs {
        let (qps, latency, lost) = dnsperf_run(bin, server, &queries, seconds, clients).await?;
        println!(
            "  run {}: {qps:>9.0} queries/s, average latency {latency:>5.0} µs, {lost} lost",
            run + 1
        );
        rates.push(qps);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median: {:.0} queries/s (CoreDNS: 33,669 on 2 vCPUs)",
        rates[rates.len() / 2]
    );
    Ok(())
}
