//! Pod networking for the Skiff node agent.
//!
//! Every pod, Wasm or container, gets a network namespace of its own, pinned by a bind mount
//! under the state dir; a veth pair whose host end is a port of the node bridge and whose
//! other end is `eth0` in the pod; an IP from the node's pod CIDR; and a default route via
//! the gateway, the bridge's address (the first host of the CIDR). Pods on one node talk
//! over the bridge; the host reaches pods through the bridge's connected route; pods reach
//! the host at the gateway IP (not at 127.0.0.1, which in a pod is the pod's own loopback),
//! so a host service meant for pods must listen on the gateway IP or on all addresses.
//! Egress out of the host is masqueraded by one nftables table named after the bridge.
//!
//! Making a namespace, a veth pair and its addresses costs milliseconds; pod startup has
//! a budget of about one. So a warm pool of ready sandboxes, each with its IP, is kept
//! filled by a background task: [`PodNetwork::create`] takes one and rewrites the owner in
//! its allocation record, which costs a file write.
//!
//! A finished pod whose workloads could not change its namespace (a Wasm pod) gives its
//! sandbox back to the pool when the namespace holds no socket any more
//! ([`PodNetwork::recycle`]): neither a build nor a teardown.
//!
//! A Wasm pod has no process of its own in the namespace: the agent's Wasm shim creates
//! the pod's sockets from a thread that has entered the namespace. A socket keeps the
//! namespace it was created in, so it can then be driven from any tokio thread. The shim
//! sees only the agent's `PodSandbox` (path, IP, shared or not), not this crate, so it does
//! that itself (`skiff_shim_wasm`'s `netns::PodNet`); [`Sandbox::run_in`],
//! [`Sandbox::bind_tcp`], [`Sandbox::outgoing_tcp`] and [`Sandbox::destination`] are the
//! same rules for callers that hold a [`Sandbox`] (this crate's tests among them).
//!
//! A pod whose every socket the agent makes (a wasi:http component that imports no
//! wasi:sockets: the agent listens for it and sends its requests) needs no namespace of its
//! own: [`PodNetwork::create_address_only`] gives it an IP as a /32 address in one
//! namespace shared by all such pods of the node (one veth pair into the bridge, made on
//! first use): one netlink message instead of a namespace, a veth pair and a bridge port
//! (about 28 µs against 1 ms of the kernel's time here; `examples/kernel_costs.sh`), and no
//! bridge port taken. Pods, the node and, once routed, other nodes reach it as any pod IP.
//! Its sockets bind its IP ([`Sandbox::bind_tcp`], [`Sandbox::outgoing_tcp`]); a loopback
//! destination means the pod itself ([`Sandbox::destination`]). Being a namespace apart,
//! its ports are not the host's (in the node's own namespace a pod on `10.x:8080` and a host
//! service on `*:8080` would exclude each other). [`PodNetwork::promote`] gives such a pod a
//! namespace of its own later, with the same IP, when something of it needs one (a Linux
//! container, a debug container).

mod announce;
mod links;
mod netns;
mod nft;
mod peers;
mod state;

pub use nft::{delete_table as delete_nft_table, run as run_nft};
pub use peers::Peer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::state::{Allocator, Owner, Records};

/// Errors of pod networking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid network config: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("nft: {0}")]
    Nft(String),
    #[error("pod cidr {0} has no free address")]
    Exhausted(Ipv4Net),
    #[error("state dir {0} is held by another pod network")]
    Locked(PathBuf),
    #[error("pod network is shut down")]
    ShutDown,
    #[error("the pod at {0} has no network namespace of its own (an address-only sandbox)")]
    NoNamespace(Ipv4Addr),
    #[error(
        "the pod bridge has no free port: a Linux bridge holds {BRIDGE_PORTS} pod sandboxes, \
         warm ones included (give the node a lower --max-pods)"
    )]
    BridgeFull,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// How a node's pod network is set up.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The node bridge, e.g. `skiff0`: a letter then letters, digits or `_`, at most 15
    /// characters (the kernel's limit; the nftables table has the same name).
    pub bridge: String,
    /// The node's podCIDR, e.g. 10.244.0.0/24. The first host is the gateway, on the bridge.
    pub pod_cidr: Ipv4Net,
    /// Namespace bind mounts and IP allocations, e.g. `/run/skiff/net/<bridge>`. Survives
    /// agent restarts; must be on a file system where bind mounts work.
    pub state_dir: PathBuf,
    /// Ready sandboxes kept ahead of demand.
    pub warm_pool: usize,
    /// Masquerade traffic from pods to addresses outside the pod CIDR.
    pub masquerade: bool,
}

/// A pod's network: its namespace, pinned at `netns`, with `eth0` at `ip`; or, for an
/// address-only sandbox, just `ip` in the namespace address-only pods share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub pod_uid: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// Prefix length of `ip` on `eth0` (the pod CIDR's).
    pub prefix_len: u8,
    /// The namespace file; `setns` on it enters the pod's network. `None` for an
    /// address-only sandbox.
    pub netns: Option<PathBuf>,
    /// The host end of the pod's veth pair, a port of the bridge. `None` for an
    /// address-only sandbox.
    pub host_veth: Option<String>,
    /// For an address-only sandbox, the namespace it shares with the node's other
    /// address-only pods, where its sockets are made (each binding its IP).
    pub shared_netns: Option<PathBuf>,
}

