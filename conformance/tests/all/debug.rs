//! `kubectl debug` (kubectl 1.33) on a real node: an ephemeral container added to a running
//! Linux container pod in its target's process namespace, one beside a Wasm instance in
//! its pod's network namespace, a host-namespaces pod on the node, and the
//! `pods/ephemeralcontainers` subresource's rules and errors as kube-apiserver has them.
//! They need root (pod networks, namespaces, cgroups).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_conformance::{Backend, Cluster, Kubectl, Registry};

use crate::node::{phase, wait_pod};

/// What kubectl prints once an attach session (`debug -it`, `attach -it`) is connecting.
const ATTACHING: &str = "If you don't see a command prompt";

/// Runs `kubectl <args>` on a terminal (util-linux `script`), and once kubectl says it is
/// attaching types `input` into it. Returns what the terminal showed (carriage returns
/// dropped) and kubectl's exit code.
fn on_terminal(k: &Kubectl, home: &std::path::Path, args: &[&str], input: &str) -> (String, i32) {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let command = format!(
        "HOME={} KUBECONFIG={} {} {}",
        home.display(),
        k.kubeconfig.display(),
        k.bin.display(),
        quoted.join(" ")
    );
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut typing = child.stdin.take().expect("stdin");
    let mut out = child.stdout.take().expect("stdout");
    let (tx, chunks) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown = String::new();
    let mut typed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match chunks.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => {
                shown.push_str(&String::from_utf8_lossy(&chunk));
                if !typed && shown.contains(ATTACHING) {
                    typing.write_all(input.as_bytes()).expect("type");
                    typed = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kubectl {args:?} did not end; the terminal showed:\n{shown}");
            }
        }
    }
    let status = child.wait().expect("script");
    drop(typing);
    (shown.replace('\r', ""), status.code().unwrap_or(-1))
}

