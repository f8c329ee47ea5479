//! SPDY/3.1, server side, written here because no Rust crate serves it: the protocol died in
//! browsers in 2016, but kubectl still speaks it for port-forward (every version, inside a
//! WebSocket from 1.31 on) and for exec/attach up to 1.29. The behaviour follows the SPDY/3.1
//! draft and what moby/spdystream, kubectl's implementation, sends and expects.

pub mod flow;
pub mod frame;
pub mod headers;
pub mod session;

pub use frame::{Codec, Frame, FrameError, FrameHeader};
pub use headers::{HeaderDecoder, HeaderEncoder, HeaderError, Headers};
pub use session::{Session, SessionError, Stream};
