//! A server-side SPDY/3.1 session over any byte stream: accepts the streams the client opens,
//! replies to them, routes DATA, FIN and RST_STREAM, answers PING, and keeps the flow control
//! windows.
//!
//! Each accepted stream is handed out as a [`Stream`], an `AsyncRead + AsyncWrite` whose
//! reads are the client's DATA frames (EOF at its FIN) and whose writes become DATA frames
//! (dropping it or shutting it down sends FIN).
//!
//! The server never sends a byte before the client's first frame: client-go reads the 101
//! response through a buffer that it then throws away, losing anything the server sent early.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::flow::{RecvWindow, SendWindow};
use super::frame::{Codec, FLAG_FIN, Frame, FrameError, status};
use super::headers::{self, Headers};

/// Streams the client may have open at once; more are refused with REFUSED_STREAM.
pub const MAX_CONCURRENT_STREAMS: usize = 1000;
/// Largest DATA payload the server sends in one frame.
const MAX_SEND_CHUNK: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("spdy protocol error: {0}")]
    Frame(#[from] FrameError),
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    #[error("writing spdy frames: {0}")]
    Write(std::io::Error),
}

enum Out {
    Frame(Frame),
    /// Flush, then shut the write side down.
    Shutdown,
}

/// Flow control state shared by the reader, the writer and the stream pumps.
struct Flow {
    /// Windows of data the client may still send to each stream (0 = the session).
    send_session: SendWindow,
    /// Send-side enforcement starts once the client shows that it keeps windows itself by
    /// sending a WINDOW_UPDATE: moby/spdystream (every kubectl) neither sends nor honours them,
    /// and would stall forever behind a 64 KiB window it never reopens.
    peer_keeps_windows: AtomicBool,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE, for streams opened from now on.
    initial_window: std::sync::atomic::AtomicU32,
}

/// One stream the client opened.
pub struct Stream {
    id: u32,
    headers: Headers,
    io: DuplexStream,
    ctl: mpsc::Sender<Out>,
    sent_fin: watch::Receiver<bool>,
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The SYN_STREAM headers, names lowercase.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        headers::get(&self.headers, name)
    }

    /// Resolves once every byte written so far and the FIN have been queued for the wire
    /// (or the stream was reset). Use after dropping or shutting down the writer.
    pub fn fin_sent(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.sent_fin.clone();
        async move {
            let _ = rx.wait_for(|sent| *sent).await;
        }
    }

    /// Resets the stream with the given RST_STREAM status.
    pub async fn reset(self, status: u32) {
        let _ = self
            .ctl
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.id,
                status,
            }))
            .await;
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct Entry {
    inbound: Option<mpsc::Sender<Bytes>>,
    pumps: [JoinHandle<()>; 2],
    recv: RecvWindow,
    send: Arc<SendWindow>,
}

impl Entry {
    fn finished(&self) -> bool {
        self.inbound.is_none() && self.pumps.iter().all(|p| p.is_finished())
    }
    fn abort(&mut self) {
        self.inbound = None;
        for p in &self.pumps {
            p.abort();
        }
    }
}

/// A running session. Dropping it ends the session's tasks.
pub struct Session {
    ctl: mpsc::Sender<Out>,
    incoming: mpsc::Receiver<Stream>,
    reader: JoinHandle<Result<(), SessionError>>,
    writer: JoinHandle<Result<(), SessionError>>,
    last_accepted: Arc<std::sync::atomic::AtomicU32>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Session {
    /// Starts serving `io`, an upgraded connection on which the client speaks first.
    pub fn start<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (ctl, ctl_rx) = mpsc::channel(256);
        let (incoming_tx, incoming) = mpsc::channel(64);
        let flow = Arc::new(Flow {
            send_session: SendWindow::new(),
            peer_keeps_windows: AtomicBool::new(false),
            initial_window: std::sync::atomic::AtomicU32::new(super::flow::INITIAL_WINDOW),
        });
        let last_accepted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let writer = tokio::spawn(write_loop(w, ctl_rx));
        let reader = tokio::spawn(read_loop(
            r,
            ctl.clone(),
            incoming_tx,
            flow,
            last_accepted.clone(),
        ));
        Session {
            ctl,
            incoming,
            reader,
            writer,
            last_accepted,
        }
    }

