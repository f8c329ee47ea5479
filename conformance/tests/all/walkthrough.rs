//! The README's kubectl walk-through, step by step, with what kubectl prints.

use skiff_conformance::{Backend, Cluster, Kubectl, repo_root};

fn deployment_manifest() -> String {
    std::fs::read_to_string(repo_root().join("examples/manifests/deployment.yaml"))
        .expect("examples/manifests/deployment.yaml")
}

/// The example with another image and a second container, as a user edits the file.
fn changed_manifest() -> String {
    deployment_manifest().replace("http:v1", "http:v2")
        + "        - name: sidecar\n          image: registry.local/skiff/sidecar:1.0\n"
}

fn jsonpath(k: &Kubectl, args: &[&str], path: &str) -> String {
    let mut a = args.to_vec();
    let expr = format!("jsonpath={path}");
    a.extend(["-o", &expr]);
    k.ok(&a)
}

fn walkthrough(backend: Backend, version: &str) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl(version);

    // apply with kubectl's default strict validation: no --validate=false.
    let out = k.ok_stdin(&["apply", "-f", "-"], &deployment_manifest());
    assert_eq!(out.trim(), "deployment.apps/web created");

    let wide = k.ok(&["get", "deploy,rs,pods", "-A", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or("");
    for col in [
        "NAMESPACE",
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(header.contains(col), "missing column {col} in:\n{wide}");
    }
    let row = wide
        .lines()
        .find(|l| l.contains("deployment.apps/web"))
        .unwrap_or_else(|| panic!("no row for web:\n{wide}"));
    for cell in [
        "default",
        "0/2",
        "web",
        "localhost:5000/skiff/http:v1",
        "app=web",
    ] {
        assert!(row.contains(cell), "row lacks {cell}: {row}");
    }

    // Defaults as Kubernetes applies them.
    let d = k.json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(d["metadata"]["generation"], 1);

    // A second apply of the edited file: strategic merge, three-way.
    let out = k.ok_stdin(&["apply", "-f", "-"], &changed_manifest());
    assert_eq!(out.trim(), "deployment.apps/web configured");
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[*].name}"
        ),
        "web sidecar"
    );
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "localhost:5000/skiff/http:v2"
    );
    assert_eq!(
        jsonpath(&k, &["get", "deploy", "web"], "{.metadata.generation}"),
        "2"
    );
    // Applying the original again removes the sidecar it no longer declares.
    let out = k.ok_stdin(&["apply", "-f", "-"], &deployment_manifest());
    assert_eq!(out.trim(), "deployment.apps/web configured");
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[*].name}"
        ),
        "web"
    );

    assert_eq!(
        k.ok(&["label", "deploy", "web", "tier=frontend"]).trim(),
        "deployment.apps/web labeled"
    );
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "-l", "tier=frontend"],
            "{.items[*].metadata.name}"
        ),
        "web"
    );
    assert_eq!(
        k.ok(&["annotate", "deploy", "web", "note=hello"]).trim(),
        "deployment.apps/web annotated"
    );
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "web"],
            "{.metadata.annotations.note}"
        ),
        "hello"
    );
    k.ok(&["label", "deploy", "web", "tier-"]);
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "-l", "tier"],
            "{.items[*].metadata.name}"
        ),
        ""
    );

    assert_eq!(
        k.ok(&[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#
        ])
        .trim(),
        "deployment.apps/web patched"
    );
    assert_eq!(
        jsonpath(&k, &["get", "deploy", "web"], "{.spec.replicas}"),
        "3"
    );
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    assert_eq!(
        jsonpath(&k, &["get", "deploy", "web"], "{.spec.replicas}"),
        "4"
    );
    k.ok(&["patch", "deploy", "web", "--type=strategic", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"fast"}]}]}}}}"#]);
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[0].env[*].name}"
        ),
        "MODE GREETING"
    );
    // (A strategic merge puts new list elements first, as kube-apiserver does.)
    assert_eq!(
        jsonpath(
            &k,
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "localhost:5000/skiff/http:v1"
    );

    assert_eq!(
        k.ok(&["scale", "deploy", "web", "--replicas=5"]).trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        jsonpath(&k, &["get", "deploy", "web"], "{.spec.replicas}"),
        "5"
    );

    let out = k
        .command()
        .env("KUBE_EDITOR", "sed -i s/replicas:.5/replicas:\\ 6/")
        .args(["edit", "deploy", "web"])
        .output()
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "edit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/web edited"
    );
    assert_eq!(
        jsonpath(&k, &["get", "deploy", "web"], "{.spec.replicas}"),
        "6"
    );

    let out = k.ok(&["delete", "deploy", "web"]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let err = k.fails(&["get", "deploy", "web"]);
    assert!(
        err.contains(r#"Error from server (NotFound): deployments.apps "web" not found"#),
        "{err}"
    );
}

pub fn kubectl_1_33_walkthrough(backend: Backend) {
    walkthrough(backend, "1.33");
}

pub fn kubectl_1_32_walkthrough(backend: Backend) {
    walkthrough(backend, "1.32");
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: p1
  labels: {app: demo}
spec:
  containers:
  - name: main
    image: registry.local/demo:1
";

pub fn output_formats_and_describe(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    assert_eq!(
        k.ok_stdin(&["create", "-f", "-"], POD).trim(),
        "pod/p1 created"
    );
    let yaml = k.ok(&["get", "pod", "p1", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Pod")
            && yaml.contains("name: p1")
            && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let json = k.json(&["get", "pod", "p1"]);
    assert_eq!(json["status"]["phase"], "Pending");
    assert_eq!(json["status"]["qosClass"], "BestEffort");
    assert_eq!(json["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(k.ok(&["get", "pod", "p1", "-o", "name"]).trim(), "pod/p1");
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]),
        "registry.local/demo:1"
    );
    let table = k.ok(&["get", "pods"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["p1", "0/1", "Pending", "0"], "{table}");
    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or("").contains("NOMINATED NODE"),
        "{wide}"
    );
    let described = k.ok(&["describe", "pod", "p1"]);
    for needle in [
        "Name:",
        "p1",
        "Namespace:",
        "default",
        "app=demo",
        "registry.local/demo:1",
        "BestEffort",
    ] {
        assert!(
            described.contains(needle),
            "describe lacks {needle}:\n{described}"
        );
    }
    // Paging: kubectl lists in chunks of 500; ask for 2 to cross pages.
    for i in 0..5 {
        k.create_configmap(None, &format!("cm{i}"), &[("k", "v")]);
    }
    let names = k.ok(&["get", "configmaps", "--chunk-size=2", "-o", "name"]);
    assert_eq!(
        names
            .lines()
            .filter(|l| l.starts_with("configmap/cm"))
            .count(),
        5,
        "{names}"
    );
    let selected = k.ok(&["get", "pods", "-l", "app in (demo,other)", "-o", "name"]);
    assert_eq!(selected.trim(), "pod/p1");
    let none = k.ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ]);
    assert_eq!(none.trim(), "");
}

pub fn apply_twice_server_side_and_diff(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    assert_eq!(
        k.ok_stdin(&["apply", "-f", "-"], &deployment_manifest())
            .trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        k.ok_stdin(&["apply", "-f", "-"], &deployment_manifest())
            .trim(),
        "deployment.apps/web unchanged"
    );

    // diff: nothing to show for the applied file, a diff (exit 1) for the edited one.
    let same = k.run_stdin(&["diff", "-f", "-"], &deployment_manifest());
    assert_eq!(same.code, 0, "{} {}", same.stdout, same.stderr);
    let changed = k.run_stdin(&["diff", "-f", "-"], &changed_manifest());
    assert_eq!(changed.code, 1, "{} {}", changed.stdout, changed.stderr);
    assert!(
        changed
            .stdout
            .contains("+  image: localhost:5000/skiff/http:v2")
            || changed.stdout.contains("http:v2"),
        "{}",
        changed.stdout
    );
    assert!(changed.stdout.contains("sidecar"), "{}", changed.stdout);
    // diff is a dry run: nothing changed.
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "web"
    );

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: fast\n";
    assert_eq!(
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], cm)
            .trim(),
        "configmap/settings serverside-applied"
    );
    let cm2 = cm.replace("mode: fast", "mode: slow\n  level: \"3\"");
    assert_eq!(
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], &cm2)
            .trim(),
        "configmap/settings serverside-applied"
    );
    let data = k.json(&["get", "cm", "settings"])["data"].clone();
    assert_eq!(data, serde_json::json!({"mode": "slow", "level": "3"}));
    assert_eq!(
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], &changed_manifest())
            .trim(),
        "deployment.apps/web serverside-applied"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "web sidecar"
    );
}

