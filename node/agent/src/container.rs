//! One container's life inside a pod: pull, create, start, probe, wait, and restart by the
//! pod's policy with the kubelet's back-off (10 s doubling to 5 min, reset after 10 min of
//! running; the first restart is immediate).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::Container;
use skiff_shim::{ContainerSpec, PodSandbox, Shim};
use tokio::sync::{mpsc, watch};

use crate::pod::{PodRun, Update};
use crate::probe::{self, Kind, Verdict};
use crate::status::{self, State, Terminated};
use crate::{PullPolicy, PulledImage, env, volumes};

pub const BACKOFF_START: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Stopped,
}

/// Init containers run one at a time to completion; the others run side by side.
/// Ephemeral containers (`kubectl debug`) are added to a running pod, always run as Linux
/// containers (they bring tools into a pod of either runtime), and are never restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Init,
    App,
    Ephemeral,
}

pub struct Supervisor {
    pub run: Arc<PodRun>,
    pub role: Role,
    pub index: usize,
    pub spec: Container,
    /// An ephemeral container's `targetContainerName`: it joins that container's pid
    /// namespace.
    pub target: Option<String>,
    /// `Some(grace)` once the pod is being stopped.
    pub stop: watch::Receiver<Option<Duration>>,
    pub status: status::Container,
    /// Earlier containers of the pod with a postStart hook: this one is first created
    /// after each has started and run its hook (or given up), as the kubelet starts a
    /// pod's containers one after the other. Each is the other end of such a container's
    /// `hooked`, which it drops then.
    pub after: Vec<watch::Receiver<()>>,
    /// Held while this container's first start and postStart hook are under way.
    pub hooked: Option<watch::Sender<()>>,
}

impl Supervisor {
    fn publish(&self) {
        let _ = self.run.updates.send(Update::Container {
            role: self.role,
            index: self.index,
            status: Box::new(self.status.clone()),
        });
    }

    fn field_path(&self) -> String {
        match self.role {
            Role::Init => format!("spec.initContainers{{{}}}", self.spec.name),
            Role::App => format!("spec.containers{{{}}}", self.spec.name),
            Role::Ephemeral => format!("spec.ephemeralContainers{{{}}}", self.spec.name),
        }
    }

    fn event(&self, type_: &str, reason: &str, message: String) {
        self.run
            .event(Some(self.field_path()), type_, reason, message);
    }

    fn stopping(&self) -> Option<Duration> {
        *self.stop.borrow()
    }

