//! wasi:http components, served like `wasmtime serve`: a listener on each declared port in
//! the pod's network namespace, a fresh instance per request from one pre-instantiated
//! component, concurrency bounded by a semaphore, a per-request deadline by epochs, and a
//! graceful stop that lets requests in flight finish within the grace period.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use skiff_shim::{Container, ContainerSpec, Exit, ExitReason, PodSandbox, ShimError, Stats};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::host::{Host, Limiter, PodHooks, Usage, wasi_builder};
use crate::netns::{self, PodNet};
use crate::{Inner, TICK};

/// Why a component that imports wasi:sockets is not run in a shared namespace.
pub(crate) const SOCKETS_NEED_NAMESPACE: &str = "the component imports wasi:sockets: it needs a network namespace of its own, not the node's shared one";

/// The port a component serves on when its container declares none (`wasmtime serve`'s).
pub const DEFAULT_PORT: u16 = 8080;

pub struct HttpContainer {
    server: Arc<Server>,
    exit: watch::Receiver<Option<Exit>>,
    tasks: std::sync::Mutex<Option<JoinSet<()>>>,
    started: AtomicBool,
}

/// Where a container listens and its guests connect from.
struct Net {
    pod: PodNet,
    /// Every address of the pod's own namespace; its IP in a shared namespace, or without
    /// a namespace (tests), never all of the host's.
    listen: IpAddr,
    /// Why the pod's namespace could not be opened, reported by `start`.
    error: Option<String>,
}

impl Net {
    fn new(sandbox: &PodSandbox) -> Net {
        let (netns, error) = match sandbox.netns.as_deref().map(netns::open) {
            None => (None, None),
            Some(Ok(f)) => (Some(f), None),
            Some(Err(e)) => (None, Some(e.to_string())),
        };
        let shared = sandbox.shared && netns.is_some();
        let listen = match (&netns, sandbox.ip) {
            (Some(_), Some(ip)) if shared => ip,
            (Some(_), _) => IpAddr::from([0, 0, 0, 0]),
            (None, Some(ip)) => ip,
            (None, None) => IpAddr::from([127, 0, 0, 1]),
        };
        Net {
            pod: PodNet {
                netns,
                shared_ip: sandbox.ip.filter(|_| shared),
                resolver: std::sync::Arc::new(crate::netns::PodResolver::new(sandbox.dns.clone())),
            },
            listen,
            error,
        }
    }

    /// Listeners on `ports`, in the pod's namespace.
    fn listen(&self, ports: &[u16]) -> Result<Vec<tokio::net::TcpListener>, ShimError> {
        if let Some(e) = &self.error {
            return Err(ShimError::Start(e.clone()));
        }
        ports
            .iter()
            .map(|&port| {
                let addr = SocketAddr::new(self.listen, port);
                let bind = || -> std::io::Result<std::net::TcpListener> {
                    let listener = std::net::TcpListener::bind(addr)?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                };
                let listener = match &self.pod.netns {
                    None => bind(),
                    Some(ns) => netns::run_in(ns, bind).and_then(|r| r),
                }
                .map_err(|e| ShimError::Start(format!("listen on port {port}: {e}")))?;
                Ok(tokio::net::TcpListener::from_std(listener)?)
            })
            .collect()
    }
}

struct Server {
    shim: Arc<Inner>,
    spec: ContainerSpec,
    pre: ProxyPre<Host>,
    permits: Arc<Semaphore>,
    max_permits: u32,
    /// `true` once a stop began: listeners close, requests in flight finish.
    stopping: watch::Sender<bool>,
    exit: watch::Sender<Option<Exit>>,
    usage: Arc<Usage>,
    /// Where it listens and its guests connect from.
    net: std::sync::RwLock<Net>,
    /// Bumped when the pod's network moves: listeners of the old one stop accepting.
    moved: watch::Sender<u64>,
    /// The container's CPU limit, shared by all its requests.
    cpu: Option<Arc<SharedCpu>>,
    /// Whether the component imports wasi:sockets: then every poll of its instances
    /// happens inside the pod's namespace, so the sockets it makes are the pod's.
    uses_sockets: bool,
}

