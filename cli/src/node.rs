//! The node side of `skiff up` and `skiff agent`: a node agent with the Wasm and container
//! shims, the image store and pod networking.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// Name of the Node object (default: this machine's hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Address the node reports and its agent endpoint listens on (default: 127.0.0.1 for
    /// `skiff up`, the address that reaches the API server for `skiff agent`).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Port of the agent endpoint (logs), like the kubelet's 10250; 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    pub agent_port: u16,
    /// Name of the node's pod bridge (at most 15 characters).
    #[arg(long, default_value = "skiff0")]
    pub bridge: String,
    /// Pods this node accepts: at most 1,023, the pod sandboxes a Linux bridge holds.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=skiff_podnet::BRIDGE_PORTS as i64))]
    pub max_pods: u32,
    /// Pod sandboxes kept ready ahead of pods, so a pod starts without building one.
    #[arg(long, default_value_t = 16)]
    pub warm_sandboxes: usize,
    /// Leave the kernel's cgroup settings as they are. By default the node's cgroup v2
    /// hierarchy is remounted with `favordynmods`, as the kubelet sets the sysctls it needs
    /// unless told `--protect-kernel-defaults`: see [`favor_dynamic_cgroups`].
    #[arg(long)]
    pub keep_kernel_defaults: bool,
    /// How long the node's Lease holds (the kubelet's `nodeLeaseDurationSeconds`); the
    /// agent renews it every quarter of that.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(4..=3600))]
    pub node_lease_duration_seconds: u32,
    /// The cluster domain (the kubelet's `--cluster-domain`).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Nameservers pods use (the kubelet's `--cluster-dns`). By default the node serves
    /// the cluster's names itself, on its pod network's gateway.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<IpAddr>,
}

/// What a running node holds; dropping it stops the agent.
pub struct Node {
    pub agent: skiff_node::Agent,
    pub network: skiff_podnet::PodNetwork,
    pub proxy: skiff_proxy::Proxy,
    /// The node's cluster DNS, when it serves one.
    pub dns: Option<skiff_dns::Dns>,
    /// Keeps the routes to the other nodes' pods and the load balancer addresses.
    pub peers: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Stops pods and releases the pod network (its bridge, sandboxes and NAT table): Wasm
    /// pods run inside this process, so nothing of them outlives it.
    pub async fn shutdown(self) {
        drop(self.agent);
        drop(self.dns);
        self.peers.abort();
        let _ = self.peers.await;
        if let Err(e) = self.proxy.shutdown().await {
            eprintln!("skiff: removing the service rules: {e}");
        }
        if let Err(e) = self.network.shutdown(true).await {
            eprintln!("skiff: releasing the pod network: {e}");
        }
    }
}

