//! A test-only API server: just enough of kube-apiserver for kubectl to reach the exec,
//! attach and portforward subresources of one pod, served by skiff-streams.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use skiff_streams::{ExecOptions, Kind, negotiate, serve_exec, serve_port_forward};
use tokio::net::{TcpListener, TcpStream};

use crate::commands;

pub const POD: &str = "web";
/// A pod whose runtime cannot exec: the server refuses before upgrading.
pub const NO_EXEC_POD: &str = "noexec";
pub const CONTAINER: &str = "main";

/// What the server saw, for assertions about the protocol used.
#[derive(Default)]
pub struct Seen {
    /// (path, subprotocol) of every upgrade served.
    pub upgrades: Vec<(String, String)>,
    /// Terminal sizes the exec handler received.
    pub sizes: Vec<skiff_streams::TerminalSize>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, seen.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\n\
             current-context: t\nusers:\n- name: u\n  user:\n    token: test\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        TestServer { addr, seen, dir }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kubectl.<version> --kubeconfig ... <args>`, ready to run.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_path(version));
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBECTL_REMOTE_COMMAND_WEBSOCKETS")
            .env_remove("KUBECTL_PORT_FORWARD_WEBSOCKETS")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl to completion off the async runtime, feeding `stdin`.
    pub async fn run(&self, version: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.kubectl(version, args);
        let stdin = stdin.map(<[u8]>::to_vec);
        tokio::task::spawn_blocking(move || run_with_input(&mut cmd, stdin))
            .await
            .unwrap()
    }

    pub fn upgrades(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().upgrades.clone()
    }
}

pub fn kubectl_path(version: &str) -> String {
    format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}")
}

pub fn run_with_input(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Output {
    use std::io::Write;
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // As a shell pipe would: kubectl may finish before reading all of it. Dropping the
        // pipe is the EOF that must reach the command.
        std::thread::spawn(move || pipe.write_all(&input));
    }
    wait_with_deadline(child, Duration::from_secs(60))
}

/// Waits for a child, killing it (by its pid) if it outlives the deadline.
pub fn wait_with_deadline(child: std::process::Child, deadline: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(deadline).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    out
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn pod(name: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "uid": "0b6d5a0e-0000-4000-8000-000000000001"},
        "spec": {"containers": [{"name": CONTAINER, "image": "test"}], "nodeName": "node-1"},
        "status": {"phase": "Running", "containerStatuses": [{"name": CONTAINER, "ready": true,
            "restartCount": 0, "image": "test", "imageID": "", "state": {"running": {}}}]},
    })
}

fn discovery(path: &str) -> Option<serde_json::Value> {
    Some(match path {
        "/api" => serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        "/api/v1" => {
            serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                 "verbs": ["get", "list"], "shortNames": ["po"]},
                {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
                {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
            ]})
        }
        "/version" => serde_json::json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
            "platform": "linux/amd64"}),
        _ => return None,
    })
}

async fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Seen>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(body) = discovery(&path) {
        return Ok(json(StatusCode::OK, body));
    }
    for name in [POD, NO_EXEC_POD] {
        if path == format!("/api/v1/namespaces/default/pods/{name}") {
            return Ok(json(StatusCode::OK, pod(name)));
        }
    }
    if path.starts_with(&format!("/api/v1/namespaces/default/pods/{NO_EXEC_POD}/")) {
        let e = skiff_streams::NegotiationError::new(format!(
            "container main in pod {NO_EXEC_POD} runs under runtime handler wasmtime, which does not support exec"
        ));
        let mut resp = json(e.status_code(), e.status_json());
        resp.headers_mut().extend(e.response_headers());
        return Ok(resp);
    }
    let pod_path = format!("/api/v1/namespaces/default/pods/{POD}");
    let kind = match path.strip_prefix(&pod_path) {
        Some("/exec") => Kind::Exec,
        Some("/attach") => Kind::Attach,
        Some("/portforward") => Kind::PortForward,
        _ => {
            return Ok(json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("the server could not find {path}"),
                    "reason": "NotFound", "code": 404}),
            ));
        }
    };
    let negotiated = match negotiate(kind, req.method(), req.headers()) {
        Ok(n) => n,
        Err(e) => {
            let mut resp = json(e.status_code(), e.status_json());
            resp.headers_mut().extend(e.response_headers());
            return Ok(resp);
        }
    };
    seen.lock()
        .unwrap()
        .upgrades
        .push((path.clone(), negotiated.subprotocol.clone()));
    let upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .body(Full::new(Bytes::new()))
        .unwrap();
    *resp.headers_mut() = negotiated.response_headers.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        let result = match kind {
            Kind::Exec | Kind::Attach => {
                let opts = ExecOptions::from_query(&query);
                let argv: Vec<String> = form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.into_owned())
                    .collect();
                let argv = if kind == Kind::Attach {
                    vec!["attach".to_owned()]
                } else {
                    argv
                };
                serve_exec(io, &negotiated, opts, |streams| {
                    commands::run(argv, streams, seen.clone())
                })
                .await
            }
            Kind::PortForward => {
                let ports = form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "ports" || k == "port")
                    .flat_map(|(_, v)| {
                        v.split(',')
                            .filter_map(|p| p.trim().parse().ok())
                            .collect::<Vec<u16>>()
                    })
                    .collect();
                serve_port_forward(io, &negotiated, ports, |port| async move {
                    TcpStream::connect(("127.0.0.1", port))
                        .await
                        .map_err(|e| format!("error forwarding port {port} to pod {POD}: {e}"))
                })
                .await
            }
        };
        if let Err(e) = result {
            eprintln!("session {path} failed: {e}");
        }
    });
    let _ = req.into_body().collect().await;
    Ok(resp)
}
