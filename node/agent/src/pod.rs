//! The pods bound to this node: one watch, one worker per pod.
//!
//! A worker owns its pod's life on the node: sandbox, volumes, init containers in order,
//! then the containers side by side (each under a [`Supervisor`]), and the pod's status,
//! which it writes whenever what the supervisors report changes. Deletion (a
//! deletionTimestamp) stops the containers within the grace period, releases the sandbox,
//! and removes the pod object, as the kubelet does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{
    EphemeralContainer, Event, EventSource, ObjectReference, Pod, PodSpec, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use skiff_informer::{AbortOnDrop, Change, Informer};
use skiff_shim::PodSandbox;
use tokio::sync::{mpsc, watch};

use crate::container::{BACKOFF_MAX, BACKOFF_START, Outcome, Role, Supervisor};
use crate::status::{self, Snapshot};
use crate::{Ctx, PullSecrets, volumes};

#[derive(Default)]
pub struct Workers {
    map: Mutex<HashMap<String, watch::Sender<Option<Arc<Pod>>>>>,
}

impl Workers {
    /// The images the pods of this node name (their containers' and init containers').
    pub fn images(&self) -> Vec<String> {
        let map = self.map.lock().expect("workers lock");
        let mut images: Vec<String> = map
            .values()
            .filter_map(|tx| tx.borrow().clone())
            .flat_map(|pod| {
                let Some(spec) = &pod.spec else {
                    return Vec::new();
                };
                let ephemeral = spec
                    .ephemeral_containers
                    .iter()
                    .flatten()
                    .filter_map(|c| c.image.clone());
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .filter_map(|c| c.image.clone())
                    .chain(ephemeral)
                    .collect()
            })
            .collect();
        images.sort();
        images.dedup();
        images
    }
}

/// Watches the pods bound to this node and hands each to its worker.
pub async fn watch(ctx: Arc<Ctx>) {
    let pods = Informer::<Pod>::new();
    let selector = format!("spec.nodeName={}", ctx.config.node_name);
    let _follow = AbortOnDrop(pods.start(
        Api::all(ctx.client.clone()),
        watcher::Config::default().fields(&selector),
    ));
    pods.synced().await;
    // Sandboxes of pods that went away while the agent was down. Before any worker runs,
    // so that no sandbox is built meanwhile.
    for uid in ctx.network.list().await {
        if pods.get_by_uid(&uid).is_none() {
            let _ = ctx.network.remove(&uid).await;
        }
    }
    // The cached pods first (as added), then every change; a relist after the watch
    // expired reports the pods it no longer holds as deleted.
    let handler_ctx = ctx.clone();
    pods.subscribe(move |change| match change {
        Change::Added(pod) | Change::Updated { new: pod, .. } => {
            dispatch(&handler_ctx, Arc::clone(pod));
        }
        Change::Deleted(pod) => {
            if let Some(uid) = &pod.metadata.uid {
                gone(&handler_ctx, uid);
            }
        }
    });
    std::future::pending::<()>().await
}