pub async fn start(
    args: &NodeArgs,
    client: kube::Client,
    data_dir: &Path,
    default_ip: IpAddr,
) -> anyhow::Result<Node> {
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => hostname(),
    };
    let node_dir = data_dir.join("node");
    let cidr = skiff_node::ensure_node(&client, &name)
        .await
        .with_context(|| format!("registering node {name}"))?;
    let pod_cidr: ipnet::Ipv4Net = cidr
        .parse()
        .with_context(|| format!("node {name} has pod CIDR {cidr:?}, not an IPv4 network"))?;
    let run = runtime_dir()?;
    if !args.keep_kernel_defaults {
        match favor_dynamic_cgroups() {
            Ok(Some(path)) => eprintln!(
                "skiff: cgroup2 at {} remounted with favordynmods (faster container starts; --keep-kernel-defaults leaves it)",
                path.display()
            ),
            Ok(None) => {}
            Err(e) => eprintln!("skiff: leaving cgroup2 as it is: {e:#}"),
        }
    }
    let net_state = run.join("net").join(&args.bridge);
    let network = skiff_podnet::PodNetwork::new(skiff_podnet::NetConfig {
        bridge: args.bridge.clone(),
        pod_cidr,
        state_dir: net_state.clone(),
        warm_pool: args.warm_sandboxes,
        masquerade: true,
    })
    .await
    .with_context(|| format!("setting up the pod network on bridge {}", args.bridge))?;
    let shim = skiff_shim_wasm::WasmShim::new(skiff_shim_wasm::WasmConfig::new(
        node_dir.join("wasm-cache"),
    ))?;
    let store_dir = image_store_dir(data_dir);
    let images = skiff_images::ImageStore::open(&store_dir)
        .with_context(|| format!("opening the image store at {}", store_dir.display()))?;
    let mut shims: Vec<Arc<dyn skiff_shim::Shim>> = vec![Arc::new(shim)];
    let containers = images
        .snapshots()
        .map_err(anyhow::Error::from)
        .and_then(|snapshots| {
            Ok(skiff_shim_container::ContainerShim::new(
                skiff_shim_container::ContainerConfig {
                    state_dir: run.join("containers").join(&args.bridge),
                    snapshots,
                    helper_program: PathBuf::from("/proc/self/exe"),
                    helper_args: vec![crate::CONTAINER_HELPER.into()],
                    helpers: skiff_shim_container::ContainerConfig::default_helpers(),
                    // Every node network's pins: agents of other bridges run here too.
                    hidden_mounts: vec![run.join("net")],
                    warm_roots: skiff_shim_container::ContainerConfig::default_warm_roots(),
                },
            )?)
        });
    match containers {
        Ok(c) => shims.push(Arc::new(c)),
        // Wasm pods still run; Linux images are refused with the reason.
        Err(e) => eprintln!("skiff: no Linux container runtime on this node: {e:#}"),
    }
    let mut config = skiff_node::AgentConfig::new(name.clone(), node_dir);
    config.node_ip = args.node_ip.unwrap_or(default_ip);
    config.port = args.agent_port;
    config.max_pods = args.max_pods;
    config.lease_interval =
        std::time::Duration::from_secs(u64::from(args.node_lease_duration_seconds) / 4);
    // One list and watch per kind for the node's parts: its proxy, its DNS, its agent.
    let informers = skiff_informer::Informers::new(client.clone());
    config.informers = Some(informers.clone());
    // The node's cluster DNS, on the pods' gateway: every pod reaches it over its bridge.
    // The node's resolv.conf, read once: pods of `dnsPolicy: Default` and the cluster
    // DNS's forwarding both use it.
    let host_dns = skiff_node::dns::NodeDns::node_resolv_conf();
    let dns = if args.cluster_dns.is_empty() {
        let listen = std::net::SocketAddr::from((network.gateway(), 53));
        let mut dns_config = skiff_dns::Config::new(listen, &args.cluster_domain);
        // Other names go where the node's own resolv.conf says.
        dns_config.upstreams = host_dns
            .nameservers
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, 53))
            .collect();
        match skiff_dns::Dns::serve(dns_config) {
            Ok(mut dns) => {
                dns.follow(&informers, &args.cluster_domain);
                Some(dns)
            }
            Err(e) => {
                eprintln!(
                    "skiff: no cluster DNS on this node ({listen}: {e}); pods get the node's resolvers (--cluster-dns names another)"
                );
                None
            }
        }
    } else {
        None
    };
    let nameservers = match &dns {
        Some(d) => vec![d.listen.ip()],
        None => args.cluster_dns.clone(),
    };
    config.dns = skiff_node::dns::NodeDns::new(nameservers, &args.cluster_domain, host_dns);
    let peers = tokio::spawn(follow_cluster(
        informers.clone(),
        network.clone(),
        name.clone(),
        config.node_ip,
    ));
    // The node's service proxy (kube-proxy's job), one nftables table per node network.
    let proxy = skiff_proxy::Proxy::start(
        informers,
        skiff_proxy::Config {
            table: format!("{}-services", args.bridge),
            node_name: name.clone(),
            shared_mac: Some(network.shared_mac()),
        },
    );
    let agent = skiff_node::Agent::start(
        client,
        config,
        shims,
        Arc::new(images),
        Arc::new(network.clone()),
    )
    .await?;
    eprintln!(
        "skiff: node {name} ready: pods on {} ({}), agent endpoint {}",
        args.bridge, pod_cidr, agent.endpoint
    );
    Ok(Node {
        agent,
        network,
        proxy,
        dns,
        peers,
    })
}