impl Sandbox {
    /// Runs `f` inside the pod's network namespace: the calling thread enters it for the
    /// call and goes back to its own afterwards (two `setns` calls), also when `f` panics.
    /// `f` must not block for long or start threads, which would stay in the pod's
    /// namespace.
    pub fn run_in<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        netns::run_in(self.namespace()?, f)
    }

    /// The namespace file, or [`Error::NoNamespace`] for an address-only sandbox.
    pub fn namespace(&self) -> Result<&Path, Error> {
        self.netns.as_deref().ok_or(Error::NoNamespace(self.ip))
    }

    /// Whether the pod has only an address in the shared namespace, none of its own.
    pub fn is_address_only(&self) -> bool {
        self.netns.is_none()
    }

    /// A socket created inside the pod's namespace (close-on-exec), for the caller to
    /// bind or connect; it stays in that namespace wherever it is used.
    pub fn socket(
        &self,
        domain: socket2::Domain,
        ty: socket2::Type,
        protocol: Option<socket2::Protocol>,
    ) -> Result<socket2::Socket, Error> {
        self.run_in(|| socket2::Socket::new(domain, ty, protocol))?
            .map_err(|e| Error::io("create socket in pod netns", e))
    }

    /// A TCP listener bound inside the pod's namespace: non-blocking, SO_REUSEADDR, a
    /// backlog of 1024. Hand it to `tokio::net::TcpListener::from_std`. For an
    /// address-only sandbox, bound in the shared namespace to the pod's IP (the
    /// unspecified address stands for it; any other address is refused).
    pub fn bind_tcp(&self, addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
        let addr = self.own_address(addr)?;
        self.run_in_socket_netns(|| -> io::Result<std::net::TcpListener> {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            Ok(s.into())
        })?
        .map_err(|e| Error::io(format!("bind {addr} in pod netns"), e))
    }

    /// A UDP socket bound inside the pod's namespace, non-blocking (for an address-only
    /// sandbox, to the pod's IP as [`Sandbox::bind_tcp`] binds).
    pub fn bind_udp(&self, addr: SocketAddr) -> Result<std::net::UdpSocket, Error> {
        let addr = self.own_address(addr)?;
        self.run_in_socket_netns(|| -> io::Result<std::net::UdpSocket> {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })?
        .map_err(|e| Error::io(format!("bind udp {addr} in pod netns"), e))
    }

    /// A TCP socket for an outgoing connection of the pod, made in its namespace (for an
    /// address-only sandbox, in the shared one and bound to the pod's IP, so that the peer
    /// sees the pod's address), close-on-exec, non-blocking: connect it with
    /// `tokio::net::TcpSocket::from_std_stream`. Send it to [`Sandbox::destination`].
    pub fn outgoing_tcp(&self, ipv6: bool) -> Result<socket2::Socket, Error> {
        let domain = if ipv6 {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let address_only = self.is_address_only();
        let ip = self.ip;
        self.run_in_socket_netns(|| -> io::Result<socket2::Socket> {
            let s =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            s.set_nonblocking(true)?;
            if address_only && !ipv6 {
                s.bind(&SocketAddr::new(ip.into(), 0).into())?;
            }
            Ok(s)
        })?
        .map_err(|e| Error::io("outgoing socket in the pod's netns", e))
    }

    /// Where a connection of the pod to `addr` goes: for an address-only sandbox, which
    /// has no loopback of its own, a loopback address means the pod itself (its IP), as
    /// 127.0.0.1 in a pod's own namespace reaches its own listeners and never the node's.
    pub fn destination(&self, addr: SocketAddr) -> SocketAddr {
        if self.is_address_only() && addr.ip().is_loopback() {
            SocketAddr::new(self.ip.into(), addr.port())
        } else {
            addr
        }
    }

    /// `f` where the pod's sockets are made: in its namespace, or for an address-only
    /// sandbox in the shared one.
    fn run_in_socket_netns<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        let ns = self.netns.as_ref().or(self.shared_netns.as_ref());
        netns::run_in(ns.ok_or(Error::NoNamespace(self.ip))?, f)
    }

    /// The address a socket of the pod binds: as asked in its own namespace; for an
    /// address-only sandbox, the pod's IP for the unspecified address, and nothing else.
    fn own_address(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        if self.netns.is_some() {
            return Ok(addr);
        }
        match addr.ip() {
            ip if ip.is_unspecified() || ip == self.ip => {
                Ok(SocketAddr::new(self.ip.into(), addr.port()))
            }
            ip => Err(Error::Config(format!(
                "an address-only pod binds only its own IP {}, not {ip}",
                self.ip
            ))),
        }
    }
}

/// Counts, for monitoring and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Sandboxes assigned to pods.
    pub pods: usize,
    /// Ready sandboxes in the warm pool.
    pub pool: usize,
    /// Pool sandboxes being built.
    pub filling: usize,
    /// Pod IPs allocated (pods, pool, and sandboxes being built or torn down).
    pub ips_in_use: usize,
    /// Pod IPs the CIDR has in all.
    pub ips_total: usize,
}

/// The pod network of one node. Cheap to clone; all clones share one state. Dropping the
/// last clone stops the background refill and leaves every sandbox in place for the next
/// [`PodNetwork::new`] on the same state dir, as an agent crash would.
#[derive(Clone)]
pub struct PodNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    config: NetConfig,
    handle: rtnetlink::Handle,
    conn: JoinHandle<()>,
    bridge_index: u32,
    gateway: Ipv4Addr,
    veth_prefix: String,
    netns_dir: PathBuf,
    records: Records,
    state: Mutex<State>,
    refill: Arc<Notify>,
    refill_task: Mutex<Option<JoinHandle<()>>>,
    /// The namespace of the address-only pods, made (or adopted) on first use.
    shared: tokio::sync::OnceCell<Shared>,
    /// Routes to other nodes' pod CIDRs this node added (see `peers`), by CIDR.
    peer_routes: tokio::sync::Mutex<std::collections::BTreeMap<Ipv4Net, Ipv4Addr>>,
    /// Load balancer addresses this node holds (see `announce`), with their link.
    announced: tokio::sync::Mutex<std::collections::BTreeMap<Ipv4Addr, u32>>,
    _lock: Flock<File>,
}

/// The namespace every address-only pod of the node shares: one veth pair into the bridge
/// (host end `<veth prefix>sh`), the pod CIDR on-link and the default route via the
/// gateway, and each pod's IP as a /32 on its `eth0`. The host answers nothing for these
/// addresses: ARP for them reaches this `eth0` through the bridge, as for any pod. Being
/// a namespace of its own, its ports are not the host's: a host service on `*:8080` and a
/// pod listening on its IP's 8080 do not meet. Its sockets are the agent's, each bound to
/// its pod's IP.
struct Shared {
    handle: rtnetlink::Handle,
    conn: JoinHandle<()>,
    eth0: u32,
}

