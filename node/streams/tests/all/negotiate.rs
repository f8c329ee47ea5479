//! Negotiation of the protocol and the 101 headers, for what each client sends.

use http::{HeaderMap, HeaderValue, Method};
use skiff_streams::{Kind, Protocol, negotiate};

fn request(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn websocket(protocols: &str) -> HeaderMap {
    request(&[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        // RFC 6455's example key.
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", protocols),
    ])
}

#[test]
fn websocket_exec_takes_the_clients_first_supported_protocol() {
    let n = negotiate(Kind::Exec, &Method::GET, &websocket("v5.channel.k8s.io")).unwrap();
    assert_eq!(n.protocol, Protocol::WebSocketV5);
    let h = &n.response_headers;
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["connection"], "Upgrade");
    assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(h["sec-websocket-protocol"], "v5.channel.k8s.io");

    // kube-rs offers both in one header.
    let n = negotiate(
        Kind::Attach,
        &Method::GET,
        &websocket("v4.channel.k8s.io, v5.channel.k8s.io"),
    )
    .unwrap();
    assert_eq!(n.protocol, Protocol::WebSocketV4);
    assert_eq!(
        n.response_headers["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
}

#[test]
fn websocket_port_forward_tunnel_and_channels() {
    let n = negotiate(
        Kind::PortForward,
        &Method::GET,
        &websocket("SPDY/3.1+portforward.k8s.io"),
    )
    .unwrap();
    assert_eq!(n.protocol, Protocol::SpdyOverWebSocket);
    assert_eq!(
        n.response_headers["sec-websocket-protocol"],
        "SPDY/3.1+portforward.k8s.io"
    );
    let n = negotiate(
        Kind::PortForward,
        &Method::GET,
        &websocket("v4.channel.k8s.io"),
    )
    .unwrap();
    assert_eq!(n.protocol, Protocol::WebSocketPortForward);
}

#[test]
fn spdy_answers_the_version_it_speaks() {
    // kubectl 1.27 sends one header line per offered protocol.
    let h = request(&[
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ("x-stream-protocol-version", "v3.channel.k8s.io"),
        ("x-stream-protocol-version", "channel.k8s.io"),
    ]);
    let n = negotiate(Kind::Exec, &Method::POST, &h).unwrap();
    assert_eq!(n.protocol, Protocol::Spdy);
    assert_eq!(n.response_headers["upgrade"], "SPDY/3.1");
    assert_eq!(n.response_headers["connection"], "Upgrade");
    assert_eq!(
        n.response_headers["x-stream-protocol-version"],
        "v4.channel.k8s.io"
    );
    assert_eq!(n.response_headers.len(), 3);
}

#[test]
fn refusals_are_bad_request_statuses_naming_the_problem() {
    let e = negotiate(
        Kind::Exec,
        &Method::GET,
        &websocket("base64.channel.k8s.io"),
    )
    .unwrap_err();
    assert_eq!(e.status_code(), 400);
    assert_eq!(
        e.message,
        "none of the offered websocket subprotocols [base64.channel.k8s.io] is supported, \
         expected one of [v5.channel.k8s.io, v4.channel.k8s.io]"
    );
    let status = e.status_json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(status["code"], 400);
    assert_eq!(status["message"], e.message.as_str());

    let e = negotiate(Kind::Exec, &Method::POST, &request(&[])).unwrap_err();
    assert_eq!(
        e.message,
        "upgrade request required: the request has no \"Connection: Upgrade\" header"
    );
    let spdy = request(&[
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]);
    let e = negotiate(Kind::PortForward, &Method::POST, &spdy).unwrap_err();
    assert_eq!(
        e.response_headers()["x-accepted-stream-protocol-versions"],
        "portforward.k8s.io"
    );
    let e = negotiate(Kind::Exec, &Method::POST, &websocket("v5.channel.k8s.io")).unwrap_err();
    assert_eq!(e.message, "a websocket upgrade must use GET, not POST");
}
