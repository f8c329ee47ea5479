//! Nodes as separate `skiff agent` processes joined to one control plane: the scheduler
//! spreads pods across them; an agent killed with SIGKILL and started again picks up where
//! it was (level triggered); a thousand pods through one agent leave nothing behind. They
//! need root (pod networks).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;
use skiff_conformance::{AgentNode, Backend, Cluster, Kubectl, Registry};

use crate::node::{http_get, phase, pod, ready, wait_pod};

fn web_pod(name: &str, image: &str, placement: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\nspec:\n  runtimeClassName: wasmtime\n  terminationGracePeriodSeconds: 2\n{placement}  containers:\n  - name: web\n    image: {image}\n    ports: [{{containerPort: 8080}}]\n    readinessProbe:\n      httpGet: {{path: /, port: 8080}}\n      periodSeconds: 1\n"
    )
}

fn field<'a>(p: &'a Value, path: &str) -> &'a str {
    p.pointer(path).and_then(Value::as_str).unwrap_or("")
}

/// Polls `check` (every 100 ms, 60 s at most); `what` names it when it never holds.
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if start.elapsed() > Duration::from_secs(60) => {
                panic!("{what} never held: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn answers(ip: &str) -> Result<(), String> {
    match http_get(ip, 8080, "/") {
        Ok((200, _)) => Ok(()),
        Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Links on the node's bridge: one per pod sandbox (warm ones included).
fn bridge_ports(bridge: &str) -> usize {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

pub(crate) fn nodes_ready(k: &Kubectl, n: usize) {
    eventually("the nodes being Ready", || {
        let nodes = k.json(&["get", "nodes"]);
        let ready = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|node| {
                node["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        (ready == n).then_some(()).ok_or(format!("{ready} Ready"))
    });
}

#[test]
fn two_agents_share_pods_and_a_restarted_agent_heals() {
    let registry = Registry::start();
    let http = registry.push_example("http.wasm", "http");
    let cluster = Cluster::start_for_agents(Backend::Embedded);
    let mut a = cluster.start_agent("node-a");
    let b = cluster.start_agent("node-b");
    let k = cluster.kubectl("1.33");
    nodes_ready(&k, 2);

    // Six pods, spread across the two nodes by the scheduler.
    for i in 0..6 {
        k.ok_stdin(
            &["apply", "-f", "-"],
            &web_pod(&format!("web-{i}"), &http, ""),
        );
    }
    let mut placed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for i in 0..6 {
        let name = format!("web-{i}");
        let p = wait_pod(&k, &name, "Ready", ready);
        let ip = field(&p, "/status/podIP").to_string();
        answers(&ip).unwrap_or_else(|e| panic!("{name} at {ip}: {e}"));
        placed
            .entry(field(&p, "/spec/nodeName").to_string())
            .or_default()
            .push((name, ip));
    }
    let on_a = placed.get("node-a").cloned().unwrap_or_default();
    let on_b = placed.get("node-b").cloned().unwrap_or_default();
    assert!(
        on_a.len() >= 2 && on_b.len() >= 2,
        "pods not spread across the nodes: {placed:?}"
    );

    // node-a's agent dies, and with it the Wasm instances it ran.
    a.kill();
    for (name, ip) in &on_a {
        assert!(
            answers(ip).is_err(),
            "{name} still answers with its agent dead"
        );
    }
    // While it is down, one of its pods is deleted and a new one is bound to it.
    let (victim, _) = &on_a[0];
    k.ok(&["delete", "pod", victim, "--wait=false"]);
    k.ok_stdin(
        &["apply", "-f", "-"],
        &web_pod("late", &http, "  nodeName: node-a\n"),
    );

    // Started again, the agent reconciles what the API says against what it runs.
    a.restart();
    eventually(
        "the pod deleted while its agent was down being removed",
        || {
            let run = k.run(&["get", "pod", victim]);
            (run.code != 0 && run.stderr.contains("NotFound"))
                .then_some(())
                .ok_or(run.stdout)
        },
    );
    for (name, ip) in &on_a[1..] {
        eventually(&format!("{name} serving again on {ip}"), || answers(ip));
        let p = pod(&k, name);
        assert_eq!(field(&p, "/status/podIP"), ip, "{name} changed address");
        assert_eq!(phase(&p), "Running");
    }
    let late = wait_pod(&k, "late", "Ready", ready);
    answers(field(&late, "/status/podIP")).expect("the pod created while its agent was down");
    // node-b never noticed.
    for (name, ip) in &on_b {
        answers(ip).unwrap_or_else(|e| panic!("{name} on node-b: {e}"));
        let p = pod(&k, name);
        assert_eq!(
            p["status"]["containerStatuses"][0]["restartCount"], 0,
            "{name}"
        );
    }
    // The deleted pod's sandbox went with it: one link per pod on the node (its pods less
    // the deleted one, plus the late one) and the warm pool (2, or up to 4 with sandboxes
    // recycled from finished pods).
    eventually(
        "node-a's bridge holding its pods and warm pool only",
        || {
            let n = bridge_ports(&a.bridge);
            (on_a.len() + 2..=on_a.len() + 4)
                .contains(&n)
                .then_some(())
                .ok_or(format!("{n} links on {}", a.bridge))
        },
    );
    drop(b);
}

/// Creates `n` short pods at once (16 requests in flight), named `<prefix>-<i>`.
async fn create_pods(api: &Api<Pod>, image: &str, prefix: &str, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{prefix}-{i}"), "labels": {"churn": "yes"}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "hello", "image": image}],
                },
            }))
            .expect("pod");
            async move { api.create(&PostParams::default(), &pod).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create pods");
}

async fn wait_pods(api: &Api<Pod>, what: &str, done: impl Fn(&[Pod]) -> bool) {
    let start = Instant::now();
    loop {
        let pods = api
            .list(&ListParams::default().labels("churn=yes"))
            .await
            .expect("list")
            .items;
        if done(&pods) {
            return;
        }
        let phases: BTreeMap<String, usize> = pods.iter().fold(BTreeMap::new(), |mut m, p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            *m.entry(phase.unwrap_or_default()).or_default() += 1;
            m
        });
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pods never {what}: {phases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count_proc(pid: u32, what: &str) -> usize {
    entries(Path::new(&format!("/proc/{pid}/{what}")))
}

#[test]
fn a_thousand_pods_through_an_agent_leave_nothing_behind() {
    let registry = Registry::start();
    let hello = registry.push_example("hello.wasm", "hello");
    let cluster = Cluster::start_for_agents(Backend::Embedded);
    let agent = cluster.start_agent("churn");
    nodes_ready(&cluster.kubectl("1.33"), 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = crate::client::client_for(&cluster);
    let settled = |agent: &AgentNode| {
        eventually("the node holding nothing but its warm pool", || {
            let node = agent.dir.join("node");
            let logs = node.join("logs");
            let state = (
                bridge_ports(&agent.bridge),
                entries(&node.join("pods")),
                entries(&logs) - usize::from(logs.join(".spare").is_dir()),
                entries(&logs.join(".spare")),
            );
            // The warm pool holds 2 sandboxes, up to 4 with those recycled from pods; removed
            // logs are kept as empty spares, at most two per pod the node may hold (1,000).
            ((2..=4).contains(&state.0) && (state.1, state.2) == (0, 0) && state.3 <= 2000)
                .then_some(())
                .ok_or(format!(
                    "(bridge links, pod dirs, log files, spare log files) = {state:?}"
                ))
        });
    };
    let mut baseline = None;
    runtime.block_on(async {
        let api: Api<Pod> = Api::namespaced(client.await, "default");
        for round in 0..10 {
            create_pods(&api, &hello, &format!("churn{round}"), 100).await;
            wait_pods(&api, "Succeeded", |pods| {
                pods.len() == 100
                    && pods.iter().all(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
                    })
            })
            .await;
            api.delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels("churn=yes"),
            )
            .await
            .expect("delete pods");
            wait_pods(&api, "deleted", <[Pod]>::is_empty).await;
            if round == 0 {
                settled(&agent);
                let pid = agent.pid();
                baseline = Some((count_proc(pid, "fd"), count_proc(pid, "task")));
            }
        }
    });
    // Every sandbox, pod directory and log file went with its pod, and the agent
    // holds no more descriptors or threads than after the first hundred (connections to
    // the API server come and go, hence the slack; a leak per pod would be 900).
    // Idle threads of tokio's blocking pool end 10 s after their last task, so the count
    // is awaited: a leak never comes down.
    settled(&agent);
    let (fds, threads) = baseline.expect("baseline");
    let pid = agent.pid();
    eventually(
        "the agent's descriptors and threads back near the baseline",
        || {
            let (fds_now, threads_now) = (count_proc(pid, "fd"), count_proc(pid, "task"));
            (fds_now <= fds + 64 && threads_now <= threads + 16)
                .then_some(())
                .ok_or(format!(
                    "descriptors: {fds} after 100 pods, {fds_now} after 1,000; \
                 threads: {threads} after 100 pods, {threads_now} after 1,000"
                ))
        },
    );
}

#[test]
fn an_agent_refuses_more_pods_than_its_bridge_holds() {
    // A Linux bridge takes 1,023 ports, one per pod sandbox: a node told to hold more
    // would fail pods with the kernel's "Exchange full". It says so before it starts.
    let out = Command::new(skiff_conformance::skiff_bin())
        .args([
            "agent",
            "--server",
            "http://127.0.0.1:1",
            "--max-pods",
            "2000",
        ])
        .output()
        .expect("run skiff agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted --max-pods 2000: {stderr}");
    assert!(
        stderr.contains("--max-pods") && stderr.contains("1..=1023"),
        "{stderr}"
    );
}
