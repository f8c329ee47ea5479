//! Pod traffic between nodes, the host-gw way: a route to every other node's pod CIDR
//! through that node's address, so a pod reaches a pod of another node by its IP with no
//! tunnel and no NAT (the nodes share a link, as flannel's host-gw backend requires).
//!
//! The routes this node added are recorded in its state dir (`peers`), so that a restarted
//! agent removes those of nodes gone meanwhile and no other route is ever touched. A peer
//! at one of this host's own addresses (agents sharing a machine) is left out: its pod
//! CIDR is on one of this host's bridges already.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::Error;

/// Another node: its pod CIDR and the address its pods are reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pod_cidr: Ipv4Net,
    pub address: Ipv4Addr,
}

fn route(cidr: Ipv4Net, via: Ipv4Addr) -> netlink_packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .gateway(via)
        .build()
}

/// Makes the routes `wanted` from `installed`: changed and new ones replaced, gone ones
/// deleted. Returns what is installed afterwards (on an error, as far as it got).
pub(crate) async fn apply(
    handle: &Handle,
    installed: &BTreeMap<Ipv4Net, Ipv4Addr>,
    wanted: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> (BTreeMap<Ipv4Net, Ipv4Addr>, Result<(), Error>) {
    let mut now = installed.clone();
    for (cidr, via) in installed {
        if wanted.get(cidr) == Some(via) {
            continue;
        }
        match handle.route().del(route(*cidr, *via)).execute().await {
            // Gone already (the link went down, someone removed it): as wanted.
            Ok(()) | Err(_) if !wanted.contains_key(cidr) => {
                now.remove(cidr);
            }
            _ => {}
        }
    }
    for (cidr, via) in wanted {
        if installed.get(cidr) == Some(via) {
            continue;
        }
        if let Err(source) = handle
            .route()
            .add(route(*cidr, *via))
            .replace()
            .execute()
            .await
        {
            let context = format!("route {cidr} via {via}");
            return (now, Err(Error::Netlink { context, source }));
        }
        now.insert(*cidr, *via);
    }
    (now, Ok(()))
}
