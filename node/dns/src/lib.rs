//! The cluster DNS of a Skiff node (CoreDNS's job in a kubeadm cluster, served by each
//! node for its own pods as NodeLocal DNSCache is): `<svc>.<ns>.svc.cluster.local` and the
//! other names of Kubernetes' DNS specification ([`answer`]), answered from a zone built
//! from the Services and EndpointSlices of the shared informer layer ([`zone`]); other
//! names are forwarded to the node's own resolvers.
//!
//! The server listens on the node's pod-network gateway, which every pod reaches directly
//! over its bridge: no DNAT, no conntrack entry per query (the 5 s stalls of kube-dns
//! behind a ClusterIP come from those), and no Service or Deployment to keep alive.
//!
//! hickory-proto reads and writes the messages; the serving is Skiff's own, kept small for
//! speed: one thread per core, each on its own `SO_REUSEPORT` UDP socket, answers cluster
//! names in the thread that read them (no task, no allocation beyond the message), and
//! hands forwarded names to the async runtime. TCP (for truncated answers) is served by
//! the runtime.

pub mod answer;
pub mod zone;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use skiff_informer::Informers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

pub use answer::{Outcome, Transport, answer};
pub use zone::Zone;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (UDP and TCP), usually `<pod gateway>:53`.
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Where other names go: the node's resolvers (none: other names fail).
    pub upstreams: Vec<SocketAddr>,
    /// UDP serving threads.
    pub threads: usize,
}

