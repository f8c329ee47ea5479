//! Protobuf bodies as kubectl sends them, transcoded to the JSON kube-apiserver stores.

use serde_json::{Value, json};
use skiff_protobuf::{Error, to_json};

/// Test-only protobuf encoder: a message is a list of (field number, value).
enum F {
    Str(u32, &'static str),
    Bytes(u32, &'static [u8]),
    Int(u32, i64),
    Msg(u32, Vec<F>),
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn encode(fields: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        let (n, wire, payload): (u32, u64, Vec<u8>) = match f {
            F::Str(n, s) => (*n, 2, s.as_bytes().to_vec()),
            F::Bytes(n, b) => (*n, 2, b.to_vec()),
            F::Msg(n, m) => (*n, 2, encode(m)),
            F::Int(n, v) => {
                varint(u64::from(*n) << 3, &mut out);
                varint(*v as u64, &mut out);
                continue;
            }
        };
        varint(u64::from(n) << 3 | wire, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend(payload);
    }
    out
}

fn entry(k: &'static str, v: F) -> Vec<F> {
    vec![F::Str(1, k), v]
}

/// `k8s\0` + runtime.Unknown{typeMeta, raw}.
fn body(api_version: &'static str, kind: &'static str, object: Vec<F>) -> Vec<u8> {
    let raw = encode(&object);
    let mut out = b"k8s\0".to_vec();
    out.extend(encode(&[
        F::Msg(1, vec![F::Str(1, api_version), F::Str(2, kind)]),
        F::Bytes(2, Box::leak(raw.into_boxed_slice())),
    ]));
    out
}

#[test]
fn configmap_with_labels_and_data() {
    let object = vec![
        F::Msg(
            1,
            vec![
                F::Str(1, "cfg"),
                F::Str(3, "default"),
                F::Msg(11, entry("app", F::Str(2, "web"))),
                F::Msg(11, entry("tier", F::Str(2, "front"))),
            ],
        ),
        F::Msg(2, entry("a", F::Str(2, "b"))),
        F::Msg(2, entry("empty", F::Str(2, ""))),
    ];
    assert_eq!(
        to_json(&body("v1", "ConfigMap", object)).unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "data": {"a": "b", "empty": ""}
        })
    );
}

#[test]
fn namespace_with_creation_time_and_finalizers() {
    let object = vec![
        // creationTimestamp 2024-01-02T03:04:05Z, uid "" and generation 0 as Go writes them.
        F::Msg(
            1,
            vec![
                F::Str(1, "prod"),
                F::Str(5, ""),
                F::Int(7, 0),
                F::Msg(8, vec![F::Int(1, 1_704_164_645)]),
            ],
        ),
        F::Msg(2, vec![F::Str(1, "kubernetes")]),
        F::Msg(3, vec![F::Str(1, "Active")]),
    ];
    let got = to_json(&body("v1", "Namespace", object)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "prod", "creationTimestamp": "2024-01-02T03:04:05Z"},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        })
    );
    // apiVersion and kind lead, as kube-apiserver writes them.
    let keys: Vec<_> = got.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec", "status"]);
}

#[test]
fn secret_bytes_become_base64() {
    let object = vec![
        F::Msg(1, vec![F::Str(1, "creds")]),
        F::Msg(2, entry("password", F::Bytes(2, b"s3cr\xffet"))),
        F::Str(3, "Opaque"),
        F::Int(5, 0),
    ];
    assert_eq!(
        to_json(&body("v1", "Secret", object)).unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"password": "czNjcv9ldA=="},
            "type": "Opaque",
            // immutable is a *bool: an explicit false is kept.
            "immutable": false
        })
    );
}

#[test]
fn deployment_with_container_ports_resources_and_intstr() {
    let container = vec![
        F::Str(1, "web"),
        F::Str(2, "nginx:1.27"),
        F::Msg(
            6,
            vec![F::Str(1, "http"), F::Int(3, 8080), F::Str(4, "TCP")],
        ),
        F::Msg(6, vec![F::Int(3, 9090)]),
        F::Msg(
            8,
            vec![
                F::Msg(1, entry("cpu", F::Msg(2, vec![F::Str(1, "500m")]))),
                F::Msg(2, entry("memory", F::Msg(2, vec![F::Str(1, "64Mi")]))),
            ],
        ),
    ];
    let object = vec![
        F::Msg(1, vec![F::Str(1, "web")]),
        F::Msg(
            2,
            vec![
                F::Int(1, 3),
                F::Msg(2, vec![F::Msg(1, entry("app", F::Str(2, "web")))]),
                F::Msg(
                    3,
                    vec![
                        F::Msg(1, vec![F::Msg(11, entry("app", F::Str(2, "web")))]),
                        F::Msg(2, vec![F::Msg(2, container)]),
                    ],
                ),
                F::Msg(
                    4,
                    vec![
                        F::Str(1, "RollingUpdate"),
                        F::Msg(
                            2,
                            vec![
                                F::Msg(1, vec![F::Int(1, 0), F::Int(2, 0)]),
                                F::Msg(2, vec![F::Int(1, 1), F::Str(3, "25%")]),
                            ],
                        ),
                    ],
                ),
            ],
        ),
    ];
    assert_eq!(
        to_json(&body("apps/v1", "Deployment", object)).unwrap(),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [
                            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                            {"containerPort": 9090}
                        ],
                        "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}}
                    }]}
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}
                }
            }
        })
    );
}

