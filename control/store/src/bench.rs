//! Store benchmarks, backend-neutral: write throughput and latency, watch delivery
//! latency, and disk use under lease-renewal churn. `skiff bench store` runs them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use crate::{Error, Result, Store};

/// Latency percentiles of a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
}

impl Latency {
    fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Latency {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WriteReport {
    pub clients: usize,
    pub writes: u64,
    pub writes_per_sec: f64,
    pub latency: Latency,
}

/// `clients` concurrent clients, each updating its own key with compare-and-swap (the
/// API server's write pattern) for `duration`. Each write is acknowledged only once
/// durable, so with one client this measures the store's commit latency.
pub async fn writes(
    store: Arc<dyn Store>,
    clients: usize,
    duration: Duration,
) -> Result<WriteReport> {
    let run = format!("/bench/writes/{}", unique());
    let value = Bytes::from(vec![b'x'; 256]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let store = store.clone();
        let key = format!("{run}/{client}");
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut rev = store.create(&key, value.clone()).await?.mod_revision;
            let mut samples = Vec::new();
            while started.elapsed() < duration {
                let t = Instant::now();
                rev = store.update(&key, rev, value.clone()).await?.mod_revision;
                samples.push(t.elapsed());
            }
            Ok::<_, Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.map_err(|e| Error::Backend(e.to_string()))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(WriteReport {
        clients,
        writes: samples.len() as u64,
        writes_per_sec: samples.len() as f64 / elapsed,
        latency: Latency::of(&mut samples),
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WatchReport {
    /// From the write's acknowledgement to its delivery; a delivery that beats the
    /// acknowledgement (a store may publish before it acknowledges) counts as zero.
    pub after_ack: Latency,
    /// From the write's start to its delivery: commit latency included.
    pub after_write: Latency,
}

/// Watch delivery latency over `samples` sequential writes.
pub async fn watch_latency(store: Arc<dyn Store>, samples: usize) -> Result<WatchReport> {
    let prefix = format!("/bench/watch/{}/", unique());
    let key = format!("{prefix}key");
    let from = store.current_revision().await?;
    let mut events = store.watch(&prefix, from).await?;
    let (delivered, mut deliveries) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let event = event?;
            if delivered.send((event.revision(), Instant::now())).is_err() {
                break;
            }
        }
        Ok::<_, Error>(())
    });
    let mut after_ack = Vec::with_capacity(samples);
    let mut after_write = Vec::with_capacity(samples);
    let mut rev = store
        .create(&key, Bytes::from_static(b"0"))
        .await?
        .mod_revision;
    let _ = deliveries.recv().await;
    for i in 0..samples {
        let written = Instant::now();
        let kv = store.update(&key, rev, Bytes::from(i.to_string())).await?;
        let acked = Instant::now();
        rev = kv.mod_revision;
        loop {
            match deliveries.recv().await {
                Some((r, at)) if r == rev => {
                    after_ack.push(at.saturating_duration_since(acked));
                    after_write.push(at.saturating_duration_since(written));
                    break;
                }
                Some(_) => continue,
                None => {
                    return Err(match watcher.await {
                        Ok(Err(e)) => e,
                        _ => Error::Backend("watch ended".into()),
                    });
                }
            }
        }
    }
    watcher.abort();
    Ok(WatchReport {
        after_ack: Latency::of(&mut after_ack),
        after_write: Latency::of(&mut after_write),
    })
}

/// What [`churn`] simulates.
#[derive(Clone, Copy, Debug)]
pub struct ChurnOptions {
    /// Nodes, each renewing its lease.
    pub nodes: usize,
    /// Renewal rounds (a round is `renew_every` of simulated time).
    pub renewals: usize,
    /// Simulated time between renewals of one lease (the kubelet renews every 10 s).
    pub renew_every: Duration,
    /// Simulated time between compactions (the API server compacts every 5 minutes, to the
    /// revision it noted at the previous compaction).
    pub compact_every: Duration,
}

impl Default for ChurnOptions {
    fn default() -> Self {
        ChurnOptions {
            nodes: 100,
            renewals: 360,
            renew_every: Duration::from_secs(10),
            compact_every: Duration::from_secs(300),
        }
    }
}

/// Simulates node leases renewed for `renewals` rounds, as fast as the store allows, with
/// Kubernetes' compaction, and returns the disk use of `data_dir` after every simulated
/// minute, as (minute, bytes). Under steady churn it must plateau.
pub async fn churn(
    store: Arc<dyn Store>,
    data_dir: &Path,
    opts: ChurnOptions,
) -> Result<Vec<(u64, u64)>> {
    let prefix = format!("/registry/leases/kube-node-lease/{}/", unique());
    // A Lease object is about this size in JSON.
    let lease = |round: usize| {
        Bytes::from(format!(
            "{{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"spec\":{{\"renewTime\":\"{round:020}\",\"leaseDurationSeconds\":40}},\"pad\":\"{}\"}}",
            "p".repeat(300)
        ))
    };
    let mut revs = Vec::with_capacity(opts.nodes);
    for node in 0..opts.nodes {
        let kv = store
            .create(&format!("{prefix}node-{node}"), lease(0))
            .await?;
        revs.push(kv.mod_revision);
    }
    let per_minute = (60 / opts.renew_every.as_secs().max(1)).max(1) as usize;
    let per_compaction =
        (opts.compact_every.as_secs() / opts.renew_every.as_secs().max(1)).max(1) as usize;
    let mut compact_to = store.current_revision().await?;
    let mut sizes = vec![(0, dir_size(data_dir))];
    for round in 1..=opts.renewals {
        let updates = revs.iter().enumerate().map(|(node, rev)| {
            let store = store.clone();
            let key = format!("{prefix}node-{node}");
            let value = lease(round);
            let rev = *rev;
            async move { store.update(&key, rev, value).await }
        });
        for (node, kv) in futures::future::join_all(updates)
            .await
            .into_iter()
            .enumerate()
        {
            revs[node] = kv?.mod_revision;
        }
        if round % per_compaction == 0 {
            // Compact to the revision noted one interval ago, then note the current one.
            if compact_to > store.compacted_revision().await? {
                store.compact(compact_to).await?;
            }
            compact_to = store.current_revision().await?;
        }
        if round % per_minute == 0 {
            sizes.push(((round / per_minute) as u64, dir_size(data_dir)));
        }
    }
    Ok(sizes)
}

/// Bytes used on disk by the files under `dir` (allocated blocks, not apparent sizes).
pub fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// A token that keeps runs against the same store apart.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}")
}
