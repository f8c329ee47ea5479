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

/// Runs `ip` with `args` inside the namespace `ns` (an `ip netns` name).
fn ip_in(ns: &str, args: &str) {
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ip"])
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(status.success(), "ip netns exec {ns} ip {args}");
}

/// `GET path` from inside the namespace at `netns` to `addr`: (status, body).
async fn get_in(netns: &std::path::Path, addr: SocketAddr, path: &str) -> (u16, String) {
    let ns = std::fs::File::open(netns).unwrap();
    let stream = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
        .join()
        .unwrap()
    })
    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn pods_sharing_a_namespace_each_listen_and_connect_from_their_own_ip() {
    // Two address-only pods in one shared namespace, each with its own /32 there and both
    // on the same port, as the node's address-only pods are (skiff-podnet).
    let f = Fixture::new();
    let id = std::process::id();
    let shared = skiff_shim::testing::Netns::new(format!("skiff-wasm-shared-{id}"));
    let shared_name = format!("skiff-wasm-shared-{id}");
    ip_in(&shared_name, "link set lo up");
    let (a, b, peer) = (
        IpAddr::from([10, 250, 77, 2]),
        IpAddr::from([10, 250, 77, 3]),
        IpAddr::from([10, 250, 77, 1]),
    );
    for ip in [a, b, peer] {
        ip_in(&shared_name, &format!("addr add {ip}/32 dev lo"));
    }
    // A server in the shared namespace that answers with the address a request came from.
    let ns = std::fs::File::open(shared.path()).unwrap();
    let who = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind((peer, 0)).unwrap()
        })
        .join()
        .unwrap()
    });
    let who_port = who.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in who.incoming() {
            let Ok(mut conn) = conn else { return };
            let from = conn.peer_addr().unwrap().ip().to_string();
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{from}",
                from.len()
            );
        }
    });

    let port = 8080;
    let start = |ip: IpAddr, greeting: &str| {
        let (mut spec, _) = f.spec("http.wasm", &["http"]);
        spec.ports = vec![port];
        spec.env = vec![("GREETING".into(), greeting.into())];
        let sandbox = PodSandbox {
            netns: Some(shared.path()),
            ip: Some(ip),
            shared: true,
            ..Default::default()
        };
        let shim = f.shim.clone();
        async move {
            let c = shim.create(spec, &sandbox).await.unwrap();
            c.start().await.unwrap();
            c
        }
    };
    let pod_a = start(a, "from a").await;
    let pod_b = start(b, "from b").await;
    let at = |ip| SocketAddr::new(ip, port);
    // Each listens on its own address only, so both have port 8080.
    assert_eq!(
        get_in(&shared.path(), at(a), "/env/GREETING").await.1,
        "from a\n"
    );
    assert_eq!(
        get_in(&shared.path(), at(b), "/env/GREETING").await.1,
        "from b\n"
    );
    // Outgoing requests leave from the pod's own address.
    let fetch = format!("/fetch/{peer}:{who_port}/who");
    assert_eq!(
        get_in(&shared.path(), at(a), &fetch).await,
        (200, a.to_string())
    );
    assert_eq!(
        get_in(&shared.path(), at(b), &fetch).await,
        (200, b.to_string())
    );
    // Its loopback is itself, as in a namespace of its own.
    let own = format!("/fetch/127.0.0.1:{port}/env/GREETING");
    assert_eq!(get_in(&shared.path(), at(a), &own).await.1, "from a\n");
    assert_eq!(get_in(&shared.path(), at(b), &own).await.1, "from b\n");

    // A command, which makes its own sockets, is refused a shared namespace.
    let (spec, _) = f.spec("testbed.wasm", &["testbed", "exit", "0"]);
    let sandbox = PodSandbox {
        netns: Some(shared.path()),
        ip: Some(a),
        shared: true,
        ..Default::default()
    };
    let refused = f.shim.create(spec, &sandbox).await.err().expect("refused");
    assert!(
        refused.to_string().contains("namespace of its own"),
        "{refused}"
    );

    // Pod a moves into a namespace of its own, with its address: it is served there, on
    // every address of it, and its loopback is its own.
    let own_name = format!("skiff-wasm-own-{id}");
    let own_ns = skiff_shim::testing::Netns::new(own_name.clone());
    ip_in(&shared_name, &format!("addr del {a}/32 dev lo"));
    ip_in(&own_name, "link set lo up");
    ip_in(&own_name, &format!("addr add {a}/32 dev lo"));
    let moved = PodSandbox {
        netns: Some(own_ns.path()),
        ip: Some(a),
        ..Default::default()
    };
    pod_a.network_moved(&moved).unwrap();
    assert_eq!(
        get_in(&own_ns.path(), at(a), "/env/GREETING").await.1,
        "from a\n"
    );
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(get_in(&own_ns.path(), local, &own).await.1, "from a\n");
    // Pod b did not move.
    assert_eq!(
        get_in(&shared.path(), at(b), "/env/GREETING").await.1,
        "from b\n"
    );
    pod_a.kill();
    pod_b.kill();
}
