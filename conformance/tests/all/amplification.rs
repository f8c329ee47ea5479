//! Requests whose work or memory would be far beyond their size: each is refused with a
//! clear 4xx `Status` (or done in time linear in its size), the server keeps serving, and
//! nothing is changed.

use serde_json::{Value, json};
use skiff_conformance::{Backend, Cluster};

/// Forty `copy` operations, each copying the annotations into a new key of themselves:
/// 4.5 KB that would double the object forty times.
fn doubling_patch() -> Value {
    Value::Array(
        (0..40)
            .map(|i| {
                json!({"op": "copy", "from": "/metadata/annotations",
                       "path": format!("/metadata/annotations/copy-{i:02}")})
            })
            .collect(),
    )
}

pub fn amplifying_requests_are_refused(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    k.ok_stdin(
        &["create", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: target\n  annotations:\n    seed: {}\ndata:\n  a: \"1\"\n",
            "x".repeat(100)
        ),
    );
    let before = k.json(&["get", "cm", "target"]);
    let cm = "/api/v1/namespaces/default/configmaps/target";

    // The patch of the report, through kubectl and through plain HTTP.
    let patch = doubling_patch().to_string();
    assert!(patch.len() < 5000, "{}", patch.len());
    let err = k.fails(&["patch", "cm", "target", "--type=json", "-p", &patch]);
    // kubectl words a 422 without causes as "The request is invalid".
    assert!(err.contains("The request is invalid"), "{err}");
    assert!(
        err.contains(r#"copy from "/metadata/annotations""#),
        "{err}"
    );
    assert!(err.contains("would add more than 3145728 bytes"), "{err}");
    let (code, reply) =
        cluster.request("PATCH", cm, "application/json-patch+json", patch.as_bytes());
    assert_eq!(code, 422, "{reply}");
    assert_eq!(reply["kind"], "Status");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("bytes to the object"),
        "{reply}"
    );

    // More operations than kube-apiserver takes.
    let ops = Value::Array(vec![
        json!({"op": "test", "path": "/kind", "value": "ConfigMap"});
        10_001
    ]);
    let (code, reply) = cluster.request(
        "PATCH",
        cm,
        "application/json-patch+json",
        ops.to_string().as_bytes(),
    );
    assert_eq!(
        (code, &reply["reason"]),
        (413, &json!("RequestEntityTooLarge")),
        "{reply}"
    );

    // YAML's aliases: three billion laughs in 700 bytes.
    let mut laughs = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: laughs\nlol:\n  x0: &x0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*x{}", i - 1); 9].join(",");
        laughs.push_str(&format!("  x{i}: &x{i} [{refs}]\n"));
    }
    let (code, reply) = cluster.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        laughs.as_bytes(),
    );
    assert_eq!(code, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("aliases expand"),
        "{reply}"
    );

    // A strategic merge patch of 100,000 finalizers merged as a set, then removed again:
    // linear work, answered at once.
    let finalizers: Vec<String> = (0..100_000).map(|i| format!("example.com/f{i}")).collect();
    let patch = json!({"metadata": {"finalizers": finalizers}}).to_string();
    let (code, reply) = cluster.request(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/big",
        "application/strategic-merge-patch+json",
        patch.as_bytes(),
    );
    // The ConfigMap does not exist: the point is an answer, not a hang.
    assert_eq!(code, 404, "{reply}");
    k.create_configmap(None, "big", &[("a", "1")]);
    let (code, reply) = cluster.request(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/big",
        "application/strategic-merge-patch+json",
        patch.as_bytes(),
    );
    assert!(code == 200 || code == 413 || code == 422, "{code}: {reply}");
    if code == 200 {
        let delete =
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": finalizers}}).to_string();
        let (code, reply) = cluster.request(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/big",
            "application/strategic-merge-patch+json",
            delete.as_bytes(),
        );
        assert_eq!(code, 200, "{reply}");
        assert!(
            reply["metadata"]
                .get("finalizers")
                .is_none_or(|f| f == &json!([])),
            "{reply}"
        );
    }

    // A label selector of 4,000 values matched against every object (the request line
    // is at most 64 KiB: hyper answers 414 past that).
    let values: Vec<String> = (0..4_000).map(|i| format!("v{i}")).collect();
    let selector = format!("t in ({})", values.join(","));
    let listed = k.ok(&["get", "cm", "-l", &selector, "-o", "name"]);
    assert_eq!(listed.trim(), "");

    // Still serving, and the target is as it was.
    assert_eq!(k.json(&["get", "cm", "target"]), before);
    let (code, _) = cluster.request("GET", "/healthz", "application/json", b"");
    assert_eq!(code, 200);
}
