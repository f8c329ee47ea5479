//! `skiff`: one binary for the whole cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use skiff_store::Store;

/// mimalloc instead of glibc's malloc: the control plane and the node allocate and free
/// small objects (JSON values, requests) at a high rate, and under a burst of pods glibc's
/// allocator took a sixth of the CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_containers;
mod bench_deployments;
mod bench_dns;
mod bench_http;
mod bench_pods;
mod bench_services;
mod failover;
mod image;
mod node;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes-compatible orchestrator for WebAssembly and Linux containers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--data-dir`, one flag with one default for every subcommand: `skiff image` must work
/// on the image store the node of `skiff up` or `skiff agent` runs pods from, as
/// `k3s ctr images import` reaches its own node.
#[derive(clap::Args, Clone, Debug)]
pub struct DataDir {
    /// Where Skiff keeps its state: the embedded store, the kubeconfig, the node's images
    /// (DIR/images, the store `skiff image` works on), compiled Wasm, pod volumes and logs.
    /// The same for every subcommand: $XDG_DATA_HOME/skiff, else ~/.local/share/skiff.
    #[arg(
        long = "data-dir",
        value_name = "DIR",
        env = "SKIFF_DATA_DIR",
        global = true,
        default_value_os_t = default_data_dir()
    )]
    pub path: PathBuf,
}

#[derive(clap::Args, Clone, Debug)]
struct ServerArgs {
    #[command(flatten)]
    data_dir: DataDir,
    /// Address the API server listens on. Loopback by default; give 0.0.0.0:6443 to serve
    /// other machines.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// `embedded` (durable, in the data dir) or `etcd://host:port[,host:port]` for an
    /// existing etcd cluster.
    #[arg(long, default_value = "embedded")]
    store: String,
    /// The cluster's pod network; each node gets a block of it.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// Prefix length of each node's pod block: 22 gives a node 1,022 pod addresses.
    #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u8).range(8..=30))]
    node_cidr_mask_size: u8,
    /// The controllers to run, as kube-controller-manager's flag: `*` for all, `name` to
    /// turn one on, `-name` to turn one off (e.g. `*,-garbage-collector-controller`).
    #[arg(long, default_value = "*", value_parser = parse_controllers)]
    controllers: skiff_controllers::Enabled,
    /// How long a node may go without a heartbeat before it is marked Unknown, tainted
    /// unreachable and its pods evicted after their tolerations (a Go duration).
    #[arg(long, default_value = "50s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How long events are kept after their last write, as kube-apiserver's flag (a Go
    /// duration).
    #[arg(long, default_value = "1h0m0s", value_parser = parse_duration)]
    event_ttl: std::time::Duration,
    /// Where Services' cluster IPs come from; the first address is the `kubernetes`
    /// Service's.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: ipnet::Ipv4Net,
    /// Where Services' node ports come from (`first-last`).
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The address pods reach the API server at (the `kubernetes` Service's endpoint).
    /// By default the listen address, or the address of the host's default route when
    /// listening on all addresses; none when listening on loopback.
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Addresses for `type: LoadBalancer` Services (`a.b.c.d-a.b.c.e` or CIDRs,
    /// comma-separated), free addresses on the nodes' link: the node chosen for each
    /// announces it there. None by default: such Services stay pending.
    #[arg(long, default_value = "", value_parser = parse_pool)]
    load_balancer_pool: Pool,
}

/// `--load-balancer-pool`'s ranges.
#[derive(Debug, Clone)]
struct Pool(Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>);

fn parse_pool(text: &str) -> Result<Pool, String> {
    skiff_controllers::cloud::LocalPool::parse(text).map(Pool)
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range: give one such as 30000-32767");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// The address pods reach this server at: see `--advertise-address`.
fn advertise_address(
    asked: Option<std::net::IpAddr>,
    listen: SocketAddr,
) -> Option<std::net::SocketAddr> {
    let ip = match asked {
        Some(ip) => ip,
        None if listen.ip().is_loopback() => return None,
        None if listen.ip().is_unspecified() => {
            // The source address of the default route: connecting a UDP socket picks it
            // and sends nothing.
            let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            probe.connect("192.0.2.1:9").ok()?;
            probe.local_addr().ok()?.ip()
        }
        None => listen.ip(),
    };
    Some(SocketAddr::new(ip, listen.port()))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    skiff_apimachinery::cron::parse_go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration: give one such as 50s, 2m or 1m30s"))
}

fn parse_controllers(s: &str) -> Result<skiff_controllers::Enabled, String> {
    skiff_controllers::Enabled::parse(s)
}

#[derive(clap::Args, Clone, Debug)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    node: node::NodeArgs,
    /// Runs the control plane only, without a node.
    #[arg(long)]
    no_node: bool,
}

#[derive(clap::Args, Clone, Debug)]
struct AgentArgs {
    /// The API server, e.g. http://10.0.0.1:6443 (or give --kubeconfig); several, comma
    /// separated, for a control plane of several servers: the agent moves to the next when
    /// the one it uses cannot be reached.
    #[arg(long, env = "SKIFF_SERVER")]
    server: Option<String>,
    /// A kubeconfig to reach the API server with.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDir,
    #[command(flatten)]
    node: node::NodeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a whole cluster on this machine (control plane and a node) and writes a
    /// kubeconfig for it.
    Up(UpArgs),
    /// Runs a node agent that joins an existing control plane.
    Agent(AgentArgs),
    /// Runs the control plane (API server and its controllers).
    Server(ServerArgs),
    /// Measures Skiff against its peers on this machine.
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
    /// Manages the image store that the node of `skiff up` or `skiff agent` with the same
    /// --data-dir runs pods from: import, push, pull, ls, rm.
    Image(image::ImageArgs),
}

/// The hidden subcommand the node agent starts its container helper with (see
/// `skiff_shim_container::helper`). It runs before anything else starts a thread:
/// libcontainer must be the only thread of its process.
pub const CONTAINER_HELPER: &str = "container-helper";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(CONTAINER_HELPER) {
        std::process::exit(skiff_shim_container::helper::main_from_args(args));
    }
    let cli = Cli::parse();
    // A benchmark's own clients meet a server that is starting or stopping on purpose:
    // their connection errors and ended watches are not news.
    let default_filter = match cli.command {
        Command::Bench { .. } => "info,kube_client=off",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Wasm HTTP guests' outgoing connections are made inside their pods' network
        // namespaces on these threads; a thread the runtime starts meanwhile begins in
        // the host's.
        .on_thread_start(skiff_shim_wasm::netns::to_host)
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Up(args) => run_server(args.server.clone(), Some(args)).await,
            Command::Server(args) => run_server(args, None).await,
            Command::Agent(args) => run_agent(args).await,
            Command::Bench { what } => bench::run(what).await,
            Command::Image(args) => image::run(args).await,
        }
    })
}

