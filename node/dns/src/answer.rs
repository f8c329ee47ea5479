//! What the cluster DNS answers a query, from a [`Zone`] snapshot: pure logic, no I/O.
//!
//! Names under the cluster domain are answered here, authoritatively; every other name
//! goes to the node's resolvers ([`Outcome::Forward`]). The records are those of
//! Kubernetes' DNS specification:
//! * `<svc>.<ns>.svc.<domain>`: A/AAAA of a Service's cluster IPs, of a headless
//!   Service's ready endpoints, or a CNAME to an ExternalName's target;
//! * `<host>.<svc>.<ns>.svc.<domain>`: one endpoint of a headless Service (a StatefulSet
//!   pod by its hostname, any other by its address with dashes);
//! * `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV of a named port (and SRV of every
//!   named port on the Service's own name), with the targets' addresses as additionals;
//! * `<a-b-c-d>.<ns>.pod.<domain>`: the address the name spells (CoreDNS's `pods
//!   insecure`, kubeadm's default);
//! * PTR of every cluster IP and of every headless endpoint with a hostname.
//!
//! A name under the domain that names nothing is NXDOMAIN; one that exists without the
//! asked type answers nothing (NODATA); both carry the zone's SOA for negative caching.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{Kind, Port, Svc, Zone};

/// The TTL of every record (CoreDNS's kubernetes plugin's default): short, since
/// endpoints come and go.
pub const TTL: u32 = 5;

/// The largest UDP answer to a query without EDNS (RFC 1035), and the cap on what EDNS
/// may ask for (the DNS flag day 2020 figure, which no fragmented path breaks).
const UDP_PLAIN: usize = 512;
const UDP_EDNS_MAX: u16 = 1232;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not the cluster's name: ask the node's resolvers, and send back what they say.
    Forward,
    /// An ExternalName whose target lies outside the cluster: `partial` holds the CNAME;
    /// the target's records (asked of the node's resolvers with this type) follow it.
    Chase {
        partial: Box<Message>,
        target: Name,
        record_type: RecordType,
    },
}

/// The answer to the raw query `bytes` from `zone`.
pub fn answer(zone: &Zone, bytes: &[u8], transport: Transport) -> Outcome {
    let request = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => {
            // The id is the first two bytes of anything that looks like a DNS header.
            return match bytes {
                [a, b, _, _, ..] => {
                    Outcome::Reply(error(u16::from_be_bytes([*a, *b]), ResponseCode::FormErr))
                }
                _ => Outcome::Reply(Vec::new()),
            };
        }
    };
    let id = request.metadata.id;
    if request.metadata.op_code != OpCode::Query {
        return Outcome::Reply(error(id, ResponseCode::NotImp));
    }
    let [query] = request.queries.as_slice() else {
        return Outcome::Reply(error(id, ResponseCode::FormErr));
    };
    let qname = query.name().to_lowercase();
    let qtype = query.query_type();
    let text = qname.to_ascii();
    let text = text.trim_end_matches('.');
    let mut response = Message::new(id, hickory_proto::op::MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.recursion_available = true;
    response.add_query(query.clone());
    if let Some(edns) = &request.edns {
        let mut e = Edns::new();
        e.set_max_payload(edns.max_payload().clamp(UDP_PLAIN as u16, UDP_EDNS_MAX));
        response.set_edns(e);
    }
    let limit = limit_of(&request, transport);
    if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
        return Outcome::Forward;
    }

    // Reverse names of the cluster's addresses.
    if (qtype == RecordType::PTR || qtype == RecordType::ANY)
        && let Ok(net) = qname.parse_arpa_name()
        && net.prefix_len() == net.max_prefix_len()
        && let Some(target) = zone.reverse.get(&net.addr())
    {
        response.metadata.authoritative = true;
        response.add_answer(Record::from_rdata(
            qname.clone(),
            TTL,
            RData::PTR(PTR(fqdn(target))),
        ));
        return Outcome::Reply(encode(response, limit));
    }
    let Some(rest) = under(text, &zone.domain) else {
        return Outcome::Forward;
    };
    response.metadata.authoritative = true;
    if !zone.ready {
        response.metadata.response_code = ResponseCode::ServFail;
        return Outcome::Reply(encode(response, limit));
    }
    let labels: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').collect()
    };
    let found = lookup(zone, &labels, &qname, qtype, &mut response);
    match found {
        Found::Records => {}
        Found::Chase(target) => {
            if let Some(local) = under(target.to_ascii().trim_end_matches('.'), &zone.domain) {
                // A target in the cluster: its records follow from here.
                let labels: Vec<&str> = local.split('.').filter(|l| !l.is_empty()).collect();
                let mut chased =
                    Message::new(id, hickory_proto::op::MessageType::Response, OpCode::Query);
                if let Found::Records = lookup(zone, &labels, &target, qtype, &mut chased) {
                    response.add_answers(chased.answers);
                }
            } else if qtype != RecordType::CNAME {
                return Outcome::Chase {
                    partial: Box::new(response),
                    target,
                    record_type: qtype,
                };
            }
        }
        Found::NoData => {
            response.add_authority(soa(&zone.domain));
        }
        Found::NxDomain => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(&zone.domain));
        }
    }
    Outcome::Reply(encode(response, limit))
}

