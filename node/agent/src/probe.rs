//! Startup, liveness and readiness probes: httpGet and tcpSocket, with the Kubernetes timing
//! fields (initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold,
//! failureThreshold). exec probes run their command in the container through its shim, as
//! `kubectl exec` does; a Wasm container has no processes, so they fail there with the reason.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// A probe attempt's result: every failure, and every change of verdict (after its
/// thresholds).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub kind: Kind,
    pub ok: bool,
    /// Why the last attempt failed.
    pub message: String,
    /// Whether the verdict changed (its threshold was reached); a failed attempt that
    /// changes nothing is still reported, for its event.
    pub changed: bool,
}

pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |s| s.max(0) as u64));
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

/// Runs one probe until the task is dropped, sending a [`Verdict`] each time its result
/// flips. The first verdict of a startup or readiness probe is sent on its first success;
/// liveness sends only failures.
pub async fn run(
    kind: Kind,
    probe: Probe,
    container: Container,
    ip: IpAddr,
    target: Arc<dyn skiff_shim::Container>,
    out: mpsc::Sender<Verdict>,
) {
    let t = timing(&probe);
    tokio::time::sleep(t.initial_delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut current: Option<bool> = None;
    loop {
        let result = match tokio::time::timeout(
            t.timeout,
            attempt(&probe, &container, ip, &*target),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("timeout after {:?}", t.timeout)),
        };
        match result {
            Ok(()) => {
                successes += 1;
                failures = 0;
                // A passing liveness probe changes nothing: only its failure is news.
                if successes >= t.success_threshold
                    && current != Some(true)
                    && kind != Kind::Liveness
                {
                    current = Some(true);
                    let v = Verdict {
                        kind,
                        ok: true,
                        message: String::new(),
                        changed: true,
                    };
                    if out.send(v).await.is_err() {
                        return;
                    }
                    if kind == Kind::Startup {
                        return;
                    }
                }
            }
            Err(message) => {
                failures += 1;
                successes = 0;
                // Every failed attempt is reported (the kubelet records an Unhealthy event
                // for each); the verdict changes once the threshold is reached.
                let changed = failures >= t.failure_threshold && current != Some(false);
                if changed {
                    current = Some(false);
                }
                let v = Verdict {
                    kind,
                    ok: false,
                    message,
                    changed,
                };
                if out.send(v).await.is_err() {
                    return;
                }
                if changed && (kind == Kind::Liveness || kind == Kind::Startup) {
                    // The container is restarted; a new probe task starts with it.
                    return;
                }
            }
        }
        tokio::time::sleep(t.period).await;
    }
}

/// What of an exec probe's output a failure message keeps, like the kubelet's limit.
const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// Runs an exec probe's command; success is exit code 0. A failure says the code and what
/// the command printed.
async fn exec(target: &dyn skiff_shim::Container, command: Vec<String>) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let process = target
        .exec(command.clone(), false)
        .await
        .map_err(|e| format!("exec {command:?}: {e}"))?;
    drop(process.stdin);
    // Both pipes are drained to the end (keeping the first bytes), so the command never
    // blocks on a full pipe.
    async fn drain(fd: Option<std::os::fd::OwnedFd>) -> Vec<u8> {
        let mut kept = Vec::new();
        let Some(Ok(mut pipe)) = fd.map(tokio::net::unix::pipe::Receiver::from_owned_fd) else {
            return kept;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    }
    let (out, err, code) = tokio::join!(drain(process.stdout), drain(process.stderr), process.exit);
    let code = code.map_err(|e| e.to_string())?;
    if code == 0 {
        return Ok(());
    }
    let mut output = out;
    output.extend_from_slice(&err);
    output.truncate(MAX_EXEC_OUTPUT);
    let printed = String::from_utf8_lossy(&output).trim_end().to_string();
    Err(format!("command {command:?} exited with {code}: {printed}"))
}

fn port(p: &IntOrString, container: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not declared by the container")),
    }
}

/// Runs a lifecycle hook's handler (the kubelet's `handlerRunner`): `exec` in the
/// container, `httpGet` against it, or `sleep`; `tcpSocket` is not a hook (it fails, as
/// on Kubernetes).
pub async fn hook(
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    container: &Container,
    ip: IpAddr,
    target: &dyn skiff_shim::Container,
) -> Result<(), String> {
    if let Some(s) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0))).await;
        return Ok(());
    }
    if let Some(h) = &handler.http_get {
        return http_get(h, container, ip).await;
    }
    if let Some(e) = &handler.exec {
        let command = e.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec hook has no command".into());
        }
        return exec(target, command).await;
    }
    Err("a lifecycle hook needs exec, httpGet or sleep".into())
}

async fn http_get(
    h: &k8s_openapi::api::core::v1::HTTPGetAction,
    container: &Container,
    ip: IpAddr,
) -> Result<(), String> {
    let port = port(&h.port, container)?;
    let host = h.host.clone().unwrap_or_else(|| ip.to_string());
    let scheme = h.scheme.as_deref().unwrap_or("HTTP");
    if scheme != "HTTP" {
        return Err(format!("scheme {scheme} is not supported"));
    }
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let uri: http::Uri = format!("http://{host}:{port}{path}")
        .parse()
        .map_err(|e| format!("probe url: {e}"))?;
    let mut req = http::Request::get(uri)
        .header("user-agent", "kube-probe/1.33")
        .header("accept", "*/*");
    for hdr in h.http_headers.iter().flatten() {
        req = req.header(hdr.name.as_str(), hdr.value.as_str());
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let code = resp.status().as_u16();
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

async fn attempt(
    probe: &Probe,
    container: &Container,
    ip: IpAddr,
    target: &dyn skiff_shim::Container,
) -> Result<(), String> {
    if let Some(h) = &probe.http_get {
        return http_get(h, container, ip).await;
    }
    if let Some(t) = &probe.tcp_socket {
        let port = port(&t.port, container)?;
        let host: IpAddr = match &t.host {
            Some(h) => h.parse().map_err(|_| format!("invalid host {h}"))?,
            None => ip,
        };
        return tokio::net::TcpStream::connect(SocketAddr::new(host, port))
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    if let Some(e) = &probe.exec {
        let command = e.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec probe has no command".into());
        }
        return exec(target, command).await;
    }
    if probe.grpc.is_some() {
        return Err("grpc probes are not supported yet".into());
    }
    Err("probe has no handler".into())
}