/// The causes' fields of a 422 `Status`.
fn invalid_fields(status: &Value) -> Vec<String> {
    assert_eq!(status["reason"], "Invalid", "{status}");
    assert_eq!(status["code"], 422, "{status}");
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn ephemeral_status<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["ephemeralContainerStatuses"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

/// `Defaulting debug container name to debugger-xxxxx.`: the name kubectl chose.
fn debug_container_name(shown: &str) -> String {
    shown
        .lines()
        .find_map(|l| l.strip_prefix("Defaulting debug container name to "))
        .map(|n| n.trim_end_matches('.').to_string())
        .unwrap_or_else(|| panic!("kubectl named no debug container:\n{shown}"))
}

#[test]
fn kubectl_debug_pods() {
    let registry = Registry::start();
    let busybox = registry.push_example("busybox-oci", "busybox");
    let http = registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    let home = cluster.dir.path().join("home-debug");

    // A Linux container pod, and kubectl debug -it --target into its process namespace: the
    // debug shell's pid 1 is the target's process.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: target, labels: {{app: target}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {busybox}\n    command: [sleep, \"3601\"]\n"
        ),
    );
    wait_pod(&k, "target", "Running", |p| phase(p) == "Running");
    let (shown, code) = on_terminal(
        &k,
        &home,
        &[
            "debug",
            "target",
            "-it",
            &format!("--image={busybox}"),
            "--target=app",
        ],
        "echo \"pid1=$(tr '\\0' ' ' < /proc/1/cmdline)\"; ps; exit\n",
    );
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("pid1=sleep 3601 "), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.trim_end().ends_with("sleep 3601")),
        "ps shows the target's process as pid 1:\n{shown}"
    );
    let debugger = debug_container_name(&shown);

    // The subresource is listed, as kube-apiserver lists it.
    let core: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/api/v1"])).unwrap();
    let listed = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/ephemeralcontainers")
        .cloned()
        .unwrap_or_else(|| panic!("pods/ephemeralcontainers not listed: {core}"));
    assert_eq!(listed["kind"], "Pod");
    assert_eq!(listed["verbs"], json!(["get", "patch", "update"]));

    // A 404 for a subresource that does not exist carries details, as kube-apiserver's
    // do (kubectl reads them: without, `kubectl debug` panicked).
    let (code, status) = cluster.request(
        "GET",
        "/api/v1/namespaces/default/pods/nope/bogus",
        "application/json",
        "",
    );
    assert_eq!(
        (code, &status["reason"]),
        (404, &json!("NotFound")),
        "{status}"
    );
    assert!(status["details"].is_object(), "{status}");
    // And one for a pod that does not exist names it.
    let (code, status) = cluster.request(
        "GET",
        "/api/v1/namespaces/default/pods/nope/ephemeralcontainers",
        "application/json",
        "",
    );
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["details"]["name"], "nope", "{status}");

    // The pod shows the ephemeral container, in its spec and its status.
    let p = wait_pod(&k, "target", "showing its debug container ended", |p| {
        ephemeral_status(p, &debugger)["state"]["terminated"].is_object()
    });
    let spec = &p["spec"]["ephemeralContainers"][0];
    assert_eq!(
        (spec["name"].as_str(), spec["targetContainerName"].as_str()),
        (Some(debugger.as_str()), Some("app")),
        "{p}"
    );
    let status = ephemeral_status(&p, &debugger);
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{status}");
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");
    assert_eq!(status["image"], busybox.as_str(), "{status}");
    assert!(
        status["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("youki://")),
        "{status}"
    );
    assert!(
        status["imageID"]
            .as_str()
            .is_some_and(|id| id.contains("sha256:")),
        "{status}"
    );
    // The pod itself runs on, its container not restarted, its labels kept.
    assert_eq!(phase(&p), "Running");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(p["metadata"]["labels"]["app"], "target");
    let described = k.ok(&["describe", "pod", "target"]);
    assert!(
        described.contains("Ephemeral Containers:") && described.contains(&debugger),
        "{described}"
    );
    // Its output is its log.
    let log = k.ok(&["logs", "target", "-c", &debugger]);
    assert!(log.contains("pid1=sleep 3601"), "{log}");

    // The subresource's rules, for every way of writing it.
    let path = "/api/v1/namespaces/default/pods/target/ephemeralcontainers";
    let (code, current) = cluster.request("GET", path, "application/json", "");
    assert_eq!((code, &current["kind"]), (200, &json!("Pod")), "{current}");
    // An existing ephemeral container may not change (PUT)...
    let mut changed = current.clone();
    changed["spec"]["ephemeralContainers"][0]["image"] = json!("busybox:other");
    let (code, status) = cluster.request("PUT", path, "application/json", changed.to_string());
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        invalid_fields(&status),
        [format!("spec.ephemeralContainers[{debugger}]")]
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("may not be changed"),
        "{status}"
    );
    // ...nor go (merge patch).
    let (code, status) = cluster.request(
        "PATCH",
        path,
        "application/merge-patch+json",
        r#"{"spec":{"ephemeralContainers":[]}}"#,
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(invalid_fields(&status), ["spec.ephemeralContainers"]);
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("may not be removed"),
        "{status}"
    );
    // A new one may not serve, nor take a name the pod has (JSON patch), nor target a
    // container the pod lacks (strategic merge patch, as kubectl debug sends).
    let (code, status) = cluster.request(
        "PATCH",
        path,
        "application/json-patch+json",
        json!([{"op": "add", "path": "/spec/ephemeralContainers/-", "value":
            {"name": "app", "image": busybox, "ports": [{"containerPort": 80}]}}])
        .to_string(),
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        invalid_fields(&status),
        [
            "spec.ephemeralContainers[1].name",
            "spec.ephemeralContainers[1].ports"
        ]
    );
    let (code, status) = cluster.request(
        "PATCH",
        path,
        "application/strategic-merge-patch+json",
        json!({"spec": {"ephemeralContainers": [
            {"name": "dbg", "image": busybox, "targetContainerName": "nope"}]}})
        .to_string(),
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        invalid_fields(&status),
        // Without `$setElementOrder` a strategic merge puts the patch's items first, as
        // Kubernetes' does.
        ["spec.ephemeralContainers[0].targetContainerName"]
    );
    // Through the pod itself, ephemeral containers cannot be added at all.
    let err = k
        .run(&[
            "patch",
            "pod",
            "target",
            "--type=json",
            "-p",
            &json!([{"op": "add", "path": "/spec/ephemeralContainers/-", "value":
                {"name": "dbg", "image": busybox}}])
            .to_string(),
        ])
        .stderr;
    assert!(err.contains("pod updates may not change fields"), "{err}");
    // Nothing was written.
    let (_, after) = cluster.request("GET", path, "application/json", "");
    assert_eq!(
        after["spec"]["ephemeralContainers"],
        current["spec"]["ephemeralContainers"]
    );

    // A Wasm pod has no process to share: a Linux debug container beside the Wasm
    // instance, in the pod's network namespace, reaches its app over localhost. The
    // second pod of the component has only an address in the node's shared namespace
    // (node.rs, outgoing_requests_leave_from_the_pod): the debug container moves it into
    // a namespace of its own first, where the app then listens.
    let wasm_pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  runtimeClassName: wasmtime\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: http\n    image: {http}\n    ports: [{{containerPort: 8080}}]\n    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n"
        )
    };
    k.ok_stdin(&["apply", "-f", "-"], &wasm_pod("wasm-first"));
    wait_pod(&k, "wasm-first", "Ready", crate::node::ready);
    k.ok_stdin(&["apply", "-f", "-"], &wasm_pod("wasm"));
    let p = wait_pod(&k, "wasm", "Ready", crate::node::ready);
    let ip = p["status"]["podIP"].as_str().expect("pod IP").to_string();
    assert!(
        crate::node::in_shared_namespace(&cluster, &ip),
        "wasm ({ip}) is address-only"
    );
    let (shown, code) = on_terminal(
        &k,
        &home,
        &[
            "debug",
            "wasm",
            "-it",
            "--profile=general",
            &format!("--image={busybox}"),
            "-c",
            "shell",
        ],
        "echo \"got=$(wget -qO- http://localhost:8080/)\"; exit\n",
    );
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("got=hello from skiff"), "{shown}");
    let p = wait_pod(&k, "wasm", "showing its debug container ended", |p| {
        ephemeral_status(p, "shell")["state"]["terminated"].is_object()
    });
    assert_eq!(
        ephemeral_status(&p, "shell")["state"]["terminated"]["exitCode"],
        0
    );
    // The general profile asks for SYS_PTRACE, which the container got.
    assert_eq!(
        p["spec"]["ephemeralContainers"][0]["securityContext"]["capabilities"]["add"],
        json!(["SYS_PTRACE"])
    );
    assert!(crate::node::ready(&p), "the Wasm app still serves: {p}");
    assert!(
        !crate::node::in_shared_namespace(&cluster, &ip),
        "wasm moved out"
    );
    assert_eq!(
        crate::node::http_get(&ip, 8080, "/").expect("GET the pod IP"),
        (200, "hello from skiff\n".into())
    );

    k.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}

