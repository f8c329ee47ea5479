//! Serves a made-up cluster zone (`--services N`, each with a cluster IP; every tenth
//! headless with 10 endpoints) at `--listen ADDR` until killed: what `skiff bench dns`
//! measures, without an API server.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let n: usize = arg("--services", "1000").parse().expect("--services N");
    let listen = arg("--listen", "127.0.0.1:5353")
        .parse()
        .expect("--listen ADDR");
    let mut config = skiff_dns::Config::new(listen, "cluster.local");
    config.threads = arg("--threads", "2").parse().expect("--threads N");
    let dns = skiff_dns::Dns::serve(config).expect("serving");
    let services: Vec<Service> = (0..n)
        .map(|i| {
            let ip = if i % 10 == 9 {
                "None".to_string()
            } else {
                format!("10.96.{}.{}", i / 250, i % 250 + 1)
            };
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "default", "name": format!("svc-{i}")},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
            }))
            .expect("service")
        })
        .collect();
    let slice: Arc<EndpointSlice> = Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "addressType": "IPv4",
            "endpoints": (0..10).map(|i| serde_json::json!({"addresses": [format!("10.244.0.{}", i + 2)]})).collect::<Vec<_>>(),
            "ports": [{"name": "http", "port": 8080}],
        }))
        .expect("slice"),
    );
    dns.set_zone(skiff_dns::Zone::build(
        "cluster.local",
        services.iter(),
        |_, _| vec![slice.clone()],
    ));
    println!("serving {n} services at {}", dns.listen);
    std::future::pending::<()>().await;
}