/// The data dir without `--data-dir` or `SKIFF_DATA_DIR`, the same for every subcommand:
/// `$XDG_DATA_HOME/skiff`, else `~/.local/share/skiff`, else (a service without a HOME)
/// `/var/lib/skiff`. An empty or relative variable is ignored, as the XDG spec asks: the
/// data dir must not depend on the directory a command is run from.
fn default_data_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_DATA_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("skiff")
}

/// Opens the store a `--store` flag names.
pub async fn open_store(spec: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if spec == "embedded" {
        let dir = data_dir.join("store");
        let store = skiff_store::embedded::EmbeddedStore::open(&dir)
            .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
        return Ok(Arc::new(store));
    }
    if let Some(rest) = spec.strip_prefix("etcd://") {
        let endpoints: Vec<String> = rest
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("http://{s}"))
            .collect();
        if endpoints.is_empty() {
            bail!("--store etcd:// needs at least one host:port, e.g. etcd://127.0.0.1:2379");
        }
        let store = skiff_store::etcd::EtcdStore::connect(&endpoints)
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        return Ok(Arc::new(store));
    }
    bail!("--store must be `embedded` or `etcd://host:port[,host:port]`, not {spec:?}")
}

async fn run_server(args: ServerArgs, up: Option<UpArgs>) -> anyhow::Result<()> {
    let data_dir = args.data_dir.path.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let store = open_store(&args.store, &data_dir).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another server running? pick another with --listen)",
                args.listen
            )
        })?;
    let server_listen = listener.local_addr()?;
    if args.service_cluster_ip_range.prefix_len() > 28 {
        bail!(
            "--service-cluster-ip-range {} is too small: give a prefix length of 28 or less",
            args.service_cluster_ip_range
        );
    }
    if args.node_cidr_mask_size < args.cluster_cidr.prefix_len() {
        bail!(
            "--node-cidr-mask-size {} is wider than --cluster-cidr {}: give a prefix length of at least {}",
            args.node_cidr_mask_size,
            args.cluster_cidr,
            args.cluster_cidr.prefix_len()
        );
    }
    let config = skiff_apiserver::Config {
        cluster_cidr: (args.cluster_cidr.network(), args.cluster_cidr.prefix_len()),
        node_cidr_mask: args.node_cidr_mask_size,
        event_ttl: args.event_ttl,
        service_ranges: skiff_apiserver::serviceips::Ranges {
            cidr: (
                args.service_cluster_ip_range.network(),
                args.service_cluster_ip_range.prefix_len(),
            ),
            node_ports: args.service_node_port_range.clone(),
        },
        advertise: advertise_address(args.advertise_address, server_listen),
        ..Default::default()
    };
    let server = skiff_apiserver::ApiServer::start(store, listener, config).await?;
    let url = format!("http://{}", server.local_addr);
    let store_desc = if args.store == "embedded" {
        format!("embedded at {}", data_dir.join("store").display())
    } else {
        args.store.clone()
    };
    eprintln!("skiff: API server on {url}, store: {store_desc}");
    // The scheduler and the controllers talk to the API server like any client, as
    // kube-scheduler and kube-controller-manager do; in the same process, through the API
    // server's router rather than a socket.
    let controllers_client = in_process_client(&server);
    let options = skiff_controllers::Options {
        enabled: args.controllers.clone(),
        node_monitor_grace_period: args.node_monitor_grace_period,
        load_balancer_pool: args.load_balancer_pool.0.clone(),
        ..Default::default()
    };
    let lead = move || {
        // One informer per kind for the scheduler and every controller.
        let informers = skiff_controllers::start(controllers_client, options);
        tokio::spawn(async move {
            let opts = skiff_scheduler::SchedulerOptions::default();
            skiff_scheduler::run_on(informers, opts, std::future::pending()).await;
        });
    };
    if args.store == "embedded" {
        // No other server can share an embedded store: this one leads.
        lead();
    } else {
        // Servers sharing an etcd elect one of them to schedule and reconcile.
        let identity = format!(
            "{}_{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "skiff".into()),
            uuid::Uuid::new_v4()
        );
        let client = in_process_client(&server);
        eprintln!("skiff: electing a leader for the scheduler and controllers as {identity}");
        tokio::spawn(async move {
            let election =
                skiff_controllers::leader::Election::new("skiff-controller-manager", identity);
            skiff_controllers::leader::run(client, election, || {
                eprintln!("skiff: leading: the scheduler and the controllers run here");
                lead();
            })
            .await;
            // As kube-controller-manager: controllers that may act on a stale view stop.
            eprintln!("skiff: lost the leader election; exiting");
            std::process::exit(1);
        });
    }
    let mut node = None;
    if let Some(up) = &up
        && !up.no_node
    {
        let client = in_process_client(&server);
        node = Some(
            node::start(&up.node, client, &data_dir, IpAddr::from([127, 0, 0, 1]))
                .await
                .context("starting the node (root is needed for pod networks; --no-node runs the control plane alone)")?,
        );
    }
    if up.is_some() {
        let path = data_dir.join("kubeconfig");
        write_kubeconfig(&path, &url)?;
        eprintln!(
            "skiff: kubeconfig written to {}; run: export KUBECONFIG={}",
            path.display(),
            path.display()
        );
    }
    tokio::select! {
        _ = server.wait() => {}
        () = shutdown_signal() => eprintln!("skiff: stopping"),
    }
    if let Some(node) = node {
        node.shutdown().await;
    }
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A client of the API server running in this process: the same REST API, handed to its
/// router directly, without a TCP connection or HTTP encoding in between (under a burst
/// of pods, the loopback connections of the scheduler and the node cost more CPU than the
/// handlers they reached).
fn in_process_client(server: &skiff_apiserver::ApiServer) -> kube::Client {
    let router = skiff_apiserver::router(server.state.clone());
    let service = tower::ServiceBuilder::new()
        .map_request(|req: http::Request<kube::client::Body>| req.map(axum::body::Body::new))
        .service(router);
    kube::Client::new(service, "default")
}

