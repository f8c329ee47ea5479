//! `dryRun=All` on every verb that takes it, through kubectl and through plain HTTP: the
//! reply says what would happen, and nothing is written (the store's revision does not
//! move).

use serde_json::json;
use skiff_conformance::{Backend, Cluster, Kubectl};

/// The store's revision, as a list reports it.
fn revision(k: &Kubectl) -> String {
    k.ok(&[
        "get",
        "configmaps",
        "-A",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])
}

pub fn dry_runs_write_nothing(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    k.ok(&["create", "namespace", "team"]);
    k.create_configmap(Some("team"), "inside", &[("a", "1")]);
    k.create_configmap(None, "x", &[("a", "1")]);
    k.create_configmap(None, "why", &[("a", "2")]);
    k.ok(&["label", "cm", "x", "why", "t=1"]);
    k.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata:\n  a: \"1\"\n",
    );
    let before = revision(&k);
    let x_before = k.json(&["get", "cm", "x"]);

    // kubectl's deletes, one by one and --all: the reply kubectl prints, nothing removed.
    let out = k.ok(&["delete", "cm", "x", "--dry-run=server"]);
    assert_eq!(out.trim(), r#"configmap "x" deleted (server dry run)"#);
    let out = k.ok(&["delete", "cm", "--all", "--dry-run=server"]);
    for name in ["x", "why", "held"] {
        assert!(
            out.contains(&format!(r#"configmap "{name}" deleted (server dry run)"#)),
            "{out}"
        );
    }
    let out = k.ok(&["delete", "ns", "team", "--dry-run=server"]);
    assert!(
        out.contains(r#"namespace "team" deleted (server dry run)"#),
        "{out}"
    );
    k.ok(&["delete", "cm", "held", "--dry-run=server"]);
    k.ok(&["delete", "cm", "-l", "t=1", "--dry-run=server"]);

    // The other writes kubectl can dry-run.
    k.ok(&[
        "create",
        "cm",
        "new",
        "--from-literal=a=1",
        "--dry-run=server",
    ]);
    k.ok_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: applied\n",
    );
    k.ok_stdin(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: why\ndata:\n  a: applied\n",
    );
    k.ok(&[
        "patch",
        "cm",
        "x",
        "--dry-run=server",
        "-p",
        r#"{"data":{"a":"patched"}}"#,
    ]);
    k.ok(&["label", "cm", "x", "u=2", "--dry-run=server"]);
    k.ok(&["annotate", "cm", "x", "note=hi", "--dry-run=server"]);
    let mut replaced = x_before.clone();
    replaced["data"]["a"] = json!("replaced");
    k.ok_stdin(
        &["replace", "--dry-run=server", "-f", "-"],
        &replaced.to_string(),
    );

    assert_eq!(revision(&k), before, "a kubectl dry run wrote to the store");
    assert_eq!(k.json(&["get", "cm", "x"]), x_before);
    assert!(k.fails(&["get", "cm", "new"]).contains("not found"));
    let ns = k.json(&["get", "ns", "team"]);
    assert_eq!(ns["status"]["phase"], "Active", "{ns}");
    assert!(ns["metadata"].get("deletionTimestamp").is_none(), "{ns}");
    k.json(&["get", "cm", "inside", "-n", "team"]);
    let held = k.json(&["get", "cm", "held"]);
    assert!(
        held["metadata"].get("deletionTimestamp").is_none(),
        "{held}"
    );

    // Plain HTTP: dryRun in the query and in the DeleteOptions body.
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, reply) = cluster.request(
        "DELETE",
        &format!("{cms}/x?dryRun=All"),
        "application/json",
        b"",
    );
    assert_eq!(code, 200, "{reply}");
    // A ConfigMap's delete answers with a Status naming it, as kube-apiserver's does.
    assert_eq!(reply["kind"], "Status", "{reply}");
    assert_eq!(reply["status"], "Success", "{reply}");
    assert_eq!(reply["details"]["name"], "x", "{reply}");
    assert_eq!(reply["details"]["kind"], "configmaps", "{reply}");
    assert_eq!(
        reply["details"]["uid"], x_before["metadata"]["uid"],
        "{reply}"
    );
    let options = br#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"],"propagationPolicy":"Background"}"#;
    let (code, reply) = cluster.request("DELETE", &format!("{cms}/x"), "application/json", options);
    assert_eq!(
        (code, &reply["status"]),
        (200, &json!("Success")),
        "{reply}"
    );
    let (code, reply) = cluster.request(
        "DELETE",
        &format!("{cms}?labelSelector=t%3D1"),
        "application/json",
        options,
    );
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["kind"], "ConfigMapList", "{reply}");
    assert_eq!(reply["items"].as_array().map(Vec::len), Some(2), "{reply}");
    let (code, reply) = cluster.request(
        "DELETE",
        "/api/v1/namespaces/team",
        "application/json",
        options,
    );
    assert_eq!(code, 200, "{reply}");
    // What the delete would make of it: Terminating, with a deletionTimestamp.
    assert_eq!(reply["status"]["phase"], "Terminating", "{reply}");
    assert!(
        reply["metadata"]["deletionTimestamp"].is_string(),
        "{reply}"
    );
    let (code, reply) = cluster.request(
        "DELETE",
        &format!("{cms}/held?dryRun=All"),
        "application/json",
        b"",
    );
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["metadata"]["deletionTimestamp"].is_string(),
        "{reply}"
    );
    let (code, reply) = cluster.request(
        "POST",
        &format!("{cms}?dryRun=All"),
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"raw"}}"#,
    );
    assert_eq!(code, 201, "{reply}");
    assert_eq!(reply["metadata"]["name"], "raw");
    let mut put = x_before.clone();
    put["data"]["a"] = json!("put");
    let (code, reply) = cluster.request(
        "PUT",
        &format!("{cms}/x?dryRun=All"),
        "application/json",
        put.to_string().as_bytes(),
    );
    assert_eq!((code, &reply["data"]["a"]), (200, &json!("put")), "{reply}");
    for (ct, body) in [
        ("application/merge-patch+json", r#"{"data":{"a":"m"}}"#),
        (
            "application/strategic-merge-patch+json",
            r#"{"data":{"a":"s"}}"#,
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/data/a","value":"j"}]"#,
        ),
    ] {
        let (code, reply) =
            cluster.request("PATCH", &format!("{cms}/x?dryRun=All"), ct, body.as_bytes());
        assert_eq!(code, 200, "{ct}: {reply}");
        assert_ne!(reply["data"]["a"], "1", "{ct}: {reply}");
    }

    // Anything but `All` is refused, never taken for a real write.
    for (method, path, body) in [
        ("DELETE", format!("{cms}/x?dryRun=true"), String::new()),
        (
            "DELETE",
            format!("{cms}/x"),
            r#"{"dryRun":["true"]}"#.to_string(),
        ),
        (
            "POST",
            format!("{cms}?dryRun=yes"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"z"}}"#.to_string(),
        ),
        (
            "PATCH",
            format!("{cms}/x?dryRun=1"),
            r#"{"data":{"a":"no"}}"#.to_string(),
        ),
    ] {
        let ct = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let (code, reply) = cluster.request(method, &path, ct, body.as_bytes());
        assert_eq!(code, 422, "{method} {path}: {reply}");
        assert_eq!(reply["reason"], "Invalid", "{reply}");
        assert_eq!(reply["details"]["causes"][0]["field"], "dryRun", "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap_or("")
                .contains(r#"supported values: "All""#),
            "{reply}"
        );
    }

    // A dry-run create answers as the create would: a taken name is a conflict.
    let (code, reply) = cluster.request(
        "POST",
        &format!("{cms}?dryRun=All"),
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    );
    assert_eq!(
        (code, &reply["reason"]),
        (409, &json!("AlreadyExists")),
        "{reply}"
    );
    // The namespaces every cluster has cannot be deleted, dry run or not, and namespaces
    // have no delete-collection.
    let (code, reply) = cluster.request(
        "DELETE",
        "/api/v1/namespaces/default?dryRun=All",
        "application/json",
        b"",
    );
    assert_eq!(
        (code, &reply["reason"]),
        (403, &json!("Forbidden")),
        "{reply}"
    );
    assert!(
        k.fails(&["delete", "ns", "kube-system"])
            .contains("this namespace may not be deleted")
    );
    let (code, reply) = cluster.request(
        "DELETE",
        "/api/v1/namespaces?dryRun=All",
        "application/json",
        b"",
    );
    assert_eq!(code, 405, "{reply}");
    // Delete-collection pages as a list does.
    let (code, reply) = cluster.request(
        "DELETE",
        &format!("{cms}?limit=1&dryRun=All"),
        "application/json",
        b"",
    );
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["items"].as_array().map(Vec::len), Some(1), "{reply}");
    let token = reply["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    let (code, reply) = cluster.request(
        "DELETE",
        &format!("{cms}?limit=10&dryRun=All&continue={token}"),
        "application/json",
        b"",
    );
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["items"].as_array().map(Vec::len), Some(2), "{reply}");
    assert!(reply["metadata"].get("continue").is_none(), "{reply}");

    assert_eq!(
        revision(&k),
        before,
        "a dry run over HTTP wrote to the store"
    );
    assert_eq!(k.json(&["get", "cm", "x"]), x_before);
    assert!(k.fails(&["get", "cm", "raw"]).contains("not found"));

    // Real deletes still delete, and answer as kube-apiserver does.
    let (code, reply) = cluster.request("DELETE", &format!("{cms}/why"), "application/json", b"");
    assert_eq!((code, &reply["kind"]), (200, &json!("Status")), "{reply}");
    assert!(k.fails(&["get", "cm", "why"]).contains("not found"));
    let out = k.ok(&["delete", "cm", "x"]);
    assert_eq!(out.trim(), r#"configmap "x" deleted"#);
    let out = k.ok(&["delete", "ns", "team", "--wait=false"]);
    assert_eq!(out.trim(), r#"namespace "team" deleted"#);
}
