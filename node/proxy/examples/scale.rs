//! How long the proxy takes to program N Services with 10 endpoints each, and then one
//! endpoint change, in a network namespace of its own (as root):
//! `cargo run --release -p skiff-proxy --example scale -- 5000`.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_proxy::{NodeView, model, ruleset};

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(format!("s{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(format!("10.96.{}.{}", i / 250, i % 250 + 1)),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(i: usize, ready_count: usize) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("s{i}-x")),
            namespace: Some("default".into()),
            labels: Some([("kubernetes.io/service-name".to_string(), format!("s{i}"))].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: (0..10)
            .map(|e| Endpoint {
                addresses: vec![format!("10.248.{}.{}", i / 25, (i % 25) * 10 + e)],
                conditions: Some(EndpointConditions {
                    ready: Some(e < ready_count),
                    serving: Some(e < ready_count),
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some(String::new()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    // The main thread's namespace, so that the process's nftables context is the one kept
    // open, as in the agent.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root)");
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let view = NodeView {
                node_name: "a".into(),
                pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
                shared_mac: None,
            };
            let services: Vec<Service> = (0..n).map(service).collect();
            let mut slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, 10)).collect();
            let t = Instant::now();
            let first = model::build(
                &services.iter().collect::<Vec<_>>(),
                &slices.iter().collect::<Vec<_>>(),
                &view,
            );
            let built = t.elapsed();
            let script = ruleset::full("scale", &first);
            let t = Instant::now();
            skiff_podnet::run_nft(&script).await.expect("full");
            let loaded = t.elapsed();
            println!(
                "{n} Services x 10 endpoints: model {:.0} ms, script {} KB, nft load {:.0} ms",
                built.as_secs_f64() * 1e3,
                script.len() / 1024,
                loaded.as_secs_f64() * 1e3
            );
            for round in 0..5 {
                slices[round] = slice(round, 9);
                let t = Instant::now();
                let next = model::build(
                    &services.iter().collect::<Vec<_>>(),
                    &slices.iter().collect::<Vec<_>>(),
                    &view,
                );
                let built = t.elapsed();
                let script = ruleset::diff("scale", &first, &next);
                let t = Instant::now();
                skiff_podnet::run_nft(&script).await.expect("diff");
                println!(
                    "one endpoint not ready: model {:.0} ms, script {} lines, nft {:.0} ms",
                    built.as_secs_f64() * 1e3,
                    script.lines().count(),
                    t.elapsed().as_secs_f64() * 1e3
                );
                slices[round] = slice(round, 10);
                skiff_podnet::run_nft(&ruleset::diff("scale", &next, &first))
                    .await
                    .expect("back");
            }
        });
    }
}