    /// Sleeps, unless the pod is being stopped first (then `false`).
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = self.stop.wait_for(Option::is_some) => false,
        }
    }

    fn waiting(&mut self, reason: &str, message: Option<String>) {
        if reason != "ContainerCreating" {
            self.run.settled();
            // Stuck (a pull, a config, a crash loop): later containers do not wait on it.
            self.hooked = None;
        }
        self.status.state = State::Waiting {
            reason: reason.into(),
            message,
        };
        self.status.ready = false;
        self.status.started = false;
        self.publish();
    }

    async fn pull(&mut self) -> Option<PulledImage> {
        let reference = self.spec.image.clone().unwrap_or_default();
        let policy = match self.spec.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        };
        // The runtime the pod asks for picks among an index's Wasm and Linux images; an
        // ephemeral container takes the Linux one.
        let runs = match self.role {
            Role::Ephemeral => Some(skiff_shim::WorkloadKind::Linux),
            _ => self.handler().and_then(|handler| {
                self.run
                    .ctx
                    .shims
                    .iter()
                    .find(|s| s.name() == handler)
                    .map(|s| s.runs())
            }),
        };
        let mut backoff = BACKOFF_START;
        loop {
            if self.stopping().is_some() {
                return None;
            }
            let started = Instant::now();
            let present = match policy {
                PullPolicy::Never => true,
                PullPolicy::IfNotPresent => self.run.ctx.images.has(&reference, runs),
                PullPolicy::Always => false,
            };
            if !present {
                // A pull may take long: it does not hold up other pods' set-up.
                self.run.settled();
                self.event(
                    "Normal",
                    "Pulling",
                    format!("Pulling image \"{reference}\""),
                );
            }
            match self
                .run
                .ctx
                .images
                .pull(&reference, policy, &self.run.pull_secrets, runs)
                .await
            {
                Ok(image) => {
                    let message = if present {
                        format!("Container image \"{reference}\" already present on machine")
                    } else {
                        format!(
                            "Successfully pulled image \"{reference}\" in {:?}",
                            started.elapsed()
                        )
                    };
                    self.event("Normal", "Pulled", message);
                    return Some(image);
                }
                Err(e) if policy == PullPolicy::Never => {
                    // The kubelet's words, then where Skiff looked (`e` names the store). As
                    // the kubelet, no back-off: nothing is pulled, and the image may be
                    // imported any time (`skiff image import`); its pod worker tries again
                    // after its 10 s.
                    let message = format!(
                        "Container image \"{reference}\" is not present with pull policy of Never: {e}"
                    );
                    self.event("Warning", "ErrImageNeverPull", message.clone());
                    self.waiting("ErrImageNeverPull", Some(message));
                    if !self.pause(BACKOFF_START).await {
                        return None;
                    }
                }
                Err(e) => {
                    self.event(
                        "Warning",
                        "Failed",
                        format!("Failed to pull image \"{reference}\": {e}"),
                    );
                    self.waiting("ErrImagePull", Some(e.clone()));
                    if !self.pause(Duration::from_secs(1)).await {
                        return None;
                    }
                    self.waiting(
                        "ImagePullBackOff",
                        Some(format!("Back-off pulling image \"{reference}\": {e}")),
                    );
                    self.event(
                        "Normal",
                        "BackOff",
                        format!("Back-off pulling image \"{reference}\""),
                    );
                    if !self.pause(backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The RuntimeClass handler that runs this container: the pod's, but for an ephemeral
    /// container, which runs whatever its image is beside the pod's own runtime.
    fn handler(&self) -> Option<&String> {
        self.run
            .handler
            .as_ref()
            .filter(|_| self.role != Role::Ephemeral)
    }

    fn shim_for(&self, image: &PulledImage) -> Result<Arc<dyn Shim>, String> {
        let shims = &self.run.ctx.shims;
        if let Some(handler) = self.handler() {
            return shims
                .iter()
                .find(|s| s.name() == handler)
                .cloned()
                .ok_or_else(|| format!("no runtime handler {handler:?} on this node"));
        }
        shims
            .iter()
            .find(|s| s.can_run(&image.workload))
            .cloned()
            .ok_or_else(|| {
                if image.is_wasm {
                    "no runtime on this node runs this Wasm artifact".to_string()
                } else {
                    "no runtime on this node runs Linux container images (the container runtime did not start: see the agent's log)"
                        .to_string()
                }
            })
    }

    async fn spec_for(
        &self,
        image: &PulledImage,
    ) -> Result<(ContainerSpec, Arc<crate::logs::ContainerLog>), (String, String)> {
        let run = &self.run;
        let services = &run.ctx.services;
        // As the kubelet, a container's variables wait for the Services' first list
        // (bounded: an API server that cannot list them does not stop the pod).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), services.synced()).await;
        let mut visible = services.list_namespace(&run.namespace);
        if run.namespace != "default"
            && let Some(k) = services.get("default/kubernetes")
        {
            visible.push(k);
        }
        let enable_links = run
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let sources = env::Sources {
            client: &run.ctx.client,
            pod: &run.pod,
            pod_ip: run.ip().map(|ip| ip.to_string()),
            host_ip: run.ctx.config.node_ip.to_string(),
            services: env::service_links(&visible, &run.namespace, enable_links),
        };
        let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let mut env = image.env.clone();
        for (k, v) in env::environment(&sources, &self.spec)
            .await
            .map_err(|e| config_err(e.to_string()))?
        {
            match env.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
        let argv = env::argv(
            &self.spec,
            &image.entrypoint,
            &image.cmd,
            &env,
            image.is_wasm,
        );
        let mounts =
            volumes::mounts(&self.spec, &run.volumes).map_err(|e| config_err(e.to_string()))?;
        let limits = self.spec.resources.as_ref().and_then(|r| r.limits.as_ref());
        let memory_limit = limits
            .and_then(|l| l.get("memory"))
            .and_then(|q| status::bytes(&q.0));
        let cpu_limit_millis = limits
            .and_then(|l| l.get("cpu"))
            .and_then(|q| status::cpu_millis(&q.0));
        let cpu_request_millis = self
            .spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|l| l.get("cpu"))
            .and_then(|q| status::cpu_millis(&q.0))
            .or(cpu_limit_millis);
        let ports = self
            .spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        let pid_namespace = self.target_pid_namespace()?;
        let log = run
            .ctx
            .logs
            .open(
                &run.namespace,
                &run.name,
                &run.uid,
                &self.spec.name,
                self.status.restart_count as u32,
            )
            .map_err(|e| ("CreateContainerError".to_string(), format!("log file: {e}")))?;
        Ok((
            ContainerSpec {
                id: format!("{}/{}", run.uid, self.spec.name),
                name: self.spec.name.clone(),
                workload: image.workload.clone(),
                argv,
                env,
                working_dir: self
                    .spec
                    .working_dir
                    .clone()
                    .filter(|d| !d.is_empty())
                    .or_else(|| image.working_dir.clone()),
                mounts,
                ports,
                memory_limit,
                cpu_limit_millis,
                cpu_request_millis,
                security: security(&run.pod, &self.spec),
                stdin: self.spec.stdin.unwrap_or(false),
                tty: self.spec.tty.unwrap_or(false),
                pid_namespace,
                logs: log.clone(),
            },
            log,
        ))
    }

    /// The pid namespace an ephemeral container joins: its `targetContainerName`'s, which
    /// must run now (the agent retries until it does, as the container is not created).
    /// `None` for a target without processes (a Wasm instance): the container then has a
    /// pid namespace of its own.
    fn target_pid_namespace(&self) -> Result<Option<std::path::PathBuf>, (String, String)> {
        let Some(target) = self.target.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let run = &self.run;
        match run
            .ctx
            .running
            .handle(&run.namespace, &run.name, &run.uid, target)
        {
            Some(handle) => Ok(handle.pid_namespace()),
            None => Err((
                "CreateContainerError".to_string(),
                format!("target container {target:?} is not running"),
            )),
        }
    }

    /// Runs the container until it is done for good or the pod stops.
    pub async fn supervise(mut self) -> Outcome {
        self.publish();
        let Some(image) = self.pull().await else {
            return Outcome::Stopped;
        };
        self.status.image_id = image.digest.clone();
        tracing::trace!(pod = %self.run.name, container = %self.spec.name, "image present");
        let mut backoff = BACKOFF_START;
        let mut first_restart = true;
        for mut earlier in std::mem::take(&mut self.after) {
            let mut stop = self.stop.clone();
            tokio::select! {
                // Its sender is dropped (nothing is ever sent).
                _ = earlier.changed() => {}
                _ = stop.wait_for(Option::is_some) => return Outcome::Stopped,
            }
        }
        loop {
            if self.stopping().is_some() {
                return Outcome::Stopped;
            }
            let attempt = match self.shim_for(&image) {
                Err(m) => Err(("CreateContainerError".to_string(), m)),
                Ok(shim) => {
                    if !shim.sandbox_reusable_for(&security(&self.run.pod, &self.spec)) {
                        self.run.sandbox_reusable.store(false, Ordering::Relaxed);
                    }
                    // An address-only pod moves into a namespace of its own first when
                    // this container needs one.
                    let moved = if self.run.address_only() && !shim.shares_network(&image.workload)
                    {
                        self.run.own_namespace().await.map_err(|e| {
                            (
                                "CreateContainerError".to_string(),
                                format!("giving the pod a network namespace of its own: {e}"),
                            )
                        })
                    } else {
                        Ok(())
                    };
                    let prepared = match moved {
                        Ok(()) => self.spec_for(&image).await,
                        Err(e) => Err(e),
                    };
                    match prepared {
                        Err(e) => Err(e),
                        Ok((spec, logs)) => {
                            let sandbox: PodSandbox = self.run.sandbox();
                            tracing::trace!(pod = %self.run.name, container = %self.spec.name, "creating");
                            match shim.create(spec, &sandbox).await {
                                Err(skiff_shim::ShimError::Config(m)) => {
                                    Err(("CreateContainerConfigError".to_string(), m))
                                }
                                Err(e) => Err(("CreateContainerError".to_string(), e.to_string())),
                                Ok(c) => {
                                    // A new id per attempt, named by its runtime.
                                    self.status.container_id = Some(format!(
                                        "{}://{}",
                                        shim.name(),
                                        uuid::Uuid::new_v4().simple()
                                    ));
                                    Ok((c, logs))
                                }
                            }
                        }
                    }
                }
            };
            let (container, logs) = match attempt {
                Ok(c) => c,
                Err((reason, message)) => {
                    self.event("Warning", "Failed", format!("Error: {message}"));
                    self.waiting(&reason, Some(message));
                    if !self.pause(backoff).await {
                        return Outcome::Stopped;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.event(
                "Normal",
                "Created",
                format!("Created container {}", self.spec.name),
            );
            let container: Arc<dyn skiff_shim::Container> = Arc::from(container);
            let started_at = Utc::now();
            let ran_since = Instant::now();
            let exit = match container.start().await {
                Err(e) => skiff_shim::Exit {
                    code: 128,
                    reason: skiff_shim::ExitReason::Error,
                    message: Some(e.to_string()),
                },
                Ok(()) => {
                    tracing::trace!(pod = %self.run.name, container = %self.spec.name, "started");
                    self.event(
                        "Normal",
                        "Started",
                        format!("Started container {}", self.spec.name),
                    );
                    let run = &self.run;
                    run.settled();
                    run.ctx.running.started(
                        &run.namespace,
                        &run.name,
                        &run.uid,
                        run.shared_sandbox(),
                        &self.spec.name,
                        crate::remote::RunningContainer {
                            handle: container.clone(),
                            log: logs.clone(),
                            stdin_once: self.spec.stdin_once.unwrap_or(false),
                        },
                    );
                    let exit = match self.post_start(&container).await {
                        Ok(()) => self.run_until_exit(&container, started_at).await,
                        Err(exit) => exit,
                    };
                    let run = &self.run;
                    run.ctx
                        .running
                        .exited(&run.namespace, &run.name, &run.uid, &self.spec.name);
                    exit
                }
            };
            drop(container);
            logs.close();
            // Later containers wait for this one's first start only.
            self.hooked = None;
            let terminated = Terminated {
                container_id: self.status.container_id.clone(),
                exit_code: exit.code,
                reason: if exit.code == 128
                    && exit.message.is_some()
                    && exit.reason != skiff_shim::ExitReason::OOMKilled
                {
                    "StartError".to_string()
                } else {
                    exit.reason.as_str().to_string()
                },
                message: exit.message.clone(),
                started_at: Some(started_at),
                finished_at: Utc::now(),
            };
            self.status.state = State::Terminated(terminated.clone());
            self.status.ready = false;
            self.status.started = false;
            self.publish();
            if self.stopping().is_some() {
                return Outcome::Stopped;
            }
            let policy = self.run.restart_policy.as_str();
            let restart = match self.role {
                Role::Init => exit.code != 0 && policy != "Never",
                Role::App => policy == "Always" || (policy == "OnFailure" && exit.code != 0),
                Role::Ephemeral => false,
            };
            if !restart {
                return if exit.code == 0 {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
            }
            if ran_since.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = BACKOFF_START;
                first_restart = true;
            }
            self.status.last = Some(terminated);
            self.status.restart_count += 1;
            if first_restart {
                first_restart = false;
                continue;
            }
            let message = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                backoff.as_secs(),
                self.spec.name,
                self.run.name,
                self.run.namespace,
                self.run.uid
            );
            self.event(
                "Warning",
                "BackOff",
                "Back-off restarting failed container".into(),
            );
            self.waiting("CrashLoopBackOff", Some(message));
            if !self.pause(backoff).await {
                return Outcome::Stopped;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Runs the container's postStart hook, if it has one, after the container started and
    /// before it counts as running (the pod shows it creating meanwhile), as the kubelet's
    /// `startContainer`. A failed hook kills the container, its preStop hook first, and
    /// the restart policy decides what follows; the event says only that it failed (the
    /// kubelet keeps the hook's output out of events, where secrets could leak), the
    /// agent's log says why. `Err` is the container's exit when it ended meanwhile.
    async fn post_start(
        &mut self,
        container: &Arc<dyn skiff_shim::Container>,
    ) -> Result<(), skiff_shim::Exit> {
        let Some(handler) = self
            .spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.clone())
        else {
            return Ok(());
        };
        let ip = self.run.ip().unwrap_or(self.run.ctx.config.node_ip);
        let mut stop = self.stop.clone();
        let outcome = tokio::select! {
            r = crate::probe::hook(&handler, &self.spec, ip, container.as_ref()) => r,
            exit = container.wait() => return Err(exit),
            // The pod is stopping: its stop, preStop included, is run_until_exit's.
            _ = async { stop.wait_for(Option::is_some).await.is_ok() } => Ok(()),
        };
        self.hooked = None;
        let Err(why) = outcome else {
            return Ok(());
        };
        tracing::warn!(pod = %self.run.name, container = %self.spec.name, "postStart hook failed: {why}");
        self.event(
            "Warning",
            "FailedPostStartHook",
            "PostStartHook failed".into(),
        );
        self.event("Normal", "Killing", "FailedPostStartHook".into());
        let grace = self.pre_stop(container, ip, self.run.grace).await;
        container.stop(grace);
        Err(container.wait().await)
    }

    /// Runs the container's preStop hook, if it has one, within `grace` (the kubelet's
    /// `executePreStopHook`), and returns what is left of it for the stop itself: never
    /// less than 2 s, the kubelet's minimum. A failed hook is an event; the stop goes on.
    async fn pre_stop(
        &self,
        container: &Arc<dyn skiff_shim::Container>,
        ip: std::net::IpAddr,
        grace: std::time::Duration,
    ) -> std::time::Duration {
        let Some(handler) = self
            .spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
        else {
            return grace;
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(
            grace,
            crate::probe::hook(handler, &self.spec, ip, container.as_ref()),
        )
        .await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!(
                "did not finish within the grace period ({grace:?})"
            )),
        };
        if let Some(why) = failure {
            self.event(
                "Warning",
                "FailedPreStopHook",
                format!("PreStopHook failed: {why}"),
            );
        }
        grace
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_secs(2))
    }

    /// Running: follows probes, stops on the pod's stop or a failed liveness probe.
    async fn run_until_exit(
        &mut self,
        container: &Arc<dyn skiff_shim::Container>,
        started_at: chrono::DateTime<Utc>,
    ) -> skiff_shim::Exit {
        let ip = self.run.ip().unwrap_or(self.run.ctx.config.node_ip);
        let (tx, mut verdicts) = mpsc::channel::<Verdict>(8);
        let mut probes = tokio::task::JoinSet::new();
        let startup = self.spec.startup_probe.clone();
        let start_probes = |probes: &mut tokio::task::JoinSet<()>, spec: &Container| {
            for (kind, p) in [
                (Kind::Liveness, spec.liveness_probe.clone()),
                (Kind::Readiness, spec.readiness_probe.clone()),
            ] {
                if let Some(p) = p {
                    probes.spawn(probe::run(
                        kind,
                        p,
                        spec.clone(),
                        ip,
                        container.clone(),
                        tx.clone(),
                    ));
                }
            }
        };
        match &startup {
            Some(p) => {
                probes.spawn(probe::run(
                    Kind::Startup,
                    p.clone(),
                    self.spec.clone(),
                    ip,
                    container.clone(),
                    tx.clone(),
                ));
            }
            None => start_probes(&mut probes, &self.spec),
        }
        let has_readiness = self.spec.readiness_probe.is_some();
        self.status.state = State::Running { started_at };
        self.status.started = startup.is_none();
        self.status.ready = startup.is_none() && !has_readiness;
        self.publish();
        let mut stop = self.stop.clone();
        let mut stopped = false;
        loop {
            tokio::select! {
                exit = container.wait() => return exit,
                Some(v) = verdicts.recv() => match (v.kind, v.ok) {
                    // A failed attempt below the threshold: its event, nothing else.
                    (kind, false) if !v.changed => {
                        self.event("Warning", "Unhealthy", format!("{} probe failed: {}", kind.name(), v.message));
                    }
                    (Kind::Startup, true) => {
                        self.status.started = true;
                        self.status.ready = !has_readiness;
                        self.publish();
                        start_probes(&mut probes, &self.spec);
                    }
                    (Kind::Readiness, ok) => {
                        if !ok {
                            self.event("Warning", "Unhealthy", format!("Readiness probe failed: {}", v.message));
                        }
                        self.status.ready = ok && self.status.started;
                        self.publish();
                    }
                    (Kind::Liveness | Kind::Startup, _) => {
                        self.event("Warning", "Unhealthy", format!("{} probe failed: {}", v.kind.name(), v.message));
                        self.event(
                            "Normal",
                            "Killing",
                            format!("Container {} failed {} probe, will be restarted", self.spec.name, v.kind.name().to_lowercase()),
                        );
                        let grace = self.pre_stop(container, ip, self.run.grace).await;
                        container.stop(grace);
                    }
                },
                // The guard `wait_for` returns is let go at once: the hook below awaits.
                r = async { stop.wait_for(Option::is_some).await.ok().and_then(|g| *g) }, if !stopped => {
                    let grace = r.unwrap_or_default();
                    stopped = true;
                    self.event("Normal", "Killing", format!("Stopping container {}", self.spec.name));
                    let grace = self.pre_stop(container, ip, grace).await;
                    container.stop(grace);
                }
            }
        }
    }
}

/// The securityContext that applies to `container`: its own fields, else the pod's.
fn security(pod: &k8s_openapi::api::core::v1::Pod, container: &Container) -> skiff_shim::Security {
    use k8s_openapi::api::core::v1::SeccompProfile;
    let p = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let c = container.security_context.as_ref();
    let seccomp = |s: &SeccompProfile| match s.type_.as_str() {
        "Unconfined" => skiff_shim::SeccompProfile::Unconfined,
        "Localhost" => {
            skiff_shim::SeccompProfile::Localhost(s.localhost_profile.clone().unwrap_or_default())
        }
        _ => skiff_shim::SeccompProfile::RuntimeDefault,
    };
    let caps = c.and_then(|c| c.capabilities.as_ref());
    skiff_shim::Security {
        run_as_user: c
            .and_then(|c| c.run_as_user)
            .or(p.and_then(|p| p.run_as_user)),
        run_as_group: c
            .and_then(|c| c.run_as_group)
            .or(p.and_then(|p| p.run_as_group)),
        run_as_non_root: c
            .and_then(|c| c.run_as_non_root)
            .or(p.and_then(|p| p.run_as_non_root)),
        supplemental_groups: p
            .and_then(|p| p.supplemental_groups.clone())
            .unwrap_or_default(),
        fs_group: p.and_then(|p| p.fs_group),
        privileged: c.and_then(|c| c.privileged).unwrap_or(false),
        allow_privilege_escalation: c.and_then(|c| c.allow_privilege_escalation),
        capabilities_add: caps.and_then(|k| k.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|k| k.drop.clone()).unwrap_or_default(),
        seccomp: c
            .and_then(|c| c.seccomp_profile.as_ref())
            .or(p.and_then(|p| p.seccomp_profile.as_ref()))
            .map(seccomp),
        read_only_root_filesystem: c.and_then(|c| c.read_only_root_filesystem).unwrap_or(false),
    }
}
