//! From Services and EndpointSlices to the rules (`Ruleset`), as kube-proxy's nftables
//! mode lays them out, without IO.
//!
//! Per Service port: a chain `s-<id>` for its cluster IP (load balancing over the ready
//! endpoints, or this node's with `internalTrafficPolicy: Local`) and a chain `x-<id>` for
//! its node port, external IPs and load balancer addresses (this node's endpoints without
//! masquerade under `externalTrafficPolicy: Local`, else all with it). A chain picks an
//! endpoint with a cascade of `numgen` rules, each DNATing to one endpoint; with
//! `sessionAffinity: ClientIP`, each endpoint gets a chain of its own and a set of the
//! clients it served. The maps send a packet to its Service's chain in one lookup
//! whatever the number of Services. A Service without usable endpoints is in the
//! `no-endpoints` sets instead: its connections are refused at once, not left to time out.
//!
//! Chains are few on purpose: `nft` reads every chain of the table before each change, so
//! a chain per endpoint (kube-proxy's) made each change at 5,000 Services of 10 endpoints
//! cost 330 ms instead of 40, and anonymous verdict maps per Service made the first load
//! take 30 s instead of 1.5 (measured with `examples/scale.rs`).
//!
//! Endpoints: the ready ones; when none is, those still serving while they terminate (so a
//! rolling update's last pods drain), as kube-proxy's `ProxyTerminatingEndpoints`.
//! Masquerade: traffic to a cluster IP from outside the pod network (the node itself),
//! from the namespace address-only pods share (two of them would answer each other inside
//! it), external traffic under `Cluster` policy, and a pod reaching itself through its
//! Service (hairpin: source and destination in the `hairpin` set of every endpoint
//! address, checked in postrouting).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use std::sync::Arc;

use crate::ruleset::{Part, Ruleset};

/// What the rules depend on besides the API objects.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub node_name: String,
    /// Every node's pod CIDR: traffic from outside them is masqueraded.
    pub pod_cidrs: Vec<ipnet::Ipv4Net>,
    /// Source MAC of the node's shared namespace of address-only pods.
    pub shared_mac: Option<[u8; 6]>,
}

#[derive(Debug, Clone, PartialEq)]
struct Backend {
    ip: Ipv4Addr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<String>,
}

/// FNV-1a, 64 bits, as 13 base-32 characters: short stable chain names.
fn id(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..13)
        .map(|i| ALPHABET[((h >> (i * 5)) & 31) as usize] as char)
        .collect()
}

fn proto_name(p: &str) -> Option<&'static str> {
    match p {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The endpoints slices give for a Service port named `port_name` with `protocol`.
fn backends(slices: &[&EndpointSlice], port_name: &str, protocol: &str) -> Vec<Backend> {
    let mut out = Vec::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(port) = s.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for e in &s.endpoints {
            let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let c = e.conditions.clone().unwrap_or_default();
            // Unset ready means ready (discovery/v1).
            let ready = c.ready.unwrap_or(true);
            out.push(Backend {
                ip,
                port,
                ready,
                serving: c.serving.unwrap_or(ready),
                terminating: c.terminating.unwrap_or(false),
                node: e.node_name.clone(),
            });
        }
    }
    out.sort_by_key(|b| (b.ip, b.port));
    out.dedup_by_key(|b| (b.ip, b.port));
    out
}

/// The endpoints traffic may go to: ready ones, else serving terminating ones.
fn usable<'a>(all: impl Iterator<Item = &'a Backend> + Clone) -> Vec<&'a Backend> {
    let ready: Vec<&Backend> = all.clone().filter(|b| b.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    all.filter(|b| b.serving && b.terminating).collect()
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Slices by the Service they belong to (`namespace/name`).
pub fn slices_by_service<'a>(
    slices: &[&'a EndpointSlice],
) -> BTreeMap<String, Vec<&'a EndpointSlice>> {
    let mut out: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        out.entry(format!("{ns}/{svc}")).or_default().push(s);
    }
    out
}