impl Config {
    pub fn new(listen: SocketAddr, domain: &str) -> Config {
        Config {
            listen,
            domain: domain.to_string(),
            upstreams: Vec::new(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// How long one upstream has to answer a forwarded query before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often a UDP thread looks up from a quiet socket to see whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(250);
/// Each UDP socket's receive buffer: room for a burst of queries (a few thousand) while
/// its thread is busy, where the kernel's default (208 KiB) holds a few hundred.
const RECEIVE_BUFFER: usize = 4 << 20;

struct Shared {
    zone: RwLock<Arc<Zone>>,
    generation: AtomicU64,
    upstreams: Vec<SocketAddr>,
    stop: AtomicBool,
}

impl Shared {
    fn snapshot(&self) -> Arc<Zone> {
        self.zone.read().expect("zone lock").clone()
    }
}

/// A running DNS server; it stops when dropped.
pub struct Dns {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::AbortHandle>,
    pub listen: SocketAddr,
}

impl Dns {
    /// Serves `config.listen` with an empty, unready zone (see [`Dns::set_zone`] and
    /// [`Dns::follow`]). Must be called within a tokio runtime.
    pub fn serve(config: Config) -> io::Result<Dns> {
        let shared = Arc::new(Shared {
            zone: RwLock::new(Arc::new(Zone::unready(&config.domain))),
            generation: AtomicU64::new(0),
            upstreams: config
                .upstreams
                .iter()
                .copied()
                .filter(|u| *u != config.listen)
                .collect(),
            stop: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Handle::current();
        let mut sockets = Vec::new();
        let mut listen = config.listen;
        for _ in 0..config.threads.max(1) {
            let socket = udp_socket(listen)?;
            // Port 0 asks for any; the other threads share the one the first got.
            listen = socket.local_addr()?;
            sockets.push(socket);
        }
        let tcp = {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(listen),
                socket2::Type::STREAM,
                None,
            )?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&listen.into())?;
            s.listen(128)?;
            tokio::net::TcpListener::from_std(s.into())?
        };
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let shared = shared.clone();
            let runtime = runtime.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-{i}"))
                    .spawn(move || serve_udp(Arc::new(socket), shared, runtime))?,
            );
        }
        let tasks = vec![tokio::spawn(serve_tcp(tcp, shared.clone())).abort_handle()];
        Ok(Dns {
            shared,
            threads,
            tasks,
            listen,
        })
    }

    /// Replaces the zone every query reads.
    pub fn set_zone(&self, zone: Zone) {
        set_zone(&self.shared, zone);
    }

    /// Keeps the zone built from the informers' Services and EndpointSlices, rebuilt
    /// whenever either changes (changes that come together build once).
    pub fn follow(&mut self, informers: &Arc<Informers>, domain: &str) {
        let (services, slices) = (informers.services(), informers.endpointslices());
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        services.subscribe(move |_| w.notify_one());
        let w = wake.clone();
        slices.subscribe(move |_| w.notify_one());
        let shared = self.shared.clone();
        let domain = domain.to_string();
        let task = tokio::spawn(async move {
            services.synced().await;
            slices.synced().await;
            loop {
                let svcs = services.list();
                let built = Zone::build(&domain, svcs.iter().map(|s| s.as_ref()), |ns, name| {
                    slices
                        .indexed(name)
                        .into_iter()
                        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
                        .collect()
                });
                set_zone(&shared, built);
                wake.notified().await;
            }
        });
        self.tasks.push(task.abort_handle());
    }
}

fn set_zone(shared: &Shared, zone: Zone) {
    *shared.zone.write().expect("zone lock") = Arc::new(zone);
    shared.generation.fetch_add(1, Ordering::Release);
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    s.set_reuse_port(true)?;
    s.set_read_timeout(Some(STOP_POLL))?;
    // Past net.core.rmem_max with CAP_NET_ADMIN (the agent runs as root); else as large
    // as that limit allows.
    if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &RECEIVE_BUFFER)
        .is_err()
    {
        let _ = s.set_recv_buffer_size(RECEIVE_BUFFER);
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// One UDP thread: cluster names answered here, others forwarded on the runtime.
fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>, runtime: tokio::runtime::Handle) {
    let mut buf = [0u8; 4096];
    let mut generation = shared.generation.load(Ordering::Acquire);
    let mut zone = shared.snapshot();
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster DNS: reading a query");
                std::thread::sleep(STOP_POLL);
                continue;
            }
        };
        let now = shared.generation.load(Ordering::Acquire);
        if now != generation {
            generation = now;
            zone = shared.snapshot();
        }
        match answer(&zone, &buf[..n], Transport::Udp) {
            Outcome::Reply(bytes) => {
                if !bytes.is_empty() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
            other => {
                let query = buf[..n].to_vec();
                let (socket, shared) = (socket.clone(), shared.clone());
                runtime.spawn(async move {
                    if let Some(reply) =
                        resolve_elsewhere(&shared, other, &query, Transport::Udp).await
                    {
                        let _ = socket.send_to(&reply, from);
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(STOP_POLL).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let zone = shared.snapshot();
                let reply = match answer(&zone, &query, Transport::Tcp) {
                    Outcome::Reply(bytes) => Some(bytes),
                    other => resolve_elsewhere(&shared, other, &query, Transport::Tcp).await,
                };
                let Some(reply) = reply.filter(|r| !r.is_empty()) else {
                    return;
                };
                let Ok(n) = u16::try_from(reply.len()) else {
                    return;
                };
                let mut framed = n.to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The reply to a query the cluster zone does not hold: the node's resolvers' answer.
async fn resolve_elsewhere(
    shared: &Shared,
    outcome: Outcome,
    query: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    match outcome {
        Outcome::Reply(bytes) => Some(bytes),
        Outcome::Forward => Some(
            forward(&shared.upstreams, query)
                .await
                .unwrap_or_else(|| answer::error(id, ResponseCode::ServFail)),
        ),
        Outcome::Chase {
            mut partial,
            target,
            record_type,
        } => {
            let request = Message::from_vec(query).ok()?;
            let limit = answer::limit_of(&request, transport);
            match chase(&shared.upstreams, &target, record_type).await {
                Some(reply) => {
                    partial.metadata.response_code = reply.metadata.response_code;
                    partial.add_answers(reply.answers);
                }
                None => partial.metadata.response_code = ResponseCode::ServFail,
            }
            Some(answer::encode(*partial, limit))
        }
    }
}

/// Asks `target`'s records of the node's resolvers.
async fn chase(
    upstreams: &[SocketAddr],
    target: &Name,
    record_type: RecordType,
) -> Option<Message> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(hickory_proto::op::Query::query(target.clone(), record_type));
    let bytes = q.to_vec().ok()?;
    let reply = forward(upstreams, &bytes).await?;
    Message::from_vec(&reply).ok()
}

/// `query` sent as it is to each upstream in turn, from a socket of its own (a random
/// source port, as a resolver should), until one answers it.
async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    let id = [*query.first()?, *query.get(1)?];
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(socket) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                match socket.recv(&mut buf).await {
                    Ok(n) if n >= 2 && buf[..2] == id => return Some(n),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        })
        .await;
        if let Ok(Some(n)) = got {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}