impl HttpContainer {
    pub fn new(
        shim: Arc<Inner>,
        spec: ContainerSpec,
        sandbox: &PodSandbox,
        pre: ProxyPre<Host>,
        uses_sockets: bool,
    ) -> Self {
        let max_permits = shim.config.http_concurrency.max(1) as u32;
        let (exit, exit_rx) = watch::channel(None);
        let spec_cpu = spec.cpu_limit_millis;
        Self {
            server: Arc::new(Server {
                shim,
                spec,
                pre,
                permits: Arc::new(Semaphore::new(max_permits as usize)),
                max_permits,
                stopping: watch::channel(false).0,
                exit,
                usage: Arc::default(),
                net: std::sync::RwLock::new(Net::new(sandbox)),
                moved: watch::channel(0).0,
                uses_sockets,
                cpu: spec_cpu.map(|m| Arc::new(SharedCpu::new(m))),
            }),
            exit: exit_rx,
            tasks: std::sync::Mutex::new(Some(JoinSet::new())),
            started: AtomicBool::new(false),
        }
    }

    fn ports(&self) -> Vec<u16> {
        if self.server.spec.ports.is_empty() {
            vec![DEFAULT_PORT]
        } else {
            self.server.spec.ports.clone()
        }
    }
}

#[async_trait::async_trait]
impl Container for HttpContainer {
    async fn start(&self) -> Result<(), ShimError> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(ShimError::Start("already started".into()));
        }
        // Holding the tasks: a move of the pod's network waits for these listeners.
        let mut guard = self.tasks.lock().expect("tasks lock");
        let tasks = guard
            .as_mut()
            .ok_or_else(|| ShimError::Start("stopped".into()))?;
        let listeners = self
            .server
            .net
            .read()
            .expect("net lock")
            .listen(&self.ports())?;
        let generation = *self.server.moved.borrow();
        for listener in listeners {
            tasks.spawn(self.server.clone().accept(listener, generation));
        }
        Ok(())
    }

    fn network_moved(&self, sandbox: &PodSandbox) -> Result<(), ShimError> {
        let net = Net::new(sandbox);
        if net.pod.shared_ip.is_some() && self.server.uses_sockets {
            return Err(ShimError::Config(SOCKETS_NEED_NAMESPACE.into()));
        }
        // Holding the tasks: a start or stop meanwhile waits for the move.
        let mut guard = self.tasks.lock().expect("tasks lock");
        let listeners = match (guard.as_mut(), self.started.load(Ordering::SeqCst)) {
            (Some(_), true) => net.listen(&self.ports())?,
            _ => Vec::new(),
        };
        *self.server.net.write().expect("net lock") = net;
        let mut generation = 0;
        self.server.moved.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        if let Some(tasks) = guard.as_mut() {
            for listener in listeners {
                tasks.spawn(self.server.clone().accept(listener, generation));
            }
        }
        Ok(())
    }

    async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        let exit = rx.wait_for(Option::is_some).await.expect("sender in self");
        exit.clone().expect("waited for Some")
    }

    fn stop(&self, grace: Duration) {
        if self.server.stopping.send_replace(true) {
            return;
        }
        let server = self.server.clone();
        let tasks = self.tasks.lock().expect("tasks lock").take();
        // Requests in flight hold permits: when all are back, the drain is over.
        let drain = async move {
            let all = server.max_permits;
            let drained = tokio::time::timeout(grace, server.permits.acquire_many(all))
                .await
                .is_ok();
            drop(tasks);
            let exit = if drained {
                Exit {
                    code: 0,
                    reason: ExitReason::Completed,
                    message: None,
                }
            } else {
                Exit {
                    code: 137,
                    reason: ExitReason::Error,
                    message: Some("requests still running at the end of the grace period".into()),
                }
            };
            server
                .exit
                .send_if_modified(|e| e.is_none() && e.replace(exit).is_none());
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(drain);
            }
            Err(_) => self.kill(),
        }
    }

    fn kill(&self) {
        self.server.stopping.send_replace(true);
        drop(self.tasks.lock().expect("tasks lock").take());
        self.server.exit.send_if_modified(|e| {
            e.is_none()
                && e.replace(Exit {
                    code: 137,
                    reason: ExitReason::Error,
                    message: Some("killed".into()),
                })
                .is_none()
        });
    }

    fn exec_refusal(&self) -> Option<String> {
        Some(crate::EXEC_REFUSAL.into())
    }

    fn stats(&self) -> Stats {
        Stats {
            memory_bytes: self.server.usage.memory_bytes.load(Ordering::Relaxed),
            cpu_nanos: self.server.usage.cpu_nanos.load(Ordering::Relaxed),
        }
    }
}

impl Drop for HttpContainer {
    fn drop(&mut self) {
        self.kill();
    }
}

