//! ReplicationControllers (core/v1, with `/status` and `/scale`) through kubectl: discovery,
//! defaults, tables, scale, describe and validation, and their controller keeping the
//! replicas (here with no node: the pods stay Pending).

use skiff_conformance::{Backend, Cluster};

/// No selector and no labels: both default to the template's labels.
const RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: frontend
spec:
  replicas: 2
  template:
    metadata:
      labels:
        app: frontend
    spec:
      containers:
      - name: web
        image: registry.local/web:1
";

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

pub fn kubectl_replication_controllers(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    let resources = k.ok(&["api-resources", "--api-group="]);
    assert!(
        resources.lines().any(|l| words(l)
            == [
                "replicationcontrollers",
                "rc",
                "v1",
                "true",
                "ReplicationController"
            ]),
        "{resources}"
    );
    assert_eq!(
        k.ok_stdin(&["apply", "-f", "-"], RC).trim(),
        "replicationcontroller/frontend created"
    );
    let rc = k.json(&["get", "rc", "frontend"]);
    assert_eq!(
        rc["spec"]["selector"],
        serde_json::json!({"app": "frontend"})
    );
    assert_eq!(
        rc["metadata"]["labels"],
        serde_json::json!({"app": "frontend"})
    );
    assert_eq!(rc["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(rc["metadata"]["generation"], 1);

    // The controller makes the pods and counts them in status.
    let start = std::time::Instant::now();
    while k.ok(&["get", "rc", "frontend", "-o", "jsonpath={.status.replicas}"]) != "2" {
        assert!(
            start.elapsed().as_secs() < 60,
            "the RC's pods never counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let table = k.ok(&["get", "rc"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        words(lines[0]),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{table}"
    );
    assert_eq!(words(lines[1])[..4], ["frontend", "2", "2", "0"], "{table}");
    let wide = k.ok(&["get", "replicationcontrollers", "-o", "wide"]);
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(
        words(lines[0]),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{wide}"
    );
    assert_eq!(
        words(lines[1])[5..],
        ["web", "registry.local/web:1", "app=frontend"],
        "{wide}"
    );
    let all = k.ok(&["get", "all"]);
    assert!(all.contains("replicationcontroller/frontend"), "{all}");

    // `kubectl scale` patches the scale subresource.
    assert_eq!(
        k.ok(&["scale", "rc", "frontend", "--replicas=4"]).trim(),
        "replicationcontroller/frontend scaled"
    );
    assert_eq!(
        k.ok(&["get", "rc", "frontend", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    // The precondition `--current-replicas` reads the scale first.
    let refused = k.fails(&[
        "scale",
        "rc",
        "frontend",
        "--current-replicas=3",
        "--replicas=1",
    ]);
    assert!(
        refused.contains("Expected replicas to be 3, was 4"),
        "{refused}"
    );

    let start = std::time::Instant::now();
    while k.ok(&["get", "rc", "frontend", "-o", "jsonpath={.status.replicas}"]) != "4" {
        assert!(start.elapsed().as_secs() < 60, "the RC never scaled to 4");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let described = k.ok(&["describe", "rc", "frontend"]);
    for line in [
        "Name:         frontend",
        "Namespace:    default",
        "Selector:     app=frontend",
        "Labels:       app=frontend",
        "Replicas:     4 current / 4 desired",
        "Pods Status:  0 Running / 4 Waiting / 0 Succeeded / 0 Failed",
        "    Image:         registry.local/web:1",
    ] {
        assert!(
            described.lines().any(|l| l == line),
            "{line:?} missing from:\n{described}"
        );
    }

    // The template's labels must match the selector; every problem is named.
    let bad = RC.replace("name: frontend", "name: mismatched").replace(
        "  replicas: 2\n",
        "  replicas: -1\n  selector:\n    app: other\n",
    );
    let refused = k.run_stdin(&["apply", "-f", "-"], &bad);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    let err = refused.stderr;
    for needle in [
        "ReplicationController \"mismatched\" is invalid",
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.template.metadata.labels: Invalid value: ",
        "`selector` does not match template `labels`",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }

    assert_eq!(
        k.ok(&["delete", "rc", "frontend"]).trim(),
        "replicationcontroller \"frontend\" deleted"
    );
    let gone = k.fails(&["get", "rc", "frontend"]);
    assert!(
        gone.contains("replicationcontrollers \"frontend\" not found"),
        "{gone}"
    );
    // Its pods go with it (the garbage collector).
    let start = std::time::Instant::now();
    while !k
        .ok(&["get", "pods", "-l", "app=frontend", "-o", "name"])
        .trim()
        .is_empty()
    {
        assert!(start.elapsed().as_secs() < 60, "the RC's pods stayed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
