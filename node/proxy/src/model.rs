//! From Services and EndpointSlices to the rules (`Ruleset`), as kube-proxy's nftables
//! mode lays them out, without IO.
//!
//! Per Service port, load balancing is map elements, not rules: the `cluster-ips` map sends
//! a packet for a cluster IP to a chain Services share, `lb-c-tcp-<n>` for TCP ports with
//! `n` endpoints, whose rule DNATs to `backends-tcp[daddr . dport . numgen random mod n]`;
//! the map holds each Service port's endpoints in slots `0..n`. Node ports go the same
//! way through `lb-n{m,l}-<proto>-<n>` and `node-port-backends-<proto>`, external IPs and
//! load balancer addresses through `lb-x{m,l}-<proto>-<n>` (`m`: masqueraded, under
//! `externalTrafficPolicy: Cluster`; `l`: this node's endpoints only, client address kept).
//! A new connection costs two hash lookups whatever the number of Services or endpoints,
//! and an endpoint that comes, goes or turns ready changes elements only: `nft` reads
//! every chain of the table before any change (nftables 1.0.6), and a chain per Service
//! made each change at 5,000 Services cost 36 to 42 ms instead of a few.
//!
//! With `sessionAffinity: ClientIP` a Service keeps chains of its own, kube-proxy's layout:
//! `s-<id>` (cluster IP) and `x-<id>` (the rest) send a remembered client to its endpoint's
//! chain `e-<id>`, which records clients in a set of its own, else pick an endpoint with
//! a cascade of `numgen` rules. A Service without usable endpoints is in the
//! `no-endpoints` sets instead: its connections are refused at once, not left to time out.
//! Chains per endpoint for every Service (kube-proxy's) made each change at 5,000
//! Services of 10 endpoints cost 330 ms, and anonymous verdict maps per Service made the
//! first load take 30 s instead of 1.5 (measured with `examples/scale.rs`).
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

