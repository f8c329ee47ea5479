//! The agent's side of `kubectl exec`, `attach` and `port-forward`: the API server proxies
//! the upgrade request here (`/exec/<ns>/<pod>/<container>`, `/attach/...`,
//! `/portForward/<ns>/<pod>`, the kubelet's paths), and this module answers it.
//!
//! [`Running`] knows the containers that run now, with their shim's handle, so a request is
//! refused with a clear `Status` before any upgrade when the container is not running or its
//! runtime has no processes (a Wasm instance), instead of leaving kubectl waiting.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use skiff_shim::{AttachInput, Container, PodSandbox};
use skiff_streams::{
    ExecOptions, ExecOutcome, ExecStreams, Kind, Negotiated, negotiate, serve_exec,
    serve_port_forward,
};
use tokio::io::AsyncWriteExt;

use crate::Ctx;

/// A pod's sandbox as its pod worker holds it, shared with the running pods' registry.
pub type SharedSandbox = Arc<Mutex<PodSandbox>>;

/// One running pod, as exec and port-forward need it.
struct RunningPod {
    uid: String,
    /// The pod's network (its pod worker's: a move shows here at once).
    sandbox: SharedSandbox,
    containers: HashMap<String, RunningContainer>,
}

/// A running container: its shim's handle, and what `kubectl attach` follows.
#[derive(Clone)]
pub struct RunningContainer {
    pub handle: Arc<dyn Container>,
    /// This attempt's log, whose live output attach sessions follow.
    pub log: Arc<crate::logs::ContainerLog>,
    /// `stdinOnce`: stdin is closed when the first attach session's input ends.
    pub stdin_once: bool,
}

/// The containers running on this node, by namespace and pod name.
#[derive(Default)]
pub struct Running {
    pods: Mutex<HashMap<(String, String), RunningPod>>,
}

impl Running {
    /// Records a container that started.
    pub fn started(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        sandbox: &SharedSandbox,
        container: &str,
        running: RunningContainer,
    ) {
        let mut pods = self.pods.lock().expect("running lock");
        let entry = pods
            .entry((namespace.to_string(), pod.to_string()))
            .or_insert_with(|| RunningPod {
                uid: uid.to_string(),
                sandbox: sandbox.clone(),
                containers: HashMap::new(),
            });
        // A pod recreated under the same name is another pod.
        if entry.uid != uid {
            *entry = RunningPod {
                uid: uid.to_string(),
                sandbox: sandbox.clone(),
                containers: HashMap::new(),
            };
        }
        entry.containers.insert(container.to_string(), running);
    }

    /// Forgets a container that exited.
    pub fn exited(&self, namespace: &str, pod: &str, uid: &str, container: &str) {
        let mut pods = self.pods.lock().expect("running lock");
        let key = (namespace.to_string(), pod.to_string());
        if let Some(entry) = pods.get_mut(&key)
            && entry.uid == uid
        {
            entry.containers.remove(container);
            if entry.containers.is_empty() {
                pods.remove(&key);
            }
        }
    }

    /// The network of a pod with a running container, `None` when no container of it runs.
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<PodSandbox> {
        let pods = self.pods.lock().expect("running lock");
        pods.get(&(namespace.to_string(), pod.to_string()))
            .map(|p| p.sandbox.lock().expect("sandbox lock").clone())
    }

    /// The pod's network moved (an address-only pod got a namespace of its own): its
    /// running containers listen there from now on.
    pub fn moved(&self, namespace: &str, pod: &str, uid: &str, sandbox: &PodSandbox) {
        let handles: Vec<(String, Arc<dyn Container>)> = {
            let pods = self.pods.lock().expect("running lock");
            match pods.get(&(namespace.to_string(), pod.to_string())) {
                Some(p) if p.uid == uid => p
                    .containers
                    .iter()
                    .map(|(name, c)| (name.clone(), c.handle.clone()))
                    .collect(),
                _ => Vec::new(),
            }
        };
        for (name, handle) in handles {
            if let Err(e) = handle.network_moved(sandbox) {
                tracing::warn!(pod, container = %name, "after the pod's network moved: {e}");
            }
        }
    }

