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
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Re-registration (agent restart): the labels we own are brought up to date.
            let patch = json!({"metadata": {"labels": labels}});
            nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Err(e) => return Err(e),
    }
    post_status(ctx, port).await
}

/// The node's status as the kubelet writes it: capacity, conditions, addresses, info.
async fn post_status(ctx: &Arc<Ctx>, port: u16) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let now = crate::status::time(Utc::now());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
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
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let runtimes: Vec<&str> = ctx.shims.iter().map(|s| s.name()).collect();
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
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

/// Renews the node's Lease every interval and re-posts its status every minute, like the
/// kubelet with node leases on.
pub async fn heartbeat(ctx: Arc<Ctx>, port: u16) {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let name = ctx.config.node_name.clone();
    let mut ticks = 0u64;
    let per_status = (60 / ctx.config.lease_interval.as_secs().max(1)).max(1);
    loop {
        if let Err(e) = renew(&leases, &name, &ctx).await {
            tracing::warn!(node = %name, "lease renewal failed: {e}");
        }
        ticks += 1;
        if ticks.is_multiple_of(per_status)
            && let Err(e) = post_status(&ctx, port).await
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
        lease_duration_seconds: Some(40),
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

fn mem_total_kib() -> u64 {
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