struct State {
    alloc: Allocator,
    pods: HashMap<String, Sandbox>,
    pool: VecDeque<Sandbox>,
    /// Pool sandboxes being built.
    filling: usize,
    /// Sandboxes being built for a pod, the pool being empty.
    building: usize,
    closed: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.refill_task.get_mut().ok().and_then(|t| t.take()) {
            t.abort();
        }
        if let Some(shared) = self.shared.get() {
            shared.conn.abort();
        }
        self.conn.abort();
    }
}

impl PodNetwork {
    /// Sets up the node's pod network: creates or adopts the bridge with the gateway IP,
    /// turns on IPv4 forwarding, loads the masquerade table if asked, and recovers the
    /// sandboxes recorded in the state dir (those that are whole; the rest is cleaned up).
    /// The warm pool then fills in the background; [`PodNetwork::fill_pool`] waits for it.
    pub async fn new(config: NetConfig) -> Result<Self, Error> {
        let config = validate(config)?;
        let netns_dir = config.state_dir.join("netns");
        let ips_dir = config.state_dir.join("ips");
        for d in [&config.state_dir, &netns_dir, &ips_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        let lock = lock_state_dir(&config.state_dir).await?;
        netns::prepare_dir(&netns_dir)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| Error::io("enable ip_forward", e))?;

        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("open netlink socket", e))?;
        let conn = tokio::spawn(conn);
        let alloc = Allocator::new(config.pod_cidr);
        let gateway = alloc.gateway();
        let hash = fnv1a(config.bridge.as_bytes());
        let bridge_index = links::ensure_bridge(
            &handle,
            &config.bridge,
            links::bridge_mac(hash),
            gateway,
            config.pod_cidr.prefix_len(),
        )
        .await
        .inspect_err(|_| conn.abort())?;
        if config.masquerade {
            nft::load_masquerade(&config.bridge, &config.bridge, config.pod_cidr)
                .await
                .inspect_err(|_| conn.abort())?;
        }