    /// The shim's handle of a running container of the pod with this uid (an ephemeral
    /// container's target).
    pub fn handle(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
    ) -> Option<Arc<dyn Container>> {
        let pods = self.pods.lock().expect("running lock");
        pods.get(&(namespace.to_string(), pod.to_string()))
            .filter(|p| p.uid == uid)
            .and_then(|p| p.containers.get(container))
            .map(|c| c.handle.clone())
    }

    fn container(&self, namespace: &str, pod: &str, container: &str) -> Lookup {
        let pods = self.pods.lock().expect("running lock");
        match pods.get(&(namespace.to_string(), pod.to_string())) {
            None => Lookup::NoPod,
            Some(p) => match p.containers.get(container) {
                None => Lookup::NotRunning,
                Some(c) => Lookup::Found(Box::new(c.clone())),
            },
        }
    }
}

enum Lookup {
    NoPod,
    NotRunning,
    Found(Box<RunningContainer>),
}

/// A Kubernetes `Status` failure, which kubectl prints as `Error from server (<reason>)`.
pub fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The running container a request names, or the `Status` that says why there is none.
fn running(
    ctx: &Ctx,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<RunningContainer, Box<Response>> {
    let refused = match ctx.running.container(namespace, pod, container) {
        Lookup::NoPod => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {namespace}/{pod} has no running container on this node"),
        ),
        Lookup::NotRunning => status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container} is not running in pod {namespace}/{pod}"),
        ),
        Lookup::Found(found) => return Ok(*found),
    };
    Err(Box::new(refused))
}

/// The running container a request names, or the `Status` that says why there is none
/// (or why it cannot be entered).
fn enterable(
    ctx: &Ctx,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<Arc<dyn Container>, Box<Response>> {
    let found = running(ctx, namespace, pod, container)?;
    match found.handle.exec_refusal() {
        Some(why) => Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("cannot exec into container {container} of pod {namespace}/{pod}: {why}"),
        ))),
        None => Ok(found.handle),
    }
}

/// The stream protocol the client asked for, and its connection to take over once the
/// `101 Switching Protocols` is sent.
fn upgrade(
    kind: Kind,
    what: &str,
    req: &mut Request,
) -> Result<(Negotiated, hyper::upgrade::OnUpgrade), Box<Response>> {
    let negotiated = negotiate(kind, req.method(), req.headers())
        .map_err(|e| Box::new(status(e.status_code(), "BadRequest", e.message)))?;
    let upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| {
            Box::new(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("{what} needs a connection upgrade"),
            ))
        })?;
    Ok((negotiated, upgrade))
}

/// Answers `101 Switching Protocols` with the negotiated headers, and serves the
/// connection with `serve` once the client has switched.
fn switch<F, Fut>(
    negotiated: Negotiated,
    upgrade: hyper::upgrade::OnUpgrade,
    what: &'static str,
    serve: F,
) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>, Negotiated) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let headers = negotiated.response_headers.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve(TokioIo::new(io), negotiated).await,
            Err(e) => tracing::debug!("{what} upgrade: {e}"),
        }
    });
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    resp
}

/// `/attach/...?stdin=..&stdout=..&stderr=..&tty=..`: the container's own process's
/// streams. Its output as it is written from now on (what came before is in `kubectl
/// logs`), for a container of either runtime; input into its stdin or terminal when its
/// spec keeps one open (`stdin: true`). The session ends when the container exits; with
/// `stdinOnce`, the container's stdin is closed when this session's input ends.
pub async fn attach(
    State(ctx): State<Arc<Ctx>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    mut req: Request,
) -> Response {
    let found = match running(&ctx, &namespace, &pod, &container) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let opts = ExecOptions::from_query(&query.unwrap_or_default());
    let input = if opts.stdin {
        match found.handle.attach_input() {
            Some(input) => Some(input),
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!(
                        "container {container} of pod {namespace}/{pod} has no stdin to attach to: its spec has no stdin: true (or stdinOnce closed it); attach without -i/--stdin"
                    ),
                );
            }
        }
    } else {
        None
    };
    let (negotiated, upgrade) = match upgrade(Kind::Attach, "attach", &mut req) {
        Ok(u) => u,
        Err(refused) => return *refused,
    };
    // Subscribed before the 101 is sent: nothing written after the client sees it is lost.
    let live = found.log.follow_live();
    switch(
        negotiated,
        upgrade,
        "attach",
        move |io, negotiated| async move {
            let handler = move |streams: ExecStreams| run_attach(found, input, live, streams);
            if let Err(e) = serve_exec(io, &negotiated, opts, handler).await {
                tracing::debug!("attach session: {e}");
            }
        },
    )
}