fn dispatch(ctx: &Arc<Ctx>, pod: Arc<Pod>) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let mut map = ctx.pods.map.lock().expect("workers lock");
    if let Some(tx) = map.get(&uid) {
        tx.send_replace(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    map.insert(uid.clone(), tx);
    let ctx2 = ctx.clone();
    tokio::spawn(async move {
        worker(ctx2.clone(), rx).await;
        ctx2.pods.map.lock().expect("workers lock").remove(&uid);
    });
}

fn gone(ctx: &Arc<Ctx>, uid: &str) {
    if let Some(tx) = ctx.pods.map.lock().expect("workers lock").get(uid) {
        tx.send_replace(None);
    }
}

/// What supervisors report to their pod's worker.
pub enum Update {
    Sandbox(Option<IpAddr>),
    Container {
        role: Role,
        /// Its place in the pod's list of its role (ephemeral ones go by name).
        index: usize,
        status: Box<status::Container>,
    },
    Failed {
        reason: String,
        message: String,
    },
}

/// What the parts of one pod's run share.
pub struct PodRun {
    pub ctx: Arc<Ctx>,
    pub pod: Pod,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub restart_policy: String,
    /// The pod's termination grace period (liveness restarts use it too).
    pub grace: Duration,
    /// The pod's sandbox; an address-only one may move into a namespace of its own
    /// ([`PodRun::own_namespace`]).
    sandbox: crate::remote::SharedSandbox,
    /// One move at a time.
    moving: tokio::sync::Mutex<()>,
    pub volumes: BTreeMap<String, volumes::Prepared>,
    /// The RuntimeClass handler, when the pod names a RuntimeClass.
    pub handler: Option<String>,
    pub pull_secrets: PullSecrets,
    pub updates: mpsc::UnboundedSender<Update>,
    /// Cleared when a container runs under a shim whose workloads could change the pod's
    /// network namespace: its sandbox is then not recycled.
    pub sandbox_reusable: Arc<AtomicBool>,
    /// Its place among the pods being set up (`Ctx::setups`), until a container of it
    /// runs or waits on something other than its creation.
    pub setup: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl PodRun {
    /// The pod's sandbox as it is now.
    pub fn sandbox(&self) -> PodSandbox {
        self.sandbox.lock().expect("sandbox lock").clone()
    }

    /// The shared handle of the sandbox, for the running pods' registry.
    pub fn shared_sandbox(&self) -> &crate::remote::SharedSandbox {
        &self.sandbox
    }

    /// The pod's IP (a move keeps it).
    pub fn ip(&self) -> Option<IpAddr> {
        self.sandbox.lock().expect("sandbox lock").ip
    }

    /// Whether the pod has only an address in the shared namespace.
    pub fn address_only(&self) -> bool {
        self.sandbox.lock().expect("sandbox lock").shared
    }

    /// Gives an address-only pod a network namespace of its own (same IP) before a
    /// container that needs one is created in it: a Linux container (`kubectl debug`),
    /// or a Wasm one that makes sockets itself. Its running containers listen there from
    /// then on. Nothing to do for a pod that has one.
    pub async fn own_namespace(&self) -> Result<(), String> {
        let _one = self.moving.lock().await;
        if !self.address_only() {
            return Ok(());
        }
        let net = self.ctx.network.promote(&self.uid).await?;
        let sandbox = {
            let mut s = self.sandbox.lock().expect("sandbox lock");
            s.netns = net.netns;
            s.shared = net.shared;
            s.clone()
        };
        tracing::debug!(pod = %self.name, "address-only pod moved into a namespace of its own");
        self.ctx
            .running
            .moved(&self.namespace, &self.name, &self.uid, &sandbox);
        Ok(())
    }

    /// The pod is set up (a container runs) or stuck (pull back-off, a crash loop, a bad
    /// config): it gives up its place among the pods being set up.
    pub fn settled(&self) {
        self.setup.lock().expect("setup lock").take();
    }

    pub fn event(&self, field_path: Option<String>, type_: &str, reason: &str, message: String) {
        record_event(&self.ctx, &self.pod, field_path, type_, reason, message);
    }
}

/// Events go out in the background, at most [`EVENT_QPS`] a second with bursts of
/// [`EVENT_BURST`] (the kubelet's eventRecordQPS and eventBurst): the rest are dropped, so a
/// burst of pods is not slowed by its own events.
const EVENT_QPS: u32 = 50;
const EVENT_BURST: u32 = 100;

static EVENT_TOKENS: AtomicU32 = AtomicU32::new(EVENT_BURST);
static EVENT_REFILL: Mutex<Option<std::time::Instant>> = Mutex::new(None);

fn take_event_token() -> bool {
    {
        let mut last = EVENT_REFILL.lock().expect("event lock");
        let now = std::time::Instant::now();
        let since = last.map_or(Duration::ZERO, |t| now - t);
        let add = (since.as_secs_f64() * f64::from(EVENT_QPS)) as u32;
        if last.is_none() || add > 0 {
            *last = Some(now);
            let cur = EVENT_TOKENS.load(Ordering::Relaxed);
            EVENT_TOKENS.store((cur + add).min(EVENT_BURST), Ordering::Relaxed);
        }
    }
    EVENT_TOKENS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1))
        .is_ok()
}