/// The key of a Service's part: `namespace/name`.
pub fn service_key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The rules for `services` and their `slices` on the node `view` describes.
pub fn build(services: &[&Service], slices: &[&EndpointSlice], view: &NodeView) -> Ruleset {
    let by_service = slices_by_service(slices);
    let parts = services
        .iter()
        .map(|svc| {
            let key = service_key(svc);
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            (key, Arc::new(service_part(svc, slices, view)))
        })
        .collect();
    Ruleset::assemble(parts, &view.pod_cidrs)
}

/// Rules that send a new connection to one of `eps` at random, each as likely: rule `i`
/// of `n` matches one time in `n - i` (the last always), so that no anonymous map is
/// made per Service (the kernel names each by scanning all of a table's sets, and 5,000
/// of them took 17 s to load). With affinity, through the endpoint's chain.
fn pick(eps: &[&Backend], proto: &str, targets: &[Option<String>]) -> Vec<String> {
    let n = eps.len();
    eps.iter()
        .zip(targets)
        .enumerate()
        .map(|(i, (b, chain))| {
            let action = match chain {
                Some(chain) => format!("goto {chain}"),
                None => format!("meta l4proto {proto} dnat to {}:{}", b.ip, b.port),
            };
            if i + 1 == n {
                action
            } else {
                format!("numgen random mod {} 0 {action}", n - i)
            }
        })
        .collect()
}