/// Keeps a route to every other node's pod CIDR through its InternalIP (host-gw), as
/// the Node objects say, and pod-to-pod traffic off the masquerade; and holds the load
/// balancer addresses this node is chosen to announce (`skiff_proxy::announce`).
async fn follow_cluster(
    informers: std::sync::Arc<skiff_informer::Informers>,
    network: skiff_podnet::PodNetwork,
    me: String,
    node_ip: IpAddr,
) {
    let (nodes, services, slices) = (
        informers.nodes(),
        informers.services(),
        informers.endpointslices(),
    );
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let w = wake.clone();
    nodes.subscribe(move |_| w.notify_one());
    let w = wake.clone();
    services.subscribe(move |_| w.notify_one());
    let w = wake.clone();
    slices.subscribe(move |_| w.notify_one());
    nodes.synced().await;
    services.synced().await;
    slices.synced().await;
    let mut applied: Option<Vec<skiff_podnet::Peer>> = None;
    let mut announced: Option<Vec<std::net::Ipv4Addr>> = None;
    loop {
        let mut failed = false;
        let all_nodes = nodes.list();
        let lb = skiff_proxy::announce::announced(
            &me,
            &services.list(),
            |ns, name| {
                slices
                    .indexed(name)
                    .into_iter()
                    .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
                    .collect()
            },
            &all_nodes,
        );
        if announced.as_ref() != Some(&lb)
            && let IpAddr::V4(uplink) = node_ip
        {
            match network.set_announced(uplink, &lb).await {
                Ok(()) => announced = Some(lb),
                Err(e) => {
                    eprintln!("skiff: load balancer addresses: {e}");
                    failed = true;
                }
            }
        }
        let mut peers: Vec<skiff_podnet::Peer> = all_nodes
            .iter()
            .filter(|n| n.metadata.name.as_deref() != Some(me.as_str()))
            .filter_map(|n| {
                let pod_cidr = n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
                let address = n
                    .status
                    .as_ref()?
                    .addresses
                    .iter()
                    .flatten()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse().ok())?;
                Some(skiff_podnet::Peer { pod_cidr, address })
            })
            .collect();
        peers.sort_by_key(|p| (p.pod_cidr, p.address));
        if applied.as_ref() != Some(&peers) {
            match network.set_peers(&peers).await {
                Ok(()) => applied = Some(peers),
                Err(e) => {
                    eprintln!("skiff: routes to other nodes' pods: {e}");
                    failed = true;
                }
            }
        }
        if failed {
            // Tried again in a while, or sooner if something changes.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), wake.notified()).await;
        } else {
            wake.notified().await;
        }
    }
}

/// The node's image store in a data dir: the one place both the node and `skiff image`
/// take it from.
pub fn image_store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// `/run/skiff`: the node's runtime state, which lives as long as the machine's boot (pod
/// network pins and IP allocations, container bundles and libcontainer's state) and sees a
/// few dozen files made and removed per pod. It belongs on a tmpfs, as `/run` is on most
/// systems; where `/run` is on disk (this repository's CI machines: ext4 without a journal,
/// whose inode allocator scans past every recently removed inode), a tmpfs is mounted here
/// once, under a lock so that agents starting at once agree, and left for later agents.
fn runtime_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from("/run/skiff");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let on_tmpfs = |dir: &Path| -> anyhow::Result<bool> {
        let fs =
            nix::sys::statfs::statfs(dir).with_context(|| format!("statfs {}", dir.display()))?;
        Ok(fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    };
    if on_tmpfs(&dir)? {
        return Ok(dir);
    }
    let lock_path = Path::new("/run/skiff.lock");
    let file = std::fs::File::create(lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if !on_tmpfs(&dir)? {
        nix::mount::mount(
            Some("skiff-run"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("mode=0755,size=10%"),
        )
        .with_context(|| format!("mounting a tmpfs at {}", dir.display()))?;
    }
    Ok(dir)
}

/// Remounts the node's cgroup v2 hierarchy with `favordynmods` if it lacks it; returns
/// where, or `None` when there is nothing to do (already set, or no cgroup2 mount).
///
/// Moving a process into a cgroup (every container's runtime writes `cgroup.procs`, once per
/// controller on cgroup v1) takes the kernel's global threadgroup semaphore for writing,
/// which by default waits for an RCU grace period: 10 to 20 ms on this kind of VM, most of a
/// container's start when containers start one at a time. `favordynmods` (Linux 6.0) keeps
/// that semaphore ready for writers instead, at a small cost to every fork and exit; the
/// semaphore is global, so the flag on any hierarchy serves v1 controllers too. A remount
/// replaces the hierarchy's options, so the ones it has are kept.
fn favor_dynamic_cgroups() -> anyhow::Result<Option<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    for line in mountinfo.lines() {
        // <id> <parent> <dev> <root> <mount point> <mount options> [optional...] - <type> <source> <super options>
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup2") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or("");
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(point), Some(mount_opts)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        if super_opts.split(',').any(|o| o == "favordynmods") {
            return Ok(None);
        }
        use nix::mount::MsFlags;
        let mut flags = MsFlags::MS_REMOUNT;
        for o in mount_opts.split(',') {
            flags |= match o {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            };
        }
        let mut data: Vec<&str> = super_opts
            .split(',')
            .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
            .collect();
        data.push("favordynmods");
        let path = PathBuf::from(point.replace("\\040", " "));
        nix::mount::mount(
            Some("cgroup2"),
            &path,
            Some("cgroup2"),
            flags,
            Some(data.join(",").as_str()),
        )
        .with_context(|| format!("remounting {} with favordynmods", path.display()))?;
        return Ok(Some(path));
    }
    Ok(None)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}
