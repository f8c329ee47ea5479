//! kubectl's imperative commands, which kubectl 1.32+ sends as protobuf.

use skiff_conformance::{Backend, Cluster};

pub fn imperative_creates_in_protobuf(backend: Backend) {
    let cluster = Cluster::start(backend);
    let k = cluster.kubectl("1.33");
    assert_eq!(
        k.ok(&["create", "namespace", "team"]).trim(),
        "namespace/team created"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "team",
            "--from-literal=mode=fast",
            "--from-literal=level=3"
        ])
        .trim(),
        "configmap/settings created"
    );
    let cm = k.json(&["get", "configmap", "settings", "-n", "team"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"level": "3", "mode": "fast"})
    );
    k.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "team",
        "--from-literal=key=s3cret",
    ]);
    let secret = k.json(&["get", "secret", "token", "-n", "team"]);
    assert_eq!(secret["data"]["key"], "czNjcmV0", "{secret}");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        k.ok(&[
            "create",
            "deployment",
            "web",
            "-n",
            "team",
            "--image=registry.local/web:1",
            "--replicas=2",
            "--port=8080"
        ])
        .trim(),
        "deployment.apps/web created"
    );
    let d = k.json(&["get", "deploy", "web", "-n", "team"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/web:1"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    // Go put its non-pointer zeros on the wire; like kube-apiserver, Skiff does not echo them.
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container.get("stdin"), None, "{container}");
    assert_eq!(container["ports"][0].get("hostPort"), None, "{container}");
    assert_eq!(d["spec"].get("paused"), None, "{d}");
    assert_eq!(
        k.ok(&[
            "expose",
            "deployment",
            "web",
            "-n",
            "team",
            "--port=80",
            "--target-port=8080"
        ])
        .trim(),
        "service/web exposed"
    );
    let svc = k.json(&["get", "svc", "web", "-n", "team"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(
        k.ok(&[
            "run",
            "one",
            "-n",
            "team",
            "--image=registry.local/one:1",
            "--restart=Never"
        ])
        .trim(),
        "pod/one created"
    );
    let pod = k.json(&["get", "pod", "one", "-n", "team"]);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    k.ok(&[
        "create",
        "job",
        "batch1",
        "-n",
        "team",
        "--image=registry.local/job:1",
    ]);
    k.ok(&[
        "create",
        "cronjob",
        "nightly",
        "-n",
        "team",
        "--image=registry.local/job:1",
        "--schedule=0 3 * * *",
    ]);
    assert_eq!(
        k.json(&["get", "cronjob", "nightly", "-n", "team"])["spec"]["schedule"],
        "0 3 * * *"
    );
    k.ok(&["create", "serviceaccount", "robot", "-n", "team"]);
    let names = k.ok(&["get", "all,cm,secret,sa", "-n", "team", "-o", "name"]);
    for n in [
        "pod/one",
        "service/web",
        "deployment.apps/web",
        "job.batch/batch1",
        "cronjob.batch/nightly",
        "configmap/settings",
        "secret/token",
        "serviceaccount/robot",
    ] {
        assert!(names.contains(n), "{n} missing from:\n{names}");
    }
}