        let config_peers_file = config.state_dir.join("peers");
        let config_announced_file = config.state_dir.join("announced");
        let inner = Arc::new(Inner {
            veth_prefix: format!("sk{:05x}", hash & 0xfffff),
            config,
            handle,
            conn,
            bridge_index,
            gateway,
            netns_dir,
            records: Records::new(ips_dir),
            state: Mutex::new(State {
                alloc,
                pods: HashMap::new(),
                pool: VecDeque::new(),
                filling: 0,
                building: 0,
                closed: false,
            }),
            refill: Arc::new(Notify::new()),
            refill_task: Mutex::new(None),
            shared: tokio::sync::OnceCell::new(),
            peer_routes: tokio::sync::Mutex::new(state::read_pairs(&config_peers_file)),
            announced: tokio::sync::Mutex::new(state::read_pairs(&config_announced_file)),
            _lock: lock,
        });
        inner.recover().await?;
        let task = tokio::spawn(refill_loop(Arc::downgrade(&inner), inner.refill.clone()));
        *inner.refill_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(PodNetwork { inner })
    }

    /// The pod's sandbox, made or taken from the warm pool. Idempotent: a pod that has
    /// one gets the same one back.
    pub async fn create(&self, pod_uid: &str) -> Result<Sandbox, Error> {
        check_uid(pod_uid)?;
        let inner = &self.inner;
        {
            let mut st = inner.lock();
            if st.closed {
                return Err(Error::ShutDown);
            }
            if let Some(s) = st.pods.get(pod_uid) {
                return Ok(s.clone());
            }
            if let Some(mut s) = st.pool.pop_front() {
                if let Err(e) = inner.records.write(s.ip, &Owner::Pod(pod_uid.to_string())) {
                    st.pool.push_front(s);
                    return Err(e);
                }
                s.pod_uid = pod_uid.to_string();
                st.pods.insert(s.pod_uid.clone(), s.clone());
                drop(st);
                inner.refill.notify_one();
                return Ok(s);
            }
        }
        // The pool is empty: build one now, and let the refill catch up behind it.
        inner.lock().building += 1;
        inner.refill.notify_one();
        let built = inner.build(Owner::Pod(pod_uid.to_string())).await;
        inner.lock().building -= 1;
        let mut built = built?;
        // Either ours is kept, or it is not needed and goes: `None` when shutting down,
        // `Some` with the sandbox a concurrent create of the same pod made first.
        let winner = {
            let mut st = inner.lock();
            if st.closed {
                None
            } else if let Some(existing) = st.pods.get(pod_uid).cloned() {
                // Ours becomes a pool sandbox, if its record can say so.
                if inner.records.write(built.ip, &Owner::Pool).is_ok() {
                    built.pod_uid.clear();
                    st.pool.push_back(built);
                    return Ok(existing);
                }
                Some(existing)
            } else {
                built.pod_uid = pod_uid.to_string();
                st.pods.insert(built.pod_uid.clone(), built.clone());
                return Ok(built);
            }
        };
        inner.destroy(&built).await?;
        winner.ok_or(Error::ShutDown)
    }

    /// An address-only sandbox for the pod: an IP of the pod CIDR as a /32 address in the
    /// namespace address-only pods share, none of its own (see the crate's docs for which
    /// pods may have one).
    /// Idempotent: a pod that has a sandbox of either kind gets it back.
    pub async fn create_address_only(&self, pod_uid: &str) -> Result<Sandbox, Error> {
        check_uid(pod_uid)?;
        let inner = &self.inner;
        let s = {
            let mut st = inner.lock();
            if st.closed {
                return Err(Error::ShutDown);
            }
            if let Some(s) = st.pods.get(pod_uid) {
                return Ok(s.clone());
            }
            // Known as the pod's before the address exists: a concurrent create gets it.
            let ip = inner.allocate_recorded(&mut st, &Owner::Address(pod_uid.into()))?;
            let s = inner.address_only(ip, pod_uid.into());
            st.pods.insert(pod_uid.into(), s.clone());
            s
        };
        if let Err(e) = inner.build_at(&s).await {
            inner.lock().pods.remove(pod_uid);
            let _ = inner.destroy(&s).await;
            return Err(e);
        }
        Ok(s)
    }

    /// Gives a pod with an address-only sandbox a namespace of its own, with the same IP:
    /// the address leaves the shared namespace and becomes the pod's `eth0`. Sockets the
    /// agent bound to the IP in the shared namespace keep working for the connections they
    /// hold, but
    /// new connections go to the namespace: bind there again. Returns the pod's sandbox
    /// (unchanged if it has a namespace already). On failure the pod keeps its address.
    pub async fn promote(&self, pod_uid: &str) -> Result<Sandbox, Error> {
        let inner = &self.inner;
        let old = {
            let st = inner.lock();
            if st.closed {
                return Err(Error::ShutDown);
            }
            match st.pods.get(pod_uid) {
                None => return Err(Error::Config(format!("pod {pod_uid} has no sandbox"))),
                Some(s) if !s.is_address_only() => return Ok(s.clone()),
                Some(s) => s.clone(),
            }
        };
        let full = inner.sandbox_for(old.ip, pod_uid.into());
        inner.unbuild(&old).await?;
        let built = async {
            inner.build_at(&full).await?;
            inner.records.write(full.ip, &Owner::Pod(pod_uid.into()))
        }
        .await;
        if let Err(e) = built {
            let _ = inner.unbuild(&full).await;
            inner.build_at(&old).await?;
            return Err(e);
        }
        // The node and pods that spoke to the IP have the shared namespace's MAC for it.
        if let Err(e) = links::forget_neighbour(&inner.handle, inner.bridge_index, full.ip).await {
            tracing::warn!(ip = %full.ip, "after a promotion: {e}");
        }
        let announced = match &full.netns {
            Some(ns) => netns::run_in(ns, || links::announce(full.ip))
                .and_then(|r| r.map_err(|e| Error::io("gratuitous ARP", e))),
            None => Ok(()),
        };
        if let Err(e) = announced {
            tracing::warn!(ip = %full.ip, "announcing a promoted pod's address: {e}");
        }
        inner.lock().pods.insert(pod_uid.into(), full.clone());
        Ok(full)
    }

    /// The pod's sandbox, if it has one.
    pub async fn get(&self, pod_uid: &str) -> Option<Sandbox> {
        self.inner.lock().pods.get(pod_uid).cloned()
    }

    /// Releases the pod's veth, namespace and IP; when it returns, all three are gone.
    /// Idempotent: an unknown pod is not an error. Takes tens of milliseconds (the kernel
    /// tears the namespace down in the background and this waits for it), but concurrent
    /// removals share that cost: do not serialize them. Close the pod's sockets first: an
    /// open socket keeps the namespace alive, and the veth is then deleted explicitly
    /// after two seconds.
    pub async fn remove(&self, pod_uid: &str) -> Result<(), Error> {
        let Some(s) = self.inner.lock().pods.remove(pod_uid) else {
            return Ok(());
        };
        if let Err(e) = self.inner.destroy(&s).await {
            // Keep it known, so that a retry (or the next restart) finishes the job.
            self.inner.lock().pods.insert(s.pod_uid.clone(), s);
            return Err(e);
        }
        // A bridge that was full has a port free again for the pool.
        self.inner.refill.notify_one();
        Ok(())
    }

    /// Gives the pod's sandbox back to the warm pool, for another pod, when its namespace
    /// holds no socket any more (no TCP, UDP or raw socket, not even one in TIME_WAIT)
    /// and the pool has room; otherwise removes it as [`PodNetwork::remove`] does. Returns
    /// whether it was recycled.
    ///
    /// Only for pods whose workloads could not change the namespace itself (addresses,
    /// routes, firewall rules, sysctls), such as Wasm guests, which can only open sockets
    /// in it: a recycled sandbox must be as good as a new one. Its IP goes back with it,
    /// behind the pool's other sandboxes, as Kubernetes reuses a finished pod's IP.
    /// Building a sandbox and tearing one down cost milliseconds of kernel work each
    /// (netlink, namespace cleanup, RCU grace periods); recycling costs a check of the
    /// namespace's socket tables and a record write.
    pub async fn recycle(&self, pod_uid: &str) -> Result<bool, Error> {
        let inner = &self.inner;
        let Some(s) = inner.lock().pods.get(pod_uid).cloned() else {
            return Ok(false);
        };
        let Some(ns) = &s.netns else {
            // Nothing to keep: an address costs less to add again than to account for.
            return self.remove(pod_uid).await.map(|()| false);
        };
        let empty = netns::run_in(ns, netns::holds_no_sockets)
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if empty {
            let mut st = inner.lock();
            let room =
                st.pool.len() + st.filling < inner.config.warm_pool.max(1) * RECYCLED_POOL_FACTOR;
            if !st.closed
                && room
                && st.pods.get(pod_uid) == Some(&s)
                && inner.records.write(s.ip, &Owner::Pool).is_ok()
            {
                let mut s = st.pods.remove(pod_uid).expect("checked above");
                s.pod_uid.clear();
                st.pool.push_back(s);
                return Ok(true);
            }
        }
        self.remove(pod_uid).await.map(|()| false)
    }

    /// Every pod's sandbox (not the pool's): after an agent restart, the agent removes
    /// those whose pods are gone.
    pub async fn list(&self) -> Vec<Sandbox> {
        self.inner.lock().pods.values().cloned().collect()
    }

    /// Fills the warm pool now and waits until it is full, e.g. before the node reports
    /// Ready.
    pub async fn fill_pool(&self) -> Result<(), Error> {
        loop {
            match self.inner.reserve_pool_slot() {
                Reserve::Build => self.inner.build_pool_sandbox().await?,
                Reserve::Busy => tokio::time::sleep(Duration::from_millis(1)).await,
                Reserve::Full => return Ok(()),
                Reserve::Closed => return Err(Error::ShutDown),
            }
        }
    }

    pub fn stats(&self) -> NetStats {
        let st = self.inner.lock();
        NetStats {
            pods: st.pods.len(),
            pool: st.pool.len(),
            filling: st.filling,
            ips_in_use: st.alloc.in_use(),
            ips_total: st.alloc.capacity() as usize,
        }
    }

    /// Host veth names of this network start with this (7 characters derived from the
    /// bridge name).
    pub fn veth_prefix(&self) -> &str {
        &self.inner.veth_prefix
    }

    /// The MAC of the namespace address-only pods share: packets from any of them carry it
    /// as their source on the bridge (the service proxy masquerades service traffic from
    /// there, since replies between two of them would never leave the namespace).
    pub fn shared_mac(&self) -> [u8; 6] {
        links::shared_mac(fnv1a(self.inner.config.bridge.as_bytes()))
    }

    /// The node's address on its bridge, the pods' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway
    }

    pub fn config(&self) -> &NetConfig {
        &self.inner.config
    }

    /// Routes the pod CIDRs of the cluster's other nodes through their addresses
    /// (host-gw), and keeps traffic between pods off the masquerade. Peers at one of this
    /// host's own addresses (agents sharing a machine) need no route. Level-triggered: the
    /// routes become `peers`, whatever they were.
    pub async fn set_peers(&self, peers: &[Peer]) -> Result<(), Error> {
        let inner = &self.inner;
        let local: Vec<Ipv4Addr> = links::ipv4_addresses(&inner.handle)
            .await?
            .into_iter()
            .map(|(_, ip)| ip)
            .collect();
        let wanted: std::collections::BTreeMap<Ipv4Net, Ipv4Addr> = peers
            .iter()
            .filter(|p| {
                p.pod_cidr != inner.config.pod_cidr
                    && !p.address.is_loopback()
                    && !local.contains(&p.address)
            })
            .map(|p| (p.pod_cidr, p.address))
            .collect();
        let mut installed = inner.peer_routes.lock().await;
        let (now, result) = peers::apply(&inner.handle, &installed, &wanted).await;
        if now != *installed {
            *installed = now;
            state::write_pairs(&inner.config.state_dir.join("peers"), &*installed)?;
        }
        result?;
        if inner.config.masquerade {
            let mut cidrs: Vec<Ipv4Net> = peers.iter().map(|p| p.pod_cidr).collect();
            cidrs.push(inner.config.pod_cidr);
            cidrs.sort();
            cidrs.dedup();
            nft::set_cluster(&inner.config.bridge, &cidrs).await?;
        }
        Ok(())
    }

    /// Holds the load balancer addresses `ips` on the interface of the node's address
    /// `uplink` and announces them (see `announce`); addresses held before and not in
    /// `ips` are removed.
    pub async fn set_announced(&self, uplink: Ipv4Addr, ips: &[Ipv4Addr]) -> Result<(), Error> {
        let inner = &self.inner;
        let mut held = inner.announced.lock().await;
        let file = inner.config.state_dir.join("announced");
        let (now, result) = announce::apply(&inner.handle, &file, &held, uplink, ips).await;
        *held = now;
        result
    }

    /// Stops the pool refill. With `remove_all`, also removes every sandbox (pods' and
    /// pool's), the bridge, the nftables table and the state dir's contents; without, leaves
    /// them for the next [`PodNetwork::new`].
    pub async fn shutdown(self, remove_all: bool) -> Result<(), Error> {
        let inner = &self.inner;
        inner.lock().closed = true;
        inner.refill.notify_one();
        let task = inner
            .refill_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // Builds under way (fill_pool, cold creates) finish and see `closed`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && {
            let st = inner.lock();
            st.filling + st.building > 0
        } {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !remove_all {
            return Ok(());
        }
        let all: Vec<Sandbox> = {
            let mut st = inner.lock();
            let mut v: Vec<Sandbox> = st.pods.drain().map(|(_, s)| s).collect();
            v.extend(st.pool.drain(..));
            v
        };
        let mut first_err = None;
        // All at once, so the kernel tears the namespaces down in one batch.
        let results = futures::future::join_all(all.iter().map(|s| inner.destroy(s))).await;
        for r in results {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        // Whatever an aborted build may have left.
        if let Err(e) = inner.sweep(&HashSet::new()).await {
            first_err.get_or_insert(e);
        }
        if let Err(e) = links::delete_link(&inner.handle, &inner.config.bridge).await {
            first_err.get_or_insert(e);
        }
        {
            let mut installed = inner.peer_routes.lock().await;
            let (now, result) = peers::apply(&inner.handle, &installed, &Default::default()).await;
            *installed = now;
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
            let _ = std::fs::remove_file(inner.config.state_dir.join("peers"));
            let mut held = inner.announced.lock().await;
            let file = inner.config.state_dir.join("announced");
            let (now, result) =
                announce::apply(&inner.handle, &file, &held, Ipv4Addr::UNSPECIFIED, &[]).await;
            *held = now;
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
            let _ = std::fs::remove_file(file);
        }
        if inner.config.masquerade
            && let Err(e) = nft::delete_table(&inner.config.bridge).await
        {
            first_err.get_or_insert(e);
        }
        netns::release_dir(&inner.netns_dir);
        let _ = std::fs::remove_dir(&inner.netns_dir);
        let _ = std::fs::remove_dir(inner.records.dir());
        let _ = std::fs::remove_file(inner.config.state_dir.join("lock"));
        let _ = std::fs::remove_dir(&inner.config.state_dir);
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Recycled sandboxes may fill the pool up to this many times its size: in a burst of short
/// pods the refill builds while finished pods give theirs back, and a sandbox kept is one
/// neither built nor torn down.
const RECYCLED_POOL_FACTOR: usize = 2;

/// How long `remove` waits for the kernel to take a pod's veth away with its namespace
/// before deleting it itself.
const EXPLICIT_DELETE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, PartialEq)]
enum Reserve {
    Build,
    Busy,
    Full,
    Closed,
}

