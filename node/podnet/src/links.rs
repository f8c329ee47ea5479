//! Links, addresses and routes, through rtnetlink.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoKind,
    InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::sys::TokioSocket;
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::Error;

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;

/// The errno a netlink error carries, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn nl(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let context = context.into();
    move |source| Error::Netlink { context, source }
}

/// A link as a dump shows it.
pub(crate) struct LinkSummary {
    pub index: u32,
    pub name: String,
    pub controller: Option<u32>,
    pub kind: Option<InfoKind>,
}

fn summarize(m: LinkMessage) -> LinkSummary {
    let mut s = LinkSummary {
        index: m.header.index,
        name: String::new(),
        controller: None,
        kind: None,
    };
    for a in m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n,
            LinkAttribute::Controller(c) => s.controller = Some(c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(k);
                    }
                }
            }
            _ => {}
        }
    }
    s
}

pub(crate) async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkSummary>, Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(m) => Ok(m.map(summarize)),
        Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

pub(crate) async fn all_links(handle: &Handle) -> Result<Vec<LinkSummary>, Error> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("dump links"))?;
    Ok(links.into_iter().map(summarize).collect())
}

/// Creates the bridge (or adopts one of that name), gives it the gateway address and sets
/// it up. Returns its index.
pub(crate) async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    mac: [u8; 6],
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> Result<u32, Error> {
    let existing = link_by_name(handle, name).await?;
    let index = match existing {
        Some(l) if l.kind == Some(InfoKind::Bridge) => l.index,
        Some(_) => {
            return Err(Error::Config(format!(
                "link {name} exists and is not a bridge"
            )));
        }
        None => {
            // A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, so the
            // gateway's MAC would change as pods come and go and stale ARP entries in the
            // pods would cut them off until they expire.
            let msg = LinkBridge::new(name).address(mac.to_vec()).up().build();
            match handle.link().add(msg).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(EEXIST)) => {}
                Err(e) => return Err(nl(format!("create bridge {name}"))(e)),
            }
            link_by_name(handle, name)
                .await?
                .ok_or_else(|| Error::Config(format!("bridge {name} vanished")))?
                .index
        }
    };
    match handle
        .address()
        .add(index, IpAddr::V4(gateway), prefix_len)
        .execute()
        .await
    {
        Ok(()) => {}
        Err(e) if matches!(errno(&e), Some(EEXIST)) => {}
        Err(e) => return Err(nl(format!("add {gateway}/{prefix_len} to {name}"))(e)),
    }
    // No multicast snooping: the bridge then does no per-port group bookkeeping, which
    // it would otherwise redo for every pod's port as it comes up. Pods have no IPv6 and
    // send little multicast; what they send is flooded, as by a plain switch.
    let no_snooping = LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)])),
    ]);
    // (A link-info change is a new-link request for an existing link: `change`.)
    handle
        .link()
        .change(
            LinkUnspec::new_with_index(index)
                .up()
                .append_extra_attribute(no_snooping)
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("set {name} up")))?;
    Ok(index)
}

/// Whether a link of that name exists, or is still being torn down, in the host's
/// namespace. The kernel unlists a dying device first (the ioctl lookup fails) and removes
/// its sysfs entry last; only then can the name be used again.
pub(crate) fn exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
        || std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a link by name; a missing link is not an error.
pub(crate) async fn delete_link(handle: &Handle, name: &str) -> Result<(), Error> {
    match handle
        .link()
        .del_with_message(LinkUnspec::new_with_name(name).build())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
        Err(e) => Err(nl(format!("delete link {name}"))(e)),
    }
}

/// One veth pair: `host` on the bridge and up; `eth0` created directly inside the pod's
/// namespace (given by fd), so no rename or move is needed afterwards.
pub(crate) async fn add_veth(
    handle: &Handle,
    host: &str,
    bridge_index: u32,
    netns: &impl AsRawFd,
) -> Result<(), Error> {
    // The peer cannot be set up in the same request: it is configured before the pair is
    // linked, and opening a veth without its peer fails (ENOTCONN).
    let peer = LinkUnspec::new_with_name("eth0")
        .setns_by_fd(netns.as_raw_fd())
        .build();
    // Created down: it comes up without IPv6 addresses (see `without_ipv6`).
    let msg = LinkVeth::new(host, "eth0")
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .controller(bridge_index)
        .build();
    handle.link().add(msg).execute().await.map_err(|e| {
        let full = matches!(&e, rtnetlink::Error::NetlinkError(m)
            if m.raw_code() == -(nix::libc::EXFULL));
        if full {
            Error::BridgeFull
        } else {
            nl(format!("create veth {host}"))(e)
        }
    })?;
    // By name: the kernel finds the link, no lookup round trip. Hairpin mode lets the
    // bridge send a frame back out of the port it came in by: with `br_netfilter` loaded,
    // a pod's packet to a Service that the proxy DNATs to the same pod is bridged back to
    // it (kubelet's `hairpin-veth`), and the frames of two address-only pods, which share
    // this port, go the same way.
    let hairpin = InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)]);
    let up = LinkUnspec::new_with_name(host)
        .up()
        .set_port_kind(InfoPortKind::Bridge)
        .set_port_data(hairpin);
    // RTM_NEWLINK on the existing link: RTM_SETLINK ignores bridge port settings.
    handle
        .link()
        .change(without_ipv6(up).build())
        .execute()
        .await
        .map_err(nl(format!("set {host} up")))
}