pub fn record_event(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    field_path: Option<String>,
    type_: &str,
    reason: &str,
    message: String,
) {
    if !take_event_token() {
        tracing::debug!(reason, "event dropped by the rate limit: {message}");
        return;
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = Utc::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{name}.{:x}",
                now.timestamp_nanos_opt().unwrap_or_default()
            )),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(ctx.config.node_name.clone()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(ctx.config.node_name.clone()),
        first_timestamp: Some(status::time(now)),
        last_timestamp: Some(status::time(now)),
        count: Some(1),
        ..Default::default()
    };
    let _ = ctx.events.send(event);
}

/// One pod, from the first time the agent sees it until its object is gone.
async fn worker(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let pod = Pod::clone(&pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let spec = pod.spec.clone().unwrap_or_default();
    let grace =
        Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
    let (stop_tx, stop_rx) = watch::channel(None::<Duration>);
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let sandbox_reusable = Arc::new(AtomicBool::new(true));
    let ran_here = !(finished || pod.metadata.deletion_timestamp.is_some());
    let mut run_task = if finished || pod.metadata.deletion_timestamp.is_some() {
        None
    } else {
        Some(tokio::spawn(run_pod(
            ctx.clone(),
            pod.clone(),
            grace,
            stop_rx,
            // The run follows the pod's own updates for the ephemeral containers
            // `kubectl debug` adds.
            rx.clone(),
            updates_tx,
            sandbox_reusable.clone(),
        )))
    };

    let mut writer = StatusWriter::new(&ctx, &pod);
    // A pod already being deleted when this worker starts (an agent restart, or a pod
    // that finished before its deletion) is finalized without waiting for another change.
    let mut deleting: Option<Duration> = pod.metadata.deletion_timestamp.as_ref().map(|_| {
        let g = pod
            .metadata
            .deletion_grace_period_seconds
            .map_or(grace, |s| Duration::from_secs(s.max(0) as u64));
        stop_tx.send_replace(Some(g));
        g
    });
    let mut released = false;
    loop {
        if run_task.is_none() && !released {
            // Nothing runs any more: the pod's network and directory are released (a
            // completed pod keeps its status, not its sandbox).
            released = true;
            // A pod this agent did not run (finished before a restart) is not known to be
            // reusable.
            if host_network(&pod) {
                // It had no sandbox of its own.
            } else if sandbox_reusable.load(Ordering::Relaxed) && ran_here {
                let _ = ctx.network.recycle(&uid).await;
            } else {
                let _ = ctx.network.remove(&uid).await;
            }
            let _ = tokio::fs::remove_dir_all(ctx.config.data_dir.join("pods").join(&uid)).await;
        }
        if run_task.is_none() && deleting.is_some() {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => break,
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // A concurrent write, or a new pod under this name (then our uid's
                    // deletion arrives through the watch): try again shortly.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(pod = %name, "delete after termination failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            // Wait for the watch to confirm (`None`); a retry happens on the next change.
            deleting = Some(Duration::ZERO);
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let latest = rx.borrow_and_update().clone();
                match latest {
                    None => {
                        // Removed from the API (force delete, or our own final delete).
                        stop_tx.send_replace(Some(Duration::ZERO));
                        if let Some(t) = run_task.take() {
                            let _ = t.await;
                        }
                        break;
                    }
                    Some(p) => {
                        if deleting.is_none()
                            && let Some(_ts) = &p.metadata.deletion_timestamp
                        {
                            let g = p
                                .metadata
                                .deletion_grace_period_seconds
                                .map_or(grace, |s| Duration::from_secs(s.max(0) as u64));
                            deleting = Some(g);
                            stop_tx.send_replace(Some(g));
                        }
                        writer.pod = Pod::clone(&p);
                    }
                }
            }
            Some(update) = updates.recv() => {
                writer.apply(update);
                while let Ok(more) = updates.try_recv() {
                    writer.apply(more);
                }
                if writer.only_creating() {
                    // Containers usually start within milliseconds of their sandbox: one
                    // write with the pod IP and running containers, instead of one saying
                    // ContainerCreating first, unless starting takes longer than this.
                    let deadline = tokio::time::Instant::now() + CREATING_SETTLE;
                    while writer.only_creating() {
                        match tokio::time::timeout_at(deadline, updates.recv()).await {
                            Ok(Some(more)) => writer.apply(more),
                            _ => break,
                        }
                    }
                }
                writer.flush().await;
            }
            result = async { run_task.as_mut().expect("guarded").await }, if run_task.is_some() => {
                run_task = None;
                let _ = result;
                while let Ok(more) = updates.try_recv() {
                    writer.apply(more);
                }
                writer.flush().await;
            }
        }
    }
    let _ = ctx.network.remove(&uid).await;
    ctx.logs.remove_pod(&namespace, &name, &uid);
}

