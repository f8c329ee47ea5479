//! Command containers: a component exporting `wasi:cli/run` or a core module with `_start`,
//! run once to its exit.
//!
//! Each runs on an OS thread of its own while it runs (one the shim keeps for the next
//! command once it ends, see [`crate::threads`]), joined to the pod's network namespace,
//! with a single-threaded tokio runtime of its own: its wasi:sockets are the pod's, its CPU
//! time is that thread's since it started (which is how a CPU limit is enforced), and a
//! busy guest cannot stall the agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use skiff_shim::{Container, ContainerSpec, Exit, ExitReason, ShimError, Stats};
use tokio::sync::{Notify, oneshot, watch};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::cache::Loaded;
use crate::host::{Host, Limiter, P1Host, PodHooks, Usage, wasi_builder};
use crate::{Inner, netns};

/// Exit codes the way a shell reports a signal: 128 + SIGKILL, 128 + SIGTERM, 128 + SIGABRT
/// (a trap, as the wasmtime CLI reports it).
const KILLED: i32 = 137;
const TERMINATED: i32 = 143;
const TRAPPED: i32 = 134;

pub struct CommandContainer {
    shim: Arc<Inner>,
    spec: ContainerSpec,
    netns: Option<PathBuf>,
    /// The pod's resolver configuration: its name lookups and outgoing requests use it.
    dns: skiff_shim::DnsConfig,
    loaded: Arc<Loaded>,
    control: Arc<Control>,
    exit: watch::Receiver<Option<Exit>>,
    exit_tx: Arc<watch::Sender<Option<Exit>>>,
    usage: Arc<Usage>,
}

#[derive(Default)]
struct Control {
    /// Set when the agent stops the container; checked at every epoch tick.
    stopping: AtomicBool,
    /// Wakes a guest waiting in a host call (sleep, socket).
    notify: Notify,
    started: AtomicBool,
}