/// A link brought up by this message gets no IPv6 address: no link-local address, so no
/// duplicate address detection, router solicitations or multicast listener reports, which
/// the bridge would flood into every other pod (work that grows with the square of the
/// pods on the node). Pod networks are IPv4; loopback keeps `::1`.
///
/// The address generation mode is set by netlink in the same message that brings the link
/// up, not by writing `disable_ipv6` under `/proc/sys`: a path lookup there walks one entry
/// per network namespace on the machine, so with a thousand pods each write cost more than
/// the veth itself.
fn without_ipv6(link: LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec> {
    link.append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
        vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
    )]))
}

/// Configures the pod's side through a netlink socket that lives in the pod's namespace:
/// loopback and eth0 up, the pod address on eth0, the default route via the gateway.
pub(crate) async fn configure_pod_side(
    netlink: OwnedFd,
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
) -> Result<(), Error> {
    let (handle, conn) = connect_in(netlink);
    let result = async {
        let eth0 = async {
            let index = eth0_index(&handle).await?;
            let addr = handle
                .address()
                .add(index, IpAddr::V4(ip), prefix_len)
                .execute();
            let (up, addr) = futures::join!(eth0_up(&handle, index), addr);
            up?;
            addr.map_err(nl(format!("add {ip}/{prefix_len} to eth0")))?;
            add_route(&handle, default_route(index, gateway), || {
                format!("default route via {gateway}")
            })
            .await
        };
        let (lo, eth0) = futures::join!(lo_up(&handle), eth0);
        lo?;
        eth0
    }
    .await;
    drop(handle);
    conn.abort();
    result
}

/// Loopback up (in a fresh namespace it is always index 1).
async fn lo_up(handle: &Handle) -> Result<(), Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(1).up().build())
        .execute()
        .await
        .map_err(nl("set lo up"))
}

/// The index of the namespace's `eth0`, the inner end of its veth pair.
async fn eth0_index(handle: &Handle) -> Result<u32, Error> {
    Ok(link_by_name(handle, "eth0")
        .await?
        .ok_or_else(|| Error::Config("eth0 missing in the namespace".into()))?
        .index)
}

async fn eth0_up(handle: &Handle, index: u32) -> Result<(), Error> {
    handle
        .link()
        .set(without_ipv6(LinkUnspec::new_with_index(index).up()).build())
        .execute()
        .await
        .map_err(nl("set eth0 up"))
}

fn default_route(index: u32, gateway: Ipv4Addr) -> netlink_packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(index)
        .gateway(gateway)
        .build()
}

/// Adds a route; one already there is not an error.
async fn add_route(
    handle: &Handle,
    route: netlink_packet_route::route::RouteMessage,
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    match handle.route().add(route).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(EEXIST)) => Ok(()),
        Err(e) => Err(nl(what())(e)),
    }
}

/// A bridge-name-derived MAC, locally administered and unicast.
pub(crate) fn bridge_mac(hash: u32) -> [u8; 6] {
    let h = hash.to_be_bytes();
    [0x02, 0x5a, h[0], h[1], h[2], h[3]]
}

/// The MAC of the shared namespace's `eth0`, derived from the bridge name like the
/// bridge's own.
pub(crate) fn shared_mac(hash: u32) -> [u8; 6] {
    let h = hash.to_be_bytes();
    [0x02, 0x5b, h[0], h[1], h[2], h[3]]
}

const EADDRNOTAVAIL: i32 = 99;

/// Adds `ip/32` to link `index` (an address-only pod's IP, on the shared namespace's
/// `eth0`). Already there is not an error.
pub(crate) async fn add_address_32(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<(), Error> {
    match handle
        .address()
        .add(index, IpAddr::V4(ip), 32)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(EEXIST)) => Ok(()),
        Err(e) => Err(nl(format!("add {ip}/32 to link {index}"))(e)),
    }
}

/// The /32 addresses on link `index` (address-only pods'; on the bridge, besides its
/// gateway address, what an earlier version left there).
pub(crate) async fn addresses_32(handle: &Handle, index: u32) -> Result<Vec<Ipv4Addr>, Error> {
    let mut out = Vec::new();
    let mut dump = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(m) = dump
        .try_next()
        .await
        .map_err(nl(format!("list addresses of link {index}")))?
    {
        if m.header.prefix_len != 32 {
            continue;
        }
        for a in &m.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                out.push(*ip);
            }
        }
    }
    Ok(out)
}

