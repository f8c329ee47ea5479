//! `skiff bench http`: requests/s of the HTTP example served by a Wasm pod (through its pod
//! IP) next to `wasmtime serve` on the same component, same machine, same load generator
//! (ApacheBench with keep-alive), rounds alternating between the two.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::bench::machine;
use crate::bench_pods::{BenchCluster, http_pod};

/// The wasmtime-cli the comparison installs: the wasmtime Skiff embeds.
const WASMTIME_CLI_VERSION: &str = "48.0.8";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `wasmtime` from target/tools, installed there from crates.io on first use.
fn wasmtime_cli() -> anyhow::Result<PathBuf> {
    let root = repo_root().join("target/tools");
    let bin = root.join("bin/wasmtime");
    let version_ok = |bin: &Path| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(WASMTIME_CLI_VERSION))
    };
    if version_ok(&bin) {
        return Ok(bin);
    }
    println!(
        "installing wasmtime-cli {WASMTIME_CLI_VERSION} into {} (once; a long build)",
        root.display()
    );
    let status = std::process::Command::new("cargo")
        .args([
            "install",
            "wasmtime-cli",
            "--locked",
            "--version",
            WASMTIME_CLI_VERSION,
            "--root",
        ])
        .arg(&root)
        .status()
        .context("running cargo install wasmtime-cli")?;
    anyhow::ensure!(
        status.success() && version_ok(&bin),
        "cargo install wasmtime-cli failed"
    );
    Ok(bin)
}

/// One ApacheBench run; requests/s.
async fn ab(url: &str, requests: usize, concurrency: usize) -> anyhow::Result<f64> {
    let out = tokio::process::Command::new("ab")
        .args(["-q", "-k", "-r"])
        .args(["-n", &requests.to_string(), "-c", &concurrency.to_string()])
        .arg(url)
        .output()
        .await
        .context("running ab (apache2-utils; .ci/deps installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let failed = text
        .lines()
        .find(|l| l.starts_with("Failed requests:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let non2xx = text
        .lines()
        .find(|l| l.starts_with("Non-2xx responses:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    if !out.status.success() || failed != 0 || non2xx != 0 {
        bail!(
            "ab against {url} failed ({failed} failed, {non2xx} non-2xx):\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text.lines()
        .find(|l| l.starts_with("Requests per second:"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .context("no 'Requests per second' in ab's output")
}

async fn wait_http(addr: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "nothing listens on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(requests: usize, concurrency: usize, rounds: usize) -> anyhow::Result<()> {
    let wasmtime = wasmtime_cli()?;
    let component = repo_root().join("examples/build/http.wasm");
    anyhow::ensure!(
        component.exists(),
        "{} is missing: run examples/build.sh",
        component.display()
    );
    let cluster = BenchCluster::start().await?;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let ip = http_pod(&api, "bench-http").await?;
    let skiff_url = format!("http://{ip}:8080/");

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = tokio::process::Command::new(&wasmtime)
        .args(["serve", "-S", "cli=y", "--addr", &addr])
        .arg(&component)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting wasmtime serve")?;
    wait_http(&addr).await?;
    let serve_url = format!("http://{addr}/");

    println!("machine: {}", machine());
    println!(
        "load: ab -k, {concurrency} connections, {requests} requests a round, {rounds} rounds each, alternating"
    );
    // Warm both (compiled code, connection paths) before measuring.
    ab(&skiff_url, requests / 10, concurrency).await?;
    ab(&serve_url, requests / 10, concurrency).await?;
    let (mut skiff, mut wasmtime_serve) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        skiff.push(ab(&skiff_url, requests, concurrency).await?);
        wasmtime_serve.push(ab(&serve_url, requests, concurrency).await?);
    }
    let (s, w) = (median(skiff.clone()), median(wasmtime_serve.clone()));
    println!("skiff Wasm pod (via pod IP): {s:.0} requests/s (rounds: {skiff:.0?})");
    println!(
        "wasmtime serve {WASMTIME_CLI_VERSION}: {w:.0} requests/s (rounds: {wasmtime_serve:.0?})"
    );
    println!("skiff / wasmtime serve: {:.0}%", 100.0 * s / w);
    let _ = serve.kill().await;
    cluster.stop(&api).await;
    Ok(())
}