/// Ports a Linux bridge takes (`BR_MAX_PORTS` is 1,024 and port 0 is not used): every
/// sandbox, a pod's or the pool's, is one.
pub const BRIDGE_PORTS: usize = 1023;

/// Whether the warm pool may build another sandbox: not past its size, nor past what the
/// bridge holds with the pods' sandboxes (the kernel refuses the veth with EXFULL).
fn pool_reserve(closed: bool, pods: usize, pool: usize, filling: usize, warm: usize) -> Reserve {
    if closed {
        Reserve::Closed
    } else if pool + filling < warm && pods + pool + filling < BRIDGE_PORTS {
        Reserve::Build
    } else if filling > 0 {
        Reserve::Busy
    } else {
        Reserve::Full
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (every change is one statement), so
        // a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn veth_name(&self, ip: Ipv4Addr) -> String {
        let off = u32::from(ip) - u32::from(self.config.pod_cidr.network());
        format!("{}{off:x}", self.veth_prefix)
    }

    fn sandbox_for(&self, ip: Ipv4Addr, pod_uid: String) -> Sandbox {
        let host_veth = self.veth_name(ip);
        Sandbox {
            pod_uid,
            ip,
            gateway: self.gateway,
            prefix_len: self.config.pod_cidr.prefix_len(),
            netns: Some(self.netns_dir.join(&host_veth)),
            host_veth: Some(host_veth),
            shared_netns: None,
        }
    }

    fn address_only(&self, ip: Ipv4Addr, pod_uid: String) -> Sandbox {
        Sandbox {
            netns: None,
            host_veth: None,
            shared_netns: Some(self.netns_dir.join(self.shared_name())),
            ..self.sandbox_for(ip, pod_uid)
        }
    }

    /// The shared namespace's pin and host veth name (not a hex offset, so never a pod's).
    fn shared_name(&self) -> String {
        format!("{}sh", self.veth_prefix)
    }

    async fn shared(&self) -> Result<&Shared, Error> {
        self.shared.get_or_try_init(|| self.open_shared(None)).await
    }

    /// Adopts the shared namespace when it is whole (pinned, its veth on our bridge;
    /// `whole` when the caller knows), otherwise clears what is left of it and makes it;
    /// then (again) configures it.
    async fn open_shared(&self, whole: Option<bool>) -> Result<Shared, Error> {
        let name = self.shared_name();
        let path = self.netns_dir.join(&name);
        let whole = match whole {
            Some(whole) => whole,
            None => {
                netns::is_pinned(&path)
                    && links::link_by_name(&self.handle, &name)
                        .await?
                        .is_some_and(|l| l.controller == Some(self.bridge_index))
            }
        };
        let netlink = if whole {
            netns::netlink_socket_in(&path)?
        } else {
            netns::remove(&path);
            links::delete_link(&self.handle, &name).await?;
            let ns = netns::create(path.clone()).await?;
            links::add_veth(&self.handle, &name, self.bridge_index, &ns.ns).await?;
            ns.netlink
        };
        let (handle, conn) = links::connect_in(netlink);
        let mac = links::shared_mac(fnv1a(self.config.bridge.as_bytes()));
        match links::configure_shared_side(&handle, self.config.pod_cidr, self.gateway, mac).await {
            Ok(eth0) => Ok(Shared { handle, conn, eth0 }),
            Err(e) => {
                conn.abort();
                Err(e)
            }
        }
    }

    fn reserve_pool_slot(&self) -> Reserve {
        let mut st = self.lock();
        let reserve = pool_reserve(
            st.closed,
            st.pods.len(),
            st.pool.len(),
            st.filling,
            self.config.warm_pool,
        );
        if reserve == Reserve::Build {
            st.filling += 1;
        }
        reserve
    }

    /// Builds one pool sandbox for a slot reserved by `reserve_pool_slot`.
    async fn build_pool_sandbox(&self) -> Result<(), Error> {
        let built = self.build(Owner::Pool).await;
        let mut st = self.lock();
        st.filling -= 1;
        // Even when shutting down: shutdown(true) removes it with the rest, and otherwise
        // it stays recorded as a pool sandbox that the next start adopts.
        st.pool.push_back(built?);
        Ok(())
    }

    /// Takes an IP and records it for `owner` before anything of its sandbox exists, so
    /// that a crash mid-build is cleaned up by the next recovery.
    fn allocate_recorded(&self, st: &mut State, owner: &Owner) -> Result<Ipv4Addr, Error> {
        let ip = st
            .alloc
            .allocate()
            .ok_or(Error::Exhausted(self.config.pod_cidr))?;
        if let Err(e) = self.records.write(ip, owner) {
            st.alloc.release(ip);
            return Err(e);
        }
        Ok(ip)
    }

    /// Allocates an IP, records it for `owner`, and builds the sandbox. On failure nothing
    /// is left behind.
    async fn build(&self, owner: Owner) -> Result<Sandbox, Error> {
        let ip = self.allocate_recorded(&mut self.lock(), &owner)?;
        let s = match owner {
            Owner::Pool => self.sandbox_for(ip, String::new()),
            Owner::Pod(uid) => self.sandbox_for(ip, uid),
            Owner::Address(uid) => self.address_only(ip, uid),
        };
        match self.build_at(&s).await {
            Ok(()) => Ok(s),
            Err(e) => {
                let _ = self.destroy(&s).await;
                Err(e)
            }
        }
    }

    async fn build_at(&self, s: &Sandbox) -> Result<(), Error> {
        let (Some(path), Some(host_veth)) = (&s.netns, &s.host_veth) else {
            let shared = self.shared().await?;
            return links::add_address_32(&shared.handle, shared.eth0, s.ip).await;
        };
        let ns = netns::create(path.clone()).await?;
        links::add_veth(&self.handle, host_veth, self.bridge_index, &ns.ns).await?;
        links::configure_pod_side(ns.netlink, s.ip, s.prefix_len, s.gateway).await
    }

    /// Unpins the namespace, waits for the veth pair to go with it, then deletes the IP
    /// record and frees the IP. Each step tolerates what is already gone.
    ///
    /// Why not delete the veth first: deleting one link waits for an RCU grace period
    /// while holding the kernel's rtnl lock, about 20 ms here, which stalls every other
    /// netlink user (pool refills included) and serializes removals. A namespace nothing
    /// holds any more is torn down by the kernel in the background, all dying namespaces
    /// in one batch, and its devices (our veth pair) with it: concurrent removals share
    /// one grace period. If something still holds the namespace (a pod socket left open),
    /// the veth is deleted explicitly after a while.
    async fn destroy(&self, s: &Sandbox) -> Result<(), Error> {
        self.unbuild(s).await?;
        self.records.remove(s.ip)?;
        self.lock().alloc.release(s.ip);
        Ok(())
    }

    /// Takes down what `build_at` made, keeping the IP's record and allocation.
    async fn unbuild(&self, s: &Sandbox) -> Result<(), Error> {
        let (Some(path), Some(host_veth)) = (&s.netns, &s.host_veth) else {
            let shared = self.shared().await?;
            return links::del_address_32(&shared.handle, shared.eth0, s.ip).await;
        };
        netns::remove(path);
        let deadline = Instant::now() + EXPLICIT_DELETE_AFTER;
        let mut pause = Duration::from_millis(1);
        while links::exists(host_veth) {
            if Instant::now() >= deadline {
                links::delete_link(&self.handle, host_veth).await?;
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Adopts the sandboxes recorded in the state dir that are whole: a pinned namespace
    /// and a host veth on our bridge, or for an address-only sandbox its address in the
    /// shared namespace (itself whole). Everything else of ours is removed.
    async fn recover(&self) -> Result<(), Error> {
        let state::Loaded { records, junk } = self.records.load()?;
        for j in junk {
            let _ = std::fs::remove_file(j);
        }
        let ours: HashSet<String> = links::all_links(&self.handle)
            .await?
            .into_iter()
            .filter(|l| {
                l.name.starts_with(&self.veth_prefix) && l.controller == Some(self.bridge_index)
            })
            .map(|l| l.name)
            .collect();
        // The shared namespace's addresses, if it is there whole (opening it adopts it).
        let shared_name = self.shared_name();
        let shared_whole =
            ours.contains(&shared_name) && netns::is_pinned(&self.netns_dir.join(&shared_name));
        let addresses: HashSet<Ipv4Addr> = if shared_whole {
            let shared = self
                .shared
                .get_or_try_init(|| self.open_shared(Some(true)))
                .await?;
            links::addresses_32(&shared.handle, shared.eth0)
                .await?
                .into_iter()
                .filter(|ip| *ip != links::SHARED_ANCHOR)
                .collect()
        } else {
            HashSet::new()
        };
        let mut keep = HashSet::new();
        let mut keep_addresses = HashSet::new();
        let mut broken = Vec::new();
        let whole_namespace =
            |veth: &String| ours.contains(veth) && netns::is_pinned(&self.netns_dir.join(veth));
        {
            let mut st = self.lock();
            for (ip, owner) in records {
                let valid = st.alloc.offset(ip).is_some();
                let veth = self.veth_name(ip);
                match owner {
                    Some(Owner::Address(uid))
                        if valid && addresses.contains(&ip) && !st.pods.contains_key(&uid) =>
                    {
                        st.alloc.mark(ip);
                        keep_addresses.insert(ip);
                        st.pods.insert(uid.clone(), self.address_only(ip, uid));
                    }
                    Some(owner @ (Owner::Pod(_) | Owner::Pool))
                        if valid && whole_namespace(&veth) =>
                    {
                        st.alloc.mark(ip);
                        let mut s = self.sandbox_for(ip, String::new());
                        keep.insert(veth);
                        match owner {
                            Owner::Pod(uid) if !st.pods.contains_key(&uid) => {
                                s.pod_uid = uid;
                                st.pods.insert(s.pod_uid.clone(), s);
                            }
                            // A pool sandbox, or a second one recorded for the same pod
                            // (a crash during a create race): back to the pool.
                            _ => {
                                if owner != Owner::Pool {
                                    self.records.write(ip, &Owner::Pool)?;
                                }
                                st.pool.push_back(s);
                            }
                        }
                    }
                    _ => broken.push(ip),
                }
            }
            st.alloc.resume_after_highest();
        }
        for ip in &broken {
            self.records.remove(*ip)?;
        }
        let adopted = keep.len() + keep_addresses.len();
        let mut removed = 0;
        // Pod addresses on the bridge: an earlier version put address-only pods there.
        for ip in links::addresses_32(&self.handle, self.bridge_index).await? {
            if self.config.pod_cidr.contains(&ip) {
                links::del_address_32(&self.handle, self.bridge_index, ip).await?;
                removed += 1;
            }
        }
        if let Some(shared) = self.shared.get() {
            for ip in addresses.difference(&keep_addresses) {
                links::del_address_32(&shared.handle, shared.eth0, *ip).await?;
                removed += 1;
            }
            keep.insert(shared_name);
        }
        removed += self.sweep(&keep).await?;
        tracing::info!(
            bridge = %self.config.bridge,
            adopted,
            removed,
            broken = broken.len(),
            "pod network recovered"
        );
        Ok(())
    }

    /// Removes every namespace pin and host veth of this network whose name is not in
    /// `keep`, and the records nobody holds. Returns how many things it removed.
    async fn sweep(&self, keep: &HashSet<String>) -> Result<usize, Error> {
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    netns::remove(&entry.path());
                    removed += 1;
                }
            }
        }
        for l in links::all_links(&self.handle).await? {
            if l.name.starts_with(&self.veth_prefix)
                && l.controller == Some(self.bridge_index)
                && !keep.contains(&l.name)
            {
                links::delete_link(&self.handle, &l.name).await?;
                removed += 1;
            }
        }
        // Records nobody holds: only sweep runs while no build is in flight (recovery,
        // shutdown), so every live sandbox is in the pods or the pool.
        if let Ok(loaded) = self.records.load() {
            let st = self.lock();
            for (ip, _) in loaded.records {
                if st.alloc.offset(ip).is_none() || !is_held(&st, ip) {
                    let _ = self.records.remove(ip);
                }
            }
        }
        Ok(removed)
    }
}