pub fn local_client(url: &str) -> anyhow::Result<kube::Client> {
    let config = kube::Config::new(url.parse().context("API server url")?);
    Ok(kube::Client::try_from(config)?)
}

async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.path.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let (client, server) = match (&args.server, &args.kubeconfig) {
        (Some(urls), _) if urls.contains(',') => {
            let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).collect();
            (failover::client(&urls)?, urls[0].clone())
        }
        (Some(url), _) => (local_client(url)?, url.clone()),
        (None, Some(path)) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            let url = config.cluster_url.to_string();
            (kube::Client::try_from(config)?, url)
        }
        (None, None) => bail!("give the API server with --server URL or --kubeconfig FILE"),
    };
    // The address this machine reaches the API server from is the one the server can
    // reach its agent on.
    let default_ip = route_source(&server).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let node = node::start(&args.node, client, &data_dir, default_ip).await?;
    shutdown_signal().await;
    eprintln!("skiff: stopping");
    node.shutdown().await;
    Ok(())
}

fn route_source(url: &str) -> Option<IpAddr> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(6443);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()?
        .next()?;
    let socket = std::net::UdpSocket::bind(if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

fn write_kubeconfig(path: &Path, server: &str) -> anyhow::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n\
         contexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff\n    namespace: default\n\
         current-context: skiff\nusers:\n- name: skiff\n  user: {{}}\npreferences: {{}}\n"
    );
    // Written aside and renamed into place: whoever waits for the file (a script, a test, a
    // kubectl started at the same moment) never reads it half written.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir(args: &[&str]) -> PathBuf {
        match Cli::try_parse_from(args).expect("arguments parse").command {
            Command::Up(a) => a.server.data_dir.path,
            Command::Server(a) => a.data_dir.path,
            Command::Agent(a) => a.data_dir.path,
            Command::Image(a) => a.data_dir.path,
            Command::Bench { .. } => unreachable!("no data dir"),
        }
    }

    /// `skiff image` works on the store of the node that `skiff up` or `skiff agent` runs
    /// only if both resolve one data dir the same way.
    #[test]
    fn every_subcommand_takes_one_data_dir() {
        let up = data_dir(&["skiff", "up"]);
        assert_eq!(data_dir(&["skiff", "server"]), up);
        assert_eq!(
            data_dir(&["skiff", "agent", "--server", "http://x:6443"]),
            up
        );
        assert_eq!(data_dir(&["skiff", "image", "ls"]), up);
        assert_eq!(
            data_dir(&["skiff", "image", "import", "a.wasm", "a:v1"]),
            up
        );
        // The flag is accepted before and after an image subcommand.
        for args in [
            &["skiff", "image", "--data-dir", "/d", "ls"][..],
            &[
                "skiff",
                "image",
                "import",
                "--data-dir",
                "/d",
                "a.wasm",
                "a:v1",
            ],
            &["skiff", "up", "--data-dir", "/d"],
            &[
                "skiff",
                "agent",
                "--data-dir",
                "/d",
                "--server",
                "http://x:6443",
            ],
        ] {
            assert_eq!(data_dir(args), Path::new("/d"), "{args:?}");
        }
    }
}
