//! Network namespaces: a socket belongs to the namespace of the thread that created it, so a
//! pod's listeners are made on a thread that has joined the pod's namespace, and a command
//! pod runs on such a thread for its whole life (its wasi:sockets then live in the pod).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// Moves the calling thread into the network namespace at `path`. Only for threads Skiff
/// made for that purpose, which stay there until [`back_to_host`] or their end.
pub fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open netns {}: {e}", path.display())))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("setns {}: {e}", path.display())))
}

/// The network namespace the process started in (its main thread's).
fn host() -> io::Result<&'static File> {
    static HOST: std::sync::OnceLock<Result<File, String>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| File::open("/proc/self/ns/net").map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("open /proc/self/ns/net: {e}")))
}

/// Puts the calling thread back into the process's network namespace, saying whether it
/// could: a thread that cannot go back must not serve another pod.
pub(crate) fn back_to_host() -> io::Result<()> {
    setns(host()?, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("back to the host network namespace: {e}")))
}

/// Puts the calling thread back into the process's network namespace. Runtimes that poll
/// [`InNetns`] futures call it when they start a thread: a thread spawned while a worker
/// was inside a pod's namespace would otherwise stay there.
pub fn to_host() {
    let _ = back_to_host();
}

/// A future polled inside a network namespace: every socket its polls create belongs to
/// the pod. The polling thread goes back to the process's namespace after each poll (a
/// pair of setns calls, about 2 µs), so it can serve other pods in between.
pub struct InNetns<F> {
    netns: std::sync::Arc<File>,
    inner: std::pin::Pin<Box<F>>,
}

impl<F: Future> InNetns<F> {
    pub fn new(netns: std::sync::Arc<File>, inner: F) -> Self {
        InNetns {
            netns,
            inner: Box::pin(inner),
        }
    }
}

/// Restores the process's namespace when dropped, also while unwinding.
struct Back(&'static File);

impl Drop for Back {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0, CloneFlags::CLONE_NEWNET) {
            // A runtime thread left in a pod's namespace would open the agent's own
            // connections there: nothing safe is left to do.
            eprintln!("skiff: cannot return to the host network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Runs `f` on the calling thread inside `netns`, then puts the thread back into the
/// process's namespace (also when `f` panics). `f` must not block or start threads.
pub(crate) fn run_in<T>(netns: &File, f: impl FnOnce() -> T) -> io::Result<T> {
    let host = host()?;
    setns(netns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("entering the pod's network namespace: {e}")))?;
    let _back = Back(host);
    Ok(f())
}

impl<F: Future> Future for InNetns<F> {
    type Output = io::Result<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        match run_in(&this.netns, || this.inner.as_mut().poll(cx)) {
            Ok(poll) => poll.map(Ok),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

/// Opens the namespace at `path` for [`InNetns`].
pub fn open(path: &Path) -> io::Result<std::sync::Arc<File>> {
    File::open(path)
        .map(std::sync::Arc::new)
        .map_err(|e| io::Error::new(e.kind(), format!("open netns {}: {e}", path.display())))
}

/// Where the host makes a pod's sockets for its guests: in the pod's own namespace, or in
/// the namespace address-only pods share, bound to the pod's IP.
#[derive(Clone, Default)]
pub(crate) struct PodNet {
    /// The namespace its sockets are made in; `None`: the process's (tests).
    pub netns: Option<std::sync::Arc<File>>,
    /// The pod's IP when the namespace is shared: its sockets bind it, and a loopback
    /// address means the pod itself, as in a namespace of its own.
    pub shared_ip: Option<std::net::IpAddr>,
    /// How the pod's names resolve.
    pub resolver: std::sync::Arc<PodResolver>,
}

/// A pod's resolver: its `resolv.conf` (nameservers, search list, `ndots`), as a container
/// of the pod would have it; made on first use. An empty configuration (tests) means the
/// node's own resolver.
#[derive(Default)]
pub(crate) struct PodResolver {
    dns: skiff_shim::DnsConfig,
    resolver: std::sync::OnceLock<hickory_resolver::TokioResolver>,
}

impl PodResolver {
    pub fn new(dns: skiff_shim::DnsConfig) -> PodResolver {
        PodResolver {
            dns,
            resolver: std::sync::OnceLock::new(),
        }
    }

    /// The addresses `host` names, with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if self.dns.nameservers.is_empty() {
            return Ok(tokio::net::lookup_host((host, port)).await?.collect());
        }
        let resolver = self.resolver.get_or_init(|| {
            use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
            let search = self
                .dns
                .searches
                .iter()
                .filter_map(|s| hickory_resolver::proto::rr::Name::from_ascii(s).ok())
                .collect();
            let servers = self
                .dns
                .nameservers
                .iter()
                .map(|ip| NameServerConfig::udp_and_tcp(*ip))
                .collect();
            let mut opts = ResolverOpts::default();
            opts.ndots = self.dns.ndots();
            // Names of the cluster change as pods come and go: no longer than their TTL.
            opts.cache_size = 256;
            hickory_resolver::TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, search, servers),
                hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
            )
            .with_options(opts)
            .build()
            .expect("a resolver of explicit nameservers")
        });
        let found = resolver.lookup_ip(host).await.map_err(|e| {
            io::Error::new(io::ErrorKind::NotFound, format!("resolving {host}: {e}"))
        })?;
        Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }
}

impl PodNet {
    /// Where a connection of the pod to `addr` goes.
    pub fn destination(&self, addr: SocketAddr) -> SocketAddr {
        match self.shared_ip {
            Some(ip) if addr.ip().is_loopback() => SocketAddr::new(ip, addr.port()),
            _ => addr,
        }
    }

    /// A socket for a connection of the pod to `to`, made in its namespace (in a shared
    /// one, bound to its IP so that the peer sees the pod's address).
    pub fn outgoing(&self, to: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
        let make = || -> io::Result<tokio::net::TcpSocket> {
            let socket = if to.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            if let Some(ip) = self.shared_ip.filter(|ip| ip.is_ipv4() == to.is_ipv4()) {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            Ok(socket)
        };
        match &self.netns {
            None => make(),
            Some(ns) => run_in(ns, make)?,
        }
    }
}