/// A pod uid fits a record's one line.
fn check_uid(pod_uid: &str) -> Result<(), Error> {
    if pod_uid.is_empty() || pod_uid.contains(['\n', '\0']) {
        return Err(Error::Config(format!("invalid pod uid {pod_uid:?}")));
    }
    Ok(())
}

fn is_held(st: &State, ip: Ipv4Addr) -> bool {
    st.pods.values().any(|s| s.ip == ip) || st.pool.iter().any(|s| s.ip == ip)
}

/// Keeps the pool full: wakes when a create took a sandbox or a remove freed a bridge
/// port, builds one at a time. Holds the network only weakly, so dropping the last
/// `PodNetwork` ends it.
async fn refill_loop(network: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let Some(inner) = network.upgrade() else {
            return;
        };
        match inner.reserve_pool_slot() {
            Reserve::Build => {
                if let Err(e) = inner.build_pool_sandbox().await {
                    tracing::warn!(bridge = %inner.config.bridge, error = %e, "warm pool refill failed");
                    drop(inner);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Reserve::Closed => return,
            Reserve::Busy | Reserve::Full => {
                drop(inner);
                wake.notified().await;
            }
        }
    }
}

fn validate(mut config: NetConfig) -> Result<NetConfig, Error> {
    let b = config.bridge.as_bytes();
    let ok_name = !b.is_empty()
        && b.len() <= 15
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !ok_name {
        return Err(Error::Config(format!(
            "bridge name {:?} must be a letter then letters, digits or _, at most 15 characters",
            config.bridge
        )));
    }
    if config.pod_cidr.prefix_len() > 30 {
        return Err(Error::Config(format!(
            "pod cidr {} leaves no address for pods",
            config.pod_cidr
        )));
    }
    config.pod_cidr = config.pod_cidr.trunc();
    let capacity = Allocator::new(config.pod_cidr).capacity() as usize;
    if config.warm_pool > capacity {
        return Err(Error::Config(format!(
            "warm pool of {} exceeds the {capacity} pod addresses of {}",
            config.warm_pool, config.pod_cidr
        )));
    }
    if !config.state_dir.is_absolute() {
        return Err(Error::Config(format!(
            "state dir {} must be absolute",
            config.state_dir.display()
        )));
    }
    Ok(config)
}

/// One pod network per state dir. A network dropped a moment ago may still be finishing a
/// pool build on a runtime thread; wait a little for it rather than race it.
async fn lock_state_dir(dir: &Path) -> Result<Flock<File>, Error> {
    let path = dir.join("lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(Error::Locked(dir.to_path_buf()));
            }
            Err((_, e)) => return Err(Error::io(format!("lock {}", path.display()), e.into())),
        }
    }
}

