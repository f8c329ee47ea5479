//! Linux container pods on a real node: busybox images pulled from a real registry, run by
//! the container shim (youki's libcontainer) beside Wasm pods, driven by kubectl 1.33.
//! They need root (pod networks, namespaces, cgroups).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_conformance::{Backend, Cluster, Kubectl, Registry, repo_root};

use crate::node::{
    container, example, get_forwarded, http_get, phase, port_forward, ready, wait_pod,
};

/// Pushes a busybox image built by `examples/images/busybox.sh` with `options` (image
/// config fields) as `<registry>/skiff/<name>:v1`.
pub(crate) fn push_busybox(registry: &Registry, name: &str, options: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("layout");
    let out = Command::new("sh")
        .arg(repo_root().join("examples/images/busybox.sh"))
        .arg(&layout)
        .args(options)
        .output()
        .expect("run busybox.sh");
    assert!(
        out.status.success(),
        "busybox.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    registry.push(&layout, name)
}

fn apply(k: &Kubectl, yaml: &str) {
    k.ok_stdin(&["apply", "-f", "-"], yaml);
}

/// A pod of one busybox container running `script` with `sh -c`.
fn script_pod(name: &str, image: &str, restart: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
{extra}"#
    )
}

fn terminated(p: &Value) -> &Value {
    &container(p)["state"]["terminated"]
}

fn done(p: &Value) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

fn logs(k: &Kubectl, pod: &str) -> String {
    k.ok(&["logs", pod])
}

/// Lines a child writes to `out`, as they come.
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line from `lines` that starts with `prefix`, within a minute.
fn first_line(lines: &mpsc::Receiver<String>, prefix: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("{what}: no line starting with {prefix:?}: {e}"),
        }
    }
}