/// One Service's rules.
pub fn service_part(svc: &Service, slices: &[&EndpointSlice], view: &NodeView) -> Part {
    let mut rs = Part::default();
    let Some(spec) = svc.spec.as_ref() else {
        return rs;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return rs;
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let cluster_ip: Option<Ipv4Addr> = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
    let mut external: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if ty == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        external.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10800)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    for port in spec.ports.iter().flatten() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let Some(proto) = proto_name(&protocol) else {
            continue;
        };
        let Ok(svc_port) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let key = id(&[&ns, &name, &port_name, proto]);
        let all = backends(slices, &port_name, &protocol);
        let cluster_eps = usable(all.iter());
        let local_eps = usable(
            all.iter()
                .filter(|b| b.node.as_deref() == Some(view.node_name.as_str())),
        );
        // With affinity: a chain per endpoint that remembers the client (kube-proxy's
        // layout); the Service's chain sends a remembered client there first.
        let endpoint_chain = |b: &Backend, rs: &mut Part| -> Option<(String, String)> {
            let timeout = affinity?;
            let eid = id(&[&key, &b.ip.to_string(), &b.port.to_string()]);
            let chain = format!("e-{eid}");
            let set = format!("a-{eid}-{timeout}");
            rs.affinity.insert(set.clone(), timeout);
            rs.chains.insert(
                chain.clone(),
                vec![
                    format!("update @{set} {{ ip saddr }}"),
                    format!("meta l4proto {proto} dnat to {}:{}", b.ip, b.port),
                ],
            );
            Some((chain, set))
        };
        // Load balancing over `eps`, after `first` rules; None when there are none.
        let balance = |eps: &[&Backend], first: Vec<String>, rs: &mut Part| {
            if eps.is_empty() {
                return None;
            }
            rs.endpoints.extend(eps.iter().map(|b| b.ip));
            let chains: Vec<Option<(String, String)>> =
                eps.iter().map(|b| endpoint_chain(b, rs)).collect();
            let mut rules = first;
            for (chain, set) in chains.iter().flatten() {
                rules.push(format!("ip saddr @{set} goto {chain}"));
            }
            let targets: Vec<Option<String>> = chains
                .into_iter()
                .map(|c| c.map(|(chain, _)| chain))
                .collect();
            rules.extend(pick(eps, proto, &targets));
            Some(rules)
        };
        if let Some(ip) = cluster_ip {
            let mut first = Vec::new();
            if !view.pod_cidrs.is_empty() {
                first.push("ip saddr != @pod-cidrs jump mark-for-masquerade".to_string());
            }
            if let Some(mac) = view.shared_mac {
                first.push(format!(
                    "ether saddr {} jump mark-for-masquerade",
                    mac_text(mac)
                ));
            }
            let eps = if internal_local {
                &local_eps
            } else {
                &cluster_eps
            };
            let element = format!("{ip} . {proto} . {svc_port}");
            match balance(eps, first, &mut rs) {
                Some(rules) => {
                    let chain = format!("s-{key}");
                    rs.chains.insert(chain.clone(), rules);
                    rs.element("cluster-ips", element, format!("goto {chain}"));
                }
                None => rs.element("no-endpoints", element, String::new()),
            }
        }
        let node_port = port
            .node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0 && matches!(ty, "NodePort" | "LoadBalancer"));
        if node_port.is_none() && external.is_empty() {
            continue;
        }
        let (eps, first) = if external_local {
            (&local_eps, Vec::new())
        } else {
            (&cluster_eps, vec!["jump mark-for-masquerade".to_string()])
        };
        let chain = format!("x-{key}");
        let rules = balance(eps, first, &mut rs);
        let present = rules.is_some();
        if let Some(rules) = rules {
            rs.chains.insert(chain.clone(), rules);
        }
        if let Some(np) = node_port {
            let element = format!("{proto} . {np}");
            if present {
                rs.element("node-ports", element, format!("goto {chain}"));
            } else {
                rs.element("no-endpoint-node-ports", element, String::new());
            }
        }
        for ip in &external {
            let element = format!("{ip} . {proto} . {svc_port}");
            if present {
                rs.element("external-ips", element, format!("goto {chain}"));
            } else {
                rs.element("no-endpoints", element, String::new());
            }
        }
    }
    rs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn slice(eps: &[(&str, bool, bool, bool, &str)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                labels: Some(
                    [("kubernetes.io/service-name".to_string(), "web".to_string())].into(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready, serving, terminating, node)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*serving),
                        terminating: Some(*terminating),
                    }),
                    node_name: Some(node.to_string()),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn spec(ty: &str) -> ServiceSpec {
        ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                node_port: (ty != "ClusterIP").then_some(30080),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn view() -> NodeView {
        NodeView {
            node_name: "a".into(),
            pod_cidrs: vec!["10.244.0.0/22".parse().unwrap()],
            shared_mac: None,
        }
    }

    fn dnat_targets(rs: &Part, chain: &str) -> Vec<String> {
        rs.chains[chain]
            .iter()
            .filter_map(|r| {
                if let Some(to) = r.split("dnat to ").nth(1) {
                    return Some(to.to_string());
                }
                let next = r.strip_prefix("numgen").map_or(r.as_str(), |_| r);
                let target = next.split("goto ").nth(1)?;
                (!r.contains('@')).then(|| dnat_targets(rs, target).remove(0))
            })
            .collect()
    }

    #[test]
    fn cluster_ip_balances_over_ready_endpoints() {
        let svc = service(spec("ClusterIP"));
        let s = slice(&[
            ("10.244.0.5", true, true, false, "a"),
            ("10.244.1.6", true, true, false, "b"),
            ("10.244.0.7", false, false, false, "a"),
        ]);
        let rs = build(&[&svc], &[&s], &view()).flat();
        let (key, verdict) = rs.elements["cluster-ips"].iter().next().unwrap();
        assert_eq!(key, "10.96.0.10 . tcp . 80");
        let chain = verdict.strip_prefix("goto ").unwrap();
        assert_eq!(
            dnat_targets(&rs, chain),
            ["10.244.0.5:8080", "10.244.1.6:8080"]
        );
        assert_eq!(
            rs.chains[chain][0],
            "ip saddr != @pod-cidrs jump mark-for-masquerade"
        );
        // Hairpin: a pod reaching itself is masqueraded.
        for (name, rules) in rs.chains.iter().filter(|(c, _)| c.starts_with("e-")) {
            let ip = rules[1]
                .rsplit(' ')
                .next()
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            assert_eq!(
                rules[0],
                format!("ip saddr {ip} jump mark-for-masquerade"),
                "{name}"
            );
        }
        assert!(!rs.elements.contains_key("node-ports"));
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready_and_none_means_reject() {
        let svc = service(spec("ClusterIP"));
        let s = slice(&[
            ("10.244.0.5", false, true, true, "a"),
            ("10.244.0.6", false, false, true, "a"),
        ]);
        let rs = build(&[&svc], &[&s], &view()).flat();
        let chain = rs.elements["cluster-ips"]["10.96.0.10 . tcp . 80"]
            .strip_prefix("goto ")
            .unwrap()
            .to_string();
        assert_eq!(dnat_targets(&rs, &chain), ["10.244.0.5:8080"]);
        let none = slice(&[("10.244.0.6", false, false, true, "a")]);
        let rs = build(&[&svc], &[&none], &view()).flat();
        assert!(!rs.elements.contains_key("cluster-ips"));
        assert!(rs.elements["no-endpoints"].contains_key("10.96.0.10 . tcp . 80"));
        assert!(rs.chains.is_empty());
        assert!(rs.elements["hairpin"].is_empty());
    }

    #[test]
    fn node_ports_and_traffic_policies() {
        let mut sp = spec("NodePort");
        sp.external_traffic_policy = Some("Local".into());
        let svc = service(sp);
        let s = slice(&[
            ("10.244.0.5", true, true, false, "a"),
            ("10.244.1.6", true, true, false, "b"),
        ]);
        let rs = build(&[&svc], &[&s], &view()).flat();
        let chain = rs.elements["node-ports"]["tcp . 30080"]
            .strip_prefix("goto ")
            .unwrap()
            .to_string();
        // Local: this node's endpoint only, the client's address kept.
        assert_eq!(dnat_targets(&rs, &chain), ["10.244.0.5:8080"]);
        assert!(!rs.chains[&chain][0].contains("mark-for-masquerade"));
        // On a node without endpoints of its own, the node port refuses.
        let rs = build(
            &[&svc],
            &[&s],
            &NodeView {
                node_name: "c".into(),
                ..view()
            },
        )
        .flat();
        assert!(rs.elements["no-endpoint-node-ports"].contains_key("tcp . 30080"));
        // Cluster policy: every endpoint, masqueraded.
        let svc = service(spec("NodePort"));
        let rs = build(&[&svc], &[&s], &view()).flat();
        let chain = rs.elements["node-ports"]["tcp . 30080"]
            .strip_prefix("goto ")
            .unwrap()
            .to_string();
        assert_eq!(rs.chains[&chain][0], "jump mark-for-masquerade");
        assert_eq!(dnat_targets(&rs, &chain).len(), 2);
        // internalTrafficPolicy Local: the cluster IP reaches this node's endpoints only.
        let mut sp = spec("ClusterIP");
        sp.internal_traffic_policy = Some("Local".into());
        let rs = build(&[&service(sp)], &[&s], &view()).flat();
        let chain = rs.elements["cluster-ips"]["10.96.0.10 . tcp . 80"]
            .strip_prefix("goto ")
            .unwrap()
            .to_string();
        assert_eq!(dnat_targets(&rs, &chain), ["10.244.0.5:8080"]);
    }

    #[test]
    fn session_affinity_remembers_clients_per_endpoint() {
        let mut sp = spec("ClusterIP");
        sp.session_affinity = Some("ClientIP".into());
        let svc = service(sp);
        let s = slice(&[("10.244.0.5", true, true, false, "a")]);
        let rs = build(&[&svc], &[&s], &view()).flat();
        let (set, timeout) = rs.affinity.iter().next().unwrap();
        assert_eq!(*timeout, 10800);
        let e = rs.chains.keys().find(|c| c.starts_with("e-")).unwrap();
        assert!(rs.chains[e].contains(&format!("update @{set} {{ ip saddr }}")));
        let s_chain = rs.chains.keys().find(|c| c.starts_with("s-")).unwrap();
        assert!(rs.chains[s_chain].contains(&format!("ip saddr @{set} goto {e}")));
    }

    #[test]
    fn address_only_pods_are_masqueraded_by_their_mac() {
        let svc = service(spec("ClusterIP"));
        let s = slice(&[("10.244.0.5", true, true, false, "a")]);
        let v = NodeView {
            shared_mac: Some([2, 0x5b, 0, 1, 2, 0xab]),
            ..view()
        };
        let rs = build(&[&svc], &[&s], &v).flat();
        let chain = rs.chains.keys().find(|c| c.starts_with("s-")).unwrap();
        assert!(
            rs.chains[chain]
                .contains(&"ether saddr 02:5b:00:01:02:ab jump mark-for-masquerade".to_string())
        );
    }
}
