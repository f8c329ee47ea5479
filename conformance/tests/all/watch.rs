//! `kubectl get -w` streams changes as they happen.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use skiff_conformance::{Backend, Cluster};

pub fn get_watch_streams_changes(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    k.create_configmap(None, "before", &[("a", "b")]);
    let mut child = k
        .command()
        .args(["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let hit = line.split_whitespace().next() == Some(needle);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!("no line for {needle} in `get -w`; saw {seen:?}"),
            }
        }
    };
    let first = wait_for("before");
    assert!(first[0].starts_with("NAME"), "header first: {first:?}");
    k.create_configmap(None, "after", &[("a", "b")]);
    let lines = wait_for("after");
    assert!(
        lines.last().unwrap().contains("1"),
        "DATA column: {lines:?}"
    );
    k.create_configmap(None, "third", &[("a", "b"), ("c", "d")]);
    let lines = wait_for("third");
    let cells: Vec<&str> = lines.last().unwrap().split_whitespace().collect();
    assert_eq!(cells[1], "2", "{lines:?}");
    let _ = child.kill();
    let _ = child.wait();
}

fn events(raw: &str) -> Vec<(String, String)> {
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {l}"));
            let name = v["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (v["type"].as_str().unwrap_or("").to_string(), name)
        })
        .collect()
}

/// The watch protocol as clients rely on it: replay from a resourceVersion, selector
/// transitions as ADDED/DELETED, a closing bookmark at timeoutSeconds, and the in-stream
/// 410 for a version the server no longer has.
pub fn watch_protocol(backend: Backend) {
    let mut cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    let list_rv = || {
        let raw = k.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]);
        let list: serde_json::Value = serde_json::from_str(&raw).expect("list JSON");
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .expect("list resourceVersion")
            .to_string();
        assert!(!rv.is_empty());
        rv
    };
    let rv0 = list_rv();
    k.create_configmap(None, "a", &[("k", "v")]);
    k.create_configmap(None, "b", &[("k", "v")]);
    k.ok(&["delete", "configmap", "a"]);
    let url = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv0}&timeoutSeconds=1&allowWatchBookmarks=true"
    );
    let raw = k.ok(&["get", "--raw", &url]);
    let evs = events(&raw);
    assert_eq!(
        evs,
        [
            ("ADDED".into(), "a".into()),
            ("ADDED".into(), "b".into()),
            ("DELETED".into(), "a".into()),
            ("BOOKMARK".into(), String::new())
        ],
        "{raw}"
    );

    // Selector transitions: b starts matching (ADDED), then stops (DELETED).
    let rv1 = list_rv();
    let url = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv1}&timeoutSeconds=1&labelSelector=tier%3Dweb"
    );
    k.ok(&["label", "configmap", "b", "tier=web"]);
    k.ok(&["label", "configmap", "b", "tier=db", "--overwrite"]);
    let raw = k.ok(&["get", "--raw", &url]);
    assert_eq!(
        events(&raw),
        [("ADDED".into(), "b".into()), ("DELETED".into(), "b".into())],
        "{raw}"
    );

    // After a restart the server no longer remembers rv0: an ERROR event with a 410 Status,
    // inside a 200 stream, so clients relist.
    cluster.restart_after_kill();
    let url = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv0}&timeoutSeconds=5"
    );
    let raw = k.ok(&["get", "--raw", &url]);
    let first: serde_json::Value =
        serde_json::from_str(raw.lines().next().unwrap_or("")).expect("one event");
    assert_eq!(first["type"], "ERROR", "{raw}");
    assert_eq!(first["object"]["code"], 410, "{raw}");
    assert_eq!(first["object"]["reason"], "Expired", "{raw}");
}