/// An ephemeral container as the container it runs as, and its target: the same fields
/// (a field added to either type fails to compile here rather than being lost).
fn as_container(
    ephemeral: EphemeralContainer,
) -> (k8s_openapi::api::core::v1::Container, Option<String>) {
    let EphemeralContainer {
        args,
        command,
        env,
        env_from,
        image,
        image_pull_policy,
        lifecycle,
        liveness_probe,
        name,
        ports,
        readiness_probe,
        resize_policy,
        resources,
        restart_policy,
        security_context,
        startup_probe,
        stdin,
        stdin_once,
        target_container_name,
        termination_message_path,
        termination_message_policy,
        tty,
        volume_devices,
        volume_mounts,
        working_dir,
    } = ephemeral;
    let container = k8s_openapi::api::core::v1::Container {
        args,
        command,
        env,
        env_from,
        image,
        image_pull_policy,
        lifecycle,
        liveness_probe,
        name,
        ports,
        readiness_probe,
        resize_policy,
        resources,
        restart_policy,
        security_context,
        startup_probe,
        stdin,
        stdin_once,
        termination_message_path,
        termination_message_policy,
        tty,
        volume_devices,
        volume_mounts,
        working_dir,
    };
    (container, target_container_name)
}

/// Whether the pod runs in the node's network namespace (`spec.hostNetwork`).
fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// Whether the pod can do with an address in the namespace the node's address-only pods
/// share instead of a namespace of its own (a netlink message instead of a namespace, a
/// veth pair and a bridge port: see `skiff-podnet`): every container of it is one whose
/// every socket its shim makes (`Shim::shares_network`: a wasi:http component importing
/// no wasi:sockets), known from the image the node holds already and the shim's loaded
/// artifacts, without pulling or compiling. No init or ephemeral containers, and no
/// `imagePullPolicy: Always` (a pull could bring another image). When unsure, `false`: a
/// namespace of its own always works, and a pod that needs one later gets one
/// ([`PodRun::own_namespace`]).
fn address_only(ctx: &Ctx, spec: &PodSpec, handler: Option<&String>) -> bool {
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty())
        || spec
            .ephemeral_containers
            .as_ref()
            .is_some_and(|c| !c.is_empty())
    {
        return false;
    }
    let named = match handler {
        Some(h) => match ctx.shims.iter().find(|s| s.name() == h) {
            Some(shim) => Some(shim),
            None => return false,
        },
        None => None,
    };
    spec.containers.iter().all(|c| {
        let Some(reference) = c.image.as_deref() else {
            return false;
        };
        if c.image_pull_policy.as_deref() == Some("Always") {
            return false;
        }
        let Some(image) = ctx.images.local(reference, named.map(|s| s.runs())) else {
            return false;
        };
        let shim = named.or_else(|| ctx.shims.iter().find(|s| s.can_run(&image.workload)));
        shim.is_some_and(|s| s.shares_network(&image.workload))
    })
}

