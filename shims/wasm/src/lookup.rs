//! `wasi:sockets/ip-name-lookup` by the pod's resolver. wasmtime-wasi resolves names with
//! the host process's (the node's `/etc/resolv.conf`), which knows nothing of the cluster;
//! Skiff shadows the interface in its component linker with one that asks the pod's
//! resolver ([`crate::netns::PodResolver`]: the pod's nameservers, search list and
//! `ndots`), as a container of the pod would.
//!
//! The name is resolved before `resolve-addresses` returns (the guest waits in an async
//! host call, as it would block in `getaddrinfo`); the stream then hands out the addresses
//! and its pollable is always ready.

use std::net::IpAddr;

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::host::Host;

/// The version of `wasi:sockets` wasmtime-wasi defines (guests' 0.2.x imports match it).
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// The addresses a lookup found, handed out one at a time.
pub struct Found(std::vec::IntoIter<IpAddr>);

#[async_trait::async_trait]
impl Pollable for Found {
    async fn ready(&mut self) {}
}

/// Replaces wasmtime-wasi's definitions of the interface in `linker` with the pod's.
pub fn shadow(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut i = linker.instance(INTERFACE)?;
    i.resource(
        "resolve-address-stream",
        ResourceType::host::<Found>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<Found>::new_own(rep))?;
            Ok(())
        },
    )?;
    i.func_wrap_async(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            Box::new(async move {
                // The network resource is the capability: it must be a live one.
                store.data_mut().table.get(&network)?;
                let resolver = store.data().hooks.net.resolver.clone();
                let found: Result<Vec<IpAddr>, ErrorCode> = if name.is_empty()
                    || name.len() > 253
                    || name.contains(['/', ' ', ':']) && name.parse::<std::net::Ipv6Addr>().is_err()
                {
                    Err(ErrorCode::InvalidArgument)
                } else {
                    match resolver.lookup(&name, 0).await {
                        Ok(addrs) => Ok(addrs.iter().map(|a| a.ip().to_canonical()).collect()),
                        Err(e) => {
                            tracing::debug!(%name, error = %e, "name lookup failed");
                            Err(ErrorCode::NameUnresolvable)
                        }
                    }
                };
                let result = match found {
                    Ok(ips) => Ok(store.data_mut().table.push(Found(ips.into_iter()))?),
                    Err(e) => Err(e),
                };
                Ok((result,))
            })
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (stream,): (Resource<Found>,)| {
            let found = store.data_mut().table.get_mut(&stream)?;
            let next: Result<Option<IpAddress>, ErrorCode> = Ok(found.0.next().map(Into::into));
            Ok((next,))
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (stream,): (Resource<Found>,)| {
            let pollable: Resource<DynPollable> =
                wasmtime_wasi::p2::subscribe(&mut store.data_mut().table, stream)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
