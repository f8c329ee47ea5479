//! The server side of kubectl's stream protocols: `exec`, `attach` and `port-forward`.
//!
//! The crate knows nothing of pods or runtimes. The caller (the node agent) receives the
//! upgrade request, asks [`negotiate`] which protocol to speak, answers `101` with
//! [`Negotiated::response_headers`] (or the [`NegotiationError`] as a `Status`), and hands the
//! upgraded connection to [`serve_exec`] or [`serve_port_forward`] together with a handler
//! that runs the command or dials the port.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::rt::TokioIo;
//! use skiff_streams::{ExecOptions, ExecOutcome, Kind, negotiate, serve_exec};
//! use tokio::io::AsyncWriteExt;
//!
//! async fn exec(mut req: http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
//!     let negotiated = match negotiate(Kind::Exec, req.method(), req.headers()) {
//!         Ok(n) => n,
//!         Err(e) => {
//!             let mut resp = http::Response::new(Full::from(e.status_json().to_string()));
//!             *resp.status_mut() = e.status_code();
//!             *resp.headers_mut() = e.response_headers();
//!             return resp;
//!         }
//!     };
//!     let opts = ExecOptions::from_query(req.uri().query().unwrap_or(""));
//!     let upgrade = hyper::upgrade::on(&mut req);
//!     let mut resp = http::Response::new(Full::new(Bytes::new()));
//!     *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
//!     *resp.headers_mut() = negotiated.response_headers.clone();
//!     tokio::spawn(async move {
//!         let io = TokioIo::new(upgrade.await.expect("upgraded"));
//!         let _ = serve_exec(io, &negotiated, opts, |mut streams| async move {
//!             if let Some(out) = &mut streams.stdout {
//!                 let _ = out.write_all(b"hello\n").await;
//!             }
//!             ExecOutcome::Exited(0)
//!         })
//!         .await;
//!     });
//!     resp
//! }
//! ```
//!
//! Protocols served, over any `AsyncRead + AsyncWrite` byte stream:
//! - remote command over WebSocket, `v5.channel.k8s.io` (kubectl 1.30+) and
//!   `v4.channel.k8s.io`;
//! - remote command over SPDY/3.1, `v4.channel.k8s.io` (kubectl 1.27–1.29, and the fallback
//!   of later versions);
//! - port-forward over SPDY/3.1, raw (`portforward.k8s.io`, kubectl 1.27–1.30) or inside a
//!   WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+);
//! - port-forward over WebSocket channels (`v4.channel.k8s.io`, kube-rs and other clients).
//!
//! SPDY/3.1 is implemented here by hand ([`spdy`]): no Rust crate serves it.
//!
//! Known limits:
//! - Backpressure is per connection, not per stream: a stream whose reader is slow (a
//!   command not reading stdin, a forwarded port not reading) stops the session's reader once
//!   its buffers (about 64 KiB) are full, and with it the other streams and PING answers.
//!   Per-stream windows cannot help against kubectl, whose SPDY code ignores them.
//! - SPDY send windows are kept only for clients that show they keep windows (a
//!   WINDOW_UPDATE or SETTINGS_INITIAL_WINDOW_SIZE); kubectl never does and would stall.
//! - Half a port-forward stream pair is given up after 30 s, checked when the next stream
//!   arrives.

pub mod exec;
pub mod negotiate;
pub mod portforward;
pub mod resize;
pub mod spdy;
pub mod status;
mod ws;
mod ws_portforward;

pub use exec::{ExecOptions, ExecStreams, OutputWriter, StdinReader, TerminalSize, serve_exec};
pub use negotiate::{Kind, Negotiated, NegotiationError, Protocol, negotiate};
pub use portforward::serve_port_forward;
pub use status::ExecOutcome;

/// Why a session failed after the upgrade.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("protocol {0:?} cannot serve this session")]
    WrongProtocol(Protocol),
    #[error("the client went away before opening its streams")]
    ClientGone,
    #[error("the client did not open the streams its options announce")]
    StreamsMissing,
    #[error("port-forward over websocket needs 1 to 127 ports, got {0}")]
    Ports(usize),
    #[error(transparent)]
    Spdy(#[from] spdy::SessionError),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("session task failed: {0}")]
    Task(String),
}