type Response = hyper::Response<HyperOutgoingBody>;

impl Server {
    /// Serves connections from `listener` until the container stops or its network moves
    /// past `generation`; the connections accepted finish.
    async fn accept(self: Arc<Self>, listener: tokio::net::TcpListener, generation: u64) {
        let mut stopping = self.stopping.subscribe();
        let mut moved = self.moved.subscribe();
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.handle(req).await) }
                        });
                        let _ = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                _ = stopping.wait_for(|s| *s) => break,
                _ = moved.wait_for(|g| *g != generation) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        // Connections finish the requests they are serving; the drain in `stop` bounds how
        // long, by dropping this task (and with it `connections`) at the end of the grace.
        while connections.join_next().await.is_some() {}
    }

    async fn handle(self: &Arc<Self>, req: hyper::Request<hyper::body::Incoming>) -> Response {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return plain(503, "stopping\n");
        };
        match self.clone().instance(req).await {
            Ok(resp) => {
                drop(permit);
                resp
            }
            Err(e) => {
                tracing::debug!(container = %self.spec.id, "request failed: {e:#}");
                drop(permit);
                let status = if self.usage.oom.swap(false, Ordering::Relaxed) {
                    503
                } else {
                    500
                };
                plain(status, "the wasm component failed to handle the request\n")
            }
        }
    }

    async fn instance(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> wasmtime::Result<Response> {
        let wasi = wasi_builder(&self.spec)?.build();
        let net = self.net.read().expect("net lock").pod.clone();
        let mut store = Store::new(
            &self.shim.engine,
            Host {
                wasi,
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limits: Limiter::new(self.spec.memory_limit, self.usage.clone()),
                hooks: PodHooks { net: net.clone() },
            },
        );
        store.limiter(|h| &mut h.limits);
        // Yield to other requests every tick; give up after the request timeout.
        let ticks = (self.shim.config.request_timeout.as_millis() / TICK.as_millis()).max(1);
        let mut left = ticks as u64;
        store.set_epoch_deadline(1);
        let cpu = self.cpu.clone();
        let usage = self.usage.clone();
        store.epoch_deadline_callback(move |_| {
            left = left.saturating_sub(1);
            if left == 0 {
                return Err(wasmtime::Error::msg("request timed out"));
            }
            usage
                .cpu_nanos
                .fetch_add(TICK.as_nanos() as u64, Ordering::Relaxed);
            Ok(match cpu.as_ref().and_then(|c| c.charge()) {
                Some(pause) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(pause))),
                None => UpdateDeadline::Yield(1),
            })
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The guest may keep writing the body after it set the response: run it in its own
        // task, which the body's consumer waits for.
        let guest = async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        let task = match (&net.netns, self.uses_sockets) {
            (Some(ns), true) => {
                let ns = ns.clone();
                tokio::spawn(async move {
                    netns::InNetns::new(ns, guest)
                        .await
                        .map_err(wasmtime::Error::from)?
                })
            }
            _ => tokio::spawn(guest),
        };
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(wasmtime::Error::msg(format!("guest error: {code:?}"))),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::Error::msg("guest never set a response")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(wasmtime::Error::msg(e.to_string())),
            },
        }
    }
}

/// A container's CPU limit over all its requests, the CFS way: at most the quota in every
/// 100 ms period. CPU time is sampled: each epoch tick that finds one of its guests running
/// charges a tick (an unbiased estimate, as a sampling profiler's), and a guest that finds
/// the period's quota spent sleeps until the next period.
struct SharedCpu {
    quota_ticks: u64,
    period: std::sync::Mutex<(std::time::Instant, u64)>,
}

const PERIOD: Duration = Duration::from_millis(100);

impl SharedCpu {
    fn new(limit_millis: u64) -> Self {
        let quota = PERIOD.as_nanos() as u64 * limit_millis / 1000;
        SharedCpu {
            quota_ticks: (quota / TICK.as_nanos() as u64).max(1),
            period: std::sync::Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    /// Charges a tick; how long to pause when the period's quota is spent.
    fn charge(&self) -> Option<Duration> {
        let mut p = self.period.lock().expect("cpu lock");
        let now = std::time::Instant::now();
        if now - p.0 >= PERIOD {
            *p = (now, 0);
        }
        p.1 += 1;
        (p.1 > self.quota_ticks).then(|| PERIOD.saturating_sub(now - p.0))
    }
}

fn plain(status: u16, body: &'static str) -> Response {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("static response")
}