/// `kubectl attach` and `kubectl run -i` into container pods, over WebSocket (1.33) and
/// SPDY (1.27).
fn attach_walkthrough(cluster: &Cluster, busybox: &str) {
    let k = cluster.kubectl("1.33");
    // Without -i: the container's stdout and stderr as it writes them.
    apply(
        &k,
        &script_pod(
            "ticker",
            busybox,
            "Never",
            "i=0; while true; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.2; done",
            "",
        ),
    );
    wait_pod(&k, "ticker", "Running", |p| phase(p) == "Running");
    // Its image was pulled for an earlier pod: the kubelet's events say so.
    let events = k.events_of("ticker");
    assert!(
        events.contains("already present on machine") && !events.contains("Pulling"),
        "{events}"
    );
    for version in ["1.33", "1.27"] {
        let mut attach = cluster
            .kubectl(version)
            .command()
            .args(["attach", "ticker"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl attach");
        let out = lines_of(attach.stdout.take().expect("stdout"));
        let err = lines_of(attach.stderr.take().expect("stderr"));
        let what = format!("kubectl {version} attach ticker");
        first_line(&out, "tick ", &what);
        first_line(&err, "tock ", &what);
        let _ = attach.kill();
        let _ = attach.wait();
    }
    // It asked for no stdin, so there is none to attach to.
    let err = k.fails(&["attach", "-i", "ticker"]);
    assert!(err.contains("no stdin to attach to"), "{err}");
    k.ok(&["delete", "pod", "ticker", "--wait=false"]);

    // kubectl run -i: stdin: true and stdinOnce: true; the client's input reaches the
    // container, and its end closes the container's stdin, so `cat` ends.
    for version in ["1.33", "1.27"] {
        let name = format!("reader-{}", version.replace('.', "-"));
        let run = cluster.kubectl(version).run_stdin(
            &[
                "run",
                &name,
                "--image",
                busybox,
                "--restart=Never",
                "-i",
                "--rm",
                "--command",
                "--",
                "sh",
                "-c",
                "read l; echo \"got $l\"; cat; echo bye",
            ],
            "hello\nand more\n",
        );
        assert_eq!(run.code, 0, "kubectl {version}: {run:?}");
        assert!(
            run.stdout.contains("got hello\nand more\nbye\n"),
            "kubectl {version}: {run:?}"
        );
        // --rm: the pod is gone once it ended.
        assert!(k.fails(&["get", "pod", &name]).contains("not found"));
    }

    // tty: true: the container runs on a terminal, which takes the client's window size.
    apply(
        &k,
        &script_pod(
            "term",
            busybox,
            "Never",
            "for i in $(seq 1 40); do echo \"on $(tty) size $(stty size)\"; sleep 0.25; done",
            "    stdin: true\n    tty: true\n",
        ),
    );
    wait_pod(&k, "term", "Running", |p| phase(p) == "Running");
    let tty = Command::new("script")
        .args([
            "-qec",
            &format!(
                "stty cols 77 rows 33; KUBECONFIG={} {} attach -it term",
                k.kubeconfig.display(),
                k.bin.display()
            ),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux)");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(shown.contains("on /dev/pts/0 size 33 77"), "{shown}");
    // What the terminal showed is the container's log too.
    assert!(logs(&k, "term").contains("on /dev/pts/0 size"));
    k.ok(&["delete", "pod", "term", "--wait=false"]);
}

#[test]
fn container_pods_walkthrough() {
    let registry = Registry::start();
    let busybox = registry.push_example("busybox-oci", "busybox");
    // An image whose config sets everything Kubernetes merges with the pod's fields.
    let configured = push_busybox(
        &registry,
        "configured",
        &[
            // `--opt=value`: argparse takes "-c" for an option otherwise.
            "--entrypoint=/bin/sh",
            "--entrypoint=-c",
            "--cmd=echo cmd=image uid=$(id -u) gid=$(id -g) cwd=$(pwd) IMG=$IMG $0 $1",
            "--env=IMG=from-image",
            "--workdir=/tmp",
            "--user=web",
        ],
    );
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    // The node offers the container runtime, and Skiff made its RuntimeClass.
    let nodes = k.json(&["get", "nodes"]);
    assert_eq!(
        nodes["items"][0]["metadata"]["labels"]["runtime.skiff.dev/youki"], "true",
        "{nodes}"
    );
    assert_eq!(
        k.json(&["get", "runtimeclass", "youki"])["handler"],
        "youki"
    );

    // A web server from a standard image, reached on its pod IP, its logs in kubectl logs.
    apply(
        &k,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: web
    image: {busybox}
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /tmp/www && echo "served by $(hostname)" > /tmp/www/index.html
      trap 'echo got SIGTERM; exit 0' TERM
      echo starting httpd
      httpd -f -p 8080 -h /tmp/www & wait
    ports: [{{containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
"#
        ),
    );
    let p = wait_pod(&k, "web", "Ready", ready);
    let events = k.events_of("web");
    assert!(events.contains("Pulling image"), "{events}");
    let ip = p["status"]["podIP"].as_str().expect("podIP").to_string();
    assert_eq!(
        http_get(&ip, 8080, "/").expect("GET web"),
        (200, "served by web\n".to_string())
    );
    assert_eq!(
        container(&p)["imageID"]
            .as_str()
            .map(|d| d.starts_with("sha256:")),
        Some(true)
    );
    assert!(
        logs(&k, "web").contains("starting httpd"),
        "{}",
        logs(&k, "web")
    );

    // exec: output, exit codes, stdin, over WebSocket (1.33) and SPDY (1.27).
    for version in ["1.33", "1.27"] {
        let kv = cluster.kubectl(version);
        let out = kv.ok(&["exec", "web", "--", "ls", "/"]);
        assert!(out.lines().any(|l| l == "bin"), "kubectl {version}: {out}");
        let run = kv.run(&[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 3",
        ]);
        assert_eq!(run.code, 3, "kubectl {version}: {run:?}");
        assert_eq!(run.stdout, "to-out\n", "kubectl {version}");
        assert!(
            run.stderr.contains("to-err\n")
                && run.stderr.contains("command terminated with exit code 3"),
            "kubectl {version}: {}",
            run.stderr
        );
        assert_eq!(
            kv.ok_stdin(
                &["exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z"],
                "piped in\n"
            ),
            "PIPED IN\n",
            "kubectl {version}"
        );
    }
    // The container's own /etc/hosts names the pod; exec runs as the container does.
    let hosts = k.ok(&["exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(hosts.ends_with(&format!("{ip}\tweb\n")), "{hosts}");
    // And /etc/hostname, as containerd mounts it.
    assert_eq!(
        k.ok(&["exec", "web", "--", "cat", "/etc/hostname"]),
        "web\n"
    );
    // -it: a terminal of the client's size, and the exit code through it. The size is
    // set just after the process starts (libcontainer has no `consoleSize`), which a
    // shell learns from its SIGWINCH; this command waits for it.
    let tty = Command::new("script")
        .args([
            "-qec",
            &format!(
                "stty cols 123 rows 45; KUBECONFIG={} {} exec -it web -- sh -c 'until [ -n \"$(stty size 2>/dev/null)\" ]; do sleep 0.1; done; tty; stty size; exit 5'",
                k.kubeconfig.display(),
                k.bin.display()
            ),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux)");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(
        shown.contains("/dev/pts/0") && shown.contains("45 123"),
        "{shown}"
    );
    assert!(
        shown.contains("command terminated with exit code 5"),
        "{shown}"
    );
    // port-forward to a container pod.
    let (local, mut forward) = port_forward(&k, "web", 8080);
    let answer = get_forwarded(local, "/", "container pod");
    assert_eq!(answer, (200, "served by web\n".to_string()));
    let _ = forward.kill();
    let _ = forward.wait();
    // attach: output as it is written, stdin (kubectl run -i, stdinOnce), a terminal.
    attach_walkthrough(&cluster, &busybox);

    // Kubernetes' merging of the image config with command, args, env, workingDir and the
    // securityContext, each case in its own pod.
    let cases = [
        // Neither command nor args: the image's Entrypoint + Cmd, its User by name (web,
        // 1000), WorkingDir and Env.
        (
            "merge-none",
            "",
            "cmd=image uid=1000 gid=1000 cwd=/tmp IMG=from-image /bin/sh",
        ),
        // args only: the image's Entrypoint with the pod's args.
        (
            "merge-args",
            r#"    args: ["echo args=pod IMG=$IMG $0", "zero"]"#,
            "args=pod IMG=from-image zero",
        ),
        // command: the image's Entrypoint and Cmd are both dropped.
        (
            "merge-command",
            r#"    command: ["/bin/echo", "command"]"#,
            "command",
        ),
        (
            "merge-command-args",
            "    command: [\"/bin/echo\"]\n    args: [\"command\", \"and\", \"args\"]",
            "command and args",
        ),
        // The pod's env wins over the image's; workingDir and runAsUser/runAsGroup over
        // the image's.
        (
            "merge-env",
            "    workingDir: /bin\n    env: [{name: IMG, value: from-pod}]\n    securityContext: {runAsUser: 0, runAsGroup: 50}",
            "cmd=image uid=0 gid=50 cwd=/bin IMG=from-pod /bin/sh",
        ),
    ];
    for (name, extra, _) in &cases {
        apply(
            &k,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {configured}\n{extra}\n"
            ),
        );
    }
    for (name, _, want) in &cases {
        let p = wait_pod(&k, name, "Succeeded", |p| phase(p) == "Succeeded");
        assert_eq!(terminated(&p)["reason"], "Completed", "{name}");
        assert_eq!(logs(&k, name).trim_end(), *want, "{name}");
    }

    // Exit codes and the termination message reach the status; what the pod's files are.
    apply(
        &k,
        &script_pod(
            "exit3",
            &busybox,
            "Never",
            "tail -1 /etc/hosts; cat /etc/resolv.conf >/dev/null && echo resolv ok; echo 'gave up' > /dev/termination-log; exit 3",
            "",
        ),
    );
    let p = wait_pod(&k, "exit3", "Failed", done);
    assert_eq!(phase(&p), "Failed");
    let t = terminated(&p);
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error")),
        "{t}"
    );
    assert_eq!(t["message"], "gave up\n");
    let out = logs(&k, "exit3");
    let pod_ip = p["status"]["podIP"].as_str().unwrap();
    assert_eq!(out, format!("{pod_ip}\texit3\nresolv ok\n"));

    // exec probes run in the container: ready once the file is there, restarted once the
    // liveness command fails.
    apply(
        &k,
        &script_pod(
            "probed",
            &busybox,
            "Always",
            "touch /tmp/alive; sleep 1; touch /tmp/ready; exec sleep 3600",
            "    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}\n    livenessProbe: {exec: {command: [cat, /tmp/alive]}, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 1}\n",
        ),
    );
    // Its liveness probe passed meanwhile (every second from a second after the start,
    // once the script has made its file: a probe at once could run before the script
    // and, with one failure allowed, restart it): no restart.
    let p = wait_pod(&k, "probed", "Ready", ready);
    assert_eq!(container(&p)["restartCount"], 0, "{p}");
    k.ok(&["exec", "probed", "--", "rm", "/tmp/alive"]);
    let p = wait_pod(&k, "probed", "restarted by its liveness probe", |p| {
        container(p)["restartCount"].as_i64().unwrap_or(0) >= 1
            && container(p)["state"]["running"].is_object()
    });
    // Each attempt has an id of its own, named by its runtime.
    let now = container(&p)["containerID"].as_str().unwrap_or_default();
    let before = container(&p)["lastState"]["terminated"]["containerID"]
        .as_str()
        .unwrap_or_default();
    assert!(
        now.starts_with("youki://") && before.starts_with("youki://") && now != before,
        "{p}"
    );
    let events = k.events_of("probed");
    assert!(
        events.contains("Liveness probe failed: command [\"cat\", \"/tmp/alive\"] exited with 1: cat: can't open '/tmp/alive'"),
        "{events}"
    );

    // postStart runs in the container once it has started, and the next container is
    // created only after it: the second container reads what the first one's hook wrote.
    apply(
        &k,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: shared, emptyDir: {{}}}}]
  containers:
  - name: first
    image: {busybox}
    command: [sh, -c, 'exec sleep 3600']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    lifecycle: {{postStart: {{exec: {{command: [sh, -c, 'sleep 1; echo hooked > /shared/order']}}}}}}
  - name: second
    image: {busybox}
    command: [sh, -c, 'cat /shared/order; exec sleep 3600']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
        ),
    );
    wait_pod(&k, "hooked", "Ready", ready);
    assert_eq!(k.ok(&["logs", "hooked", "-c", "second"]), "hooked\n");
    // A failing hook: an event, and the container killed and started again.
    apply(
        &k,
        &script_pod(
            "unhooked",
            &busybox,
            "Always",
            "exec sleep 3600",
            "    lifecycle: {postStart: {exec: {command: [sh, -c, 'exit 7']}}}\n",
        ),
    );
    wait_pod(
        &k,
        "unhooked",
        "restarted after its postStart hook failed",
        |p| container(p)["restartCount"].as_i64().unwrap_or(0) >= 1,
    );
    let events = k.events_of("unhooked");
    assert!(
        events.contains("FailedPostStartHook") && events.contains("PostStartHook failed"),
        "{events}"
    );
    k.ok(&["delete", "pod", "hooked", "unhooked", "--wait=false"]);

    // The containers of a pod share its IPC namespace and /dev/shm, not the node's.
    apply(
        &k,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: ipc}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: {busybox}
    command: ["sh", "-c", "echo from-a > /dev/shm/note; readlink /proc/self/ns/ipc > /dev/shm/ns-a; exec sleep 3600"]
    readinessProbe: {{exec: {{command: [test, -f, /dev/shm/ns-a]}}, periodSeconds: 1}}
  - name: b
    image: {busybox}
    command: ["sleep", "3600"]
"#
        ),
    );
    wait_pod(&k, "ipc", "Ready", ready);
    let seen = k.ok(&[
        "exec",
        "ipc",
        "-c",
        "b",
        "--",
        "sh",
        "-c",
        "cat /dev/shm/note; cat /dev/shm/ns-a; readlink /proc/self/ns/ipc",
    ]);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 3, "{seen}");
    assert_eq!(lines[0], "from-a");
    assert_eq!(lines[1], lines[2], "a and b in one IPC namespace: {seen}");
    let host = std::fs::read_link("/proc/self/ns/ipc").expect("the host's IPC namespace");
    assert_ne!(lines[1], host.to_string_lossy(), "not the node's");
    k.ok(&["delete", "pod", "ipc", "--wait=false"]);

    // An exec probe that outlives its timeout fails, and its process is killed rather
    // than left running in the container, one more each period.
    apply(
        &k,
        &script_pod(
            "slow-probe",
            &busybox,
            "Always",
            "exec sleep 3600",
            "    readinessProbe: {exec: {command: [sleep, \"77\"]}, periodSeconds: 1, timeoutSeconds: 1}\n",
        ),
    );
    wait_pod(&k, "slow-probe", "Running", |p| phase(p) == "Running");
    // A probe every two seconds or so (1 s timeout, 1 s period): over eight seconds, left
    // running they would pile up; killed, at most the one running now is there.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(8) {
        let ps = k.ok(&["exec", "slow-probe", "--", "ps"]);
        let probes = ps
            .lines()
            .filter(|l| l.trim_end().ends_with("sleep 77"))
            .count();
        assert!(probes <= 1, "timed-out probes left running:\n{ps}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let events = k.events_of("slow-probe");
    assert!(
        events.contains("Readiness probe failed: timeout after 1s"),
        "{events}"
    );
    k.ok(&["delete", "pod", "slow-probe", "--wait=false"]);

    // A container running as another user writes to /dev/stderr and to its emptyDir.
    apply(
        &k,
        &script_pod(
            "unprivileged",
            &busybox,
            "Never",
            "echo via-dev-stderr > /dev/stderr && echo x > /scratch/f && echo wrote as $(id -u)",
            "    securityContext: {runAsUser: 65534, runAsGroup: 65534}\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n",
        )
        .replace("  containers:", "  volumes: [{name: scratch, emptyDir: {}}]\n  containers:"),
    );
    let p = wait_pod(&k, "unprivileged", "Succeeded", done);
    assert_eq!(phase(&p), "Succeeded", "{}", logs(&k, "unprivileged"));
    // Two pipes, read apart: as in Kubernetes, lines of stdout and stderr keep their
    // order within each stream only.
    let text = logs(&k, "unprivileged");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["via-dev-stderr", "wrote as 65534"], "{text}");

    // Over its memory limit: OOMKilled, and restarted by the pod's policy.
    apply(
        &k,
        &script_pod(
            "oom",
            &busybox,
            "OnFailure",
            "echo eating; tail /dev/zero",
            "    resources: {limits: {memory: 16Mi}}\n",
        ),
    );
    let p = wait_pod(&k, "oom", "restarted after an OOM kill", |p| {
        container(p)["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    let last = &container(&p)["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{p}");
    assert_eq!(last["exitCode"], 137);

    // runAsNonRoot against an image that runs as root: refused with kubelet's reason.
    apply(
        &k,
        &script_pod(
            "nonroot",
            &busybox,
            "Never",
            "id",
            "    securityContext: {runAsNonRoot: true}\n",
        ),
    );
    let p = wait_pod(&k, "nonroot", "refused", |p| {
        container(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let message = container(&p)["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("container has runAsNonRoot and image will run as root"),
        "{message}"
    );

    // A Wasm container and a Linux container in one pod: the Wasm init container writes
    // into an emptyDir the Linux container reads, and the Linux container reaches the Wasm
    // HTTP app over the pod's localhost.
    let testbed = registry.push_example("testbed.wasm", "testbed");
    let http = registry.push_example("http.wasm", "http");
    apply(
        &k,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: mixed}}
spec:
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: init
    image: {testbed}
    args: ["write", "/shared/note", "written by wasm"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: wasm
    image: {http}
    ports: [{{containerPort: 8080}}]
  - name: linux
    image: {busybox}
    command: ["sh", "-c"]
    args:
    - |
      echo "note: $(cat /shared/note)"
      until wget -qO- http://127.0.0.1:8080/ 2>/dev/null; do sleep 0.2; done
      sleep 3600
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
        ),
    );
    let start = std::time::Instant::now();
    loop {
        let out = k.run(&["logs", "mixed", "-c", "linux"]).stdout;
        if out.contains("hello from skiff") {
            assert!(out.starts_with("note: written by wasm\n"), "{out}");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the Linux container never reached the Wasm one over localhost: {out:?}\nwasm: {}\n{}",
            k.run(&["logs", "mixed", "-c", "wasm"]).stdout,
            k.run(&["describe", "pod", "mixed"]).stdout
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // hostNetwork: the node's network, address and hostname for both runtimes. The Wasm
    // app serves on the node's address (loopback for `skiff up`), where the Linux container
    // and this test reach it; the Linux container sees the node's pod bridge, and with
    // hostPID and hostIPC the node's processes and IPC namespace.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bridge = cluster.node.as_ref().expect("a node").bridge.clone();
    apply(
        &k,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hostnet}}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: wasm
    image: {http}
    ports: [{{containerPort: {port}}}]
  - name: linux
    image: {busybox}
    command: ["sh", "-c"]
    args:
    - |
      echo "hostname $(hostname)"
      grep -q '{bridge}:' /proc/net/dev && echo "sees the node's bridge"
      echo "pid 1 $(cat /proc/1/comm), ipc $(readlink /proc/self/ns/ipc)"
      until wget -qO- http://127.0.0.1:{port}/ 2>/dev/null; do sleep 0.2; done
      sleep 3600
"#
        ),
    );
    let start = std::time::Instant::now();
    let out = loop {
        let out = k.run(&["logs", "hostnet", "-c", "linux"]).stdout;
        if out.contains("hello from skiff") {
            break out;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the hostNetwork pod never served: {out:?}\n{}",
            k.run(&["describe", "pod", "hostnet"]).stdout
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let node_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let init = std::fs::read_to_string("/proc/1/comm").expect("/proc/1/comm");
    let ipc = std::fs::read_link("/proc/self/ns/ipc").expect("ipc namespace");
    assert!(
        out.starts_with(&format!(
            "hostname {}\nsees the node's bridge\npid 1 {}, ipc {}\n",
            node_hostname.trim(),
            init.trim(),
            ipc.display()
        )),
        "{out}"
    );
    let p = k.json(&["get", "pod", "hostnet"]);
    assert_eq!(p["status"]["podIP"], p["status"]["hostIP"], "{p}");
    let (code, body) = crate::node::http_get("127.0.0.1", port, "/").expect("GET the node's port");
    assert_eq!((code, body.as_str()), (200, "hello from skiff\n"));
    k.ok(&["delete", "pod", "hostnet", "--timeout=60s"]);

    // Graceful termination: SIGTERM reaches the container, which exits within its grace;
    // it says so in a hostPath directory the test made.
    let host = tempfile::tempdir().expect("tempdir");
    apply(
        &k,
        &script_pod(
            "graceful",
            &busybox,
            "Always",
            "trap 'echo got SIGTERM > /host/term; exit 0' TERM; echo up > /host/up; while true; do sleep 0.1; done",
            "    volumeMounts: [{name: host, mountPath: /host}]\n",
        )
        .replace(
            "  containers:",
            &format!(
                "  volumes: [{{name: host, hostPath: {{path: {}}}}}]\n  containers:",
                host.path().display()
            ),
        ),
    );
    wait_pod(&k, "graceful", "Running", |p| phase(p) == "Running");
    let start = std::time::Instant::now();
    while !host.path().join("up").exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "never up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    k.ok(&["delete", "pod", "graceful", "--timeout=60s"]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("term"))
            .ok()
            .as_deref(),
        Some("got SIGTERM\n")
    );
    // A container that ignores SIGTERM is killed once its grace period is over.
    apply(
        &k,
        &script_pod(
            "stubborn",
            &busybox,
            "Always",
            "trap '' TERM; echo up; while true; do sleep 1; done",
            "",
        ),
    );
    wait_pod(&k, "stubborn", "Running", |p| phase(p) == "Running");
    k.ok(&["delete", "pod", "stubborn", "--timeout=60s"]);
    k.ok(&["delete", "pod", "--all", "--timeout=60s"]);
    assert!(k.ok(&["get", "pods", "-o", "name"]).trim().is_empty());
}

/// The issue's walk-through with the example manifests as they are: a standard Debian image
/// serving HTTP (lighttpd as www-data), and the mixed pod of a Wasm and a Linux container,
/// both pulled from a real registry.
#[test]
fn container_examples_walkthrough() {
    let registry = Registry::start();
    registry.push_example("debian-web-oci", "debian-web");
    registry.push_example("busybox-oci", "busybox");
    registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");

    apply(&k, &example("web-container.yaml", &registry));
    apply(&k, &example("mixed-pod.yaml", &registry));
    let web = wait_pod(&k, "web", "Ready", ready);
    let ip = web["status"]["podIP"].as_str().unwrap().to_string();
    let (code, body) = http_get(&ip, 8080, "/").expect("GET web");
    assert_eq!(code, 200);
    assert!(
        body.starts_with("lighttpd ") && body.contains(" on Debian "),
        "{body}"
    );
    // lighttpd's access log goes to the container's stderr, so to kubectl logs.
    let start = std::time::Instant::now();
    while !logs(&k, "web").contains("GET / HTTP/1.1") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no access log line: {}",
            logs(&k, "web")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let root = k.ok(&["exec", "web", "--", "ls", "/"]);
    for dir in ["bin", "etc", "usr", "var"] {
        assert!(root.lines().any(|l| l == dir), "{root}");
    }
    assert_eq!(k.ok(&["exec", "web", "--", "id", "-un"]), "www-data\n");

    // The mixed pod: the Linux container fetches the Wasm app's answer over localhost into
    // the shared volume and serves it.
    let mixed = wait_pod(&k, "mixed", "Ready", ready);
    let ip = mixed["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        http_get(&ip, 8080, "/").expect("GET wasm"),
        (200, "hello from skiff\n".to_string())
    );
    let start = std::time::Instant::now();
    loop {
        let got = http_get(&ip, 8081, "/greeting.txt");
        if let Ok((200, body)) = &got {
            assert_eq!(body, "hello from the mixed pod\n");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the Linux container never served the Wasm app's answer: {got:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    k.ok(&["delete", "pod", "web", "mixed", "--timeout=60s"]);
    assert!(k.ok(&["get", "pods", "-o", "name"]).trim().is_empty());
}

/// One reference naming an image index of the HTTP example as a Wasm component and as a
/// static Linux binary: each pod gets the image its runtime class runs, on one node.
#[test]
fn an_index_of_wasm_and_linux_serves_each_pods_runtime() {
    let registry = Registry::start();
    let build = repo_root().join("examples/build");
    registry.push_tagged(&build.join("http.wasm"), "app", "wasm");
    registry.push_tagged(&build.join("http-server-oci"), "app", "linux");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no OCI name known here for {other}"),
    };
    let digests = registry.push_index(
        "app",
        "multi",
        &[("wasm", "wasip2", "wasm"), ("linux", "linux", arch)],
    );
    let image = format!("{}/skiff/app:multi", registry.host);
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    for (name, class) in [("as-wasm", "wasmtime"), ("as-linux", "youki")] {
        apply(
            &k,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  runtimeClassName: {class}\n  containers:\n  - name: http\n    image: {image}\n    ports: [{{containerPort: 8080}}]\n    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n"
            ),
        );
    }
    for (name, digest) in [("as-wasm", &digests[0]), ("as-linux", &digests[1])] {
        let p = wait_pod(&k, name, "Ready", ready);
        let image_id = container(&p)["imageID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(image_id.ends_with(digest.as_str()), "{name}: {image_id}");
        let ip = p["status"]["podIP"].as_str().unwrap().to_string();
        assert_eq!(
            http_get(&ip, 8080, "/").expect("GET /"),
            (200, "hello from skiff\n".to_string()),
            "{name}"
        );
    }
    k.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}
