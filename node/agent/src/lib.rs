//! Skiff's node agent: registers a Node, keeps its Lease and status fresh, and runs the pods
//! bound to it, like the kubelet.
//!
//! It talks to the control plane only through the public API (the `kube` client), so an
//! agent can run on another machine. One watch of the pods bound to this node feeds one
//! worker per pod ([`pod`]); each worker reconciles the pod's desired state against what runs
//! (level triggered: a missed event or an agent restart heals on the next pass) and writes
//! the pod's status. Runtimes are [`skiff_shim::Shim`]s; images and pod networks come through
//! the [`Images`] and [`Network`] seams.

mod adapters;
mod container;
pub mod dns;
mod env;
mod events;
pub mod logs;
mod node;
mod pod;
mod probe;
mod remote;
mod runtime_classes;
mod server;
mod status;
mod volumes;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_shim::{Shim, Workload};

pub use logs::LogManager;

/// An image as the node has it, resolved for a runtime.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The image's manifest digest, reported as `imageID`.
    pub digest: String,
    pub workload: Workload,
    /// The image config's Entrypoint and Cmd (empty for Wasm artifacts).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The image config's WorkingDir.
    pub working_dir: Option<String>,
    pub env: Vec<(String, String)>,
    /// `wasi/wasm` images and Wasm media types say Wasm even without a RuntimeClass.
    pub is_wasm: bool,
}

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Registry credentials from a pod's imagePullSecrets (`.dockerconfigjson` contents).
#[derive(Debug, Clone, Default)]
pub struct PullSecrets(pub Vec<Vec<u8>>);

/// Where images come from: the node's image store.
#[async_trait::async_trait]
pub trait Images: Send + Sync + 'static {
    /// Makes the image present as `policy` asks. `runs` is what the runtime the pod asks
    /// for runs, if it asks for one: from an image index offering both a Wasm and a Linux
    /// image, that one. An error says where the node looked (the store's directory, the
    /// registry): it becomes the pod's event.
    async fn pull(
        &self,
        reference: &str,
        policy: PullPolicy,
        secrets: &PullSecrets,
        runs: Option<skiff_shim::WorkloadKind>,
    ) -> Result<PulledImage, String>;
    /// Whether the node holds an image under `reference` already, to run as `runs` (a
    /// cheap look, for the events: the kubelet says "already present" instead of
    /// "Pulling").
    fn has(&self, _reference: &str, _runs: Option<skiff_shim::WorkloadKind>) -> bool {
        false
    }
    /// The image the node holds under `reference` to run as `runs`, without pulling.
    fn local(
        &self,
        _reference: &str,
        _runs: Option<skiff_shim::WorkloadKind>,
    ) -> Option<PulledImage> {
        None
    }
    /// The kubelet's image garbage collection: when the disk holding the images is fuller
    /// than the node allows, removes images no pod of this node names (`in_use`), least
    /// recently used first. Returns the images removed.
    async fn collect_garbage(&self, _in_use: Vec<String>) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// How often images are garbage collected (the kubelet's ImageGCPeriod).
const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// Garbage-collects images every [`IMAGE_GC_PERIOD`] for as long as the agent runs.
async fn image_gc(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(IMAGE_GC_PERIOD).await;
        match ctx.images.collect_garbage(ctx.pods.images()).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(
                    ?removed,
                    "disk above the image GC threshold: removed unused images"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("image garbage collection: {e}"),
        }
    }
}

/// A pod's network sandbox as the network gave it.
#[derive(Debug, Clone)]
pub struct NetSandbox {
    pub ip: IpAddr,
    pub netns: Option<PathBuf>,
    /// `netns` is the namespace the node's address-only pods share: the pod has only `ip`
    /// in it (see `skiff_shim::PodSandbox::shared`).
    pub shared: bool,
}

/// Pod networks: a namespace and an address per pod, or for pods whose every socket the
/// agent makes, only an address in a namespace they share.
#[async_trait::async_trait]
pub trait Network: Send + Sync + 'static {
    /// The pod's sandbox; `address_only` asks for an address in the shared namespace. A
    /// pod that has a sandbox gets it back, of whichever kind.
    async fn create(&self, pod_uid: &str, address_only: bool) -> Result<NetSandbox, String>;
    /// Gives an address-only pod a namespace of its own, with the same IP.
    async fn promote(&self, pod_uid: &str) -> Result<NetSandbox, String>;
    async fn remove(&self, pod_uid: &str) -> Result<(), String>;
    /// Releases the sandbox of a pod whose workloads could not change it (see
    /// `Shim::sandbox_reusable`): it may serve another pod. Removes it otherwise.
    async fn recycle(&self, pod_uid: &str) -> Result<(), String> {
        self.remove(pod_uid).await
    }
    /// Pods that have a sandbox (to remove those of pods that are gone).
    async fn list(&self) -> Vec<String>;
}

/// How an agent is set up.
pub struct AgentConfig {
    pub node_name: String,
    /// The address the node reports (InternalIP); the agent's endpoint listens on it.
    pub node_ip: IpAddr,
    /// Port of the agent's endpoint (logs, later exec), like the kubelet's 10250.
    pub port: u16,
    /// Pod directories (volumes) and container logs live here.
    pub data_dir: PathBuf,
    pub max_pods: u32,
    /// Extra node labels.
    pub labels: Vec<(String, String)>,
    /// How often the Lease is renewed (the kubelet: 10 s).
    pub lease_interval: Duration,
    /// Pods' resolvers and names (the kubelet's `clusterDNS` and `clusterDomain`).
    pub dns: dns::NodeDns,
    /// The process's shared informers, when it has them (the agent makes its own if not).
    pub informers: Option<Arc<skiff_informer::Informers>>,
}

