use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use skiff_shim::{ExitReason, PodSandbox, Shim};

use crate::Fixture;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn http_component_serves_each_request_from_a_fresh_instance() {
    let f = Fixture::new();
    let port = free_port();
    let (mut spec, _) = f.spec("http.wasm", &["http"]);
    spec.ports = vec![port];
    spec.env = vec![("GREETING".into(), "hej".into())];
    let sandbox = PodSandbox {
        ip: Some(IpAddr::from([127, 0, 0, 1])),
        ..Default::default()
    };
    let c = f.shim.create(spec, &sandbox).await.unwrap();
    c.start().await.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(get(addr, "/").await, (200, "hello from skiff\n".into()));
    assert_eq!(get(addr, "/env/GREETING").await, (200, "hej\n".into()));
    assert_eq!(get(addr, "/nope").await.0, 404);
    // Concurrent requests each get an instance.
    let all = futures_join(addr).await;
    assert!(all.iter().all(|r| r.0 == 200), "{all:?}");

    c.stop(Duration::from_secs(5));
    let exit = tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .unwrap();
    assert_eq!(exit.reason, ExitReason::Completed, "{exit:?}");
    // The listener is gone with the container.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

async fn futures_join(addr: SocketAddr) -> Vec<(u16, String)> {
    let tasks: Vec<_> = (0..32)
        .map(|_| tokio::spawn(async move { get(addr, "/").await }))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// This thread's id, from /proc/thread-self (a link to `<pid>/task/<tid>`).
fn tid() -> String {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name()
        .expect("tid")
        .to_string_lossy()
        .into_owned()
}

/// CPU time the given threads of this process have used (from their schedstat).
fn threads_cpu(tids: &[String]) -> Duration {
    tids.iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

#[test]
fn cpu_limit_bounds_all_requests_together() {
    // The container's requests run on this test's own runtime, whose threads are counted
    // (the other tests of this binary run beside it, on runtimes of their own).
    let tids: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let record = tids.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || record.lock().unwrap().push(tid()))
        .build()
        .unwrap();
    rt.block_on(async {
        let f = Fixture::new();
        let port = free_port();
        let (mut spec, _) = f.spec("http.wasm", &["http"]);
        spec.ports = vec![port];
        spec.cpu_limit_millis = Some(100);
        let sandbox = PodSandbox {
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            ..Default::default()
        };
        let c = f.shim.create(spec, &sandbox).await.unwrap();
        c.start().await.unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(get(addr, "/").await.0, 200);
        // Four requests that each keep a CPU busy for 1.5 s of wall-clock time: unlimited,
        // they would take both cores for 1.5 s; at 100m they get a tenth of one between them.
        let before = threads_cpu(&tids.lock().unwrap());
        let started = std::time::Instant::now();
        let spins: Vec<_> = (0..4)
            .map(|_| tokio::spawn(async move { get(addr, "/spin/1500").await }))
            .collect();
        for s in spins {
            assert_eq!(s.await.unwrap(), (200, "spun 1500 ms\n".into()));
        }
        let wall = started.elapsed();
        let cpu = threads_cpu(&tids.lock().unwrap()) - before;
        assert!(
            cpu < wall / 3,
            "a 100m HTTP container used {cpu:?} of CPU in {wall:?}"
        );
        assert!(c.stats().cpu_nanos > 0, "CPU use is reported");
        c.kill();
    });
}
