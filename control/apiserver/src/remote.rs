//! `pods/exec`, `pods/attach` and `pods/portforward`: upgraded connections proxied to the
//! node agent that runs the pod, as kube-apiserver proxies them to the kubelet
//! (`/exec/<namespace>/<pod>/<container>`, `/attach/...`, `/portForward/<namespace>/<pod>`).
//!
//! The API server checks what it can know (the pod is bound and not finished, the container
//! exists, a command is given), then forwards the upgrade request to the agent with its
//! upgrade headers (WebSocket key and subprotocols, SPDY's `X-Stream-Protocol-Version`).
//! When the agent switches protocols, so does this server, with the agent's answer, and the
//! two connections are spliced byte for byte: the stream protocol (WebSocket channels or
//! SPDY) is spoken end to end between kubectl and the agent. When the agent refuses (a Wasm
//! container cannot be exec'd into; no such container), its `Status` goes back as it is,
//! which kubectl prints, after falling back from WebSocket to SPDY where it does that.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderName, Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::AppState;
use crate::logs::{node_endpoint, pod_container};
use crate::object;
use crate::request::Query;
use crate::status::{ApiError, ApiResult};

/// Request headers that carry the upgrade negotiation.
const FORWARDED_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Response headers of a switch that kubectl checks.
const RETURNED_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Proxies one `exec`, `attach` or `portforward` request for `pod`.
pub async fn proxy(
    state: &Arc<AppState>,
    pod: &Value,
    subresource: &str,
    method: &Method,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
) -> ApiResult<Response> {
    let query = Query::parse(raw_query);
    let name = object::name(pod);
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let path = if subresource == "portforward" {
        format!("/portForward/{namespace}/{name}")
    } else {
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            return Err(ApiError::bad_request(format!(
                "cannot {subresource} into a container in a completed pod; current phase is {phase}"
            )));
        }
        if subresource == "exec" && query.get("command").is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 command".to_string(),
            ));
        }
        if !["stdin", "stdout", "stderr"].iter().any(|k| query.flag(k)) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr".to_string(),
            ));
        }
        let container = pod_container(pod, &query)?;
        let verb = if subresource == "exec" {
            "exec"
        } else {
            "attach"
        };
        format!("/{verb}/{namespace}/{name}/{container}")
    };
    let Some(upgrade) = upgrade else {
        return Err(ApiError::bad_request(format!(
            "{subresource} needs a connection upgrade (WebSocket or SPDY/3.1)"
        )));
    };
    let endpoint = node_endpoint(state, node).await?;
    let target = match raw_query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    };
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("error dialing backend: node {node} at {endpoint}: {e}"),
        )
    };
    let tcp = tokio::net::TcpStream::connect(&endpoint)
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut request = http::Request::builder()
        .method(method.clone())
        .uri(&target)
        .header(header::HOST, endpoint.as_str());
    for name in FORWARDED_HEADERS {
        for value in headers.get_all(*name) {
            request = request.header(*name, value);
        }
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(format!("request to the node: {e}")))?;
    let mut answer = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The agent's refusal (a Status) goes back as it is.
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let body = answer
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut resp = Response::builder().status(status);
        if let Some(ct) = content_type {
            resp = resp.header(header::CONTENT_TYPE, ct);
        }
        return Ok(resp.body(Body::from(body)).expect("valid response"));
    }
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for name in RETURNED_HEADERS {
        let name = HeaderName::from_static(name);
        for value in answer.headers().get_all(&name) {
            resp = resp.header(&name, value);
        }
    }
    let backend = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(upgrade, backend) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!("stream upgrade failed: {e}");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    });
    Ok(resp.body(Body::empty()).expect("valid response"))
}
