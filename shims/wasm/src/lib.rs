//! Skiff's WebAssembly shim: runs Wasm containers in wasmtime, inside the node agent.
//!
//! One [`Engine`] per node with the pooling allocator (instances are created and dropped by
//! the thousand; pooling makes that a matter of microseconds) and epoch interruption (for
//! stopping, CPU limits and request deadlines). Artifacts are compiled once per digest and
//! cached on disk (see [`cache`]). A component exporting `wasi:http/incoming-handler` is
//! served on its container ports with an instance per request; one exporting `wasi:cli/run`,
//! or a core module with `_start`, runs once as a command.

mod cache;
mod client;
mod command;
mod host;
mod http;
mod logs;
mod lookup;
pub mod netns;
mod threads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_shim::{Container, ContainerSpec, PodSandbox, Shim, ShimError, Workload};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::CacheError;
pub use http::DEFAULT_PORT;

/// What `kubectl exec` and `attach` into a Wasm container are told.
pub(crate) const EXEC_REFUSAL: &str = "it is a WebAssembly instance (runtime wasmtime), which has no processes: there is nothing to exec into; use kubectl logs or kubectl attach for its output, or run a Linux container beside it for a shell";

/// The RuntimeClass handler name that selects this shim.
pub const HANDLER: &str = "wasmtime";

/// Layer media types of the Wasm artifact formats in use: the CNCF Wasm artifact, Spin's,
/// and runwasi's.
pub const MEDIA_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

/// How often the engine's epoch advances: the granularity of stops, CPU quotas and request
/// deadlines.
pub const TICK: Duration = Duration::from_millis(5);

/// Bytes of a freed instance's memory and of each of its tables kept resident in its slot
/// for the next instance: at most [`PoolingAllocationConfig::max_unused_warm_slots`] (64)
/// slots hold them.
const KEEP_RESIDENT: usize = 256 << 10;

#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Where compiled artifacts are kept.
    pub cache_dir: PathBuf,
    /// Instances (command containers plus HTTP requests in flight) the pool holds at once.
    pub max_instances: u32,
    /// Requests one HTTP container handles at once; more wait.
    pub http_concurrency: usize,
    /// A request's instance is ended after this long.
    pub request_timeout: Duration,
}

impl WasmConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_instances: 1000,
            http_concurrency: 256,
            request_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The Wasm shim. Cheap to clone.
#[derive(Clone)]
pub struct WasmShim {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) config: WasmConfig,
    pub(crate) cache: Arc<cache::Cache>,
    /// The threads command containers run on.
    pub(crate) threads: Arc<threads::Threads>,
}

impl WasmShim {
    pub fn new(config: WasmConfig) -> Result<Self, Error> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 2)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances * 2)
            .total_stacks(config.max_instances)
            // A freed slot's dirty pages (found with the PAGEMAP_SCAN ioctl, Linux 6.7+) are
            // set back to the image's contents with memset, up to these sizes, instead of
            // being unmapped with madvise: every madvise and every copy-on-write fault of
            // the next instance flushes the TLB of each CPU running the agent's threads
            // (an interrupt to each, costly in a VM). A small command dirties far less than
            // this; on older kernels and beyond the sizes, madvise as before.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .max_unused_warm_slots(64);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(Error::Engine)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| Error::Engine(e.into()))?;
        let cache = Arc::new(cache::Cache::new(config.cache_dir.clone(), engine.clone())?);
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                config,
                cache,
                threads: Arc::default(),
            }),
        })
    }

    /// Whether a compiled artifact for this digest is cached on disk.
    pub fn is_precompiled(&self, digest: &str) -> bool {
        self.inner.cache.is_cached(digest)
    }
}

#[async_trait::async_trait]
impl Shim for WasmShim {
    fn name(&self) -> &'static str {
        HANDLER
    }

    fn media_types(&self) -> &'static [&'static str] {
        MEDIA_TYPES
    }

    /// A guest reaches its network only through sockets the host opens for it.
    fn sandbox_reusable(&self) -> bool {
        true
    }

    fn runs(&self) -> skiff_shim::WorkloadKind {
        skiff_shim::WorkloadKind::Wasm
    }

    fn can_run(&self, workload: &Workload) -> bool {
        match workload {
            Workload::Wasm { path, .. } => {
                let mut preamble = [0u8; 8];
                std::fs::File::open(path)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut preamble))
                    .is_ok_and(|()| cache::kind_of(&preamble).is_some())
            }
            Workload::Rootfs { .. } => false,
        }
    }

    /// A wasi:http component importing no wasi:sockets, already loaded: the shim listens
    /// for it and makes its outgoing connections.
    fn shares_network(&self, workload: &Workload) -> bool {
        let Workload::Wasm { digest, .. } = workload else {
            return false;
        };
        self.inner
            .cache
            .loaded(digest)
            .is_some_and(|l| l.shares_network())
    }

    async fn precompile(&self, workload: &Workload) -> Result<(), ShimError> {
        let Workload::Wasm { digest, path, .. } = workload else {
            return Err(ShimError::InvalidWorkload("not a wasm workload".into()));
        };
        self.inner
            .cache
            .load(digest, path)
            .await
            .map(drop)
            .map_err(|e| ShimError::InvalidWorkload(e.to_string()))
    }

    async fn create(
        &self,
        spec: ContainerSpec,
        sandbox: &PodSandbox,
    ) -> Result<Box<dyn Container>, ShimError> {
        let Workload::Wasm { digest, path, .. } = &spec.workload else {
            return Err(ShimError::InvalidWorkload(
                "the wasm shim runs wasm workloads only".into(),
            ));
        };
        let loaded = self
            .inner
            .cache
            .load(digest, path)
            .await
            .map_err(|e| ShimError::InvalidWorkload(e.to_string()))?;
        let netns = sandbox.netns.clone();
        if sandbox.shared && !loaded.shares_network() {
            return Err(ShimError::Config(match &*loaded {
                cache::Loaded::Http { .. } => http::SOCKETS_NEED_NAMESPACE.into(),
                _ => "a command runs inside a network namespace of its own, not the node's shared one".into(),
            }));
        }
        Ok(match &*loaded {
            cache::Loaded::Http { pre, uses_sockets } => Box::new(http::HttpContainer::new(
                self.inner.clone(),
                spec,
                sandbox,
                pre.clone(),
                *uses_sockets,
            )),
            _ => Box::new(command::CommandContainer::new(
                self.inner.clone(),
                spec,
                netns,
                sandbox.dns.clone(),
                loaded,
            )),
        })
    }
}