pub fn namespace_deletion_removes_contents(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    let namespaces = k.ok(&["get", "ns", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces.contains(&format!("namespace/{ns}")),
            "{namespaces}"
        );
    }
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n";
    assert_eq!(
        k.ok_stdin(&["create", "-f", "-"], ns).trim(),
        "namespace/team created"
    );
    k.create_configmap(Some("team"), "c", &[("a", "b")]);
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: team\nstringData:\n  a: b\n";
    k.ok_stdin(&["create", "-f", "-"], secret);
    // An object with a finalizer holds the namespace in Terminating until it goes.
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: team\n  finalizers: [example.com/hold]\n";
    k.ok_stdin(&["create", "-f", "-"], held);
    k.ok(&["delete", "namespace", "team", "--wait=false"]);
    let start = std::time::Instant::now();
    while k.run(&["get", "cm", "c", "-n", "team"]).code == 0 {
        assert!(
            start.elapsed().as_secs() < 60,
            "the namespace's contents stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ns_obj = k.json(&["get", "namespace", "team"]);
    assert_eq!(ns_obj["status"]["phase"], "Terminating", "{ns_obj}");
    let held_obj = k.json(&["get", "cm", "held", "-n", "team"]);
    assert!(
        held_obj["metadata"]["deletionTimestamp"].is_string(),
        "{held_obj}"
    );
    k.ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    k.ok(&["wait", "--for=delete", "namespace/team", "--timeout=60s"]);
    let err = k.fails(&["get", "namespace", "team"]);
    assert!(err.contains(r#"namespaces "team" not found"#), "{err}");
    // Recreated, it is empty: nothing of the old one survived.
    k.ok_stdin(&["create", "-f", "-"], ns);
    assert_eq!(
        k.ok(&["get", "cm,secrets", "-n", "team", "-o", "name"])
            .trim(),
        ""
    );
}

pub fn explain(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    let out = k.ok(&["explain", "pods.spec"]);
    assert!(out.contains("KIND:") && out.contains("Pod"), "{out}");
    assert!(out.contains("containers"), "{out}");
    let out = k.ok(&["explain", "deployment.spec.template"]);
    assert!(out.contains("Deployment"), "{out}");
}

/// An object with a finalizer is only marked for deletion; it goes when the last finalizer
/// is removed.
pub fn finalizers_hold_deletion(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata:\n  a: b\n";
    k.ok_stdin(&["create", "-f", "-"], cm);
    let out = k.ok(&["delete", "configmap", "held", "--wait=false"]);
    assert!(out.contains("configmap \"held\" deleted"), "{out}");
    let obj = k.json(&["get", "configmap", "held"]);
    assert!(obj["metadata"]["deletionTimestamp"].is_string(), "{obj}");
    k.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let err = k.fails(&["get", "configmap", "held"]);
    assert!(err.contains(r#"configmaps "held" not found"#), "{err}");
}

/// `kubectl patch --subresource=status`: the status changes, the spec a status patch names
/// is ignored, and an unknown status field gets the warning of the default validation.
pub fn status_patches_change_only_the_status(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    // Bound to a node no agent runs: nothing else writes its status.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: st\nspec:\n  nodeName: nowhere\n  containers:\n  - name: c\n    image: example.com/app:v1\n";
    k.ok_stdin(&["create", "-f", "-"], pod);
    let status = |patch_type: &str, patch: &str| {
        k.run(&[
            "patch",
            "pod",
            "st",
            "--subresource=status",
            &format!("--type={patch_type}"),
            "-p",
            patch,
        ])
    };
    let out = status(
        "merge",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let obj = k.json(&["get", "pod", "st"]);
    assert_eq!(obj["status"]["phase"], "Running", "{obj}");
    assert_eq!(obj["status"]["conditions"][0]["type"], "Ready", "{obj}");
    let out = status(
        "strategic",
        r#"{"spec":{"activeDeadlineSeconds":5},"status":{"phase":"Failed"}}"#,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let obj = k.json(&["get", "pod", "st"]);
    assert_eq!(obj["status"]["phase"], "Failed", "{obj}");
    assert_eq!(obj["status"]["conditions"][0]["type"], "Ready", "{obj}");
    assert!(obj["spec"].get("activeDeadlineSeconds").is_none(), "{obj}");
    assert_eq!(obj["spec"]["containers"][0]["image"], "example.com/app:v1");
    // kubectl patch sends no fieldValidation: the server's default, Warn.
    let out = status("merge", r#"{"status":{"bogus":1}}"#);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(r#"unknown field "status.bogus""#),
        "{}",
        out.stderr
    );
}