impl CommandContainer {
    pub fn new(
        shim: Arc<Inner>,
        spec: ContainerSpec,
        netns: Option<PathBuf>,
        dns: skiff_shim::DnsConfig,
        loaded: Arc<Loaded>,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        Self {
            shim,
            spec,
            netns,
            dns,
            loaded,
            control: Arc::default(),
            exit: rx,
            exit_tx: Arc::new(tx),
            usage: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl Container for CommandContainer {
    async fn start(&self) -> Result<(), ShimError> {
        if self.control.started.swap(true, Ordering::SeqCst) {
            return Err(ShimError::Start("already started".into()));
        }
        let (started_tx, started_rx) = oneshot::channel();
        let run = Run {
            shim: self.shim.clone(),
            spec: self.spec.clone(),
            loaded: self.loaded.clone(),
            control: self.control.clone(),
            usage: self.usage.clone(),
            dns: self.dns.clone(),
        };
        let netns = self.netns.clone();
        let exit_tx = self.exit_tx.clone();
        self.shim.threads.run(Box::new(move || {
            let exit = (|| {
                if let Some(path) = &netns {
                    netns::enter(path).map_err(|e| ShimError::Start(e.to_string()))?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(rt.block_on(run.run(started_tx)))
            })();
            let exit = exit.unwrap_or_else(|e: ShimError| Exit {
                code: 128,
                reason: ExitReason::Error,
                message: Some(e.to_string()),
            });
            exit_tx.send_replace(Some(exit));
        }))?;
        match started_rx.await {
            Ok(result) => result,
            // The thread ended before instantiating: its exit says why.
            Err(_) => {
                let exit = self.wait().await;
                Err(ShimError::Start(
                    exit.message.unwrap_or_else(|| "exited before start".into()),
                ))
            }
        }
    }

    async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .expect("exit sender lives in self");
        exit.clone().expect("waited for Some")
    }

    fn stop(&self, _grace: Duration) {
        // A Wasm command has no signal handlers to run (WASI has no signals), so waiting out
        // the grace period would only delay the pod's end: stop at once.
        self.kill();
    }

    fn kill(&self) {
        self.control.stopping.store(true, Ordering::SeqCst);
        self.control.notify.notify_one();
        if !self.control.started.load(Ordering::SeqCst) {
            self.exit_tx.send_if_modified(|e| {
                if e.is_none() {
                    *e = Some(stopped_exit());
                    true
                } else {
                    false
                }
            });
        }
    }

    fn exec_refusal(&self) -> Option<String> {
        Some(crate::EXEC_REFUSAL.into())
    }

    fn stats(&self) -> Stats {
        Stats {
            memory_bytes: self.usage.memory_bytes.load(Ordering::Relaxed),
            cpu_nanos: self.usage.cpu_nanos.load(Ordering::Relaxed),
        }
    }
}

fn stopped_exit() -> Exit {
    Exit {
        code: TERMINATED,
        reason: ExitReason::Error,
        message: Some("stopped".into()),
    }
}

struct Run {
    shim: Arc<Inner>,
    spec: ContainerSpec,
    loaded: Arc<Loaded>,
    control: Arc<Control>,
    usage: Arc<Usage>,
    dns: skiff_shim::DnsConfig,
}

/// What ended the guest, before it is turned into an [`Exit`].
enum Ended {
    Returned(bool),
    Failed(wasmtime::Error),
    Stopped,
}

impl Run {
    async fn run(self, started: oneshot::Sender<Result<(), ShimError>>) -> Exit {
        let limiter = Limiter::new(self.spec.memory_limit, self.usage.clone());
        let builder = wasi_builder(&self.spec);
        let mut builder = match builder {
            Ok(b) => b,
            Err(e) => {
                let _ = started.send(Err(ShimError::Start(e.to_string())));
                return failed(e.to_string());
            }
        };
        // The thread may have run other commands before: CPU time counts from here.
        let cpu_start = thread_cpu();
        let cpu = CpuQuota::new(self.spec.cpu_limit_millis, cpu_start);
        let ended = match &*self.loaded {
            Loaded::Command(pre) => {
                let mut store = Store::new(
                    &self.shim.engine,
                    Host {
                        wasi: builder.build(),
                        http: WasiHttpCtx::new(),
                        table: ResourceTable::new(),
                        limits: limiter,
                        // This thread is in the pod's namespace already; names resolve
                        // by the pod's resolv.conf.
                        hooks: PodHooks {
                            net: crate::netns::PodNet {
                                resolver: Arc::new(crate::netns::PodResolver::new(
                                    self.dns.clone(),
                                )),
                                ..Default::default()
                            },
                        },
                    },
                );
                store.limiter(|h| &mut h.limits);
                self.deadline(&mut store, cpu);
                match pre.instantiate_async(&mut store).await {
                    Err(e) => {
                        let _ = started.send(Err(ShimError::Start(format!("{e:#}"))));
                        Ended::Failed(e)
                    }
                    Ok(command) => {
                        let _ = started.send(Ok(()));
                        tokio::select! {
                            r = command.wasi_cli_run().call_run(&mut store) => match r {
                                Ok(result) => Ended::Returned(result.is_ok()),
                                Err(e) => Ended::Failed(e),
                            },
                            () = self.stopped() => Ended::Stopped,
                        }
                    }
                }
            }
            Loaded::Module(pre) => {
                let mut store = Store::new(
                    &self.shim.engine,
                    P1Host {
                        wasi: builder.build_p1(),
                        limits: limiter,
                    },
                );
                store.limiter(|h| &mut h.limits);
                self.deadline(&mut store, cpu);
                let instance = match pre.instantiate_async(&mut store).await {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = started.send(Err(ShimError::Start(format!("{e:#}"))));
                        return self.exit(Ended::Failed(e));
                    }
                };
                match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                    Err(e) => {
                        let _ = started.send(Err(ShimError::Start(format!(
                            "core module has no _start: {e:#}"
                        ))));
                        Ended::Failed(e)
                    }
                    Ok(start) => {
                        let _ = started.send(Ok(()));
                        tokio::select! {
                            r = start.call_async(&mut store, ()) => match r {
                                Ok(()) => Ended::Returned(true),
                                Err(e) => Ended::Failed(e),
                            },
                            () = self.stopped() => Ended::Stopped,
                        }
                    }
                }
            }
            Loaded::Http { .. } => unreachable!("http components are served, not run"),
        };
        self.usage.cpu_nanos.store(
            thread_cpu().saturating_sub(cpu_start).as_nanos() as u64,
            Ordering::Relaxed,
        );
        self.exit(ended)
    }

    async fn stopped(&self) {
        while !self.control.stopping.load(Ordering::SeqCst) {
            self.control.notify.notified().await;
        }
    }

    /// Every epoch tick: end the guest if it is being stopped, pause it if it spent its CPU
    /// quota for this period.
    fn deadline<T: Send>(&self, store: &mut Store<T>, mut cpu: CpuQuota) {
        let control = self.control.clone();
        let usage = self.usage.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if control.stopping.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::msg("stopped"));
            }
            let (used, pause) = cpu.check();
            usage
                .cpu_nanos
                .store(used.as_nanos() as u64, Ordering::Relaxed);
            Ok(match pause {
                Some(pause) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(pause))),
                None => UpdateDeadline::Continue(1),
            })
        });
    }

    fn exit(&self, ended: Ended) -> Exit {
        match ended {
            Ended::Returned(true) => Exit {
                code: 0,
                reason: ExitReason::Completed,
                message: None,
            },
            Ended::Returned(false) => Exit {
                code: 1,
                reason: ExitReason::Error,
                message: None,
            },
            Ended::Stopped => stopped_exit(),
            Ended::Failed(e) => {
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    let reason = if exit.0 == 0 {
                        ExitReason::Completed
                    } else {
                        ExitReason::Error
                    };
                    return Exit {
                        code: exit.0,
                        reason,
                        message: None,
                    };
                }
                if self.control.stopping.load(Ordering::SeqCst) {
                    return Exit {
                        code: KILLED,
                        reason: ExitReason::Error,
                        message: Some("stopped".into()),
                    };
                }
                if self.usage.oom.load(Ordering::SeqCst) {
                    return Exit {
                        code: KILLED,
                        reason: ExitReason::OOMKilled,
                        message: Some(format!(
                            "memory limit of {} bytes reached",
                            self.spec.memory_limit.unwrap_or_default()
                        )),
                    };
                }
                Exit {
                    code: TRAPPED,
                    reason: ExitReason::Error,
                    message: Some(format!("{e:#}")),
                }
            }
        }
    }
}