async fn run_attach(
    found: RunningContainer,
    input: Option<AttachInput>,
    mut live: tokio::sync::mpsc::Receiver<crate::logs::Chunk>,
    streams: ExecStreams,
) -> ExecOutcome {
    let ExecStreams {
        stdin,
        mut stdout,
        mut stderr,
        tty,
        mut resize,
    } = streams;
    let mut inputs = tokio::task::JoinSet::new();
    let had_input = input.is_some() && stdin.is_some();
    if let Some(input) = input {
        let file = std::fs::File::from(input.fd);
        if input.terminal
            && let Ok(resize_fd) = file.try_clone()
        {
            inputs.spawn(async move {
                while let Some(size) = resize.recv().await {
                    set_window_size(&resize_fd, size.width, size.height);
                }
            });
        }
        if let Some(mut from) = stdin {
            let handle = found.handle.clone();
            let once = found.stdin_once;
            inputs.spawn(async move {
                // Blocking writes (the terminal's master side is shared with the shim's
                // reader, which must not see O_NONBLOCK), on tokio's blocking pool.
                let mut to = tokio::fs::File::from_std(file);
                let _ = tokio::io::copy(&mut from, &mut to).await;
                drop(to);
                if once {
                    handle.close_stdin();
                }
            });
        }
    }
    // Until the attempt is over (its log closes) or the client stops reading.
    while let Some((stream, bytes)) = live.recv().await {
        let to = match stream {
            skiff_shim::Stream::Stderr if !tty => stderr.as_mut(),
            _ => stdout.as_mut(),
        };
        if let Some(to) = to
            && to.write_all(&bytes).await.is_err()
        {
            break;
        }
    }
    for out in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = out.shutdown().await;
    }
    inputs.abort_all();
    if found.stdin_once && had_input {
        found.handle.close_stdin();
    }
    ExecOutcome::Exited(0)
}

/// `/exec/<ns>/<pod>/<container>?command=...&stdin=..&stdout=..&stderr=..&tty=..`, for any
/// method (WebSocket GET or SPDY POST): runs the command in the container and joins its
/// stdio (or its terminal) to the session; the exit code goes back in the status.
pub async fn exec(
    State(ctx): State<Arc<Ctx>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    mut req: Request,
) -> Response {
    let handle = match enterable(&ctx, &namespace, &pod, &container) {
        Ok(h) => h,
        Err(refused) => return *refused,
    };
    let query = query.unwrap_or_default();
    let command: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.into_owned())
        .collect();
    if command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command".into(),
        );
    }
    let opts = ExecOptions::from_query(&query);
    let (negotiated, upgrade) = match upgrade(Kind::Exec, "exec", &mut req) {
        Ok(u) => u,
        Err(refused) => return *refused,
    };
    switch(
        negotiated,
        upgrade,
        "exec",
        move |io, negotiated| async move {
            let handler = move |streams: ExecStreams| run_exec(handle, command, streams);
            if let Err(e) = serve_exec(io, &negotiated, opts, handler).await {
                tracing::debug!("exec session: {e}");
            }
        },
    )
}

