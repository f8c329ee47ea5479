//! The scripts the proxy writes, loaded into a real kernel: in a network namespace this
//! test makes for itself (root needed), the whole table, then a change to it, then its
//! removal, each read back with `nft list`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_proxy::{NodeView, model, ruleset};

fn service(name: &str, ip: &str, ty: &str, affinity: bool) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: Some(ip.into()),
            external_ips: Some(vec!["192.0.2.10".into()]),
            session_affinity: affinity.then(|| "ClientIP".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                node_port: (ty == "NodePort").then_some(30080),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-x")),
            namespace: Some("default".into()),
            labels: Some(
                [(
                    "kubernetes.io/service-name".to_string(),
                    service.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("a".into()),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn list(table: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn scripts_load_into_the_kernel_and_change_only_what_changed() {
    // A network namespace of the test's own, for this thread and the nft it runs.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let view = NodeView {
                node_name: "a".into(),
                pod_cidrs: vec!["10.244.0.0/22".parse().unwrap()],
                shared_mac: Some([2, 0x5b, 1, 2, 3, 4]),
            };
            let (web, api) = (
                service("web", "10.96.0.10", "NodePort", true),
                service("api", "10.96.0.11", "ClusterIP", false),
            );
            let s1 = slice("web", &["10.244.0.5", "10.244.0.6"]);
            let first = model::build(&[&web, &api], &[&s1], &view);
            skiff_podnet::run_nft(&ruleset::full("t", &first))
                .await
                .expect("full table");
            let listed = list("t");
            assert!(
                listed.contains("10.96.0.10 . tcp . 80 : goto s-"),
                "{listed}"
            );
            assert!(
                listed.contains("10.96.0.11 . tcp . 80"),
                "api has no endpoints:\n{listed}"
            );
            assert!(listed.contains("dnat to 10.244.0.5:8080"), "{listed}");
            assert!(listed.contains("tcp . 30080 : goto x-"), "{listed}");
            assert!(listed.contains("numgen random mod 2"), "{listed}");
            // web loses an endpoint, api gains one.
            let s2 = slice("web", &["10.244.0.6"]);
            let s3 = slice("api", &["10.244.0.7"]);
            let second = model::build(&[&web, &api], &[&s2, &s3], &view);
            let script = ruleset::diff("t", &first, &second);
            assert!(!script.contains("delete table"), "{script}");
            skiff_podnet::run_nft(&script).await.expect("the change");
            let listed = list("t");
            assert!(!listed.contains("10.244.0.5"), "{listed}");
            // api, without affinity, is balanced by elements in a shared chain.
            assert!(
                listed.contains("10.96.0.11 . tcp . 80 : goto lb-c-tcp-1"),
                "{listed}"
            );
            assert!(
                listed.contains("10.96.0.11 . 80 . 0 : 10.244.0.7 . 8080"),
                "{listed}"
            );
            assert!(
                listed.contains(
                    "dnat ip to ip daddr . tcp dport . numgen random mod 1 map @backends-tcp"
                ),
                "{listed}"
            );
            // Loading the same state again from scratch gives the same table.
            skiff_podnet::run_nft(&ruleset::full("t", &second))
                .await
                .expect("again");
            let lines = |t: &str| {
                let mut l: Vec<String> = t.lines().map(str::to_string).collect();
                l.sort();
                l
            };
            assert_eq!(
                lines(&list("t")),
                lines(&listed),
                "chains listed in another order only"
            );
            // The services gone: nothing of them is left.
            let third = model::build(&[], &[], &view);
            skiff_podnet::run_nft(&ruleset::diff("t", &second, &third))
                .await
                .expect("empty");
            let listed = list("t");
            assert!(
                !listed.contains("chain s-")
                    && !listed.contains("chain e-")
                    && !listed.contains("chain lb-"),
                "{listed}"
            );
            assert!(!listed.contains("set a-"), "{listed}");
        });
    })
    .join()
    .unwrap();
}
