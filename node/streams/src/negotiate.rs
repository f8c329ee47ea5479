//! Choosing the protocol of an upgrade request and the exact 101 response headers.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The subresource being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// WebSocket subprotocols of remote command (exec, attach).
pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
/// Port-forward's SPDY protocol name (`X-Stream-Protocol-Version`).
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of kubectl 1.31+'s port-forward tunnel: SPDY frames inside.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Header names of the SPDY upgrade.
pub const X_STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
pub const X_ACCEPTED_STREAM_PROTOCOL_VERSIONS: &str = "x-accepted-stream-protocol-versions";

/// The protocol both sides will speak after the 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Remote command over WebSocket, `v5.channel.k8s.io` (stdin close signal 255).
    WebSocketV5,
    /// Remote command over WebSocket, `v4.channel.k8s.io`.
    WebSocketV4,
    /// Port-forward over WebSocket channels (`v4.channel.k8s.io` or `portforward.k8s.io`
    /// subprotocol, ports from the query).
    WebSocketPortForward,
    /// SPDY/3.1 framing inside WebSocket binary messages (kubectl 1.31+ port-forward).
    SpdyOverWebSocket,
    /// Raw SPDY/3.1 with the chosen `X-Stream-Protocol-Version` (remote command v4 or
    /// port-forward).
    Spdy,
}

/// The outcome of negotiation: the protocol and the headers of the 101 response.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub kind: Kind,
    pub protocol: Protocol,
    /// The chosen subprotocol or `X-Stream-Protocol-Version` value.
    pub subprotocol: String,
    /// Exactly the headers to send with `101 Switching Protocols`.
    pub response_headers: HeaderMap,
}

/// Why a request cannot be upgraded. Send it as a Kubernetes `Status` ([`Self::status_json`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NegotiationError {
    pub message: String,
    /// For SPDY: the protocols the server accepts, for `X-Accepted-Stream-Protocol-Versions`.
    pub accepted: Vec<&'static str>,
}

impl NegotiationError {
    /// A refusal for a reason of the caller's, e.g. a runtime that cannot exec.
    pub fn new(message: impl Into<String>) -> Self {
        NegotiationError {
            message: message.into(),
            accepted: Vec::new(),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// A `metav1.Status` body: kubectl prints `Error from server (BadRequest): <message>`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": "BadRequest",
            "code": 400,
        })
    }

    /// Headers to send with the refusal (content type, accepted SPDY protocols).
    pub fn response_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for p in &self.accepted {
            h.append(
                X_ACCEPTED_STREAM_PROTOCOL_VERSIONS,
                HeaderValue::from_static(p),
            );
        }
        h
    }
}

/// Every value of a comma-separated, possibly repeated header, trimmed.
fn list(headers: &HeaderMap, name: impl header::AsHeaderName) -> Vec<&str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    list(headers, name)
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

/// Chooses the protocol for an upgrade request of `kind`.
pub fn negotiate(
    kind: Kind,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Negotiated, NegotiationError> {
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(NegotiationError::new(
            "upgrade request required: the request has no \"Connection: Upgrade\" header",
        ));
    }
    if has_token(headers, header::UPGRADE, "websocket") {
        negotiate_websocket(kind, method, headers)
    } else if has_token(headers, header::UPGRADE, "SPDY/3.1") {
        negotiate_spdy(kind, headers)
    } else {
        Err(NegotiationError::new(format!(
            "unsupported upgrade {:?}: expected \"websocket\" or \"SPDY/3.1\"",
            list(headers, header::UPGRADE).join(", ")
        )))
    }
}

fn negotiate_websocket(
    kind: Kind,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Negotiated, NegotiationError> {
    if method != Method::GET {
        return Err(NegotiationError::new(format!(
            "a websocket upgrade must use GET, not {method}"
        )));
    }
    if list(headers, header::SEC_WEBSOCKET_VERSION) != ["13"] {
        return Err(NegotiationError::new(
            "unsupported websocket version: expected \"Sec-WebSocket-Version: 13\"",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| NegotiationError::new("websocket upgrade without Sec-WebSocket-Key"))?;
    let supported: &[(&str, Protocol)] = match kind {
        Kind::Exec | Kind::Attach => &[
            (V5_CHANNEL, Protocol::WebSocketV5),
            (V4_CHANNEL, Protocol::WebSocketV4),
        ],
        Kind::PortForward => &[
            (SPDY_TUNNEL, Protocol::SpdyOverWebSocket),
            (V4_CHANNEL, Protocol::WebSocketPortForward),
            (PORT_FORWARD, Protocol::WebSocketPortForward),
        ],
    };
    let offered = list(headers, header::SEC_WEBSOCKET_PROTOCOL);
    // The client's order decides, as in apimachinery's wsstream handshake.
    let (name, protocol) = offered
        .iter()
        .find_map(|o| supported.iter().find(|(s, _)| s == o))
        .ok_or_else(|| {
            NegotiationError::new(format!(
                "none of the offered websocket subprotocols [{}] is supported, expected one of [{}]",
                offered.join(", "),
                supported.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let mut response = HeaderMap::new();
    response.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|_| NegotiationError::new("invalid Sec-WebSocket-Key"))?,
    );
    response.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(name),
    );
    Ok(Negotiated {
        kind,
        protocol: *protocol,
        subprotocol: (*name).to_owned(),
        response_headers: response,
    })
}

fn negotiate_spdy(kind: Kind, headers: &HeaderMap) -> Result<Negotiated, NegotiationError> {
    let supported: &[&'static str] = match kind {
        // v5 over SPDY is v4 plus nothing kubectl uses; kubelet answers v4 too.
        Kind::Exec | Kind::Attach => &[V4_CHANNEL],
        Kind::PortForward => &[PORT_FORWARD],
    };
    let offered = list(headers, X_STREAM_PROTOCOL_VERSION);
    let Some(name) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| *s == o))
    else {
        return Err(NegotiationError {
            message: format!(
                "none of the offered stream protocols [{}] is supported, expected one of [{}]",
                offered.join(", "),
                supported.join(", ")
            ),
            accepted: supported.to_vec(),
        });
    };
    let mut response = HeaderMap::new();
    response.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    response.insert(X_STREAM_PROTOCOL_VERSION, HeaderValue::from_static(name));
    Ok(Negotiated {
        kind,
        protocol: Protocol::Spdy,
        subprotocol: (*name).to_owned(),
        response_headers: response,
    })
}