fn failed(message: String) -> Exit {
    Exit {
        code: 128,
        reason: ExitReason::Error,
        message: Some(message),
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// The CFS way: at most `quota` of CPU in every 100 ms period.
struct CpuQuota {
    quota: Option<Duration>,
    /// The thread's CPU time when the command started.
    start_cpu: Duration,
    period_start: Instant,
    period_cpu: Duration,
}

const PERIOD: Duration = Duration::from_millis(100);

impl CpuQuota {
    fn new(limit_millis: Option<u64>, start_cpu: Duration) -> Self {
        Self {
            quota: limit_millis.map(|m| PERIOD * m as u32 / 1000),
            start_cpu,
            period_start: Instant::now(),
            period_cpu: Duration::ZERO,
        }
    }

    /// CPU the command used so far, and how long to pause if the period's quota is spent.
    fn check(&mut self) -> (Duration, Option<Duration>) {
        let cpu = thread_cpu().saturating_sub(self.start_cpu);
        let Some(quota) = self.quota else {
            return (cpu, None);
        };
        let now = Instant::now();
        let elapsed = now - self.period_start;
        if elapsed >= PERIOD {
            self.period_start = now;
            self.period_cpu = cpu;
            return (cpu, None);
        }
        if cpu.saturating_sub(self.period_cpu) >= quota {
            return (cpu, Some(PERIOD - elapsed));
        }
        (cpu, None)
    }
}