/// The machine's hostname, which hostNetwork pods have.
fn node_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Runs the pod: sandbox, volumes, init containers, containers. Returns when nothing of it
/// runs any more.
async fn run_pod(
    ctx: Arc<Ctx>,
    pod: Pod,
    grace: Duration,
    mut stop: watch::Receiver<Option<Duration>>,
    pod_updates: watch::Receiver<Option<Arc<Pod>>>,
    updates: mpsc::UnboundedSender<Update>,
    sandbox_reusable: Arc<AtomicBool>,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let event = |type_: &str, reason: &str, message: String| {
        record_event(&ctx, &pod, None, type_, reason, message);
    };
    tracing::trace!(pod = %name, "starting");
    let mut backoff = BACKOFF_START;
    // The runtime handler, the sandbox and the volumes, retried until they work.
    let (handler, sandbox, volumes, setup) = loop {
        if stop.borrow().is_some() {
            return;
        }
        let setup = tokio::select! {
            permit = ctx.setups.clone().acquire_owned() => permit.ok(),
            _ = stop.wait_for(Option::is_some) => return,
        };
        let attempt: Result<_, (String, String)> = async {
            let handler = match &spec.runtime_class_name {
                None => None,
                Some(rc) => {
                    let found = ctx
                        .runtime_classes
                        .handler(&ctx.client, rc)
                        .await
                        .map_err(|e| ("FailedCreatePodSandBox".to_string(), e.to_string()))?;
                    let handler = found.ok_or_else(|| {
                        (
                            "FailedCreatePodSandBox".to_string(),
                            format!("RuntimeClass \"{rc}\" not found"),
                        )
                    })?;
                    Some(handler)
                }
            };
            // hostNetwork: the node's network namespace and address, as the kubelet gives.
            let net = if host_network(&pod) {
                crate::NetSandbox {
                    ip: ctx.config.node_ip,
                    netns: None,
                    shared: false,
                }
            } else {
                let address_only = address_only(&ctx, &spec, handler.as_ref());
                ctx.network.create(&uid, address_only).await.map_err(|e| {
                    (
                        "FailedCreatePodSandBox".to_string(),
                        format!("Failed to create pod sandbox: {e}"),
                    )
                })?
            };
            let pod_dir = ctx.config.data_dir.join("pods").join(&uid);
            let volumes = volumes::prepare(&ctx.client, &pod, &pod_dir, &ctx.config.local_root())
                .await
                .map_err(|e| ("FailedMount".to_string(), e.to_string()))?;
            Ok((handler, net, volumes))
        }
        .await;
        match attempt {
            Ok((handler, net, volumes)) => break (handler, net, volumes, setup),
            Err((reason, message)) => {
                drop(setup);
                event("Warning", &reason, message);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(Option::is_some) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    tracing::trace!(pod = %name, "sandbox and volumes ready");
    let _ = updates.send(Update::Sandbox(Some(sandbox.ip)));
    let mut pull_secrets = PullSecrets::default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    for r in spec.image_pull_secrets.iter().flatten() {
        if let Ok(Some(s)) = secrets.get_opt(&r.name).await
            && let Some(cfg) = s.data.as_ref().and_then(|d| d.get(".dockerconfigjson"))
        {
            pull_secrets.0.push(cfg.0.clone());
        }
    }
    let names = ctx.config.dns.hostname_and_domain(&pod);
    let run = Arc::new(PodRun {
        ctx: ctx.clone(),
        pod: pod.clone(),
        uid: uid.clone(),
        namespace,
        name,
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        grace,
        sandbox: Arc::new(std::sync::Mutex::new(PodSandbox {
            netns: sandbox.netns.clone(),
            ip: Some(sandbox.ip),
            shared: sandbox.shared,
            // A hostNetwork pod has the node's hostname, as it has the node's network.
            hostname: if host_network(&pod) {
                node_hostname()
            } else {
                names.0
            },
            domain: names.1.filter(|_| !host_network(&pod)),
            dns: ctx.config.dns.for_pod(&pod),
            host_aliases: spec
                .host_aliases
                .iter()
                .flatten()
                .filter_map(|a| {
                    let names = a.hostnames.clone().unwrap_or_default();
                    Some((a.ip.parse().ok()?, names)).filter(|(_, n)| !n.is_empty())
                })
                .collect(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: uid.clone(),
            host_ipc: spec.host_ipc == Some(true),
            host_pid: spec.host_pid == Some(true),
        })),
        moving: tokio::sync::Mutex::new(()),
        volumes,
        handler,
        pull_secrets,
        updates,
        sandbox_reusable,
        setup: std::sync::Mutex::new(setup),
    });
    let restart_counts = previous_restarts(&pod);
    let supervisor = |role: Role, index: usize, c: &k8s_openapi::api::core::v1::Container| {
        let mut status = status::Container::new(&c.name, c.image.as_deref().unwrap_or(""));
        status.restart_count = restart_counts.get(&c.name).copied().unwrap_or(0);
        Supervisor {
            run: run.clone(),
            role,
            index,
            spec: c.clone(),
            target: None,
            stop: stop.clone(),
            status,
            after: Vec::new(),
            hooked: None,
        }
    };
    // Ephemeral containers may start as soon as the sandbox is there, during the init
    // containers too, as the kubelet starts them; they end with the pod's last container.
    let (containers_done, ephemeral_end) = tokio::sync::oneshot::channel::<()>();
    let debugging = tokio::spawn(run_ephemeral(
        run.clone(),
        pod_updates,
        already_run(&pod),
        stop.clone(),
        ephemeral_end,
    ));
    'containers: {
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            match supervisor(Role::Init, i, c).supervise().await {
                Outcome::Succeeded => {}
                Outcome::Stopped => break 'containers,
                Outcome::Failed => {
                    let _ = run.updates.send(Update::Failed {
                        reason: "Failed".into(),
                        message: format!("init container {} failed", c.name),
                    });
                    break 'containers;
                }
            }
        }
        // A container with a postStart hook holds back the creation of those after it
        // until it started and ran the hook (the kubelet starts them one by one; without
        // hooks, nothing anyone sees depends on that order, so the rest start at once).
        let mut hooks: Vec<watch::Receiver<()>> = Vec::new();
        let all: Vec<_> = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut s = supervisor(Role::App, i, c);
                s.after = hooks.clone();
                if c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some()) {
                    let (tx, rx) = watch::channel(());
                    s.hooked = Some(tx);
                    hooks.push(rx);
                }
                tokio::spawn(s.supervise())
            })
            .collect();
        for t in all {
            let _ = t.await;
        }
    }
    drop(containers_done);
    let _ = debugging.await;
}

