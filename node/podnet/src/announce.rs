//! Load balancer addresses a node answers for (MetalLB's layer-2 mode): each one the
//! cluster chose this node for is added as a /32 to the interface that holds the node's
//! address, so the kernel answers ARP for it and the service proxy's rules take its
//! traffic, and is announced with a gratuitous ARP, so neighbours that knew it at another
//! node move at once. What was added is recorded in the state dir (`announced`), so a
//! restarted agent removes what it no longer holds and touches nothing else.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use rtnetlink::Handle;

use crate::{Error, links, state};

/// Makes the addresses held `wanted`, on the link of `uplink`; returns what is held after.
pub(crate) async fn apply(
    handle: &Handle,
    file: &Path,
    held: &BTreeMap<Ipv4Addr, u32>,
    uplink: Ipv4Addr,
    wanted: &[Ipv4Addr],
) -> (BTreeMap<Ipv4Addr, u32>, Result<(), Error>) {
    let mut now = held.clone();
    let link = links::ipv4_addresses(handle).await.map(|all| {
        all.into_iter()
            .find(|(_, ip)| *ip == uplink)
            .map(|(i, _)| i)
    });
    let index = match link {
        Ok(Some(i)) => i,
        Ok(None) if wanted.is_empty() => 0,
        Ok(None) => {
            let e = Error::Config(format!("no interface holds the node's address {uplink}"));
            return (now, Err(e));
        }
        Err(e) => return (now, Err(e)),
    };
    let mut result = Ok(());
    for (ip, link) in held {
        if wanted.contains(ip) && *link == index {
            continue;
        }
        match links::del_address_32(handle, *link, *ip).await {
            Ok(()) => {
                now.remove(ip);
            }
            Err(e) => result = Err(e),
        }
    }
    let name = links::all_links(handle)
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|l| l.index == index).map(|l| l.name));
    for ip in wanted {
        if now.contains_key(ip) {
            continue;
        }
        if let Err(e) = links::add_address_32(handle, index, *ip).await {
            result = Err(e);
            continue;
        }
        now.insert(*ip, index);
        if let Some(name) = &name
            && let Err(e) = links::announce_on(name, *ip)
        {
            // Loopback has no ARP; a neighbour that never knew the address asks anyway.
            tracing::debug!(%ip, interface = %name, error = %e, "no gratuitous ARP");
        }
    }
    if now != *held
        && let Err(e) = state::write_pairs(file, &now)
    {
        result = Err(e);
    }
    (now, result)
}
