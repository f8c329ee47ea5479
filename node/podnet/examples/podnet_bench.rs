//! Times `PodNetwork::create` with a warm pool and cold (no pool), and `remove`, on this
//! machine. Run as root:
//!
//!     cargo run --release -p skiff-podnet --example podnet_bench -- [samples]
//!
//! Uses bridge `skbench0`, CIDR 10.254.0.0/20 and /run/skiff-podnet-bench; removes all of
//! it at the end.

use std::time::{Duration, Instant};

use skiff_podnet::{NetConfig, PodNetwork};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let samples: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let pool = 50;
    let config = |warm_pool| NetConfig {
        bridge: "skbench0".into(),
        pod_cidr: "10.254.0.0/20".parse().unwrap(),
        state_dir: "/run/skiff-podnet-bench".into(),
        warm_pool,
        masquerade: false,
    };
    // Whatever an interrupted run left.
    PodNetwork::new(config(0)).await?.shutdown(true).await?;

    let net = PodNetwork::new(config(0)).await?;
    let mut cold = Vec::new();
    let mut remove = Vec::new();
    for i in 0..samples {
        let uid = format!("cold-{i}");
        let t = Instant::now();
        net.create(&uid).await?;
        cold.push(t.elapsed());
        let t = Instant::now();
        net.remove(&uid).await?;
        remove.push(t.elapsed());
    }
    net.shutdown(true).await?;

    // Warm: take sandboxes from a full pool in bursts of at most the pool's size (a burst
    // larger than the pool falls back to cold creates), refilling between bursts.
    let net = PodNetwork::new(config(pool)).await?;
    let mut warm = Vec::new();
    let mut batches = Vec::new();
    let mut round = 0;
    while warm.len() < samples {
        net.fill_pool().await?;
        let burst = pool.min(samples - warm.len());
        for i in 0..burst {
            let t = Instant::now();
            net.create(&format!("warm-{round}-{i}")).await?;
            warm.push(t.elapsed());
        }
        // Removals all at once, as an agent deleting many pods does: the kernel tears the
        // namespaces down in batches.
        let pods = net.list().await;
        let t = Instant::now();
        for r in futures::future::join_all(pods.iter().map(|s| net.remove(&s.pod_uid))).await {
            r?;
        }
        batches.push((pods.len(), t.elapsed()));
        round += 1;
    }
    net.shutdown(true).await?;

    // Accumulating: 1,000 sandboxes kept (as for 1,000 running pods), created 32 at a time
    // as the agent sets pods up, timed per hundred: how building one scales with the
    // namespaces and bridge ports already there.
    let at_once: usize = std::env::var("PODNET_BENCH_AT_ONCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let net = PodNetwork::new(config(0)).await?;
    let mut per_hundred = Vec::new();
    for hundred in 0..10 {
        let t = Instant::now();
        for batch in 0..(100 / at_once) {
            let uids: Vec<String> = (0..at_once)
                .map(|i| format!("kept-{hundred}-{batch}-{i}"))
                .collect();
            for r in futures::future::join_all(uids.iter().map(|u| net.create(u))).await {
                r?;
            }
        }
        per_hundred.push(t.elapsed());
    }
    let t = Instant::now();
    net.shutdown(true).await?;
    let teardown = t.elapsed();

    println!("podnet create/remove, {samples} samples each");
    report("create, warm pool", &mut warm);
    report("create, cold", &mut cold);
    report("remove, one by one", &mut remove);
    let (n, t) = batches
        .iter()
        .fold((0, Duration::ZERO), |(n, t), (bn, bt)| (n + bn, t + *bt));
    println!(
        "{:>18}: {n} pods in batches of up to {pool}: {:.3} ms per pod",
        "remove, concurrent",
        ms(t) / n as f64
    );
    let each: Vec<String> = per_hundred
        .iter()
        .map(|d| format!("{:.1}", ms(*d) / 100.0))
        .collect();
    println!(
        "{:>18}: ms per sandbox for each hundred of 1,000 kept ({at_once} at a time): {}; shutdown of all {:.0} ms",
        "create, kept",
        each.join(" "),
        ms(teardown)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, v: &mut [Duration]) {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "{what:>18}: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(q(0.50)),
        ms(q(0.99)),
        ms(v[v.len() - 1])
    );
}