impl AgentConfig {
    /// Where this node's provisioned local volumes live.
    pub fn local_root(&self) -> PathBuf {
        self.data_dir.join("local-path")
    }

    pub fn new(node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_name: node_name.into(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            port: 10250,
            data_dir: data_dir.into(),
            max_pods: 1000,
            labels: Vec::new(),
            lease_interval: Duration::from_secs(10),
            dns: dns::NodeDns::new(
                Vec::new(),
                "cluster.local",
                dns::NodeDns::node_resolv_conf(),
            ),
            informers: None,
        }
    }
}

/// What the agent's parts share.
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub config: AgentConfig,
    pub shims: Vec<Arc<dyn Shim>>,
    pub images: Arc<dyn Images>,
    pub network: Arc<dyn Network>,
    pub logs: LogManager,
    pub pods: pod::Workers,
    pub runtime_classes: runtime_classes::RuntimeClasses,
    /// Services, for their variables in containers' environments.
    pub services: Arc<skiff_informer::Informer<k8s_openapi::api::core::v1::Service>>,
    /// Containers running now, for exec, attach and port-forward.
    pub running: remote::Running,
    /// Events on their way to the API server (see `events::send_events`).
    pub events: tokio::sync::mpsc::UnboundedSender<k8s_openapi::api::core::v1::Event>,
    /// Pods between their sandbox and their first container running (see `pod::run_pod`).
    pub setups: Arc<tokio::sync::Semaphore>,
}

/// Pods set up at once: a sandbox is built only when fewer pods than this are waiting for
/// their first container. A burst would otherwise build a network namespace, a veth pair
/// and their teardown for every pending pod while the runtimes can start only a few
/// containers at a time; with the gate, finished pods' sandboxes are recycled instead.
const SETUPS_IN_FLIGHT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node registration: {0}")]
    Register(#[from] kube::Error),
    #[error("agent endpoint on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running agent.
pub struct Agent {
    tasks: tokio::task::JoinSet<()>,
    pub endpoint: SocketAddr,
    _informers: Arc<skiff_informer::Informers>,
}

impl Agent {
    /// Registers the node, then runs its heartbeat, its endpoint and its pods until dropped.
    pub async fn start(
        client: kube::Client,
        config: AgentConfig,
        shims: Vec<Arc<dyn Shim>>,
        images: Arc<dyn Images>,
        network: Arc<dyn Network>,
    ) -> Result<Agent, Error> {
        std::fs::create_dir_all(config.data_dir.join("pods"))?;
        // Two spare log files per pod the node may hold (finished pods keep their logs
        // until they are deleted, and count against no capacity): starting a pod makes
        // no inode, even in a burst that follows a stream of pods.
        let spares = 2 * config.max_pods as usize;
        let logs = LogManager::with_spares(config.data_dir.join("logs"), spares)?;
        logs.fill_spares();
        let addr = SocketAddr::new(config.node_ip, config.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let endpoint = listener.local_addr()?;
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime_classes = runtime_classes::RuntimeClasses::follow(client.clone());
        let informers = config
            .informers
            .clone()
            .unwrap_or_else(|| skiff_informer::Informers::new(client.clone()));
        let services = informers.services();
        let ctx = Arc::new(Ctx {
            client,
            config,
            shims,
            images,
            network,
            logs,
            pods: pod::Workers::default(),
            runtime_classes,
            services,
            running: remote::Running::default(),
            events,
            setups: Arc::new(tokio::sync::Semaphore::new(SETUPS_IN_FLIGHT)),
        });
        node::register(&ctx, endpoint.port()).await?;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(server::serve(ctx.clone(), listener));
        tasks.spawn(node::heartbeat(ctx.clone(), endpoint.port()));
        tasks.spawn(volumes::clean_local_volumes(
            ctx.client.clone(),
            ctx.config.node_name.clone(),
            ctx.config.local_root(),
        ));
        tasks.spawn(events::send_events(ctx.client.clone(), events_rx));
        tasks.spawn(pod::watch(ctx.clone()));
        tasks.spawn(image_gc(ctx.clone()));
        Ok(Agent {
            tasks,
            endpoint,
            _informers: informers,
        })
    }

    /// Runs until one of the agent's loops ends (they don't, short of a panic).
    pub async fn wait(mut self) {
        self.tasks.join_next().await;
    }
}

/// Registers `name` as a Node if it is not one yet, and returns its pod CIDR (which the
/// control plane assigns at registration), so the pod network can be set up before the
/// agent starts.
pub async fn ensure_node(client: &kube::Client, name: &str) -> Result<String, Error> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let node = match nodes.get_opt(name).await? {
        Some(n) => n,
        None => {
            let fresh = Node {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match nodes.create(&Default::default(), &fresh).await {
                Ok(n) => n,
                Err(kube::Error::Api(e)) if e.code == 409 => nodes.get(name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    node.spec
        .and_then(|s| s.pod_cidr)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Error::Io(std::io::Error::other(format!(
                "node {name} has no spec.podCIDR: the control plane assigns one at registration"
            )))
        })
}