#[test]
fn service_uses_kubernetes_acronym_names() {
    let object = vec![
        F::Msg(1, vec![F::Str(1, "svc")]),
        F::Msg(
            2,
            vec![
                F::Str(3, "10.0.0.7"),
                F::Str(5, "1.2.3.4"),
                F::Msg(1, vec![F::Int(3, 80), F::Msg(4, vec![F::Int(2, 8080)])]),
            ],
        ),
    ];
    assert_eq!(
        to_json(&body("v1", "Service", object)).unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}], "clusterIP": "10.0.0.7", "externalIPs": ["1.2.3.4"]}
        })
    );
}

#[test]
fn pod_volume_source_is_inlined() {
    // Volume embeds VolumeSource (json:",inline"); its fields sit beside the volume's name.
    let volume = vec![
        F::Str(1, "cfg"),
        F::Msg(
            2,
            vec![F::Msg(19, vec![F::Msg(1, vec![F::Str(1, "app-config")])])],
        ),
    ];
    let object = vec![
        F::Msg(2, vec![F::Msg(1, volume)]),
        F::Msg(3, vec![F::Str(6, "10.1.2.3")]),
    ];
    assert_eq!(
        to_json(&body("v1", "Pod", object)).unwrap(),
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "spec": {"volumes": [{"name": "cfg", "configMap": {"name": "app-config"}}]},
            "status": {"podIP": "10.1.2.3"}
        })
    );
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    to_json(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn kubectl_create_configmap_body() {
    // Captured from `kubectl.1.33 create configmap x --from-literal=a=b`.
    assert_eq!(
        fixture("kubectl-1.33-configmap.pb"),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "creationTimestamp": null},
            "data": {"a": "b"}
        })
    );
}

#[test]
fn kubectl_create_secret_and_namespace_bodies() {
    assert_eq!(
        fixture("kubectl-1.33-secret.pb"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "creationTimestamp": null}, "data": {"k": "dg=="}})
    );
    assert_eq!(
        fixture("kubectl-1.33-namespace.pb"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1", "creationTimestamp": null}, "spec": {}, "status": {}})
    );
}

#[test]
fn kubectl_create_deployment_body() {
    // Captured from `kubectl.1.33 create deployment d --image=nginx`. Go writes its non-pointer
    // zero numbers and bools; kube's JSON (`--dry-run=client -o json`) shows none of them.
    assert_eq!(
        fixture("kubectl-1.33-deployment.pb"),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "creationTimestamp": null, "labels": {"app": "d"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "d"}},
                    "spec": {
                        "containers": [{"name": "nginx", "image": "nginx", "resources": {}}]
                    }
                },
                "strategy": {}
            },
            "status": {}
        })
    );
}

#[test]
fn rejects_bad_magic_unknown_kinds_and_broken_wire_data() {
    assert_eq!(to_json(b"{\"kind\":\"Pod\"}"), Err(Error::BadMagic));
    assert!(matches!(
        to_json(&body("example.com/v1", "Widget", vec![])),
        Err(Error::UnknownKind { kind, .. }) if kind == "Widget"
    ));
    let good = body("v1", "ConfigMap", vec![F::Msg(1, vec![F::Str(1, "cfg")])]);
    assert_eq!(to_json(&good[..good.len() - 1]), Err(Error::Truncated));
    // A string field carrying a varint.
    let wrong = body("v1", "ConfigMap", vec![F::Msg(1, vec![F::Int(1, 5)])]);
    assert!(matches!(to_json(&wrong), Err(Error::Invalid(_))));
}

#[test]
fn hostile_input_never_panics() {
    let seeds: Vec<Vec<u8>> = ["configmap", "deployment", "secret", "namespace"]
        .iter()
        .map(|n| {
            std::fs::read(format!(
                "{}/tests/fixtures/kubectl-1.33-{n}.pb",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        })
        .collect();
    // xorshift: deterministic, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decoded = 0;
    for seed in &seeds {
        for cut in 0..seed.len() {
            let _ = to_json(&seed[..cut]);
        }
        for _ in 0..3000 {
            let mut body = seed.clone();
            for _ in 0..1 + next() % 4 {
                let i = 4 + (next() as usize) % (body.len() - 4);
                body[i] = next() as u8;
            }
            decoded += usize::from(to_json(&body).is_ok());
        }
    }
    for _ in 0..3000 {
        let mut body = b"k8s\0".to_vec();
        body.extend((0..next() % 64).map(|_| next() as u8));
        let _ = to_json(&body);
    }
    // Some mutations only touch values, so decoding must still succeed for a share of them.
    assert!(decoded > 0);
}
