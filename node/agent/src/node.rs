//! The Node object: registration, status, and the Lease heartbeat.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Ctx;

/// Node label a runtime's RuntimeClass selects on: `runtime.skiff.dev/<handler>=true`.
pub const RUNTIME_LABEL_PREFIX: &str = "runtime.skiff.dev/";

pub async fn register(ctx: &Arc<Ctx>, port: u16) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = &ctx.config.node_name;
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ]);
    for shim in &ctx.shims {
        labels.insert(
            format!("{RUNTIME_LABEL_PREFIX}{}", shim.name()),
            "true".to_string(),
        );
    }
    labels.extend(ctx.config.labels.iter().cloned());
    let root = ctx.config.local_root().display().to_string();
    let annotations = BTreeMap::from([(crate::volumes::LOCAL_ROOT_ANNOTATION.to_string(), root)]);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Re-registration (agent restart): the labels we own are brought up to date.
            let patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
            nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Err(e) => return Err(e),
    }
    post_status(ctx, port, Pressure::measure(&ctx.config.data_dir), None).await
}

/// The node's status as the kubelet writes it: capacity, conditions, addresses, info.
/// `current` is the node as the API has it, whose conditions' transition times are kept
/// where their status stays.
async fn post_status(
    ctx: &Arc<Ctx>,
    port: u16,
    pressure: Pressure,
    current: Option<&Node>,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let now = crate::status::time(Utc::now());
    let cpus = cpus();
    let memory_kib = mem_total_kib();
    let capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{memory_kib}Ki"))),
        (
            "pods".to_string(),
            Quantity(ctx.config.max_pods.to_string()),
        ),
        (
            "ephemeral-storage".to_string(),
            Quantity(format!("{}Ki", disk_kib(&ctx.config.data_dir))),
        ),
    ]);
    let had = current
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: had
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .or_else(|| Some(now.clone())),
    };
    let runtimes: Vec<&str> = ctx.shims.iter().map(|s| s.name()).collect();
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions(&pressure).iter().map(|(t, st, reason, message)| condition(t, st, reason, message)).collect::<Vec<_>>(),
            "addresses": [
                NodeAddress { type_: "InternalIP".into(), address: ctx.config.node_ip.to_string() },
                NodeAddress { type_: "Hostname".into(), address: ctx.config.node_name.clone() },
            ],
            "daemonEndpoints": NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(port) }),
            },
            "nodeInfo": NodeSystemInfo {
                architecture: arch().into(),
                boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
                machine_id: read_trim("/etc/machine-id"),
                system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
                container_runtime_version: format!("skiff://{}", runtimes.join(",")),
                kernel_version: read_trim("/proc/sys/kernel/osrelease"),
                kubelet_version: "v1.33.0-skiff".into(),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                os_image: os_image(),
                ..Default::default()
            },
        }
    });
    nodes
        .patch_status(
            &ctx.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

/// What the node is short of, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// Memory available under this is memory pressure (the kubelet's default hard eviction
/// threshold, `memory.available<100Mi`).
const MEMORY_AVAILABLE_MIN_KIB: u64 = 100 * 1024;
/// Less than this share of the data dir's filesystem free is disk pressure (the kubelet's
/// `nodefs.available<10%`).
const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
/// Less than this share of process IDs free is PID pressure.
const PID_AVAILABLE_MIN_PERCENT: u64 = 5;

impl Pressure {
    /// From what was measured: memory available (KiB), the filesystem's free and total
    /// bytes, the highest pid and the tasks running.
    pub fn judge(
        mem_available_kib: u64,
        disk_free: u64,
        disk_total: u64,
        pid_max: u64,
        tasks: u64,
    ) -> Pressure {
        Pressure {
            memory: mem_available_kib < MEMORY_AVAILABLE_MIN_KIB,
            disk: disk_total > 0 && disk_free * 100 < disk_total * DISK_AVAILABLE_MIN_PERCENT,
            pid: pid_max > 0
                && pid_max.saturating_sub(tasks) * 100 < pid_max * PID_AVAILABLE_MIN_PERCENT,
        }
    }

    /// Measured now, on this machine and the filesystem of `data_dir`.
    pub fn measure(data_dir: &std::path::Path) -> Pressure {
        let meminfo = read_trim("/proc/meminfo");
        let available = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(u64::MAX);
        let (free, total) = nix::sys::statvfs::statvfs(data_dir)
            .map(|s| {
                (
                    s.blocks_available() * s.fragment_size(),
                    s.blocks() * s.fragment_size(),
                )
            })
            .unwrap_or((0, 0));
        let pid_max = read_trim("/proc/sys/kernel/pid_max").parse().unwrap_or(0);
        // /proc/loadavg's fourth field is running/total scheduling entities.
        let tasks = read_trim("/proc/loadavg")
            .split_whitespace()
            .nth(3)
            .and_then(|f| f.split_once('/'))
            .and_then(|(_, t)| t.parse().ok())
            .unwrap_or(0);
        Pressure::judge(available, free, total, pid_max, tasks)
    }
}

/// The node's conditions as the kubelet words them: (type, status, reason, message).
fn conditions(p: &Pressure) -> [(&'static str, &'static str, &'static str, &'static str); 4] {
    [
        if p.memory {
            (
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if p.disk {
            (
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        if p.pid {
            (
                "PIDPressure",
                "True",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// Whether the node as the API has it says what the agent would: a node the control plane
/// marked Unknown while the agent was away, or a pressure that came or went, is posted at
/// once rather than at the next minute.
fn api_agrees(node: &Node, pressure: &Pressure) -> bool {
    let have = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions(pressure).iter().all(|(t, st, _, _)| {
        have.is_some_and(|cs| cs.iter().any(|c| c.type_ == *t && c.status == *st))
    })
}

/// Renews the node's Lease every interval; posts its status when a condition changed or
/// the API has it otherwise, and every minute regardless, like the kubelet with node
/// leases on.
pub async fn heartbeat(ctx: Arc<Ctx>, port: u16) {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = ctx.config.node_name.clone();
    let mut ticks = 0u64;
    let per_status = (60 / ctx.config.lease_interval.as_secs().max(1)).max(1);
    loop {
        if let Err(e) = renew(&leases, &name, &ctx).await {
            tracing::warn!(node = %name, "lease renewal failed: {e}");
        }
        ticks += 1;
        let pressure = Pressure::measure(&ctx.config.data_dir);
        let current = nodes.get_opt(&name).await.ok().flatten();
        let stale = current.as_ref().is_some_and(|n| !api_agrees(n, &pressure));
        if (stale || ticks.is_multiple_of(per_status))
            && let Err(e) = post_status(&ctx, port, pressure, current.as_ref()).await
        {
            tracing::warn!(node = %name, "node status update failed: {e}");
        }
        tokio::time::sleep(ctx.config.lease_interval).await;
    }
}

async fn renew(leases: &Api<Lease>, name: &str, ctx: &Ctx) -> Result<(), kube::Error> {
    let now = crate::status::micro_time(Utc::now());
    let spec = LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some((ctx.config.lease_interval.as_secs() * 4).max(1) as i32),
        renew_time: Some(now),
        ..Default::default()
    };
    match leases.get_opt(name).await? {
        Some(mut lease) => {
            let mut merged = lease.spec.take().unwrap_or_default();
            merged.holder_identity = spec.holder_identity;
            merged.lease_duration_seconds = spec.lease_duration_seconds;
            merged.renew_time = spec.renew_time;
            lease.spec = Some(merged);
            leases.replace(name, &PostParams::default(), &lease).await?;
        }
        None => {
            let nodes: Api<Node> = Api::all(ctx.client.clone());
            let owner = nodes.get(name).await?;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    owner_references: Some(vec![
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.to_string(),
                            uid: owner.metadata.uid.unwrap_or_default(),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The CPUs the node offers pods.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn mem_total_kib() -> u64 {
    read_trim("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn disk_kib(path: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks() * s.fragment_size() / 1024)
        .unwrap_or(0)
}

fn os_image() -> String {
    read_trim("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_follows_the_kubelets_thresholds() {
        let gib = 1024 * 1024 * 1024;
        let fine = Pressure::judge(2 * 1024 * 1024, 50 * gib, 100 * gib, 4_194_304, 900);
        assert_eq!(fine, Pressure::default());
        let low_memory = Pressure::judge(99 * 1024, 50 * gib, 100 * gib, 4_194_304, 900);
        assert!(low_memory.memory && !low_memory.disk && !low_memory.pid);
        let full_disk = Pressure::judge(2 * 1024 * 1024, 9 * gib, 100 * gib, 4_194_304, 900);
        assert!(full_disk.disk && !full_disk.memory);
        let pids = Pressure::judge(2 * 1024 * 1024, 50 * gib, 100 * gib, 32_768, 31_500);
        assert!(pids.pid);
        let c = conditions(&low_memory);
        assert_eq!(
            c[0],
            (
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available"
            )
        );
        assert_eq!(c[3].1, "True");
    }
}