/// The part of `name` before `.domain` ("" for the domain itself), if it is under it.
fn under<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

enum Found {
    Records,
    /// An ExternalName: the CNAME is in the answer; its target's records may follow.
    Chase(Name),
    NoData,
    NxDomain,
}

fn fqdn(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap_or_default();
    n.set_fqdn(true);
    n
}

fn soa(domain: &str) -> Record {
    Record::from_rdata(
        fqdn(domain),
        TTL,
        RData::SOA(SOA::new(
            fqdn(&format!("ns.dns.{domain}")),
            fqdn(&format!("hostmaster.{domain}")),
            1,
            7200,
            1800,
            86400,
            TTL,
        )),
    )
}

fn address(name: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, data)
}

/// The addresses of `ips` that `qtype` asks for, as records of `name`; whether any
/// address of the name at all exists is the caller's.
fn addresses(name: &Name, ips: &[IpAddr], qtype: RecordType, out: &mut Message) -> bool {
    let mut any = false;
    for ip in ips {
        let wanted = matches!(
            (qtype, ip),
            (RecordType::A, IpAddr::V4(_))
                | (RecordType::AAAA, IpAddr::V6(_))
                | (RecordType::ANY, _)
        );
        if wanted {
            out.add_answer(address(name, *ip));
            any = true;
        }
    }
    any
}

fn srv(name: &Name, port: u16, target: &Name, weight: u16) -> Record {
    Record::from_rdata(
        name.clone(),
        TTL,
        RData::SRV(SRV::new(0, weight, port, target.clone())),
    )
}

/// The records of `labels` (the name under the domain, leftmost first) of type `qtype`.
fn lookup(
    zone: &Zone,
    labels: &[&str],
    qname: &Name,
    qtype: RecordType,
    out: &mut Message,
) -> Found {
    let domain = &zone.domain;
    match labels {
        // The domain itself, `svc`, `pod`: names that exist, with no records of their own
        // but the apex's SOA.
        [] => {
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                out.add_answer(soa(domain));
                return Found::Records;
            }
            Found::NoData
        }
        ["svc"] | ["pod"] => Found::NoData,
        [ns, "svc"] | [ns, "pod"] => {
            if zone.services.keys().any(|(n, _)| n == ns) {
                Found::NoData
            } else {
                Found::NxDomain
            }
        }
        [name, ns, "svc"] => {
            let Some(svc) = zone.services.get(&(ns.to_string(), name.to_string())) else {
                return Found::NxDomain;
            };
            service(zone, svc, name, ns, qname, qtype, out)
        }
        [port, proto, name, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            let Some(svc) = zone.services.get(&(ns.to_string(), name.to_string())) else {
                return Found::NxDomain;
            };
            let wanted = |p: &Port| p.name == port[1..] && p.protocol == proto[1..];
            let any = named_ports(svc, &wanted, name, ns, domain, qname, qtype, out);
            if any == Some(false) {
                Found::NoData
            } else if any.is_some() {
                Found::Records
            } else {
                Found::NxDomain
            }
        }
        [host, name, ns, "svc"] => {
            let Some(Svc {
                kind: Kind::Headless(endpoints),
                ..
            }) = zone.services.get(&(ns.to_string(), name.to_string()))
            else {
                return Found::NxDomain;
            };
            let ips: Vec<IpAddr> = endpoints
                .iter()
                .filter(|e| e.hostname == *host)
                .map(|e| e.ip)
                .collect();
            if ips.is_empty() {
                return Found::NxDomain;
            }
            if addresses(qname, &ips, qtype, out) {
                Found::Records
            } else {
                Found::NoData
            }
        }
        [dashed, _ns, "pod"] => match undash(dashed) {
            Some(ip) => {
                if addresses(qname, &[ip], qtype, out) {
                    Found::Records
                } else {
                    Found::NoData
                }
            }
            None => Found::NxDomain,
        },
        _ => Found::NxDomain,
    }
}