/// Ephemeral containers an earlier agent started for this pod (its status says they ran):
/// never started again.
fn already_run(pod: &Pod) -> HashSet<String> {
    pod.status
        .iter()
        .flat_map(|s| s.ephemeral_container_statuses.iter().flatten())
        .filter(|s| status::Container::from_api(s).has_run())
        .map(|s| s.name.clone())
        .collect()
}

/// Starts each ephemeral container the pod names, once, as they are added. They stop with
/// the pod, or (within its grace period) once its other containers have all ended
/// (`containers_done`).
async fn run_ephemeral(
    run: Arc<PodRun>,
    mut pod: watch::Receiver<Option<Arc<Pod>>>,
    mut started: HashSet<String>,
    mut pod_stop: watch::Receiver<Option<Duration>>,
    mut containers_done: tokio::sync::oneshot::Receiver<()>,
) {
    let (stop_tx, stop) = watch::channel(None::<Duration>);
    let mut supervisors = tokio::task::JoinSet::new();
    let mut following = true;
    let grace = loop {
        // Only the ones not started yet are copied out of the pod (most updates of a pod
        // are its status writes, which add none).
        let new: Vec<(usize, EphemeralContainer)> = pod
            .borrow_and_update()
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.ephemeral_containers.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, e)| !started.contains(&e.name))
            .map(|(index, e)| (index, e.clone()))
            .collect();
        for (index, ephemeral) in new {
            started.insert(ephemeral.name.clone());
            let (spec, target) = as_container(ephemeral);
            let status = status::Container::new(&spec.name, spec.image.as_deref().unwrap_or(""));
            let supervisor = Supervisor {
                run: run.clone(),
                role: Role::Ephemeral,
                index,
                spec,
                target,
                stop: stop.clone(),
                status,
                after: Vec::new(),
                hooked: None,
            };
            supervisors.spawn(supervisor.supervise());
        }
        tokio::select! {
            changed = pod.changed(), if following => following = changed.is_ok(),
            grace = pod_stop.wait_for(Option::is_some) => {
                break grace.ok().and_then(|g| *g).unwrap_or_default();
            }
            _ = &mut containers_done => break run.grace,
        }
    };
    stop_tx.send_replace(Some(grace));
    while supervisors.join_next().await.is_some() {}
}

