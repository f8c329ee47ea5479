//! What `fill_go_zero_values` costs per write: `cargo run --release --example fill_bench`.
//!
//! A Pod as the API server stores it on create (defaults applied, nothing missing), the same
//! Pod once its status is written, and a DaemonSet created without a status (the four counts
//! and the empty structs to add; its copy is timed apart and subtracted). Also checks that
//! filling an object that lacks nothing allocates nothing.
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

/// Counts allocations, to show that a fill with nothing to add makes none.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_of(object: &mut Value, kind: (&str, &str)) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    skiff_protobuf::fill_go_zero_values(kind.0, kind.1, object);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "burst-1", "namespace": "default", "uid": "0b6f2d43-5a44-4a4e-9f55-4f6e0c1a9d21",
            "creationTimestamp": "2026-11-29T10:00:00Z", "labels": {"app": "burst"}},
        "spec": {
            "containers": [{"name": "app", "image": "localhost:5000/hello:v1",
                "imagePullPolicy": "IfNotPresent", "args": ["--once"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "burst"}],
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"},
                    "requests": {"cpu": "100m", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080, "scheme": "HTTP"},
                    "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"}],
            "restartPolicy": "Never", "runtimeClassName": "wasmtime",
            "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler", "enableServiceLinks": true, "priority": 0,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Pending", "qosClass": "Guaranteed"}})
}

fn running(mut pod: Value) -> Value {
    let conditions: Vec<Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|t| {
        json!({"type": t, "status": "True", "lastProbeTime": null,
            "lastTransitionTime": "2026-11-29T10:00:01Z"})
    })
    .collect();
    pod["spec"]["nodeName"] = json!("node-1");
    pod["status"] = json!({"phase": "Running", "qosClass": "Guaranteed",
        "hostIP": "10.0.0.2", "hostIPs": [{"ip": "10.0.0.2"}], "podIP": "10.42.0.7",
        "podIPs": [{"ip": "10.42.0.7"}], "startTime": "2026-11-29T10:00:01Z",
        "conditions": conditions,
        "containerStatuses": [{"name": "app", "state": {"running": {"startedAt": "2026-11-29T10:00:01Z"}},
            "lastState": {}, "ready": true, "restartCount": 0, "image": "localhost:5000/hello:v1",
            "imageID": "sha256:5f0c", "containerID": "wasm://4d2e", "started": true}]});
    pod
}

fn daemon_set() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": "agent:v1"}]}}}})
}

const N: u32 = 200_000;

/// Nanoseconds per fill of `object`, which lacks nothing: filled in place, again and again.
fn time_complete(name: &str, mut object: Value, kind: (&str, &str)) {
    let start = Instant::now();
    for _ in 0..N {
        skiff_protobuf::fill_go_zero_values(kind.0, kind.1, black_box(&mut object));
    }
    let per = start.elapsed().as_nanos() as f64 / f64::from(N);
    println!("{name}: {per:.0} ns per fill");
}

/// Nanoseconds per fill of a fresh copy of `object`, the copy's own cost removed.
fn time_missing(name: &str, object: &Value, kind: (&str, &str)) {
    let start = Instant::now();
    for _ in 0..N {
        black_box(black_box(object).clone());
    }
    let clone = start.elapsed();
    let start = Instant::now();
    for _ in 0..N {
        let mut v = black_box(object).clone();
        skiff_protobuf::fill_go_zero_values(kind.0, kind.1, &mut v);
        black_box(v);
    }
    let per = start.elapsed().saturating_sub(clone).as_nanos() as f64 / f64::from(N);
    println!("{name}: {per:.0} ns per fill");
}

fn main() {
    let mut stored = pod();
    assert_eq!(allocations_of(&mut stored, ("v1", "Pod")), 0);
    assert_eq!(stored, pod(), "the created pod lacks nothing");
    let mut stored = running(pod());
    assert_eq!(allocations_of(&mut stored, ("v1", "Pod")), 0);
    let mut filled = daemon_set();
    let added = allocations_of(&mut filled, ("apps/v1", "DaemonSet"));
    assert_eq!(allocations_of(&mut filled, ("apps/v1", "DaemonSet")), 0);
    println!("(filling the DaemonSet made {added} allocations; filling it again, none)");
    for _ in 0..2 {
        time_complete("Pod as created, nothing missing", pod(), ("v1", "Pod"));
        time_complete(
            "Pod running, nothing missing",
            running(pod()),
            ("v1", "Pod"),
        );
        time_complete(
            "DaemonSet, nothing missing",
            filled.clone(),
            ("apps/v1", "DaemonSet"),
        );
        time_missing(
            "DaemonSet without status (adds 4 counts and 3 structs)",
            &daemon_set(),
            ("apps/v1", "DaemonSet"),
        );
    }
}
