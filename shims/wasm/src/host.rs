//! The state a guest's store holds, and what its WASI context is given.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use skiff_shim::{ContainerSpec, Stream};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::logs::LogOutput;
use crate::netns::PodNet;

/// Store data of a component instance (commands and HTTP handlers).
pub struct Host {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: Limiter,
    pub hooks: PodHooks,
}

/// How a guest's outgoing `wasi:http` requests are sent: by Skiff's client (see
/// client.rs), from the pod's network. HTTP components are served on the agent's runtime,
/// outside the pod, so `net` says where their connections are made; commands run on a
/// thread inside their pod's namespace and leave it empty.
#[derive(Default, Clone)]
pub struct PodHooks {
    pub(crate) net: PodNet,
}

type SendResult = wasmtime_wasi_http::Result<crate::client::Sent>;

impl WasiHttpHooks for PodHooks {
    fn send_request(
        &mut self,
        request: ::http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        _ = fut;
        Box::new(crate::client::send(self.net.clone(), request, options))
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Store data of a core module (WASI preview 1).
pub struct P1Host {
    pub wasi: wasmtime_wasi::p1::WasiP1Ctx,
    pub limits: Limiter,
}

/// Memory accounting shared with the container handle, for stats and for telling an
/// out-of-memory trap from any other.
#[derive(Default)]
pub struct Usage {
    pub memory_bytes: AtomicU64,
    pub cpu_nanos: AtomicU64,
    pub oom: AtomicBool,
}

/// Caps linear memory at the container's memory limit. A growth past it fails (the guest's
/// allocator sees `memory.grow` return -1 and usually aborts); `oom` records that it
/// happened so the exit is reported as OOMKilled.
pub struct Limiter {
    memory_limit: Option<u64>,
    usage: Arc<Usage>,
}

impl Limiter {
    pub fn new(memory_limit: Option<u64>, usage: Arc<Usage>) -> Self {
        Self {
            memory_limit,
            usage,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self
            .memory_limit
            .is_some_and(|limit| desired as u64 > limit)
        {
            self.usage.oom.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.usage
            .memory_bytes
            .store(desired as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table entry is a pointer: a million of them is already 8 MB the limit does not see.
        Ok(desired <= 1 << 20)
    }
}

/// The WASI context of a container: only what its spec grants. Args, env, its volumes as
/// preopened directories, stdout/stderr to its logs, and its pod's network.
pub fn wasi_builder(spec: &ContainerSpec) -> Result<WasiCtxBuilder, std::io::Error> {
    let mut b = WasiCtxBuilder::new();
    b.args(&spec.argv).envs(&spec.env);
    for m in &spec.mounts {
        let perms = if m.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&m.host_path, &m.container_path, perms)
            .map_err(|e| {
                std::io::Error::other(format!(
                    "volume at {}: {}: {e}",
                    m.container_path,
                    m.host_path.display()
                ))
            })?;
    }
    b.stdout(LogOutput::new(spec.logs.clone(), Stream::Stdout));
    b.stderr(LogOutput::new(spec.logs.clone(), Stream::Stderr));
    // The guest runs in its pod's network namespace (see netns.rs), so the network it may
    // use is the pod's own: all of it, as a container's. (wasmtime-wasi allows neither TCP
    // nor UDP unless asked.)
    b.inherit_network()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true);
    Ok(b)
}
