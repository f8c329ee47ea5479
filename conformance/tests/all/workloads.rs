//! The workload controllers through kubectl: Deployments and their ReplicaSets and pods,
//! ReplicationControllers, rollouts (watched pod by pod), history, undo, pause, restart,
//! scaling, and deletion with each propagation policy through the garbage collector.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_conformance::{Backend, Cluster, Kubectl, Registry, repo_root};

/// Polls `f` until it returns `Some` (a minute at most), then returns it.
pub(crate) fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The items of `kubectl get ARGS -o json`.
pub(crate) fn items(k: &Kubectl, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    k.json(&full)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn controller_uid(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}

fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or("")
}

fn deployment(name: &str, image: &str, replicas: u32, extra_pod_meta: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
{extra_pod_meta}    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
"
    )
}

/// Without a node: pods stay Pending, but ownership, scaling, revisions and every
/// deletion propagation are the controllers' and the garbage collector's alone.
pub fn deployments_and_garbage_collection(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");

    // A Deployment makes a ReplicaSet named by its template's hash, which makes the pods.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &deployment("web", "registry.local/web:1", 3, ""),
    );
    let d = k.json(&["get", "deployment", "web"]);
    let rs = eventually("the ReplicaSet with 3 pods", || {
        let rs = items(&k, &["rs", "-l", "app=web"]);
        (rs.len() == 1 && rs[0]["status"]["replicas"] == 3).then(|| rs[0].clone())
    });
    assert_eq!(controller_uid(&rs), Some(uid(&d)));
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(name(&rs), format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let pods = items(&k, &["pods", "-l", "app=web"]);
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(controller_uid(p), Some(uid(&rs)), "{p}");
        assert!(name(p).starts_with(&format!("web-{hash}-")), "{}", name(p));
    }
    let d = eventually("the Deployment's status", || {
        let d = k.json(&["get", "deployment", "web"]);
        (d["status"]["replicas"] == 3 && d["status"]["observedGeneration"] == 1).then_some(d)
    });
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["unavailableReplicas"], 3);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let available = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Available")
        .cloned()
        .unwrap();
    assert_eq!(available["status"], "False", "{d}");
    assert_eq!(available["reason"], "MinimumReplicasUnavailable");
    let table = k.ok(&["get", "deployment", "web"]);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .take(4)
            .eq(["web", "0/3", "3", "0"]),
        "{table}"
    );

    // Scaling goes to the one ReplicaSet; a pod deleted by hand is replaced.
    k.ok(&["scale", "deployment", "web", "--replicas=5"]);
    eventually("5 pods", || {
        (items(&k, &["pods", "-l", "app=web"]).len() == 5).then_some(())
    });
    let victim = name(&items(&k, &["pods", "-l", "app=web"])[0]).to_string();
    k.ok(&["delete", "pod", &victim]);
    eventually("the deleted pod replaced", || {
        let pods = items(&k, &["pods", "-l", "app=web"]);
        (pods.len() == 5 && pods.iter().all(|p| name(p) != victim)).then_some(())
    });
    let rs = items(&k, &["rs", "-l", "app=web"]);
    assert_eq!(rs.len(), 1);
    assert_eq!(
        rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"],
        "5"
    );

    // A new template makes a second ReplicaSet, at revision 2; with no pod available the
    // rollout stops where maxSurge (2 of 5) and maxUnavailable (1) leave it.
    k.ok(&[
        "set",
        "image",
        "deployment/web",
        "main=registry.local/web:2",
    ]);
    let both = eventually("two ReplicaSets", || {
        let rs = items(&k, &["rs", "-l", "app=web"]);
        (rs.len() == 2).then_some(rs)
    });
    let revisions: BTreeSet<&str> = both
        .iter()
        .map(|r| {
            r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(revisions, BTreeSet::from(["1", "2"]));
    std::thread::sleep(Duration::from_millis(500));
    let total: i64 = items(&k, &["rs", "-l", "app=web"])
        .iter()
        .map(|r| r["spec"]["replicas"].as_i64().unwrap())
        .sum();
    assert!(total <= 7, "more than replicas + maxSurge: {total}");
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    let status = k.run(&["rollout", "status", "deployment/web", "--timeout=1s"]);
    assert!(
        status.code != 0,
        "a rollout with no available pod is not complete: {}",
        status.stdout
    );

    // Background (kubectl's default): the Deployment goes at once, then its ReplicaSets
    // and their pods, and the events about each of them (Skiff's, not Kubernetes': there
    // they stay for the event TTL).
    let about_web = || -> Vec<String> {
        items(&k, &["events"])
            .iter()
            .filter(|e| {
                let n = e["involvedObject"]["name"].as_str().unwrap_or_default();
                n == "web" || n.starts_with("web-")
            })
            .map(|e| {
                let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
                format!(
                    "{} {}",
                    field(&e["involvedObject"]["kind"]),
                    field(&e["reason"])
                )
            })
            .collect()
    };
    let before = about_web();
    assert!(
        before.iter().any(|e| e == "Deployment ScalingReplicaSet")
            && before.iter().any(|e| e == "ReplicaSet SuccessfulCreate"),
        "{before:?}"
    );
    k.ok(&["delete", "deployment", "web"]);
    eventually("the ReplicaSets and pods of web gone", || {
        (items(&k, &["rs", "-l", "app=web"]).is_empty()
            && items(&k, &["pods", "-l", "app=web"]).is_empty())
        .then_some(())
    });
    eventually(
        "the events about web, its ReplicaSets and pods gone",
        || about_web().is_empty().then_some(()),
    );

    // Orphan: the ReplicaSet stays, without its owner; its pods stay its own.
    k.ok_stdin(
        &["apply", "-f", "-"],
        &deployment("keep", "registry.local/web:1", 2, ""),
    );
    eventually("2 pods of keep", || {
        (items(&k, &["pods", "-l", "app=keep"]).len() == 2).then_some(())
    });
    k.ok(&["delete", "deployment", "keep", "--cascade=orphan"]);
    eventually("keep's Deployment gone", || {
        k.run(&["get", "deployment", "keep"])
            .stderr
            .contains("NotFound")
            .then_some(())
    });
    let rs = items(&k, &["rs", "-l", "app=keep"]);
    assert_eq!(rs.len(), 1);
    assert!(rs[0]["metadata"]["ownerReferences"].is_null(), "{}", rs[0]);
    std::thread::sleep(Duration::from_millis(300));
    let pods = items(&k, &["pods", "-l", "app=keep"]);
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| controller_uid(p) == Some(uid(&rs[0]))));

    // Foreground: the Deployment stays (deletionTimestamp, foregroundDeletion) until its
    // ReplicaSet is gone, which waits for its pods, held here by a finalizer of ours.
    let hold = "      finalizers: [example.com/hold]\n";
    k.ok_stdin(
        &["apply", "-f", "-"],
        &deployment("fg", "registry.local/web:1", 2, hold),
    );
    eventually("2 pods of fg", || {
        (items(&k, &["pods", "-l", "app=fg"]).len() == 2).then_some(())
    });
    k.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let d = k.json(&["get", "deployment", "fg"]);
    assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d}");
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    eventually("fg's pods terminating", || {
        let pods = items(&k, &["pods", "-l", "app=fg"]);
        pods.iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_string())
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        k.run(&["get", "deployment", "fg"]).code == 0,
        "the owner went before its dependents"
    );
    for p in items(&k, &["pods", "-l", "app=fg"]) {
        k.ok(&[
            "patch",
            "pod",
            name(&p),
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ]);
    }
    eventually("fg, its ReplicaSet and its pods gone", || {
        (k.run(&["get", "deployment", "fg"])
            .stderr
            .contains("NotFound")
            && items(&k, &["rs", "-l", "app=fg"]).is_empty()
            && items(&k, &["pods", "-l", "app=fg"]).is_empty())
        .then_some(())
    });

    // Dangling references: an object whose only owner does not exist is deleted; one with
    // another owner that exists only loses the dangling reference.
    let owner = k.json(&["get", "rs", name(&items(&k, &["rs", "-l", "app=keep"])[0])]);
    let cm = |name: &str, refs: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "ownerReferences": refs}})
        .to_string()
    };
    let ghost = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost",
                       "uid": "6b1d0a54-0000-4000-8000-000000000000"});
    let real = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name(&owner),
                      "uid": uid(&owner)});
    k.ok_stdin(&["create", "-f", "-"], &cm("orphaned", json!([ghost])));
    k.ok_stdin(&["create", "-f", "-"], &cm("kept", json!([ghost, real])));
    eventually("the ConfigMap with a dangling owner deleted", || {
        k.run(&["get", "cm", "orphaned"])
            .stderr
            .contains("NotFound")
            .then_some(())
    });
    let kept = eventually("the dangling reference removed", || {
        let cm = k.json(&["get", "cm", "kept"]);
        (cm["metadata"]["ownerReferences"].as_array().map(Vec::len) == Some(1)).then_some(cm)
    });
    assert_eq!(kept["metadata"]["ownerReferences"][0]["uid"], uid(&owner));

    // A ReplicationController keeps its replicas as a ReplicaSet does.
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: rc}}\n    spec:\n      containers: [{name: main, image: registry.local/web:1}]\n",
    );
    let rc = k.json(&["get", "rc", "rc"]);
    eventually("the RC's 2 pods", || {
        let pods = items(&k, &["pods", "-l", "app=rc"]);
        (pods.len() == 2 && pods.iter().all(|p| controller_uid(p) == Some(uid(&rc)))).then_some(())
    });
    eventually("the RC's status", || {
        (k.json(&["get", "rc", "rc"])["status"]["replicas"] == 2).then_some(())
    });

    // Bad input is refused as Kubernetes refuses it.
    let bad = deployment("bad", "registry.local/web:1", 1, "")
        .replace("{app: bad}\n  template:", "{app: other}\n  template:");
    let err = k.run_stdin(&["apply", "-f", "-"], &bad);
    assert!(
        err.code != 0
            && err
                .stderr
                .contains("`selector` does not match template `labels`"),
        "{}",
        err.stderr
    );
}

