//! Pod CIDRs for nodes: each Node gets its own block of the cluster's pod network when it
//! registers (kube-controller-manager's node IPAM, done at creation so an agent has its
//! block in the response and starts pods at once).
//!
//! Several API servers may share one etcd, so a block is taken by creating its reservation
//! key (`/skiff/ipam/podcidrs/<block>`, naming the node) in the store: a create fails
//! if the key exists, so two servers registering two nodes at once cannot hand out one
//! block twice. Deleting a node releases its block.
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

/// Where blocks are reserved.
/// Outside `/registry/`: not an API object, so no watch sees it.
const RESERVATIONS: &str = "/skiff/ipam/podcidrs/";

fn reservation_key(cidr: &str) -> String {
    format!("{RESERVATIONS}{}", cidr.replace('/', "-"))
}

/// Reserves the first block of `cluster` no node holds, for node `node`.
pub async fn allocate(
    store: &dyn Store,
    cluster: (Ipv4Addr, u8),
    node_mask: u8,
    node: &str,
) -> ApiResult<String> {
    // Blocks held by live nodes (which may predate reservations) and by reservations.
    let mut held: HashSet<String> = HashSet::new();
    for kv in list_all(store, "/registry/core/nodes/").await? {
        if let Ok(n) = serde_json::from_slice::<Value>(&kv.value)
            && let Some(cidr) = n.pointer("/spec/podCIDR").and_then(Value::as_str)
        {
            held.insert(cidr.to_string());
        }
    }
    let reserved: HashSet<String> = list_all(store, RESERVATIONS)
        .await?
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    let base = u32::from(cluster.0);
    let blocks = 1u32 << node_mask.saturating_sub(cluster.1);
    let size = 1u32 << (32 - node_mask);
    for i in 0..blocks {
        let cidr = format!("{}/{node_mask}", Ipv4Addr::from(base + i * size));
        let key = reservation_key(&cidr);
        if held.contains(&cidr) || reserved.contains(&key) {
            continue;
        }
        match store
            .create(&key, bytes::Bytes::from(node.to_string()))
            .await
        {
            Ok(_) => return Ok(cidr),
            // Another server reserved it a moment ago: the next one.
            Err(skiff_store::Error::AlreadyExists) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        http::StatusCode::INSUFFICIENT_STORAGE,
        "InsufficientStorage",
        format!(
            "no pod CIDR left for a new node: all {blocks} /{node_mask} blocks of {}/{} are taken",
            cluster.0, cluster.1
        ),
    ))
}

/// Releases the block a deleted node held (or a node whose create failed), if the
/// reservation is that node's: a node that named its own podCIDR reserved nothing.
pub async fn release(store: &dyn Store, cidr: &str, node: &str) {
    let key = reservation_key(cidr);
    let held = match store.get(&key).await {
        Ok(Some(kv)) if kv.value == node.as_bytes() => kv,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(cidr, "releasing the pod CIDR: {e}");
            return;
        }
    };
    match store.delete(&key, Some(held.mod_revision)).await {
        Ok(_) | Err(skiff_store::Error::NotFound | skiff_store::Error::Conflict { .. }) => {}
        Err(e) => tracing::warn!(cidr, "releasing the pod CIDR: {e}"),
    }
}

/// Everything under `prefix` (the store lists it whole when no limit is given).
async fn list_all(store: &dyn Store, prefix: &str) -> ApiResult<Vec<skiff_store::KeyValue>> {
    Ok(store.list(prefix, ListOptions::default()).await?.items)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Servers sharing a store (here, tasks sharing one) never hand out a block twice, and
    /// a released block is handed out again.
    #[tokio::test]
    async fn concurrent_allocations_take_distinct_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(skiff_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let cluster = (Ipv4Addr::new(10, 244, 0, 0), 16);
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { allocate(&*store, cluster, 22, &format!("n{i}")).await })
            })
            .collect();
        let mut blocks = HashSet::new();
        for t in tasks {
            assert!(blocks.insert(t.await.unwrap().unwrap()));
        }
        assert_eq!(blocks.len(), 24);
        // 64 /22 blocks in a /16: the 40 left, then none.
        for i in 24..64 {
            allocate(&*store, cluster, 22, &format!("n{i}"))
                .await
                .unwrap();
        }
        let full = allocate(&*store, cluster, 22, "late").await.unwrap_err();
        assert!(
            full.message.contains("no pod CIDR left"),
            "{}",
            full.message
        );
        // Only its holder releases a block.
        release(&*store, "10.244.8.0/22", "late").await;
        assert!(allocate(&*store, cluster, 22, "late").await.is_err());
        let holder = store
            .get(&reservation_key("10.244.8.0/22"))
            .await
            .unwrap()
            .unwrap()
            .value;
        release(
            &*store,
            "10.244.8.0/22",
            std::str::from_utf8(&holder).unwrap(),
        )
        .await;
        assert_eq!(
            allocate(&*store, cluster, 22, "late").await.unwrap(),
            "10.244.8.0/22"
        );
    }
}
