//! Which node answers for each load balancer address (MetalLB's layer-2 election, without
//! a protocol): every node computes the same choice from the same objects, so each address
//! has one announcer while the nodes agree on what they see, and moves when that node
//! stops being Ready.
//!
//! The candidates for a Service's address are the Ready nodes without the
//! `node.kubernetes.io/exclude-from-external-load-balancers` label, and under
//! `externalTrafficPolicy: Local` only those with a ready endpoint of it (the others would
//! drop its traffic). Among them the one whose hash of name and address is lowest wins,
//! which spreads addresses over the nodes.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The load balancer addresses (of Services no `loadBalancerClass` claims) that node `me`
/// answers for.
pub fn announced(
    me: &str,
    services: &[Arc<Service>],
    slices_of: impl Fn(&str, &str) -> Vec<Arc<EndpointSlice>>,
    nodes: &[Arc<Node>],
) -> Vec<Ipv4Addr> {
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|n| ready(n))
        .filter(|n| {
            !n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(EXCLUDE))
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
            continue;
        }
        let ips: Vec<Ipv4Addr> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_ref()?.parse().ok())
            .collect();
        if ips.is_empty() {
            continue;
        }
        let candidates: Vec<&str> = if spec.external_traffic_policy.as_deref() == Some("Local") {
            let (ns, name) = (
                svc.metadata.namespace.as_deref().unwrap_or_default(),
                svc.metadata.name.as_deref().unwrap_or_default(),
            );
            let with_endpoints: HashSet<String> = slices_of(ns, name)
                .iter()
                .flat_map(|s| s.endpoints.clone())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .filter_map(|e| e.node_name)
                .collect();
            eligible
                .iter()
                .copied()
                .filter(|n| with_endpoints.contains(*n))
                .collect()
        } else {
            eligible.clone()
        };
        for ip in ips {
            let text = ip.to_string();
            let winner = candidates.iter().min_by_key(|n| fnv(&[n, &text]));
            if winner == Some(&me) {
                out.push(ip);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: bool, exclude: bool) -> Arc<Node> {
        let labels = if exclude {
            json!({EXCLUDE: ""})
        } else {
            json!({})
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap(),
        )
    }

    fn lb(name: &str, ip: &str, policy: &str, class: Option<&str>) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "loadBalancerClass": class},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn each_address_has_exactly_one_announcer_among_ready_nodes() {
        let nodes = vec![
            node("a", true, false),
            node("b", true, false),
            node("c", false, false),
            node("d", true, true),
        ];
        let services: Vec<Arc<Service>> = (0..20)
            .map(|i| lb(&format!("s{i}"), &format!("192.0.2.{i}"), "Cluster", None))
            .collect();
        let per_node: Vec<Vec<Ipv4Addr>> = ["a", "b", "c", "d"]
            .iter()
            .map(|me| announced(me, &services, |_, _| vec![], &nodes))
            .collect();
        assert!(per_node[2].is_empty(), "an unready node announces nothing");
        assert!(per_node[3].is_empty(), "an excluded node announces nothing");
        assert_eq!(per_node[0].len() + per_node[1].len(), 20);
        assert!(
            !per_node[0].is_empty() && !per_node[1].is_empty(),
            "spread: {per_node:?}"
        );
        // The choice moves when its node goes away.
        let only_b = vec![node("a", false, false), node("b", true, false)];
        assert_eq!(announced("b", &services, |_, _| vec![], &only_b).len(), 20);
    }

    #[test]
    fn local_policy_picks_a_node_with_an_endpoint_and_classes_are_left_alone() {
        let nodes = vec![node("a", true, false), node("b", true, false)];
        let slice: Arc<EndpointSlice> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "x"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "b", "conditions": {"ready": true}},
                              {"addresses": ["10.0.0.2"], "nodeName": "a", "conditions": {"ready": false}}],
            }))
            .unwrap(),
        );
        let services: Vec<Arc<Service>> = (0..10)
            .map(|i| lb(&format!("s{i}"), &format!("192.0.2.{i}"), "Local", None))
            .collect();
        assert_eq!(
            announced("b", &services, |_, _| vec![slice.clone()], &nodes).len(),
            10
        );
        assert!(announced("a", &services, |_, _| vec![slice.clone()], &nodes).is_empty());
        let other = vec![lb("o", "192.0.2.99", "Cluster", Some("example.com/other"))];
        assert!(announced("a", &other, |_, _| vec![], &nodes).is_empty());
        assert!(announced("b", &other, |_, _| vec![], &nodes).is_empty());
    }
}
