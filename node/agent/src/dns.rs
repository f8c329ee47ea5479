//! A pod's resolver configuration and names, as the kubelet makes them
//! (`pkg/kubelet/network/dns`): `dnsPolicy` picks the cluster's DNS or the node's,
//! `dnsConfig` adds to it, and the result fits the resolver's limits.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use skiff_shim::DnsConfig;

/// glibc reads three nameservers; the kubelet keeps the first three.
const MAX_NAMESERVERS: usize = 3;
/// The kubelet's limits on the search list (Kubernetes 1.28 and later).
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// The node's side of pod DNS.
#[derive(Debug, Clone)]
pub struct NodeDns {
    /// The cluster's nameservers (the kubelet's `clusterDNS`); empty when the cluster has
    /// no DNS, and then every pod gets the node's.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The node's own resolver configuration (`dnsPolicy: Default`).
    pub node: DnsConfig,
}

impl NodeDns {
    /// The node's resolvers: systemd-resolved's upstream list where it runs (its stub at
    /// 127.0.0.53 is unreachable from a pod), else `/etc/resolv.conf`.
    pub fn node_resolv_conf() -> DnsConfig {
        ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| DnsConfig::parse(&t))
            .unwrap_or_default()
    }

    /// `node` is the node's resolver configuration ([`NodeDns::node_resolv_conf`]).
    pub fn new(cluster_dns: Vec<IpAddr>, domain: &str, node: DnsConfig) -> NodeDns {
        NodeDns {
            cluster_dns,
            domain: domain.trim_end_matches('.').to_string(),
            node,
        }
    }

    /// The resolver configuration of `pod`.
    pub fn for_pod(&self, pod: &Pod) -> DnsConfig {
        let spec = pod.spec.as_ref();
        let host_network = spec.and_then(|s| s.host_network) == Some(true);
        let policy = spec
            .and_then(|s| s.dns_policy.as_deref())
            .unwrap_or("ClusterFirst");
        let cluster = match policy {
            "ClusterFirstWithHostNet" => true,
            "ClusterFirst" => !host_network,
            _ => false,
        } && !self.cluster_dns.is_empty();
        let mut c = if policy == "None" {
            DnsConfig::default()
        } else if cluster {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = &self.domain;
            DnsConfig {
                nameservers: self.cluster_dns.clone(),
                searches: [format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()]
                    .into_iter()
                    .chain(self.node.searches.iter().cloned())
                    .collect(),
                options: vec!["ndots:5".into()],
            }
        } else {
            self.node.clone()
        };
        if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
            for ns in extra.nameservers.iter().flatten() {
                if let Ok(ip) = ns.parse::<IpAddr>()
                    && !c.nameservers.contains(&ip)
                {
                    c.nameservers.push(ip);
                }
            }
            for s in extra.searches.iter().flatten() {
                if !c.searches.contains(s) {
                    c.searches.push(s.clone());
                }
            }
            for o in extra.options.iter().flatten() {
                let written = match &o.value {
                    Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                    None => o.name.clone().unwrap_or_default(),
                };
                let name = o.name.as_deref().unwrap_or_default();
                // A pod's option replaces the one of the same name.
                c.options
                    .retain(|existing| existing.split(':').next() != Some(name));
                c.options.push(written);
            }
        }
        c.nameservers.truncate(MAX_NAMESERVERS);
        // Duplicates go (the first stays), then whatever exceeds the limits.
        let mut seen = std::collections::HashSet::new();
        c.searches.retain(|s| seen.insert(s.clone()));
        let mut chars = 0;
        c.searches = c
            .searches
            .into_iter()
            .take(MAX_SEARCHES)
            .take_while(|s| {
                chars += s.len() + 1;
                chars <= MAX_SEARCH_CHARS
            })
            .collect();
        c
    }

    /// The pod's hostname and, when it names a `subdomain`, its domain (the kubelet's
    /// `GeneratePodHostNameAndDomain`): `spec.hostname` or the pod's name, cut to 63
    /// characters.
    pub fn hostname_and_domain(&self, pod: &Pod) -> (String, Option<String>) {
        let spec = pod.spec.as_ref();
        let name = spec
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty())
            .or_else(|| pod.metadata.name.clone())
            .unwrap_or_default();
        let mut hostname: String = name.chars().take(63).collect();
        while hostname.ends_with(['-', '.']) {
            hostname.pop();
        }
        let domain = spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
            .map(|sub| {
                format!(
                    "{sub}.{}.svc.{}",
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                    self.domain
                )
            });
        (hostname, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "team"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.88.0.1".parse().unwrap()],
            domain: "cluster.local".into(),
            node: DnsConfig::parse("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
        }
    }

    #[test]
    fn cluster_first_is_the_clusters_dns_with_the_kubernetes_search_path() {
        let c = node().for_pod(&pod(serde_json::json!({"containers": []})));
        assert_eq!(
            c.resolv_conf(),
            "search team.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.88.0.1\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn host_network_pods_and_default_get_the_nodes_resolvers() {
        let n = node();
        for spec in [
            serde_json::json!({"hostNetwork": true, "containers": []}),
            serde_json::json!({"dnsPolicy": "Default", "containers": []}),
        ] {
            assert_eq!(n.for_pod(&pod(spec)), n.node);
        }
        let with_host_net = n.for_pod(&pod(serde_json::json!({
            "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []})));
        assert_eq!(with_host_net.nameservers, n.cluster_dns);
        // A cluster without DNS gives every pod the node's.
        let none = NodeDns {
            cluster_dns: vec![],
            ..node()
        };
        assert_eq!(
            none.for_pod(&pod(serde_json::json!({"containers": []}))),
            none.node
        );
    }

    #[test]
    fn dns_config_adds_to_the_policy_and_none_takes_it_alone() {
        let n = node();
        let c = n.for_pod(&pod(serde_json::json!({
            "dnsConfig": {"nameservers": ["1.1.1.1", "10.88.0.1"], "searches": ["x.example", "svc.cluster.local"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]},
            "containers": []})));
        assert_eq!(
            c.nameservers,
            [
                "10.88.0.1".parse::<IpAddr>().unwrap(),
                "1.1.1.1".parse().unwrap()
            ]
        );
        assert_eq!(
            c.searches,
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "x.example"
            ]
        );
        assert_eq!(c.options, ["ndots:2", "rotate"]);
        assert_eq!(c.ndots(), 2);
        let none = n.for_pod(&pod(serde_json::json!({
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["9.9.9.9", "8.8.8.8", "8.8.4.4", "1.1.1.1"]},
            "containers": []})));
        assert_eq!(
            none.resolv_conf(),
            "nameserver 9.9.9.9\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn long_search_lists_are_cut_to_the_resolvers_limits() {
        let searches: Vec<String> = (0..40).map(|i| format!("s{i}.example")).collect();
        let c = node().for_pod(&pod(serde_json::json!({
            "dnsPolicy": "None", "dnsConfig": {"searches": searches}, "containers": []})));
        assert_eq!(c.searches.len(), 32);
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(250))).collect();
        let c = node().for_pod(&pod(serde_json::json!({
            "dnsPolicy": "None", "dnsConfig": {"searches": long}, "containers": []})));
        assert_eq!(c.searches.len(), 8, "8 names of 251 characters fit 2048");
    }

    #[test]
    fn hostname_and_subdomain_make_the_pods_fully_qualified_name() {
        let n = node();
        assert_eq!(
            n.hostname_and_domain(&pod(serde_json::json!({"containers": []}))),
            ("web-0".to_string(), None)
        );
        assert_eq!(
            n.hostname_and_domain(&pod(serde_json::json!({
                "hostname": "db-1", "subdomain": "db", "containers": []}))),
            (
                "db-1".to_string(),
                Some("db.team.svc.cluster.local".to_string())
            )
        );
    }
}
