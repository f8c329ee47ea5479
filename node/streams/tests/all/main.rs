//! skiff-streams against the real kubectl binaries (1.27: SPDY, 1.33: WebSocket) and the
//! SPDY codec on its own.

mod commands;
mod exec;
mod negotiate;
mod portforward;
mod server;
mod spdy_codec;
mod tty;
mod websocket;