/// Every IPv4 address of this namespace, with the index of its link.
pub(crate) async fn ipv4_addresses(handle: &Handle) -> Result<Vec<(u32, Ipv4Addr)>, Error> {
    let mut out = Vec::new();
    let mut dump = handle.address().get().execute();
    while let Some(m) = dump.try_next().await.map_err(nl("list addresses"))? {
        for a in &m.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip))
            | AddressAttribute::Address(IpAddr::V4(ip)) = a
                && !out.contains(&(m.header.index, *ip))
            {
                out.push((m.header.index, *ip));
            }
        }
    }
    Ok(out)
}

/// Removes `ip/32` from link `index`; an address that is not there is not an error.
pub(crate) async fn del_address_32(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<(), Error> {
    let msg = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(ip, 32)
        .build();
    match handle.address().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(EADDRNOTAVAIL) | Some(ENOENT)) => Ok(()),
        Err(e) => Err(nl(format!("remove {ip}/32 from link {index}"))(e)),
    }
}

/// A netlink connection over a socket made inside a namespace: its requests act there.
/// The connection task ends when the handle's last clone is dropped or it is aborted.
pub(crate) fn connect_in(netlink: OwnedFd) -> (Handle, tokio::task::JoinHandle<()>) {
    // SAFETY: the fd is a netlink socket we own; ownership passes to the TokioSocket.
    let socket = unsafe { TokioSocket::from_raw_fd(netlink.into_raw_fd()) };
    let (conn, handle, _) = rtnetlink::from_socket(socket);
    (handle, tokio::spawn(conn))
}

/// The shared namespace's side, through a connection inside it: loopback and `eth0` up
/// (without IPv6), the pod CIDR on-link on `eth0` and the default route via the gateway,
/// but no address of its own: each pod's /32 is added as it comes, and every socket made
/// there binds one. Idempotent. Returns `eth0`'s index.
/// The shared namespace's own address on its eth0 (host scope: never a packet's source).
pub(crate) const SHARED_ANCHOR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

pub(crate) async fn configure_shared_side(
    handle: &Handle,
    cidr: ipnet::Ipv4Net,
    gateway: Ipv4Addr,
    mac: [u8; 6],
) -> Result<u32, Error> {
    lo_up(handle).await?;
    let index = eth0_index(handle).await?;
    // A MAC known in advance: the service proxy tells this namespace's packets by it.
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(nl("set the shared eth0's MAC"))?;
    eth0_up(handle, index).await?;
    // An address of eth0's own, never a source: when the last IPv4 address of an
    // interface goes, Linux flushes every route through it (`fib_disable_ip`), and the
    // next pod's address would have no way back to the node.
    let mut anchor = handle.address().add(index, IpAddr::V4(SHARED_ANCHOR), 32);
    anchor.message_mut().header.scope = netlink_packet_route::address::AddressScope::Host;
    match anchor.execute().await {
        Ok(()) => {}
        Err(e) if matches!(errno(&e), Some(EEXIST)) => {}
        Err(e) => return Err(nl(format!("add {SHARED_ANCHOR}/32 to the shared eth0"))(e)),
    }
    let on_link = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .output_interface(index)
        .scope(netlink_packet_route::route::RouteScope::Link)
        .build();
    add_route(handle, on_link, || format!("route to {cidr}")).await?;
    add_route(handle, default_route(index, gateway), || {
        format!("default route via {gateway}")
    })
    .await?;
    Ok(index)
}

/// Forgets the neighbour entry for `ip` on link `index` (the host's, on the bridge), so
/// the next packet to it asks again who has it: after the address moved to another
/// interface (another MAC). Nothing to forget is fine.
pub(crate) async fn forget_neighbour(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
) -> Result<(), Error> {
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.ifindex = index;
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    match handle.neighbours().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ENOENT)) => Ok(()),
        Err(e) => Err(nl(format!("forget the neighbour {ip} on link {index}"))(e)),
    }
}

/// Announces that `ip` is at `eth0` of the calling thread's namespace now: one gratuitous
/// ARP request (sender and target both `ip`), broadcast. Every neighbour that has an entry
/// for `ip` (the node, other pods) takes the new MAC from it at once, instead of sending
/// to the old one until its entry goes stale (half a minute or more), as the CNI bridge
/// plugin does for a new interface.
pub(crate) fn announce(ip: Ipv4Addr) -> std::io::Result<()> {
    announce_on("eth0", ip)
}

/// [`announce`] on `interface` of the calling thread's namespace.
pub(crate) fn announce_on(interface: &str, ip: Ipv4Addr) -> std::io::Result<()> {
    use nix::libc;
    let mac = nix::ifaddrs::getifaddrs()
        .map_err(std::io::Error::from)?
        .find(|a| a.interface_name == interface)
        .and_then(|a| a.address?.as_link_addr()?.addr())
        .ok_or_else(|| std::io::Error::other(format!("{interface} has no link address")))?;
    let index = nix::net::if_::if_nametoindex(interface).map_err(std::io::Error::from)?;
    let arp = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            arp as i32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let ip = ip.octets();
    let mut packet = Vec::with_capacity(28);
    packet.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    packet.extend_from_slice(&mac);
    packet.extend_from_slice(&ip);
    packet.extend_from_slice(&[0; 6]);
    packet.extend_from_slice(&ip);
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = arp;
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: the buffer and the address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