/// A rollout on a node, pod by pod: never fewer ready pods than `replicas -
/// maxUnavailable`, never more than `replicas + maxSurge`; then history, undo, scale,
/// pause and resume, restart, and deletion with everything it owns.
pub fn rollout_on_a_node(image_v1: &str, image_v2: &str, manifest: Option<String>) {
    let cluster = Cluster::start_with_node(Backend::Embedded);
    let k = cluster.kubectl("1.33");
    k.ok(&[
        "create",
        "deployment",
        "web",
        &format!("--image={image_v1}"),
        "--replicas=4",
        "--port=8080",
    ]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let container = k.json(&["get", "deployment", "web"])["spec"]["template"]["spec"]["containers"]
        [0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // 4 replicas, 25%/25%: at least 3 ready and at most 5 pods at every moment, as the
    // pods' watch tells it event by event.
    let watch = PodWatch::start(&k, "app=web", 4);
    k.ok(&[
        "set",
        "image",
        "deployment/web",
        &format!("{container}={image_v2}"),
    ]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("only new pods left", || {
        let pods = items(&k, &["pods", "-l", "app=web"]);
        (pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == image_v2))
        .then_some(())
    });
    let (lowest, highest, events, timeline) = watch.finish();
    assert!(events >= 4 * 3, "the watch saw only {events} events");
    assert!(
        lowest >= 3,
        "only {lowest} pods were ready during the rollout:\n{timeline}"
    );
    assert!(
        highest <= 5,
        "{highest} pods at once during the rollout:\n{timeline}"
    );
    // `kubectl describe` shows each step of the rollout as the deployment controller's
    // event, not one counted many times.
    let described = k.ok(&["describe", "deployment", "web"]);
    let steps: Vec<&str> = described
        .lines()
        .filter(|l| l.contains("ScalingReplicaSet") && l.contains("deployment-controller"))
        .collect();
    assert!(
        steps
            .iter()
            .any(|l| l.contains("Scaled down replica set web-"))
            && steps
                .iter()
                .filter(|l| l.contains("Scaled up replica set web-"))
                .count()
                >= 2,
        "{described}"
    );
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.lines().any(|l| l.starts_with("1 "))
            && history.lines().any(|l| l.starts_with("2 ")),
        "{history}"
    );

    // Undo: back to the first template, which takes revision 3.
    k.ok(&["rollout", "undo", "deployment/web"]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        image_v1
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    eventually("every pod back on the first image", || {
        let pods = items(&k, &["pods", "-l", "app=web"]);
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (live.len() == 4
            && live
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == image_v1))
        .then_some(())
    });

    // Scale.
    k.ok(&["scale", "deployment/web", "--replicas=6"]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(
        k.json(&["get", "deployment", "web"])["status"]["readyReplicas"],
        6
    );

    // Paused: a new template rolls nothing until resumed.
    k.ok(&["rollout", "pause", "deployment/web"]);
    k.ok(&[
        "set",
        "image",
        "deployment/web",
        &format!("{container}={image_v2}"),
    ]);
    let d = eventually("the pause observed", || {
        let d = k.json(&["get", "deployment", "web"]);
        (d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(d)
    });
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["reason"], "DeploymentPaused", "{d}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        items(&k, &["rs", "-l", "app=web"]).len(),
        2,
        "a paused Deployment made a ReplicaSet"
    );
    k.ok(&["rollout", "resume", "deployment/web"]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    // Restart: new pods of the same image.
    let before: BTreeSet<String> = items(&k, &["pods", "-l", "app=web"])
        .iter()
        .map(|p| name(p).to_string())
        .collect();
    k.ok(&["rollout", "restart", "deployment/web"]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("every pod replaced", || {
        let pods = items(&k, &["pods", "-l", "app=web"]);
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (live.len() == 6 && live.iter().all(|p| !before.contains(name(p)))).then_some(())
    });

    k.ok(&["delete", "deployment", "web"]);
    eventually("the ReplicaSets and pods gone", || {
        (items(&k, &["rs", "-l", "app=web"]).is_empty()
            && items(&k, &["pods", "-l", "app=web"]).is_empty())
        .then_some(())
    });

    // An example manifest runs as it is (its registry the test's).
    if let Some(manifest) = manifest {
        k.ok_stdin(&["apply", "-f", "-"], &manifest);
        let name = serde_yaml::from_str::<Value>(&manifest).unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let target = format!("deployment/{name}");
        let out = k.ok(&["rollout", "status", &target, "--timeout=120s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        k.ok(&["delete", &target]);
    }
}

/// `kubectl get pods --watch` of a selector, counting after every event the pods not
/// being deleted and, of those, the ready ones.
pub(crate) struct PodWatch {
    child: std::process::Child,
    counts: std::thread::JoinHandle<(usize, usize, usize, String)>,
}

impl PodWatch {
    /// Watches the pods `selector` picks, of which `initial` exist already.
    pub(crate) fn start(k: &Kubectl, selector: &str, initial: usize) -> PodWatch {
        let mut child = k
            .command()
            .args(["get", "pods", "-l", selector, "--watch", "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl get --watch");
        let stdout = child.stdout.take().expect("stdout");
        let counts = std::thread::spawn(move || {
            let mut pods: std::collections::BTreeMap<String, Value> = Default::default();
            let (mut lowest, mut highest, mut events) = (usize::MAX, 0, 0);
            let mut timeline = String::new();
            for pod in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
                let Ok(pod) = pod else { break };
                events += 1;
                let key = name(&pod).to_string();
                let state = if pod["metadata"]["deletionTimestamp"].is_null() {
                    crate::node::phase(&pod).to_string()
                } else {
                    "deleting".to_string()
                };
                pods.insert(key.clone(), pod);
                let live: Vec<&Value> = pods
                    .values()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .collect();
                let ready = live.iter().filter(|p| crate::node::ready(p)).count();
                // Counted once the first listing (every pod of the rollout before) is in.
                if events > initial {
                    lowest = lowest.min(ready);
                    highest = highest.max(live.len());
                }
                timeline.push_str(&format!(
                    "{key} ({state}): {} live, {ready} ready\n",
                    live.len()
                ));
            }
            (lowest, highest, events, timeline)
        });
        // The watch's first list must be in before the change it is to see.
        std::thread::sleep(Duration::from_millis(500));
        PodWatch { child, counts }
    }

    /// Lowest ready count, highest live count, events seen, and the counts after each.
    pub(crate) fn finish(mut self) -> (usize, usize, usize, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.counts.join().expect("watch reader")
    }
}

#[test]
fn wasm_deployment_rollout() {
    let registry = Registry::start();
    let wasm = repo_root().join("examples/build/http.wasm");
    let v1 = registry.push_tagged(&wasm, "http", "1.0");
    let v2 = registry.push_tagged(&wasm, "http", "2.0");
    registry.push_tagged(&wasm, "http", "v1");
    let manifest = crate::node::example("deployment.yaml", &registry);
    rollout_on_a_node(&v1, &v2, Some(manifest));
}

#[test]
fn container_deployment_rollout() {
    let registry = Registry::start();
    let layout = repo_root().join("examples/build/http-server-oci");
    let v1 = registry.push_tagged(&layout, "http-server", "1.0");
    let v2 = registry.push_tagged(&layout, "http-server", "2.0");
    rollout_on_a_node(&v1, &v2, None);
}

/// Every namespace gets a `default` ServiceAccount, and gets it back if it is deleted.
pub fn default_service_accounts(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    k.ok(&["create", "namespace", "team"]);
    eventually("team's default ServiceAccount", || {
        (k.run(&["get", "serviceaccount", "default", "-n", "team"])
            .code
            == 0)
            .then_some(())
    });
    eventually("default's default ServiceAccount", || {
        (k.run(&["get", "serviceaccount", "default", "-n", "default"])
            .code
            == 0)
            .then_some(())
    });
    let first = k.json(&["get", "serviceaccount", "default", "-n", "team"]);
    k.ok(&["delete", "serviceaccount", "default", "-n", "team"]);
    let again = eventually("the default ServiceAccount made again", || {
        k.try_json(&["get", "serviceaccount", "default", "-n", "team"])
    });
    assert_ne!(uid(&again), uid(&first));
}
