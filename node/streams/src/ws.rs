//! Remote command over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`), and the byte
//! stream inside kubectl's port-forward tunnel.

use std::future::Future;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::Error;
use crate::exec::{CLOSE_TIMEOUT, ExecOptions, ExecStreams, OutputWriter, StdinReader};
use crate::resize::ResizeDecoder;
use crate::status::ExecOutcome;

/// Channel numbers of remote command.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[255, channel]` half-closes a channel.
const CLOSE_SIGNAL: u8 = 255;

const BUFFER: usize = 64 * 1024;

/// Limits on what the client may send in one message: kubectl's messages are at most a
/// 32 KiB copy buffer plus a channel byte; tungstenite's defaults (64 MiB) are far too trusting.
pub(crate) fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Forwards what is written to `inner`'s peer as messages on `channel`.
fn output_pump(
    channel: u8,
    mut inner: DuplexStream,
    out: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024 + 1];
        loop {
            buf[0] = channel;
            match inner.read(&mut buf[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = Message::Binary(Bytes::copy_from_slice(&buf[..=n]));
                    if out.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

pub(crate) async fn serve_exec<T, F, Fut>(
    io: T,
    v5: bool,
    opts: ExecOptions,
    handler: F,
) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(ExecStreams) -> Fut,
    Fut: Future<Output = ExecOutcome>,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let close = matches!(msg, Message::Close(_));
            if let Err(e) = sink.send(msg).await {
                return Err(Error::WebSocket(e));
            }
            if close {
                break;
            }
        }
        Ok(())
    });

    // Kubelet and kube-apiserver open with an empty message on the first output channel.
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = out_tx.send(Message::Binary(Bytes::from(vec![first]))).await;

    let (stdin_user, mut stdin_inner) = if opts.stdin {
        let (user, inner) = tokio::io::duplex(BUFFER);
        (Some(Box::new(user) as StdinReader), Some(inner))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = mpsc::channel(16);
    let tty = opts.tty;
    let reader = tokio::spawn(async move {
        let mut resize = ResizeDecoder::default();
        while let Some(msg) = source.next().await {
            let data = match msg {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(stdin) = &mut stdin_inner
                        && stdin.write_all(payload).await.is_err()
                    {
                        // The command stopped reading stdin: drop what else comes.
                        stdin_inner = None;
                    }
                }
                RESIZE if tty => {
                    for size in resize.feed(payload) {
                        let _ = resize_tx.try_send(size);
                    }
                }
                CLOSE_SIGNAL if v5 && payload.first() == Some(&STDIN) => {
                    if let Some(mut stdin) = stdin_inner.take() {
                        let _ = stdin.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        // The client is gone or closed: on v4 that is the only end of stdin.
        drop(stdin_inner);
    });

    let mut pumps = Vec::new();
    let mut output = |wanted: bool, channel: u8| {
        wanted.then(|| {
            let (user, inner) = tokio::io::duplex(BUFFER);
            pumps.push(output_pump(channel, inner, out_tx.clone()));
            Box::new(user) as OutputWriter
        })
    };
    let streams = ExecStreams {
        stdin: stdin_user,
        stdout: output(opts.stdout, STDOUT),
        stderr: output(opts.stderr, STDERR),
        tty,
        resize: resize_rx,
    };
    let outcome = handler(streams).await;
    for pump in pumps {
        let _ = pump.await;
    }
    let mut status = vec![ERROR];
    status.extend(serde_json::to_vec(&outcome.status_json()).unwrap_or_default());
    let _ = out_tx.send(Message::Binary(Bytes::from(status))).await;
    // kubectl reads the error channel until EOF, which only a Close with code 1000 gives.
    let _ = out_tx.send(normal_close()).await;
    drop(out_tx);
    let written = writer.await;
    // Wait for the client's Close so that closing the socket cannot reset unread data away.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, reader).await;
    match written {
        Ok(result) => result,
        Err(e) => Err(Error::Task(e.to_string())),
    }
}

/// Turns a WebSocket whose binary messages carry a byte stream (kubectl's port-forward tunnel)
/// into that byte stream. Message boundaries carry no meaning; the end of the returned stream's
/// writes sends a Close with code 1000.
pub(crate) async fn byte_stream<T>(io: T) -> DuplexStream
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    let (user, inner) = tokio::io::duplex(BUFFER);
    tokio::spawn(async move {
        let (mut sink, mut source) = ws.split();
        let (mut inner_r, mut inner_w) = tokio::io::split(inner);
        let up = async move {
            while let Some(msg) = source.next().await {
                match msg {
                    Ok(Message::Binary(data)) => {
                        if inner_w.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = inner_w.shutdown().await;
        };
        let down = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match inner_r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let msg = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                        if sink.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.send(normal_close()).await;
        };
        tokio::join!(up, down);
    });
    user
}