    /// The next stream the client opens; `None` once the client has gone or the session failed.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Waits until the client closes the connection (or the session fails).
    pub async fn closed(&mut self) -> Result<(), SessionError> {
        match (&mut self.reader).await {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(SessionError::Protocol(format!(
                "session reader failed: {e}"
            ))),
        }
    }

    /// Sends GOAWAY, flushes everything queued and shuts the connection's write side down.
    pub async fn shutdown(&mut self) -> Result<(), SessionError> {
        let last = self.last_accepted.load(Ordering::Relaxed);
        let _ = self
            .ctl
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: 0,
            }))
            .await;
        let _ = self.ctl.send(Out::Shutdown).await;
        match (&mut self.writer).await {
            Ok(result) => result,
            Err(e) => Err(SessionError::Protocol(format!(
                "session writer failed: {e}"
            ))),
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
) -> Result<(), SessionError> {
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    while let Some(out) = rx.recv().await {
        let mut shutdown = false;
        let mut next = Some(out);
        // Batch what is already queued into one write.
        while let Some(out) = next.take() {
            match out {
                Out::Frame(frame) => codec.encode(&frame, &mut buf)?,
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        w.write_all(&buf).await.map_err(SessionError::Write)?;
        buf.clear();
        w.flush().await.map_err(SessionError::Write)?;
        if shutdown {
            let _ = w.shutdown().await;
            return Ok(());
        }
    }
    Ok(())
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    ctl: mpsc::Sender<Out>,
    incoming: mpsc::Sender<Stream>,
    flow: Arc<Flow>,
    last_accepted: Arc<std::sync::atomic::AtomicU32>,
) -> Result<(), SessionError> {
    let mut codec = Codec::new();
    let mut streams: HashMap<u32, Entry> = HashMap::new();
    let mut last_peer_id = 0u32;
    let mut session_recv = RecvWindow::new();
    let send = |frame| {
        let ctl = ctl.clone();
        async move {
            let _ = ctl.send(Out::Frame(frame)).await;
        }
    };
    let result = loop {
        let frame = match codec.read_frame(&mut r).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                break Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "malformed spdy frame");
                send(Frame::GoAway {
                    last_good_stream_id: last_peer_id,
                    status: status::PROTOCOL_ERROR,
                })
                .await;
                break Err(e.into());
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Client streams are odd and strictly increasing.
                if stream_id % 2 == 0 || stream_id <= last_peer_id {
                    send(Frame::GoAway {
                        last_good_stream_id: last_peer_id,
                        status: status::PROTOCOL_ERROR,
                    })
                    .await;
                    break Err(SessionError::Protocol(format!(
                        "syn_stream with stream id {stream_id} after {last_peer_id}"
                    )));
                }
                last_peer_id = stream_id;
                streams.retain(|_, e| !e.finished());
                if streams.len() >= MAX_CONCURRENT_STREAMS {
                    send(Frame::RstStream {
                        stream_id,
                        status: status::REFUSED_STREAM,
                    })
                    .await;
                    continue;
                }
                send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                })
                .await;
                let (stream, mut entry) = open_stream(stream_id, headers, ctl.clone(), &flow);
                if flags & FLAG_FIN != 0 {
                    entry.inbound = None;
                }
                streams.insert(stream_id, entry);
                last_accepted.store(stream_id, Ordering::Relaxed);
                if incoming.send(stream).await.is_err() {
                    // Nobody accepts streams any more: refuse it.
                    if let Some(mut e) = streams.remove(&stream_id) {
                        e.abort();
                    }
                    send(Frame::RstStream {
                        stream_id,
                        status: status::REFUSED_STREAM,
                    })
                    .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                session_recv.received(data.len());
                let Some(entry) = streams.get_mut(&stream_id) else {
                    send(Frame::RstStream {
                        stream_id,
                        status: status::INVALID_STREAM,
                    })
                    .await;
                    continue;
                };
                entry.recv.received(data.len());
                if let Some(tx) = &entry.inbound {
                    if !data.is_empty() {
                        let len = data.len();
                        if tx.send(data).await.is_err() {
                            entry.inbound = None;
                        } else {
                            // Data handed to the stream's buffer is consumed as far as the
                            // session window goes; the stream window reopens in its pump.
                            if let Some(delta) = session_recv.consumed(len) {
                                send(Frame::WindowUpdate {
                                    stream_id: 0,
                                    delta,
                                })
                                .await;
                            }
                        }
                    }
                } else if !data.is_empty() {
                    // DATA after the client's own FIN.
                    send(Frame::RstStream {
                        stream_id,
                        status: status::STREAM_IN_USE,
                    })
                    .await;
                }
                if flags & FLAG_FIN != 0 {
                    entry.inbound = None;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(mut entry) = streams.remove(&stream_id) {
                    entry.abort();
                }
            }
            Frame::Ping { id } => {
                // Odd ids are the client's pings; even ones would answer pings of ours.
                if id % 2 == 1 {
                    send(Frame::Ping { id }).await;
                }
            }
            Frame::GoAway { .. } => {
                // The client opens no new streams; the open ones go on until it closes.
            }
            Frame::WindowUpdate { stream_id, delta } => {
                flow.peer_keeps_windows.store(true, Ordering::Relaxed);
                let result = if stream_id == 0 {
                    flow.send_session.grow(delta)
                } else if let Some(entry) = streams.get(&stream_id) {
                    entry.send.grow(delta)
                } else {
                    Ok(())
                };
                if result.is_err() {
                    send(Frame::RstStream {
                        stream_id,
                        status: status::FLOW_CONTROL_ERROR,
                    })
                    .await;
                }
            }
            Frame::Settings { entries, .. } => {
                for (_, id, value) in entries {
                    // SETTINGS_INITIAL_WINDOW_SIZE
                    if id == 7 {
                        // A client that sets a window keeps windows.
                        flow.peer_keeps_windows.store(true, Ordering::Relaxed);
                        flow.initial_window.store(value, Ordering::Relaxed);
                        for entry in streams.values() {
                            entry.send.set_initial(value);
                        }
                    }
                }
            }
            Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Unknown { .. } => {}
        }
    };
    // Dropping the entries ends every stream's inbound side: readers see EOF.
    streams.clear();
    result
}

