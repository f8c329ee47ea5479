//! The errors users hit, with the messages kubectl prints against a real cluster.

use skiff_conformance::{Backend, Cluster};

pub fn errors_read_as_kubernetes_prints_them(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");

    let err = k.fails(&["get", "pod", "nope"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): pods "nope" not found"#
    );

    let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: Bad_Name\n    image: x\n";
    let err = k.run_stdin(&["apply", "-f", "-"], bad).stderr;
    assert!(
        err.contains(r#"The Pod "bad" is invalid: spec.containers[0].name: Invalid value: "Bad_Name": a lowercase RFC 1123 label must consist of"#),
        "{err}"
    );

    let unknown = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicass: 2\n  selector:\n    matchLabels: {a: b}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      containers:\n      - name: c\n        image: x\n";
    let err = k.run_stdin(&["apply", "-f", "-"], unknown).stderr;
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.replicass""#),
        "{err}"
    );
    assert!(err.starts_with("Error from server (BadRequest)"), "{err}");

    let mismatch = unknown
        .replace("  replicass: 2\n", "")
        .replace("labels: {a: b}", "labels: {a: c}");
    let err = k.run_stdin(&["apply", "-f", "-"], &mismatch).stderr;
    assert!(
        err.contains(r#"The Deployment "d" is invalid"#)
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\n";
    k.ok_stdin(&["create", "-f", "-"], cm);
    let err = k.run_stdin(&["create", "-f", "-"], cm).stderr;
    assert!(err.contains(r#"Error from server (AlreadyExists): error when creating "STDIN": configmaps "c" already exists"#), "{err}");

    // A replace with a stale resourceVersion is a conflict.
    let stale = k.ok(&["get", "cm", "c", "-o", "json"]);
    let fresh = stale.replace(r#""a": "b""#, r#""a": "first""#);
    k.ok_stdin(&["replace", "-f", "-"], &fresh);
    let late = stale.replace(r#""a": "b""#, r#""a": "second""#);
    let err = k.run_stdin(&["replace", "-f", "-"], &late).stderr;
    assert!(
        err.contains(r#"Error from server (Conflict): error when replacing "STDIN": Operation cannot be fulfilled on configmaps "c": the object has been modified; please apply your changes to the latest version and try again"#),
        "{err}"
    );
    assert_eq!(
        k.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]),
        "first"
    );

    // Malformed JSON straight to the server: 400, nothing stored.
    let dir = tempfile::tempdir().unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(
        &bad_json,
        "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", ",
    )
    .unwrap();
    let err = k.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        bad_json.to_str().unwrap(),
    ]);
    assert!(
        err.contains("BadRequest") || err.contains("json parse error"),
        "{err}"
    );

    // More than 3 MiB is refused.
    let big = dir.path().join("big.json");
    let payload = "x".repeat(4 * 1024 * 1024);
    std::fs::write(&big, format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{payload}"}}}}"#)).unwrap();
    let err = k.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        big.to_str().unwrap(),
    ]);
    assert!(err.contains("Request entity too large"), "{err}");
    assert!(k.fails(&["get", "cm", "big"]).contains("not found"));

    let err = k.fails(&["get", "pods", "-l", "a in (b"]);
    assert!(
        err.contains("Error from server (BadRequest)")
            || err.contains("unable to parse requirement"),
        "{err}"
    );
}