/// The map of endpoints by slot for `proto` (`tcp`, `udp`, `sctp`): of destination address
/// and port, or of node port. One per protocol, because the DNAT to a map's address and
/// port needs the protocol matched (nftables 1.0.6 reads a map typed by the `th` header
/// back wrongly).
pub fn backends_map(proto: &str, node_port: bool) -> &'static str {
    match (proto, node_port) {
        ("udp", false) => "backends-udp",
        ("udp", true) => "node-port-backends-udp",
        ("sctp", false) => "backends-sctp",
        ("sctp", true) => "node-port-backends-sctp",
        (_, false) => "backends-tcp",
        (_, true) => "node-port-backends-tcp",
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
        // Load balancing by elements over `eps`, in the shared chain of their number
        // (`kind` and its `first` rules; `map` and `key` the backends map and this
        // Service port's key in it): the verdict to reach it, None when there are none.
        let shared = |eps: &[&Backend],
                      kind: &str,
                      first: &[String],
                      node_port: bool,
                      key: &str,
                      rs: &mut Part| {
            if eps.is_empty() {
                return None;
            }
            rs.endpoints.extend(eps.iter().map(|b| b.ip));
            let n = eps.len();
            let chain = format!("lb-{kind}-{proto}-{n}");
            let (map, lookup) = if node_port {
                (backends_map(proto, true), format!("{proto} dport"))
            } else {
                (
                    backends_map(proto, false),
                    format!("ip daddr . {proto} dport"),
                )
            };
            let mut rules = first.to_vec();
            rules.push(format!(
                "dnat ip to {lookup} . numgen random mod {n} map @{map}"
            ));
            rs.shared.insert(chain.clone(), rules);
            for (i, b) in eps.iter().enumerate() {
                rs.element(
                    map,
                    format!("{key} . {i}"),
                    format!("{} . {}", b.ip, b.port),
                );
            }
            Some(format!("goto {chain}"))
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
            let verdict = if affinity.is_some() {
                balance(eps, first, &mut rs).map(|rules| {
                    let chain = format!("s-{key}");
                    rs.chains.insert(chain.clone(), rules);
                    format!("goto {chain}")
                })
            } else {
                shared(
                    eps,
                    "c",
                    &first,
                    false,
                    &format!("{ip} . {svc_port}"),
                    &mut rs,
                )
            };
            match verdict {
                Some(verdict) => rs.element("cluster-ips", element, verdict),
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
        let policy = if external_local { "l" } else { "m" };
        let chain = format!("x-{key}");
        let own = if affinity.is_some() {
            balance(eps, first.clone(), &mut rs).map(|rules| {
                rs.chains.insert(chain.clone(), rules);
                format!("goto {chain}")
            })
        } else {
            None
        };
        // Where an external entry sends: the Service's own chain, or the shared one.
        let verdict = |kind: char, node_port: bool, key: String, rs: &mut Part| match &own {
            Some(v) => Some(v.clone()),
            None if affinity.is_some() => None,
            None => shared(eps, &format!("{kind}{policy}"), &first, node_port, &key, rs),
        };
        if let Some(np) = node_port {
            let element = format!("{proto} . {np}");
            match verdict('n', true, np.to_string(), &mut rs) {
                Some(v) => rs.element("node-ports", element, v),
                None => rs.element("no-endpoint-node-ports", element, String::new()),
            }
        }
        for ip in &external {
            let element = format!("{ip} . {proto} . {svc_port}");
            let verdict = verdict('x', false, format!("{ip} . {svc_port}"), &mut rs);
            match verdict {
                Some(v) => rs.element("external-ips", element, v),
                None => rs.element("no-endpoints", element, String::new()),
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

    /// Where the element `key` of verdict map `map` sends new connections: the endpoints
    /// in their slots of a shared chain's backends map (checking that the chain picks
    /// among as many), or those of a Service's own chain.
    fn targets(rs: &Part, map: &str, key: &str) -> Vec<String> {
        let chain = rs.elements[map][key].strip_prefix("goto ").unwrap();
        if !chain.starts_with("lb-") {
            return dnat_targets(rs, chain);
        }
        let backends = backends_map("tcp", map == "node-ports");
        // The key without the protocol: the map is the protocol's.
        let key = key.replace(" . tcp", "").replace("tcp . ", "");
        let mut slots: Vec<(usize, String)> = rs.elements[backends]
            .iter()
            .filter_map(|(k, v)| {
                let slot = k.strip_prefix(&key)?.strip_prefix(" . ")?.parse().ok()?;
                Some((slot, v.replace(" . ", ":")))
            })
            .collect();
        slots.sort();
        assert!(
            slots.iter().enumerate().all(|(i, (slot, _))| i == *slot),
            "{slots:?}"
        );
        let rules = &rs.chains[chain];
        assert!(
            rules.last().unwrap().contains(&format!(
                "numgen random mod {} map @{backends}",
                slots.len()
            )),
            "{rules:?}"
        );
        slots.into_iter().map(|(_, t)| t).collect()
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
        assert_eq!(chain, "lb-c-tcp-2");
        assert_eq!(
            targets(&rs, "cluster-ips", key),
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
        assert_eq!(
            targets(&rs, "cluster-ips", "10.96.0.10 . tcp . 80"),
            ["10.244.0.5:8080"]
        );
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
        assert_eq!(
            targets(&rs, "node-ports", "tcp . 30080"),
            ["10.244.0.5:8080"]
        );
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
        assert_eq!(targets(&rs, "node-ports", "tcp . 30080").len(), 2);
        // internalTrafficPolicy Local: the cluster IP reaches this node's endpoints only.
        let mut sp = spec("ClusterIP");
        sp.internal_traffic_policy = Some("Local".into());
        let rs = build(&[&service(sp)], &[&s], &view()).flat();
        assert_eq!(
            targets(&rs, "cluster-ips", "10.96.0.10 . tcp . 80"),
            ["10.244.0.5:8080"]
        );
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
        let chain = rs.chains.keys().find(|c| c.starts_with("lb-c-")).unwrap();
        assert!(
            rs.chains[chain]
                .contains(&"ether saddr 02:5b:00:01:02:ab jump mark-for-masquerade".to_string())
        );
    }
}