fn open_stream(
    id: u32,
    headers: Headers,
    ctl: mpsc::Sender<Out>,
    flow: &Arc<Flow>,
) -> (Stream, Entry) {
    let (user, inner) = tokio::io::duplex(64 * 1024);
    let (mut inner_r, mut inner_w) = tokio::io::split(inner);
    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
    let (fin_tx, fin_rx) = watch::channel(false);
    let send_window = Arc::new(SendWindow::with_initial(
        flow.initial_window.load(Ordering::Relaxed),
    ));

    let inbound_ctl = ctl.clone();
    let inbound = tokio::spawn(async move {
        let mut window = RecvWindow::new();
        while let Some(data) = in_rx.recv().await {
            if inner_w.write_all(&data).await.is_err() {
                break;
            }
            window.received(data.len());
            if let Some(delta) = window.consumed(data.len()) {
                let _ = inbound_ctl
                    .send(Out::Frame(Frame::WindowUpdate {
                        stream_id: id,
                        delta,
                    }))
                    .await;
            }
        }
        let _ = inner_w.shutdown().await;
    });

    let outbound_ctl = ctl.clone();
    let outbound_window = send_window.clone();
    let flow = flow.clone();
    let outbound = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_SEND_CHUNK];
        loop {
            let n = match inner_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let allowed = if flow.peer_keeps_windows.load(Ordering::Relaxed) {
                    let stream_ok = outbound_window.take(rest.len()).await;
                    let both_ok = flow.send_session.take(stream_ok).await;
                    outbound_window.give_back(stream_ok - both_ok);
                    both_ok
                } else {
                    rest.len()
                };
                let (chunk, tail) = rest.split_at(allowed.min(rest.len()));
                rest = tail;
                let frame = Frame::Data {
                    stream_id: id,
                    flags: 0,
                    data: Bytes::copy_from_slice(chunk),
                };
                if outbound_ctl.send(Out::Frame(frame)).await.is_err() {
                    return;
                }
            }
        }
        let _ = outbound_ctl
            .send(Out::Frame(Frame::Data {
                stream_id: id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }))
            .await;
        let _ = fin_tx.send(true);
    });

    let stream = Stream {
        id,
        headers,
        io: user,
        ctl,
        sent_fin: fin_rx,
    };
    let entry = Entry {
        inbound: Some(in_tx),
        pumps: [inbound, outbound],
        recv: RecvWindow::new(),
        send: send_window,
    };
    (stream, entry)
}
