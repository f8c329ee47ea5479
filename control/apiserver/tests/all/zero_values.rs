//! kube-apiserver writes Go's non-`omitempty` fields even when nothing set them (zeros,
//! empty structs), and clients count on them: the Python client refuses a DaemonSet whose
//! status lacks its four counts. Skiff adds them once per write, so every reply, read,
//! list and watch event carries them.

use serde_json::{Value, json};

use crate::harness::Server;

const DAEMON_SETS: &str = "/apis/apps/v1/namespaces/default/daemonsets";

fn zero_status() -> Value {
    json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
        "desiredNumberScheduled": 0, "numberReady": 0})
}

/// A DaemonSet as the Python client sends it: no status.
fn daemon_set() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": "agent:v1"}]}}}})
}

#[tokio::test]
async fn a_created_daemon_set_carries_its_zero_status_everywhere() {
    let server = Server::start().await;
    let list = server.get(DAEMON_SETS).await;
    let before = list.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .to_string();

    let created = server.post(DAEMON_SETS, &daemon_set()).await;
    assert_eq!(created.code, 201, "{}", created.body);
    assert_eq!(created.body["status"], zero_status());

    let got = server.get(&format!("{DAEMON_SETS}/agent")).await;
    assert_eq!(got.body["status"], zero_status());
    let listed = server.get(DAEMON_SETS).await;
    assert_eq!(listed.body["items"][0]["status"], zero_status());
    let event = server
        .first_event(&format!("{DAEMON_SETS}?watch=1&resourceVersion={before}"))
        .await;
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["status"], zero_status());

    // A status written with one count carries the others as zeros.
    let mut with_status = got.body.clone();
    with_status["status"] = json!({"numberReady": 1});
    let updated = server
        .put(&format!("{DAEMON_SETS}/agent/status"), &with_status)
        .await;
    assert_eq!(updated.code, 200, "{}", updated.body);
    assert_eq!(
        updated.body["status"],
        json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
            "desiredNumberScheduled": 0, "numberReady": 1})
    );
}

/// A valid object of each kind, with the path it is created at.
fn samples() -> Vec<(&'static str, Value)> {
    let template = json!({"metadata": {"labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "i:v1", "ports": [{"containerPort": 80}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]}});
    let job_template = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "i:v1"}]}});
    vec![
        (
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": template["spec"].clone()}),
        ),
        (
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}),
        ),
        (
            "/api/v1/namespaces/default/endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "s"},
            "subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 80}]}]}),
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": "b"}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"a": "b"}}),
        ),
        (
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
            "status": {"capacity": {"cpu": "2"}}}),
        ),
        (
            "/api/v1/namespaces/default/events",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started",
            "message": "started"}),
        ),
        (
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "sa"}}),
        ),
        (
            "/api/v1/persistentvolumes",
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}}),
        ),
        (
            "/api/v1/namespaces/default/persistentvolumeclaims",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "pvc"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        (
            "/api/v1/namespaces/default/replicationcontrollers",
            json!({"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "rc"}, "spec": {"selector": {"app": "a"}, "template": template.clone()}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template.clone()}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template.clone()}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/statefulsets",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "sts"}, "spec": {"serviceName": "s", "selector": {"matchLabels": {"app": "a"}},
                "template": template.clone()}}),
        ),
        (DAEMON_SETS, daemon_set()),
        (
            "/apis/apps/v1/namespaces/default/controllerrevisions",
            json!({"apiVersion": "apps/v1",
            "kind": "ControllerRevision", "metadata": {"name": "cr"}, "revision": 1}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": job_template.clone()}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/cronjobs",
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "cj"}, "spec": {"schedule": "*/5 * * * *",
                "jobTemplate": {"spec": {"template": job_template}}}}),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({"apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease", "metadata": {"name": "l"}}),
        ),
        (
            "/apis/node.k8s.io/v1/runtimeclasses",
            json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "rc"}, "handler": "rc"}),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            json!({"apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice", "metadata": {"name": "es"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.5"]}], "ports": [{"port": 80}]}),
        ),
        (
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        ),
        (
            "/apis/storage.k8s.io/v1/storageclasses",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "fast"}, "provisioner": "example.com/fast"}),
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e2"}, "eventTime": "2026-11-29T10:00:00.000000Z", "reportingController": "skiff.dev/test",
            "reportingInstance": "test", "action": "Test", "reason": "Tested",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}}),
        ),
    ]
}

fn api_version_kind(obj: &Value) -> (&str, &str) {
    (
        obj["apiVersion"].as_str().unwrap_or(""),
        obj["kind"].as_str().unwrap_or(""),
    )
}

/// What a write stores lacks nothing Go would write, after defaults and status resets, for
/// every served kind; and what it adds is known to the kind's type, so a client that sends
/// back what it read passes strict field validation.
#[tokio::test]
async fn every_kind_is_stored_with_its_zero_values_and_round_trips_strictly() {
    let server = Server::start().await;
    let samples = samples();
    for resource in skiff_apiserver::registry::RESOURCES {
        let served = samples
            .iter()
            .find(|(_, o)| api_version_kind(o) == (resource.api_version(), resource.kind));
        let Some((path, object)) = served else {
            panic!(
                "no sample {} {}: add one",
                resource.api_version(),
                resource.kind
            );
        };
        let created = server.post(path, object).await;
        assert_eq!(created.code, 201, "{path}: {}", created.body);
        let name = created.body["metadata"]["name"].as_str().expect("name");
        let got = server.get(&format!("{path}/{name}")).await;
        assert_eq!(got.code, 200, "{path}/{name}: {}", got.body);
        for (what, reply) in [("create", &created.body), ("get", &got.body)] {
            let mut filled = reply.clone();
            let (api_version, kind) = api_version_kind(reply);
            assert!(
                skiff_protobuf::fill_go_zero_values(api_version, kind, &mut filled),
                "{api_version} {kind} is not in skiff-protobuf's table: add it to generate.py's ROOTS"
            );
            assert_eq!(
                &filled, reply,
                "{what} of {path}/{name} lacks Go zero values"
            );
        }
        let replaced = server
            .put(&format!("{path}/{name}?fieldValidation=Strict"), &got.body)
            .await;
        assert_eq!(replaced.code, 200, "{path}/{name}: {}", replaced.body);
        assert!(
            replaced.headers.get("warning").is_none(),
            "{path}/{name}: {:?}",
            replaced.headers.get("warning")
        );
    }
}
