//! The server side of kubectl's stream protocols: `exec`, `attach` and `port-forward`.
//!
//! The crate knows nothing of pods or runtimes. The caller (the node agent) receives the
//! upgrade request, asks [`negotiate`] which protocol to speak, answers `101` with
//! [`Negotiated::response_headers`] (or the [`NegotiationError`] as a `Status`), and hands the
//! upgraded connection to [`serve_exec`] or [`serve_port_forward`] together with a handler
//! that runs the command or dials the port.
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
