//! Load balancer addresses a node answers for (MetalLB's layer-2 mode): each one the
//! cluster chose this node for is added as a /32 to the interface that holds the node's
//! address, so the kernel answers ARP for it and the service proxy's rules take its
//! traffic, and is announced with a gratuitous ARP, so neighbours that knew it at another
//! node move at once. What was added is recorded in the state dir (`announced`), so a
//! restarted agent removes what it no longer holds and touches nothing else.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use rtnetlink::Handle;

use crate::{Error, links};

/// The addresses recorded in `file`: `<ip> <link index>` per line.
pub(crate) fn read(file: &Path) -> BTreeMap<Ipv4Addr, u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (ip, index) = l.split_once(' ')?;
            Some((ip.parse().ok()?, index.parse().ok()?))
        })
        .collect()
}

fn write(file: &Path, held: &BTreeMap<Ipv4Addr, u32>) -> Result<(), Error> {
    let text: String = held.iter().map(|(ip, i)| format!("{ip} {i}\n")).collect();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, file))
        .map_err(|e| Error::io(format!("write {}", file.display()), e))
}

/// The index of the link that holds `address`.
async fn link_of(handle: &Handle, address: Ipv4Addr) -> Result<Option<u32>, Error> {
    let mut dump = handle.address().get().execute();
    while let Some(m) = dump.try_next().await.map_err(|source| Error::Netlink {
        context: "list addresses".into(),
        source,
    })? {
        let holds = m.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) if *ip == address)
        });
        if holds {
            return Ok(Some(m.header.index));
        }
    }
    Ok(None)
}

/// Makes the addresses held `wanted`, on the link of `uplink`; returns what is held after.
pub(crate) async fn apply(
    handle: &Handle,
    file: &Path,
    held: &BTreeMap<Ipv4Addr, u32>,
    uplink: Ipv4Addr,
    wanted: &[Ipv4Addr],
) -> (BTreeMap<Ipv4Addr, u32>, Result<(), Error>) {
    let mut now = held.clone();
    let index = match link_of(handle, uplink).await {
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
        && let Err(e) = write(file, &now)
    {
        result = Err(e);
    }
    (now, result)
}
