//! Port-forward over WebSocket channels (`v4.channel.k8s.io`, `portforward.k8s.io`), the
//! protocol of kube-rs and the Python client (kubectl does not speak it): port `i` of the
//! query uses channel `2i` for data both ways and `2i+1` for errors. Each channel opens with
//! `[channel, port as u16 little-endian]`. One connection per port, dialled at the start;
//! the session closes once every port is done.

use std::future::Future;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::Error;

pub(crate) async fn serve<T, C, Fut, Conn>(io: T, ports: Vec<u16>, connect: C) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Conn, String>> + Send + 'static,
    Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if ports.is_empty() || ports.len() > 127 {
        return Err(Error::Ports(ports.len()));
    }
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(crate::ws::config())).await;
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i as u8, 2 * i as u8 + 1] {
            let [lo, hi] = port.to_le_bytes();
            let _ = out_tx
                .send(Message::Binary(Bytes::from(vec![channel, lo, hi])))
                .await;
        }
    }
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
        inputs.push(in_tx);
        let out = out_tx.clone();
        let conn = connect(port);
        tasks.push(tokio::spawn(async move {
            let data = 2 * i as u8;
            match conn.await {
                Err(message) => {
                    let mut msg = vec![data + 1];
                    msg.extend_from_slice(message.as_bytes());
                    let _ = out.send(Message::Binary(Bytes::from(msg))).await;
                }
                Ok(conn) => {
                    let (mut r, mut w) = tokio::io::split(conn);
                    let up = async move {
                        while let Some(bytes) = in_rx.recv().await {
                            if w.write_all(&bytes).await.is_err() {
                                break;
                            }
                        }
                        let _ = w.shutdown().await;
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 32 * 1024 + 1];
                        buf[0] = data;
                        while let Ok(n) = r.read(&mut buf[1..]).await {
                            if n == 0 {
                                break;
                            }
                            let msg = Message::Binary(Bytes::copy_from_slice(&buf[..=n]));
                            if out.send(msg).await.is_err() {
                                break;
                            }
                        }
                    };
                    // The remote side ending ends this port; the client has no half-close.
                    tokio::select! {
                        _ = down => {}
                        _ = async { up.await; std::future::pending::<()>().await } => {}
                    }
                }
            }
        }));
    }
    drop(out_tx);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let close = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || close {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
    });
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let reader = async {
        while let Some(Ok(msg)) = source.next().await {
            let Message::Binary(data) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            let i = usize::from(channel / 2);
            if channel % 2 == 0
                && let Some(tx) = inputs.get(i)
            {
                let _ = tx.send(Bytes::copy_from_slice(payload)).await;
            }
        }
    };
    let all_done = async {
        for task in tasks.drain(..) {
            let _ = task.await;
        }
    };
    tokio::select! {
        _ = reader => {
            // The client went: its connections go too.
            for abort in aborts {
                abort.abort();
            }
        }
        _ = all_done => {}
    }
    let _ = writer.await;
    Ok(())
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}