/// The records of a Service's own name.
fn service(
    zone: &Zone,
    svc: &Svc,
    name: &str,
    ns: &str,
    qname: &Name,
    qtype: RecordType,
    out: &mut Message,
) -> Found {
    if qtype == RecordType::SRV {
        let all = |_: &Port| true;
        return match named_ports(svc, &all, name, ns, &zone.domain, qname, qtype, out) {
            Some(true) => Found::Records,
            _ => Found::NoData,
        };
    }
    match &svc.kind {
        Kind::External(target) => {
            let target = fqdn(target);
            out.add_answer(Record::from_rdata(
                qname.clone(),
                TTL,
                RData::CNAME(CNAME(target.clone())),
            ));
            Found::Chase(target)
        }
        Kind::Cluster(ips) => {
            if addresses(qname, ips, qtype, out) {
                Found::Records
            } else {
                Found::NoData
            }
        }
        Kind::Headless(endpoints) => {
            let ips: Vec<IpAddr> = endpoints.iter().map(|e| e.ip).collect();
            if addresses(qname, &ips, qtype, out) {
                Found::Records
            } else {
                Found::NoData
            }
        }
    }
}

/// SRV records of the Service's ports that `wanted` picks: `None` if it has no such port,
/// else whether any record was written (only SRV and ANY queries get them).
#[allow(clippy::too_many_arguments)]
fn named_ports(
    svc: &Svc,
    wanted: &dyn Fn(&Port) -> bool,
    name: &str,
    ns: &str,
    domain: &str,
    qname: &Name,
    qtype: RecordType,
    out: &mut Message,
) -> Option<bool> {
    let give = matches!(qtype, RecordType::SRV | RecordType::ANY);
    let base = format!("{name}.{ns}.svc.{domain}");
    match &svc.kind {
        Kind::Cluster(ips) => {
            let ports: Vec<&Port> = svc.ports.iter().filter(|p| wanted(p)).collect();
            if ports.is_empty() {
                return None;
            }
            if !give {
                return Some(false);
            }
            let target = fqdn(&base);
            for p in &ports {
                out.add_answer(srv(qname, p.port, &target, 100));
            }
            for ip in ips {
                out.add_additional(address(&target, *ip));
            }
            Some(true)
        }
        Kind::Headless(endpoints) => {
            let mut records = Vec::new();
            for e in endpoints {
                for p in e.ports.iter().filter(|p| !p.name.is_empty() && wanted(p)) {
                    records.push((fqdn(&format!("{}.{base}", e.hostname)), p.port, e.ip));
                }
            }
            let known = svc.ports.iter().any(wanted) || !records.is_empty();
            if !known {
                return None;
            }
            if !give || records.is_empty() {
                return Some(false);
            }
            let weight = (100 / records.len()).max(1) as u16;
            for (target, port, ip) in records {
                out.add_answer(srv(qname, port, &target, weight));
                out.add_additional(address(&target, ip));
            }
            Some(true)
        }
        Kind::External(_) => None,
    }
}

/// The address a pod name spells: `10-244-1-5`, or an IPv6 address with `-` for `:`.
fn undash(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// An error reply with nothing but the id and the code.
pub fn error(id: u16, code: ResponseCode) -> Vec<u8> {
    let mut m = Message::new(id, hickory_proto::op::MessageType::Response, OpCode::Query);
    m.metadata.response_code = code;
    m.to_vec().unwrap_or_default()
}

/// `message` encoded, truncated (TC set, the question alone) when it exceeds `limit`: the
/// client asks again over TCP.
pub fn encode(message: Message, limit: usize) -> Vec<u8> {
    match message.to_vec() {
        Ok(bytes) if bytes.len() <= limit => bytes,
        Ok(_) => message.truncate().to_vec().unwrap_or_default(),
        Err(_) => error(message.metadata.id, ResponseCode::ServFail),
    }
}

/// The size limit of the answer to `request` over `transport`.
pub fn limit_of(request: &Message, transport: Transport) -> usize {
    match (transport, &request.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, Some(e)) => {
            usize::from(e.max_payload().clamp(UDP_PLAIN as u16, UDP_EDNS_MAX))
        }
        (Transport::Udp, None) => UDP_PLAIN,
    }
}