/// FNV-1a: a hash that stays the same across Rust releases, since veth names derived from
/// it must survive agent upgrades.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bridge: &str, cidr: &str) -> NetConfig {
        NetConfig {
            bridge: bridge.into(),
            pod_cidr: cidr.parse().unwrap(),
            state_dir: "/run/skiff/net/x".into(),
            warm_pool: 4,
            masquerade: false,
        }
    }

    #[test]
    fn the_pool_stops_short_of_a_full_bridge() {
        assert_eq!(pool_reserve(false, 0, 0, 0, 64), Reserve::Build);
        assert_eq!(pool_reserve(false, 0, 63, 1, 64), Reserve::Busy);
        assert_eq!(pool_reserve(false, 0, 64, 0, 64), Reserve::Full);
        // 1,000 pods on the node: the pool may hold only what the bridge has left.
        assert_eq!(pool_reserve(false, 1000, 22, 0, 64), Reserve::Build);
        assert_eq!(pool_reserve(false, 1000, 23, 0, 64), Reserve::Full);
        assert_eq!(pool_reserve(false, 1000, 22, 1, 64), Reserve::Busy);
        assert_eq!(pool_reserve(true, 0, 0, 0, 64), Reserve::Closed);
    }

    #[test]
    fn config_is_checked() {
        assert!(validate(config("skiff0", "10.244.0.0/24")).is_ok());
        assert!(validate(config("a-bridge", "10.244.0.0/24")).is_err());
        assert!(validate(config("abcdefghijklmnop", "10.244.0.0/24")).is_err());
        assert!(validate(config("skiff0", "10.244.0.0/31")).is_err());
        let mut c = config("skiff0", "10.244.0.0/29");
        c.warm_pool = 6;
        assert!(validate(c).is_err());
        let c = validate(config("skiff0", "10.244.0.77/24")).unwrap();
        assert_eq!(c.pod_cidr.to_string(), "10.244.0.0/24");
    }

    /// The agent shares one network across tasks and spawns its futures.
    #[allow(dead_code)]
    fn handles_and_futures_are_send() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PodNetwork>();
        send_sync::<Sandbox>();
        fn spawnable(net: PodNetwork) {
            tokio::spawn(async move {
                let s = net.create("uid").await?;
                net.remove(&s.pod_uid).await?;
                net.shutdown(true).await
            });
        }
    }

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let prefix = format!("sk{:05x}", fnv1a(b"skiff0") & 0xfffff);
        let longest = format!("{prefix}{:x}", u32::MAX);
        assert!(longest.len() <= 15, "{longest}");
        assert_ne!(fnv1a(b"skiff0"), fnv1a(b"skiff1"));
    }
}