/// restartCount carries over from the status an earlier agent wrote.
fn previous_restarts(pod: &Pod) -> HashMap<String, i32> {
    let status = pod.status.as_ref();
    status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| (c.name.clone(), c.restart_count))
        .collect()
}

/// How long a pod whose containers are all being created waits for them to start before
/// its status says ContainerCreating.
const CREATING_SETTLE: Duration = Duration::from_millis(100);

/// The pod's status as supervisors report it, written when it changes.
struct StatusWriter {
    ctx: Arc<Ctx>,
    pod: Pod,
    init: Vec<status::Container>,
    containers: Vec<status::Container>,
    /// In the order they were first reported (an earlier agent's first).
    ephemeral: Vec<status::Container>,
    pod_ip: Option<String>,
    sandbox_ready: bool,
    failed: Option<(String, String)>,
    start_time: chrono::DateTime<Utc>,
    written: Option<PodStatus>,
}

impl StatusWriter {
    fn new(ctx: &Arc<Ctx>, pod: &Pod) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let mk = |c: &k8s_openapi::api::core::v1::Container| {
            status::Container::new(&c.name, c.image.as_deref().unwrap_or(""))
        };
        let existing = pod.status.clone();
        StatusWriter {
            ctx: ctx.clone(),
            pod: pod.clone(),
            init: spec.init_containers.iter().flatten().map(mk).collect(),
            containers: spec.containers.iter().map(mk).collect(),
            ephemeral: existing
                .iter()
                .flat_map(|s| s.ephemeral_container_statuses.iter().flatten())
                .map(status::Container::from_api)
                .collect(),
            pod_ip: existing.as_ref().and_then(|s| s.pod_ip.clone()),
            sandbox_ready: false,
            failed: None,
            start_time: existing
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map_or_else(Utc::now, status::from_time),
            written: existing,
        }
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::Sandbox(ip) => {
                self.pod_ip = ip.map(|ip| ip.to_string());
                self.sandbox_ready = true;
            }
            Update::Container {
                role: Role::Ephemeral,
                status,
                ..
            } => match self.ephemeral.iter_mut().find(|c| c.name == status.name) {
                Some(slot) => *slot = *status,
                None => self.ephemeral.push(*status),
            },
            Update::Container {
                role,
                index,
                status,
            } => {
                let list = if role == Role::Init {
                    &mut self.init
                } else {
                    &mut self.containers
                };
                if let Some(slot) = list.get_mut(index) {
                    *slot = *status;
                }
            }
            Update::Failed { reason, message } => self.failed = Some((reason, message)),
        }
    }

    /// Whether nothing has happened yet but containers being created (no container
    /// started or ended, no failure).
    fn only_creating(&self) -> bool {
        self.failed.is_none()
            && self.init.iter().chain(&self.containers).all(|c| {
                c.restart_count == 0
                    && matches!(&c.state, status::State::Waiting { reason, .. }
                        if reason == "ContainerCreating" || reason == "PodInitializing")
            })
    }

    async fn flush(&mut self) {
        let restart_policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let snapshot = Snapshot {
            restart_policy: &restart_policy,
            host_ip: self.ctx.config.node_ip.to_string(),
            pod_ip: self.pod_ip.clone(),
            start_time: self.start_time,
            sandbox_ready: self.sandbox_ready,
            init: &self.init,
            containers: &self.containers,
            ephemeral: &self.ephemeral,
            failed: self.failed.clone(),
        };
        let status = status::render(&snapshot, self.written.as_ref());
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let namespace = self.pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "status": status });
        // The answer (the whole pod) is not read: the watch brings the pod back anyway.
        let url = <Pod as kube::Resource>::url_path(&(), Some(namespace));
        let written = kube::core::Request::new(url)
            .patch_subresource(
                "status",
                &name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .map_err(kube::Error::BuildRequest);
        let written = match written {
            Ok(request) => self.ctx.client.request_text(request).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(_) => {
                tracing::trace!(pod = %name, "status written");
                self.written = Some(status);
            }
            Err(e) => tracing::debug!(pod = %name, "status update failed: {e}"),
        }
    }
}
