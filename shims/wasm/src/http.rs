//! wasi:http components, served like `wasmtime serve`: a listener on each declared port in
//! the pod's network namespace, a fresh instance per request from one pre-instantiated
//! component, concurrency bounded by a semaphore, a per-request deadline by epochs, and a
//! graceful stop that lets requests in flight finish within the grace period.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
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
use crate::{Inner, TICK, netns};

/// The port a component serves on when its container declares none (`wasmtime serve`'s).
pub const DEFAULT_PORT: u16 = 8080;

pub struct HttpContainer {
    server: Arc<Server>,
    netns: Option<PathBuf>,
    /// Where to listen: every address of the pod's own namespace, or (no namespace, as in
    /// tests) the sandbox's address, never all of the host's.
    listen: IpAddr,
    exit: watch::Receiver<Option<Exit>>,
    tasks: std::sync::Mutex<Option<JoinSet<()>>>,
    started: AtomicBool,
    /// Why the pod's namespace could not be opened, reported by `start`.
    netns_error: Option<String>,
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
    /// The pod's network namespace, for the guest's outgoing connections.
    netns: Option<Arc<std::fs::File>>,
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
    ) -> Self {
        let netns = sandbox.netns.clone();
        let listen = match (&netns, sandbox.ip) {
            (Some(_), _) => IpAddr::from([0, 0, 0, 0]),
            (None, Some(ip)) => ip,
            (None, None) => IpAddr::from([127, 0, 0, 1]),
        };
        let max_permits = shim.config.http_concurrency.max(1) as u32;
        let (exit, exit_rx) = watch::channel(None);
        let spec_cpu = spec.cpu_limit_millis;
        let (netns_file, netns_error) = match netns.as_deref().map(netns::open) {
            None => (None, None),
            Some(Ok(f)) => (Some(f), None),
            Some(Err(e)) => (None, Some(e.to_string())),
        };
        let uses_sockets = pre
            .instance_pre()
            .component()
            .component_type()
            .imports(&shim.engine)
            .any(|(name, _)| name.starts_with("wasi:sockets/"));
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
                netns: netns_file,
                uses_sockets,
                cpu: spec_cpu.map(|m| Arc::new(SharedCpu::new(m))),
            }),
            netns,
            listen,
            exit: exit_rx,
            tasks: std::sync::Mutex::new(Some(JoinSet::new())),
            started: AtomicBool::new(false),
            netns_error,
        }
    }
}

#[async_trait::async_trait]
impl Container for HttpContainer {
    async fn start(&self) -> Result<(), ShimError> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(ShimError::Start("already started".into()));
        }
        let ports = if self.server.spec.ports.is_empty() {
            vec![DEFAULT_PORT]
        } else {
            self.server.spec.ports.clone()
        };
        if let Some(e) = &self.netns_error {
            return Err(ShimError::Start(e.clone()));
        }
        let mut listeners = Vec::new();
        for port in ports {
            let addr = SocketAddr::new(self.listen, port);
            let std = netns::bind_tcp(self.netns.as_deref(), addr)
                .map_err(|e| ShimError::Start(format!("listen on port {port}: {e}")))?;
            listeners.push(tokio::net::TcpListener::from_std(std)?);
        }
        let mut guard = self.tasks.lock().expect("tasks lock");
        let tasks = guard
            .as_mut()
            .ok_or_else(|| ShimError::Start("stopped".into()))?;
        for listener in listeners {
            tasks.spawn(self.server.clone().accept(listener));
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
    async fn accept(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let mut stopping = self.stopping.subscribe();
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
        let mut store = Store::new(
            &self.shim.engine,
            Host {
                wasi,
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limits: Limiter::new(self.spec.memory_limit, self.usage.clone()),
                hooks: PodHooks {
                    netns: self.netns.clone(),
                },
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
        let task = match (&self.netns, self.uses_sockets) {
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
