//! Wasm pods on a real node: `skiff up` with its agent, images pulled from a real registry,
//! pods driven by kubectl 1.33 and reached on their pod IPs. They need root (pod networks).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, Registry, repo_root};

/// The example manifest with the registry the test started instead of `localhost:5000`.
pub(crate) fn example(name: &str, registry: &Registry) -> String {
    std::fs::read_to_string(repo_root().join("examples/manifests").join(name))
        .expect("example manifest")
        .replace("localhost:5000", &registry.host)
}

pub(crate) fn pod(k: &Kubectl, name: &str) -> Value {
    k.json(&["get", "pod", name])
}

/// Polls the pod until `done` says so (a minute at most).
pub(crate) fn wait_pod(
    k: &Kubectl,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let p = pod(k, name);
        if done(&p) {
            return p;
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "pod {name} never became {what}:\n{}",
                k.run(&["describe", "pod", name]).stdout
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl port-forward pod/<pod> <local>:<port>` running; the local port.
pub(crate) fn port_forward(k: &Kubectl, pod: &str, port: u16) -> (u16, std::process::Child) {
    let local = skiff_conformance::free_port();
    let child = k
        .command()
        .args([
            "port-forward",
            &format!("pod/{pod}"),
            &format!("{local}:{port}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    (local, child)
}

/// A GET through a port-forward on `local`, retried until kubectl listens (30 s at most).
pub(crate) fn get_forwarded(local: u16, path: &str, what: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get("127.0.0.1", local, path) {
            Ok(a) => return a,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: port-forward never answered: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Whether `ip` is an address in the namespace the node's address-only pods share (pinned
/// under `/run/skiff/net/<bridge>/netns` as `<veth prefix>sh`), rather than in a namespace
/// of the pod's own.
pub(crate) fn in_shared_namespace(cluster: &Cluster, ip: &str) -> bool {
    let bridge = &cluster.node.as_ref().expect("a cluster with a node").bridge;
    let pins = std::path::Path::new("/run/skiff/net")
        .join(bridge)
        .join("netns");
    let Some(pin) = std::fs::read_dir(&pins)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("sh"))
    else {
        return false;
    };
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["ip", "-o", "-4", "addr", "show"])
        .output()
        .expect("nsenter (util-linux)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/32 "))
}

pub(crate) fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

pub(crate) fn container(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

/// One HTTP/1.1 GET; the status code and body.
pub(crate) fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().expect("address"),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

fn testbed_pod(name: &str, image: &str, restart: &str, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: wasmtime\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: {image}\n    args: [{}]\n{extra}",
        args.join(", ")
    )
}

#[test]
fn wasm_pods_walkthrough() {
    let registry = Registry::start();
    registry.push_example("hello.wasm", "hello");
    registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    // One Ready node with its capacity and the runtime it offers.
    let nodes = k.json(&["get", "nodes"]);
    let node = &nodes["items"][0];
    assert_eq!(nodes["items"].as_array().unwrap().len(), 1);
    assert!(
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "{node}"
    );
    assert_eq!(
        node["metadata"]["labels"]["runtime.skiff.dev/wasmtime"],
        "true"
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert_eq!(node["status"]["capacity"]["pods"], "1000");
    assert!(node["spec"]["podCIDR"].as_str().unwrap().ends_with("/22"));
    let wide = k.ok(&["get", "nodes", "-o", "wide"]);
    assert!(
        wide.contains(" Ready ") && wide.contains("skiff://wasmtime"),
        "{wide}"
    );
    let node_name = node["metadata"]["name"].as_str().unwrap().to_string();
    // Heartbeat through a Lease, like the kubelet.
    let lease = k.json(&["get", "lease", "-n", "kube-node-lease", &node_name]);
    assert_eq!(lease["spec"]["holderIdentity"], node_name.as_str());

    // A wasi:cli command: runs, completes, its output in `kubectl logs`.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &example("hello-wasm.yaml", &registry),
    );
    let p = wait_pod(&k, "hello-wasm", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(container(&p)["state"]["terminated"]["reason"], "Completed");
    assert!(
        container(&p)["imageID"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        k.ok(&["logs", "hello-wasm"]),
        "hello from skiff args=[\"one\", \"two\"] GREETING=hello from the manifest\nhello: done\n"
    );
    let events = k.events_of("hello-wasm");
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }

    // A wasi:http component: Running and Ready (its readiness probe), served on its pod IP.
    k.ok_stdin(&["apply", "-f", "-"], &example("http-wasm.yaml", &registry));
    let p = wait_pod(&k, "http-wasm", "Ready", ready);
    assert_eq!(phase(&p), "Running");
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    assert_ne!(ip, "127.0.0.1");
    assert_eq!(p["status"]["podIPs"][0]["ip"], ip.as_str());
    let wide = k.ok(&["get", "pod", "http-wasm", "-o", "wide"]);
    assert!(wide.contains(&ip) && wide.contains("Running"), "{wide}");
    assert_eq!(
        http_get(&ip, 8080, "/").unwrap(),
        (200, "hello from skiff\n".into())
    );
    assert_eq!(
        http_get(&ip, 8080, "/env/GREETING").unwrap().1,
        "hello from the manifest\n"
    );
    // Pods have different addresses.
    assert_ne!(pod(&k, "hello-wasm")["status"]["podIP"], ip.as_str());

    // exec into a Wasm container is refused with the reason, before any stream is set up,
    // over WebSocket (1.33, which then retries with SPDY) and SPDY (1.27) alike.
    for version in ["1.33", "1.27"] {
        let err = cluster
            .kubectl(version)
            .fails(&["exec", "http-wasm", "--", "ls", "/"]);
        assert!(
            err.contains("WebAssembly instance") && err.contains("nothing to exec into"),
            "kubectl {version}: {err}"
        );
    }
    // port-forward reaches the Wasm HTTP pod through its own loopback: over SPDY in a
    // WebSocket (1.33) and raw SPDY (1.27).
    for version in ["1.33", "1.27"] {
        let (local, mut forward) = port_forward(&cluster.kubectl(version), "http-wasm", 8080);
        let answer = get_forwarded(local, "/env/GREETING", version);
        assert_eq!(
            answer,
            (200, "hello from the manifest\n".into()),
            "kubectl {version}"
        );
        // A second connection through the same forward.
        assert_eq!(
            http_get("127.0.0.1", local, "/").unwrap().1,
            "hello from skiff\n"
        );
        let _ = forward.kill();
        let _ = forward.wait();
    }

    // attach reaches a Wasm container's output, but it has no stdin to attach to.
    let err = k.fails(&["attach", "-i", "http-wasm"]);
    assert!(err.contains("no stdin to attach to"), "{err}");
    let err = k.fails(&["exec", "http-wasm", "-c", "nope", "--", "ls"]);
    assert!(err.contains("nope"), "{err}");
    let err = k.fails(&["exec", "hello-wasm", "--", "ls"]);
    assert!(err.contains("completed pod"), "{err}");

    // Gone within its grace period, and its address with it.
    k.ok(&["delete", "pod", "http-wasm"]);
    let gone = k.fails(&["get", "pod", "http-wasm"]);
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    assert!(http_get(&ip, 8080, "/").is_err());

    // A completed pod is removed too, also when deleted the moment it completes.
    k.ok(&["delete", "pod", "hello-wasm", "--timeout=30s"]);
    k.ok_stdin(
        &["apply", "-f", "-"],
        &example("hello-wasm.yaml", &registry),
    );
    wait_pod(&k, "hello-wasm", "Succeeded", |p| phase(p) == "Succeeded");
    k.ok(&["delete", "pod", "hello-wasm", "--timeout=30s"]);
    assert!(k.fails(&["get", "pod", "hello-wasm"]).contains("not found"));
}

#[test]
fn restart_policies_back_off_and_oom() {
    let registry = Registry::start();
    let image = registry.push_example("testbed.wasm", "testbed");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    // Never: a failure is final.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("never", &image, "Never", &["exit", "3"], ""),
    );
    let p = wait_pod(&k, "never", "Failed", |p| phase(p) == "Failed");
    let t = &container(&p)["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(1), Some("Error"))
    );
    assert_eq!(container(&p)["restartCount"], 0);

    // OnFailure: restarted, then held back with CrashLoopBackOff.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("onfailure", &image, "OnFailure", &["exit", "1"], ""),
    );
    let p = wait_pod(&k, "onfailure", "in back-off", |p| {
        container(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    assert!(container(&p)["restartCount"].as_i64().unwrap() >= 1, "{p}");
    assert_eq!(container(&p)["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(phase(&p), "Running");
    let listed = k.ok(&["get", "pod", "onfailure"]);
    assert!(listed.contains("CrashLoopBackOff"), "{listed}");

    // OnFailure with success: done, no restart.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("onsuccess", &image, "OnFailure", &["exit", "0"], ""),
    );
    let p = wait_pod(&k, "onsuccess", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(container(&p)["restartCount"], 0);

    // A memory limit ends the container as OOMKilled.
    let limits = "    resources:\n      limits:\n        memory: 16Mi\n";
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("hungry", &image, "Never", &["alloc", "64"], limits),
    );
    let p = wait_pod(&k, "hungry", "Failed", |p| phase(p) == "Failed");
    assert_eq!(
        container(&p)["state"]["terminated"]["reason"],
        "OOMKilled",
        "{p}"
    );
    let logs = k.ok(&["logs", "hungry"]);
    assert!(logs.contains("allocated 1 MiB"), "{logs}");
}

#[test]
fn env_volumes_and_downward_api() {
    let registry = Registry::start();
    let image = registry.push_example("testbed.wasm", "testbed");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    k.create_configmap(None, "settings", &[("mode", "fast"), ("LEVEL", "3")]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=s3cret",
    ]);

    let env = "    env:\n    - name: PLAIN\n      value: plain-$(LEVEL)\n    - name: MODE\n      valueFrom: {configMapKeyRef: {name: settings, key: mode}}\n    - name: TOKEN\n      valueFrom: {secretKeyRef: {name: creds, key: token}}\n    - name: POD_NAME\n      valueFrom: {fieldRef: {fieldPath: metadata.name}}\n    - name: POD_IP\n      valueFrom: {fieldRef: {fieldPath: status.podIP}}\n    - name: MEM_MI\n      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}\n    - name: CPU_MILLIS\n      valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}\n    - name: CPUS\n      valueFrom: {resourceFieldRef: {resource: limits.cpu}}\n    resources:\n      limits: {memory: 96Mi, cpu: 1500m}\n      requests: {cpu: 250m}\n    envFrom:\n    - configMapRef: {name: settings}\n      prefix: CM_\n";
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("env", &image, "Never", &["print-env"], env),
    );
    let p = wait_pod(&k, "env", "Succeeded", |p| phase(p) == "Succeeded");
    let logs = k.ok(&["logs", "env"]);
    let ip = p["status"]["podIP"].as_str().unwrap();
    for line in [
        "PLAIN=plain-$(LEVEL)".to_string(),
        "MODE=fast".into(),
        "TOKEN=s3cret".into(),
        "POD_NAME=env".into(),
        format!("POD_IP={ip}"),
        "CM_mode=fast".into(),
        "CM_LEVEL=3".into(),
        // Limits and requests in the divisor's units, rounded up, as the kubelet gives them.
        "MEM_MI=96".into(),
        "CPU_MILLIS=250".into(),
        "CPUS=2".into(),
    ] {
        assert!(logs.lines().any(|l| l == line), "no {line} in:\n{logs}");
    }

    // configMap and secret volumes (read-only), emptyDir and hostPath (read-write).
    let host_dir = cluster.dir.path().join("hostdir");
    let volumes = format!(
        "    volumeMounts:\n    - {{name: cfg, mountPath: /cfg}}\n    - {{name: sec, mountPath: /sec}}\n    - {{name: host, mountPath: /host}}\n  volumes:\n  - {{name: cfg, configMap: {{name: settings}}}}\n  - {{name: sec, secret: {{secretName: creds}}}}\n  - {{name: host, hostPath: {{path: {}, type: DirectoryOrCreate}}}}\n",
        host_dir.display()
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod(
            "files",
            &image,
            "Never",
            &["cat", "/cfg/mode", "/sec/token"],
            &volumes,
        ),
    );
    wait_pod(&k, "files", "Succeeded", |p| phase(p) == "Succeeded");
    // The files hold no newline; the last partial line of a container ends the log as a
    // whole line, as CRI runtimes write it.
    assert_eq!(k.ok(&["logs", "files"]), "fasts3cret\n");
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod(
            "writer",
            &image,
            "Never",
            &["write", "/host/out", "from-wasm"],
            &volumes,
        ),
    );
    wait_pod(&k, "writer", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("out")).unwrap(),
        "from-wasm"
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod(
            "readonly",
            &image,
            "Never",
            &["write", "/cfg/x", "no"],
            &volumes,
        ),
    );
    let p = wait_pod(&k, "readonly", "Failed", |p| phase(p) == "Failed");
    assert_eq!(container(&p)["state"]["terminated"]["exitCode"], 1);

    // A missing ConfigMap holds the container with CreateContainerConfigError.
    let missing =
        "    env:\n    - name: X\n      valueFrom: {configMapKeyRef: {name: nowhere, key: x}}\n";
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("waits", &image, "Never", &["print-env"], missing),
    );
    let p = wait_pod(&k, "waits", "waiting on its config", |p| {
        container(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    assert!(
        container(&p)["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{p}"
    );
}

#[test]
fn probes_logs_and_termination() {
    let registry = Registry::start();
    let testbed = registry.push_example("testbed.wasm", "testbed");
    let http = registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    // A liveness probe that fails restarts the container.
    let probe = "    ports: [{containerPort: 8080}]\n    livenessProbe:\n      httpGet: {path: /missing, port: 8080}\n      periodSeconds: 1\n      failureThreshold: 1\n";
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unhealthy\nspec:\n  runtimeClassName: wasmtime\n  containers:\n  - name: web\n    image: {http}\n{probe}"
    );
    k.ok_stdin(&["apply", "-f", "-"], &manifest);
    let p = wait_pod(&k, "unhealthy", "restarted", |p| {
        container(p)["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(phase(&p), "Running");
    let events = k.events_of("unhealthy");
    assert!(
        events.contains("Unhealthy") && events.contains("Liveness probe failed"),
        "{events}"
    );

    // A readiness probe failing every second: one Unhealthy event per failure, as the
    // kubelet records them, counted on one Event object rather than one object each.
    let failing = "    ports: [{containerPort: 8080}]\n    readinessProbe:\n      httpGet: {path: /missing, port: 8080}\n      periodSeconds: 1\n";
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: notready\nspec:\n  runtimeClassName: wasmtime\n  containers:\n  - name: web\n    image: {http}\n{failing}"
    );
    k.ok_stdin(&["apply", "-f", "-"], &manifest);
    let start = std::time::Instant::now();
    loop {
        let events = k.json(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=notready,reason=Unhealthy",
        ]);
        let items = events["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 1, "repeats made new events: {events}");
        if let Some(e) = items.first()
            && e["count"].as_i64().unwrap_or(0) >= 3
        {
            assert!(
                e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("Readiness probe failed:"),
                "{e}"
            );
            assert_ne!(e["firstTimestamp"], e["lastTimestamp"], "{e}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no Unhealthy event counting up: {events}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    k.ok(&["delete", "pod", "notready", "--timeout=60s"]);

    // A tcpSocket readiness probe makes the pod Ready.
    let ready_probe = "    ports: [{containerPort: 8080}]\n    readinessProbe:\n      tcpSocket: {port: 8080}\n      periodSeconds: 1\n";
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: tcpready\nspec:\n  runtimeClassName: wasmtime\n  containers:\n  - name: web\n    image: {http}\n{ready_probe}"
    );
    k.ok_stdin(&["apply", "-f", "-"], &manifest);
    wait_pod(&k, "tcpready", "Ready", ready);

    // Logs: whole, tail, timestamps, follow to the end.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("talker", &testbed, "Never", &["log", "5", "50"], ""),
    );
    // Like the kubelet, the node refuses logs of a container not yet started, so wait for it.
    wait_pod(&k, "talker", "started", |p| {
        let state = &container(p)["state"];
        state.get("running").is_some() || state.get("terminated").is_some()
    });
    let followed = k.ok(&["logs", "-f", "talker"]);
    assert_eq!(followed, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    assert_eq!(k.ok(&["logs", "talker", "--tail=2"]), "line 4\nline 5\n");
    let stamped = k.ok(&["logs", "talker", "--timestamps", "--tail=1"]);
    let (ts, text) = stamped.trim_end().split_once(' ').unwrap();
    assert!(ts.ends_with('Z') && ts.contains('T'), "{stamped}");
    assert_eq!(text, "line 5");
    // --previous: the attempt before a restart.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("again", &testbed, "Always", &["log", "1", "1"], ""),
    );
    wait_pod(&k, "again", "restarted", |p| {
        container(p)["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(k.ok(&["logs", "again", "--previous"]), "line 1\n");
    let err = k.fails(&["logs", "again", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod again"),
        "{err}"
    );

    // Termination: a long sleeper is stopped and the pod removed well inside its grace.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &testbed_pod("sleeper", &testbed, "Always", &["sleep", "600"], ""),
    );
    wait_pod(&k, "sleeper", "Running", |p| phase(p) == "Running");
    k.ok(&["delete", "pod", "sleeper", "--timeout=20s"]);
    assert!(k.fails(&["get", "pod", "sleeper"]).contains("not found"));
}

#[test]
fn outgoing_requests_leave_from_the_pod() {
    let registry = Registry::start();
    let http = registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    // The host's address on the node's bridge: the first of the node's pod CIDR.
    let nodes = k.json(&["get", "nodes"]);
    let cidr = nodes["items"][0]["spec"]["podCIDR"]
        .as_str()
        .expect("podCIDR")
        .to_string();
    let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    let gateway = std::net::Ipv4Addr::from(u32::from(base) + 1);
    // A server there that answers with the address each request came from.
    let server = std::net::TcpListener::bind((gateway, 0)).expect("listen on the bridge");
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { return };
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{peer}",
                peer.len()
            );
        }
    });
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: caller\nspec:\n  runtimeClassName: wasmtime\n  containers:\n  - name: web\n    image: {http}\n    ports: [{{containerPort: 8080}}]\n    readinessProbe:\n      httpGet: {{path: /, port: 8080}}\n      periodSeconds: 1\n"
    );
    k.ok_stdin(&["apply", "-f", "-"], &manifest);
    let p = wait_pod(&k, "caller", "Ready", ready);
    let ip = p["status"]["podIP"].as_str().expect("pod IP").to_string();
    // The component's outgoing wasi:http request is made from the pod's own address.
    let (code, body) = http_get(&ip, 8080, &format!("/fetch/{gateway}:{port}/who")).expect("fetch");
    assert_eq!((code, body.as_str()), (200, ip.as_str()), "pod {ip}");
    assert!(
        !in_shared_namespace(&cluster, &ip),
        "the first pod of the image has its own namespace"
    );

    // Now that the node has the component loaded, it knows the pod's every socket is the
    // agent's: a second pod of it gets only an address, in the namespace such pods share.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &manifest.replace("name: caller", "name: caller2"),
    );
    let p = wait_pod(&k, "caller2", "Ready", ready);
    let ip2 = p["status"]["podIP"].as_str().expect("pod IP").to_string();
    assert!(
        in_shared_namespace(&cluster, &ip2),
        "caller2 ({ip2}) is address-only"
    );
    // It is served on its IP, on the same port as the first pod, and its requests leave
    // from its own address, not from another pod's of the namespace.
    assert_eq!(
        http_get(&ip2, 8080, "/").expect("GET"),
        (200, "hello from skiff\n".into())
    );
    let (code, body) =
        http_get(&ip2, 8080, &format!("/fetch/{gateway}:{port}/who")).expect("fetch");
    assert_eq!((code, body.as_str()), (200, ip2.as_str()), "pod {ip2}");
    // Its loopback is itself, as in a namespace of its own.
    assert_eq!(
        http_get(&ip2, 8080, "/fetch/127.0.0.1:8080/").expect("fetch"),
        (200, "hello from skiff\n".into())
    );
    // kubectl port-forward reaches it.
    let (local, mut forward) = port_forward(&k, "caller2", 8080);
    assert_eq!(
        get_forwarded(local, "/", "caller2"),
        (200, "hello from skiff\n".into())
    );
    let _ = forward.kill();
    // Deleted, it leaves nothing in the shared namespace.
    k.ok(&["delete", "pod", "caller2", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_shared_namespace(&cluster, &ip2) {
        assert!(
            Instant::now() < deadline,
            "{ip2} still in the shared namespace"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