#[test]
fn kubectl_debug_node() {
    let registry = Registry::start();
    let busybox = registry.push_example("busybox-oci", "busybox");
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    let home = cluster.dir.path().join("home-debug");
    let node = k.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);

    // kubectl's host-namespaces pod (hostNetwork, hostPID, hostIPC, the node's / at
    // /host), with either profile that gives one: the shell sees the host.
    let hostname = std::fs::read_to_string("/etc/hostname").expect("/etc/hostname");
    let init = std::fs::read_to_string("/proc/1/comm").expect("/proc/1/comm");
    for profile in ["legacy", "general"] {
        let (shown, code) = on_terminal(
            &k,
            &home,
            &[
                "debug",
                &format!("node/{node}"),
                "-it",
                &format!("--profile={profile}"),
                &format!("--image={busybox}"),
            ],
            "echo \"host=$(cat /host/etc/hostname) pid1=$(cat /proc/1/comm)\"; exit\n",
        );
        assert_eq!(code, 0, "{profile}: {shown}");
        assert!(
            shown.contains(&format!("host={} pid1={}", hostname.trim(), init.trim())),
            "{profile}: {shown}"
        );
    }
    // kubectl names them node-debugger-<node>-<suffix>.
    let pods: Vec<Value> = k.json(&["get", "pods"])["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("node-debugger-{node}-")))
        })
        .cloned()
        .collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    for p in &pods {
        let spec = &p["spec"];
        assert_eq!(
            (&spec["hostNetwork"], &spec["hostPID"], &spec["hostIPC"]),
            (&json!(true), &json!(true), &json!(true)),
            "{p}"
        );
        assert_eq!(spec["nodeName"], node.as_str());
        let name = p["metadata"]["name"].as_str().unwrap();
        wait_pod(&k, name, "Succeeded", |p| phase(p) == "Succeeded");
    }
    k.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}