/// Output still buffered when an exec'd process has exited is forwarded for at most this
/// long: a background process it left behind may hold its output open.
const DRAIN_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn run_exec(
    handle: Arc<dyn Container>,
    command: Vec<String>,
    streams: ExecStreams,
) -> ExecOutcome {
    let ExecStreams {
        stdin,
        stdout,
        stderr,
        tty,
        mut resize,
    } = streams;
    let process = match handle.exec(command, tty).await {
        Ok(p) => p,
        Err(e) => return ExecOutcome::Error(e.to_string()),
    };
    let mut outputs = tokio::task::JoinSet::new();
    let mut inputs = tokio::task::JoinSet::new();
    if let Some(pty) = process.pty {
        let pty = std::fs::File::from(pty);
        let resize_fd = match pty.try_clone() {
            Ok(f) => f,
            Err(e) => return ExecOutcome::Error(format!("terminal: {e}")),
        };
        inputs.spawn(async move {
            while let Some(size) = resize.recv().await {
                set_window_size(&resize_fd, size.width, size.height);
            }
        });
        if let Some(mut stdin) = stdin
            && let Ok(writer) = pty.try_clone()
        {
            let mut writer = tokio::fs::File::from_std(writer);
            inputs.spawn(async move {
                let _ = tokio::io::copy(&mut stdin, &mut writer).await;
            });
        }
        if let Some(mut out) = stdout {
            let mut reader = tokio::fs::File::from_std(pty);
            outputs.spawn(async move {
                // The terminal reads EIO once the last process holding it has exited.
                let _ = tokio::io::copy(&mut reader, &mut out).await;
                let _ = out.shutdown().await;
            });
        }
    } else {
        if let (Some(mut from), Some(fd)) = (stdin, process.stdin) {
            inputs.spawn(async move {
                if let Ok(mut to) = tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                }
            });
        }
        for (to, fd) in [(stdout, process.stdout), (stderr, process.stderr)] {
            if let (Some(mut to), Some(fd)) = (to, fd) {
                outputs.spawn(async move {
                    if let Ok(mut from) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                        let _ = tokio::io::copy(&mut from, &mut to).await;
                    }
                    let _ = to.shutdown().await;
                });
            }
        }
    }
    let exit = process.exit.await;
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        while outputs.join_next().await.is_some() {}
    })
    .await;
    outputs.abort_all();
    inputs.abort_all();
    match exit {
        Ok(code) => ExecOutcome::Exited(code),
        Err(e) => ExecOutcome::Error(e.to_string()),
    }
}

/// `TIOCSWINSZ` on the terminal: the process sees the client's window size.
fn set_window_size(pty: &std::fs::File, width: u16, height: u16) {
    use std::os::fd::AsRawFd;
    let size = nix::libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: an ioctl on a descriptor this process owns, with a valid winsize.
    unsafe {
        nix::libc::ioctl(pty.as_raw_fd(), nix::libc::TIOCSWINSZ, &size);
    }
}

/// `/portForward/<ns>/<pod>`: every forwarded connection is a TCP connection to the port on
/// the pod's own loopback, made from inside its network namespace (as the kubelet does), so
/// a listener bound to 127.0.0.1 in the pod is reachable too. Wasm and container pods alike.
pub async fn port_forward(
    State(ctx): State<Arc<Ctx>>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    mut req: Request,
) -> Response {
    let Some(sandbox) = ctx.running.sandbox(&namespace, &pod) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {namespace}/{pod} has no running container on this node"),
        );
    };
    let (negotiated, upgrade) = match upgrade(Kind::PortForward, "port-forward", &mut req) {
        Ok(u) => u,
        Err(refused) => return *refused,
    };
    // `?ports=` names the ports of a WebSocket port-forward; SPDY names one per stream.
    let ports: Vec<u16> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect();
    switch(
        negotiated,
        upgrade,
        "port-forward",
        move |io, negotiated| async move {
            let connect = move |port: u16| {
                let sandbox = sandbox.clone();
                let pod = pod.clone();
                async move {
                    connect_in(&sandbox, port)
                        .await
                        .map_err(|e| format!("error forwarding port {port} to pod {pod}: {e}"))
                }
            };
            if let Err(e) = serve_port_forward(io, &negotiated, ports, connect).await {
                tracing::debug!("port-forward session: {e}");
            }
        },
    )
}

/// A TCP connection to `127.0.0.1:port` made inside the pod's namespace (a socket belongs
/// to the namespace of the thread that creates it), or on the host without one. An
/// address-only pod listens only on its IP, which the node reaches as any pod's.
async fn connect_in(sandbox: &PodSandbox, port: u16) -> io::Result<tokio::net::TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let netns = match (&sandbox.netns, sandbox.ip) {
        (Some(_), Some(ip)) if sandbox.shared => {
            return tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await;
        }
        (Some(netns), _) => netns.clone(),
        (None, _) => return tokio::net::TcpStream::connect(addr).await,
    };
    let stream = tokio::task::spawn_blocking(move || -> io::Result<std::net::TcpStream> {
        let ns = std::fs::File::open(&netns)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
        })
    })
    .await
    .map_err(io::Error::other)??;
    stream.set_nonblocking(true)?;
    let _ = stream.set_nodelay(true);
    tokio::net::TcpStream::from_std(stream)
}
