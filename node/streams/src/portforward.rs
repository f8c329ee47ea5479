//! Port-forward sessions: every connection kubectl accepts locally becomes a pair of SPDY
//! streams (`error`, `data`) naming the remote port; the server dials the port through the
//! caller's `connect` and splices.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::negotiate::{Negotiated, Protocol};
use crate::spdy::frame::status;
use crate::spdy::{Session, Stream};
use crate::{Error, ws};

/// How long half of a stream pair may wait for the other (kubelet: 30 s).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves a port-forward session on `io` with the negotiated protocol. For every forwarded
/// connection it calls `connect(port)`; on `Ok` the connection is spliced to the client's
/// stream, on `Err(message)` the message goes to the client's error stream (kubectl prints
/// `an error occurred forwarding L -> R: <message>`). Returns when the client has gone.
///
/// `ports_from_query` is only used by the WebSocket channel protocol, whose ports travel in
/// the query (`ports=80,8080`); SPDY names the port in each stream.
pub async fn serve_port_forward<T, C, Fut, Conn>(
    io: T,
    negotiated: &Negotiated,
    ports_from_query: Vec<u16>,
    connect: C,
) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Conn, String>> + Send + 'static,
    Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match negotiated.protocol {
        Protocol::Spdy => serve_spdy(Session::start(io), connect).await,
        Protocol::SpdyOverWebSocket => {
            let bytes = ws::byte_stream(io).await;
            serve_spdy(Session::start(bytes), connect).await
        }
        Protocol::WebSocketPortForward => {
            crate::ws_portforward::serve(io, ports_from_query, connect).await
        }
        other => Err(Error::WrongProtocol(other)),
    }
}

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    since: Option<tokio::time::Instant>,
}

async fn serve_spdy<C, Fut, Conn>(mut session: Session, connect: C) -> Result<(), Error>
where
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Conn, String>> + Send + 'static,
    Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connect = Arc::new(connect);
    let mut pairs: HashMap<String, (u16, Pair)> = HashMap::new();
    while let Some(stream) = session.accept().await {
        // Pairs whose other half never came are given up, as kubelet does.
        let now = tokio::time::Instant::now();
        let stale: Vec<String> = pairs
            .iter()
            .filter(|(_, (_, p))| p.since.is_some_and(|t| now - t > PAIR_TIMEOUT))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some((_, pair)) = pairs.remove(&key) {
                for s in [pair.error, pair.data].into_iter().flatten() {
                    s.reset(status::CANCEL).await;
                }
            }
        }

        let port = stream.header("port").and_then(|p| p.parse::<u16>().ok());
        let kind = stream.header("streamtype").map(str::to_owned);
        let (Some(port), Some(kind)) = (port.filter(|p| *p != 0), kind) else {
            tracing::debug!(headers = ?stream.headers(), "port-forward stream without a valid port or streamtype");
            stream.reset(status::PROTOCOL_ERROR).await;
            continue;
        };
        // Kubelet pairs by request id; without one, a data stream follows its error stream.
        let key = match stream.header("requestid") {
            Some(id) => id.to_owned(),
            None if kind == "data" => stream.id().saturating_sub(2).to_string(),
            None => stream.id().to_string(),
        };
        let (_, pair) = pairs.entry(key.clone()).or_insert_with(|| {
            (
                port,
                Pair {
                    since: Some(now),
                    ..Pair::default()
                },
            )
        });
        let slot = match kind.as_str() {
            "error" => &mut pair.error,
            "data" => &mut pair.data,
            _ => {
                stream.reset(status::PROTOCOL_ERROR).await;
                continue;
            }
        };
        if slot.is_some() {
            stream.reset(status::PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(stream);
        if pair.error.is_some() && pair.data.is_some() {
            let (port, pair) = pairs.remove(&key).expect("pair present");
            let (Some(error), Some(data)) = (pair.error, pair.data) else {
                continue;
            };
            let connect = connect.clone();
            tokio::spawn(forward(port, error, data, connect));
        }
    }
    session.closed().await?;
    Ok(())
}

async fn forward<C, Fut, Conn>(port: u16, mut error: Stream, data: Stream, connect: Arc<C>)
where
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Conn, String>> + Send + 'static,
    Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match connect(port).await {
        Ok(conn) => {
            // The forward ends when the pod's side does, as the kubelet's does: kubectl
            // 1.27-1.30 closes the local connection only once the data stream has ended
            // *and* the error stream has, and its local client may wait for that end
            // before it closes its own side (an HTTP/1.0-style read to EOF).
            let (mut conn_r, mut conn_w) = tokio::io::split(conn);
            let (mut data_r, mut data_w) = tokio::io::split(data);
            let up = async {
                let _ = tokio::io::copy(&mut data_r, &mut conn_w).await;
                let _ = conn_w.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut conn_r, &mut data_w).await;
                let _ = data_w.shutdown().await;
            };
            tokio::pin!(up, down);
            let mut up_done = false;
            loop {
                tokio::select! {
                    _ = &mut down => break,
                    _ = &mut up, if !up_done => up_done = true,
                }
            }
        }
        Err(message) => {
            let _ = error.write_all(message.as_bytes()).await;
            data.reset(status::CANCEL).await;
        }
    }
    // kubectl waits for the error stream's end before it lets the connection go.
    let _ = error.shutdown().await;
}
