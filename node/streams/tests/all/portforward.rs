//! `kubectl port-forward` as a user runs it: kubectl 1.27 speaks raw SPDY/3.1, kubectl 1.33
//! SPDY/3.1 inside a WebSocket. The pod's port is a real TCP echo server on loopback.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::server::{TestServer, wait_with_deadline};

fn expected_protocol(version: &str) -> &'static str {
    match version {
        "1.27" | "1.28" | "1.29" | "1.30" => "portforward.k8s.io",
        _ => "SPDY/3.1+portforward.k8s.io",
    }
}

/// A TCP echo server; returns its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Starts `kubectl port-forward web :REMOTE` and returns it with the local port it chose,
/// read from its "Forwarding from 127.0.0.1:L -> R" line.
async fn start_port_forward(server: &TestServer, version: &str, remote: u16) -> (Child, u16) {
    start(
        server.kubectl(version, &["port-forward", "web", &format!(":{remote}")]),
        remote,
    )
    .await
}

async fn start(mut cmd: std::process::Command, remote: u16) -> (Child, u16) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            // Keep draining so kubectl never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            first
        }),
    )
    .await
    .expect("kubectl port-forward announces its port")
    .unwrap();
    let line = line.expect("a line").unwrap();
    let local = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_once(" -> "))
        .map(|(l, r)| {
            assert_eq!(r, remote.to_string());
            l.parse::<u16>().unwrap()
        })
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, local)
}

async fn round_trip(conn: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    conn.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut back))
        .await
        .expect("echo arrives")
        .unwrap();
    back
}

async fn forwards_bytes(version: &str) {
    let server = TestServer::start().await;
    let remote = echo_server().await;
    let (mut child, local) = start_port_forward(&server, version, remote).await;

    let mut a = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut b = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    // Both connections open at once, interleaved, one of them with more than a window.
    assert_eq!(
        round_trip(&mut a, b"first connection").await,
        b"first connection"
    );
    assert_eq!(
        round_trip(&mut b, b"second connection").await,
        b"second connection"
    );
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut a, &big).await, big);
    assert_eq!(round_trip(&mut b, b"still here").await, b"still here");
    drop(a);
    drop(b);
    // A connection after others ended works too.
    let mut c = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    assert_eq!(round_trip(&mut c, b"third").await, b"third");
    drop(c);

    let upgrades = server.upgrades();
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0].1, expected_protocol(version));
    child.kill().unwrap();
    let _ = child.wait();
}

async fn refused_port(version: &str) {
    let server = TestServer::start().await;
    // A port nobody listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = closed.local_addr().unwrap().port();
    drop(closed);
    let (mut child, local) = start_port_forward(&server, version, remote).await;
    let mut stderr = child.stderr.take().unwrap();

    let mut conn = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    // The forward fails: the local connection is closed without data.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
        .await
        .expect("the failed connection ends");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // kubectl reports the error and gives up the session.
    let out = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let waited = wait_with_deadline(child, Duration::from_secs(30));
        let _ = stderr.read_to_string(&mut text);
        (waited, text)
    })
    .await
    .unwrap();
    let (_, text) = out;
    let expected = format!(
        "an error occurred forwarding {local} -> {remote}: error forwarding port {remote} to pod web: Connection refused"
    );
    assert!(text.contains(&expected), "stderr: {text}");
}

/// kubectl 1.33 told not to tunnel uses raw SPDY, as kubectl 1.27 does.
#[tokio::test]
async fn v1_33_without_websockets_uses_raw_spdy() {
    let server = TestServer::start().await;
    let remote = echo_server().await;
    let mut cmd = server.kubectl("1.33", &["port-forward", "web", &format!(":{remote}")]);
    cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    let (mut child, local) = start(cmd, remote).await;
    let mut conn = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    assert_eq!(round_trip(&mut conn, b"raw spdy").await, b"raw spdy");
    assert_eq!(server.upgrades()[0].1, "portforward.k8s.io");
    child.kill().unwrap();
    let _ = child.wait();
}

macro_rules! for_versions {
    ($($name:ident),*) => {
        mod v1_33 { $( #[tokio::test] async fn $name() { super::$name("1.33").await } )* }
        mod v1_27 { $( #[tokio::test] async fn $name() { super::$name("1.27").await } )* }
    };
}

for_versions!(forwards_bytes, refused_port);

/// Every installed kubectl between the two.
mod other_versions {
    #[tokio::test]
    async fn forwards_bytes_with_kubectl_1_28_to_1_32() {
        for version in ["1.28", "1.29", "1.30", "1.31", "1.32"] {
            super::forwards_bytes(version).await;
        }
    }
}
