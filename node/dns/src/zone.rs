//! The cluster zone as the DNS server reads it: every Service of the cluster with what its
//! names answer, built from the Services and EndpointSlices the informers hold (the
//! records of Kubernetes' DNS specification, kubernetes/dns `docs/specification.md`).
//!
//! A zone is rebuilt whole when either kind changes and swapped in under the readers: a
//! query reads one consistent snapshot and takes no lock.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// One port of a Service or an endpoint, as SRV records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// `tcp`, `udp` or `sctp`: the label of `_<port>._<proto>`.
    pub protocol: String,
    pub port: u16,
}

/// One ready endpoint of a headless Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// Its name under the Service: the endpoint's `hostname` (a StatefulSet pod's name),
    /// or its address with dashes, as CoreDNS names endpoints that have none.
    pub hostname: String,
    pub ports: Vec<Port>,
}

/// What a Service's name answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Its cluster IPs.
    Cluster(Vec<IpAddr>),
    /// Headless: the addresses of its ready endpoints, each also under its own name.
    Headless(Vec<Endpoint>),
    /// `type: ExternalName`: a CNAME to this name.
    External(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    pub kind: Kind,
    /// The Service's named ports (SRV records of a Service with cluster IPs).
    pub ports: Vec<Port>,
}

/// Every Service of the cluster by (namespace, name), and the cluster IPs' reverse names.
#[derive(Debug, Default)]
pub struct Zone {
    /// The cluster domain, lower case, without a final dot (`cluster.local`).
    pub domain: String,
    /// Built from the informers' first lists. Until then names of the cluster are SERVFAIL
    /// (retried), not NXDOMAIN (cached).
    pub ready: bool,
    pub services: HashMap<(String, String), Svc>,
    /// `<svc>.<ns>.svc.<domain>` of each cluster IP and of each headless endpoint that has
    /// a hostname of its own (`<host>.<svc>.<ns>.svc.<domain>`).
    pub reverse: HashMap<IpAddr, String>,
}

fn protocol(p: Option<&String>) -> String {
    p.map_or("tcp".into(), |p| p.to_ascii_lowercase())
}

/// The name CoreDNS gives an endpoint without a hostname: its address with dashes.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

impl Zone {
    /// The zone before the first lists: every name of `domain` is SERVFAIL.
    pub fn unready(domain: &str) -> Zone {
        Zone {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            ..Zone::default()
        }
    }

    /// The zone of `services` and the `slices` of each (looked up by namespace and
    /// Service name).
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices_of: impl Fn(&str, &str) -> Vec<std::sync::Arc<EndpointSlice>>,
    ) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut zone = Zone {
            domain,
            ready: true,
            ..Zone::default()
        };
        for svc in services {
            let (Some(ns), Some(name)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let fqdn = format!("{name}.{ns}.svc.{}", zone.domain);
            let ports: Vec<Port> = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone().filter(|n| !n.is_empty())?,
                        protocol: protocol(p.protocol.as_ref()),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect();
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                match &spec.external_name {
                    Some(target) if !target.is_empty() => {
                        Kind::External(target.trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => continue,
                }
            } else if spec.cluster_ip.as_deref() == Some("None") {
                let publish = spec.publish_not_ready_addresses == Some(true);
                let mut endpoints = Vec::new();
                for slice in slices_of(ns, name) {
                    let ports: Vec<Port> = slice
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| {
                            Some(Port {
                                name: p.name.clone().unwrap_or_default(),
                                protocol: protocol(p.protocol.as_ref()),
                                port: u16::try_from(p.port?).ok()?,
                            })
                        })
                        .collect();
                    for ep in &slice.endpoints {
                        // An unknown readiness counts as ready (the EndpointSlice API's rule).
                        let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                        if !ready && !publish {
                            continue;
                        }
                        for address in &ep.addresses {
                            let Ok(ip) = address.parse::<IpAddr>() else {
                                continue;
                            };
                            let hostname = ep
                                .hostname
                                .clone()
                                .filter(|h| !h.is_empty())
                                .unwrap_or_else(|| dashed(ip));
                            if ep.hostname.as_deref().is_some_and(|h| !h.is_empty()) {
                                zone.reverse.insert(
                                    ip,
                                    format!("{}.{fqdn}", hostname.to_ascii_lowercase()),
                                );
                            }
                            endpoints.push(Endpoint {
                                ip,
                                hostname: hostname.to_ascii_lowercase(),
                                ports: ports.clone(),
                            });
                        }
                    }
                }
                Kind::Headless(endpoints)
            } else {
                let ips: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|ip| ip.parse().ok())
                    .fold(Vec::new(), |mut v, ip| {
                        if !v.contains(&ip) {
                            v.push(ip);
                        }
                        v
                    });
                if ips.is_empty() {
                    // Not allocated yet: no name until it has an address.
                    continue;
                }
                for ip in &ips {
                    zone.reverse.insert(*ip, fqdn.clone());
                }
                Kind::Cluster(ips)
            };
            zone.services.insert(
                (ns.to_ascii_lowercase(), name.to_ascii_lowercase()),
                Svc { kind, ports },
            );
        }
        zone
    }
}
