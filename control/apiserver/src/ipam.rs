//! Pod CIDRs for nodes: each Node gets its own block of the cluster's pod network when it
//! registers (kube-controller-manager's node IPAM, done at creation so an agent has its
//! block in the response and starts pods at once).
//!
//! Blocks are /22 (1,022 pod addresses) out of 10.244.0.0/16 by default: Skiff nodes run up
//! to 1,000 small Wasm pods, not Kubernetes' 110, so the kubelet's usual /24 would not do.
//! Both are configurable (kube-controller-manager's `--cluster-cidr` and
//! `--node-cidr-mask-size`).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::Value;
use skiff_store::{ListOptions, Store};

use crate::status::{ApiError, ApiResult};

pub const CLUSTER_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 16);
pub const NODE_MASK: u8 = 22;

/// Serializes allocations within this API server.
pub static ALLOCATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The first block of `cluster` no node holds.
pub async fn allocate(
    store: &dyn Store,
    cluster: (Ipv4Addr, u8),
    node_mask: u8,
) -> ApiResult<String> {
    let mut used = HashSet::new();
    let mut opts = ListOptions::default();
    loop {
        let page = store.list("/registry/core/nodes/", opts.clone()).await?;
        for kv in &page.items {
            if let Ok(node) = serde_json::from_slice::<Value>(&kv.value)
                && let Some(cidr) = node.pointer("/spec/podCIDR").and_then(Value::as_str)
            {
                used.insert(cidr.to_string());
            }
        }
        if !page.more {
            break;
        }
        opts.start_after = page.items.last().map(|kv| kv.key.clone());
        opts.revision = Some(page.revision);
    }
    let base = u32::from(cluster.0);
    let blocks = 1u32 << node_mask.saturating_sub(cluster.1);
    let size = 1u32 << (32 - node_mask);
    (0..blocks)
        .map(|i| format!("{}/{node_mask}", Ipv4Addr::from(base + i * size)))
        .find(|c| !used.contains(c))
        .ok_or_else(|| {
            ApiError::new(
                http::StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                format!(
                    "no pod CIDR left for a new node: all {blocks} /{node_mask} blocks of {}/{} are taken",
                    cluster.0, cluster.1
                ),
            )
        })
}
