//! The WebSocket protocols kubectl does not use but other clients do (kube-rs, the Python
//! client): remote command `v4.channel.k8s.io` and port-forward over channels, driven by a
//! raw WebSocket client.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::server::TestServer;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(server: &TestServer, path_and_query: &str, protocol: &str) -> Ws {
    let url = format!(
        "ws://{}/api/v1/namespaces/default/pods/web/{path_and_query}",
        server.addr
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// Next binary message, as (channel, payload); `None` once the server closed.
async fn next(ws: &mut Ws) -> Option<(u8, Vec<u8>)> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message arrives")?;
        match msg.unwrap() {
            Message::Binary(b) => return Some((b[0], b[1..].to_vec())),
            Message::Close(frame) => {
                assert_eq!(u16::from(frame.unwrap().code), 1000);
                return None;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn v4_exec_reports_status_and_exit_code() {
    let server = TestServer::start().await;
    let mut ws = connect(
        &server,
        "exec?command=fail&command=7&stderr=true&stdout=true",
        "v4.channel.k8s.io",
    )
    .await;
    let mut messages = Vec::new();
    while let Some(m) = next(&mut ws).await {
        messages.push(m);
    }
    // The opening empty message on stdout, stderr's text, then the status, then Close 1000.
    assert_eq!(messages[0], (1, vec![]));
    assert_eq!(messages[1], (2, b"something went wrong\n".to_vec()));
    let (channel, status) = &messages[2];
    assert_eq!(*channel, 3);
    let status: serde_json::Value = serde_json::from_slice(status).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
    assert_eq!(messages.len(), 3);
}

#[tokio::test]
async fn v4_exec_stdin_reaches_the_command() {
    let server = TestServer::start().await;
    let mut ws = connect(
        &server,
        "exec?command=cat&stdin=true&stdout=true",
        "v4.channel.k8s.io",
    )
    .await;
    assert_eq!(next(&mut ws).await, Some((1, vec![])));
    ws.send(Message::Binary(Bytes::from_static(b"\0over v4")))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Some((1, b"over v4".to_vec())));
}

#[tokio::test]
async fn v4_port_forward_over_channels() {
    let server = TestServer::start().await;
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);

    let mut ws = connect(
        &server,
        &format!("portforward?ports={port},{dead}"),
        "v4.channel.k8s.io",
    )
    .await;
    let mut opening = Vec::new();
    for _ in 0..4 {
        opening.push(next(&mut ws).await.unwrap());
    }
    let p = port.to_le_bytes().to_vec();
    let d = dead.to_le_bytes().to_vec();
    assert_eq!(opening, [(0, p.clone()), (1, p), (2, d.clone()), (3, d)]);

    ws.send(Message::Binary(Bytes::from_static(
        b"\0through the channel",
    )))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next(&mut ws).await.unwrap());
    }
    seen.sort();
    assert_eq!(seen[0], (0, b"through the channel".to_vec()));
    let (channel, error) = &seen[1];
    assert_eq!(*channel, 3);
    let error = String::from_utf8_lossy(error);
    assert!(
        error.starts_with(&format!(
            "error forwarding port {dead} to pod web: Connection refused"
        )),
        "{error}"
    );
}
