//! Exec and attach sessions: the same protocol, whatever runs behind it.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::negotiate::{Negotiated, Protocol};
use crate::spdy::Session;
use crate::status::ExecOutcome;
use crate::{Error, ws};

/// Which streams the client asked for, from the request's query
/// (`stdin=true&stdout=true&stderr=true&tty=true`; absent means false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// Reads the four flags from a raw query string.
    pub fn from_query(query: &str) -> ExecOptions {
        let mut opts = ExecOptions::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let on = matches!(value, "true" | "1" | "True" | "TRUE");
            match key {
                "stdin" => opts.stdin = on,
                "stdout" => opts.stdout = on,
                "stderr" => opts.stderr = on,
                "tty" => opts.tty = on,
                _ => {}
            }
        }
        opts
    }
}

/// A terminal size from the client's resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// A byte source the handler reads the client's stdin from (EOF when the client's stdin ends).
pub type StdinReader = Box<dyn AsyncRead + Send + Unpin>;
/// A byte sink the handler writes the command's output to. Dropping it ends the stream.
pub type OutputWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// What the handler gets: the requested streams, and the client's terminal sizes.
pub struct ExecStreams {
    pub stdin: Option<StdinReader>,
    pub stdout: Option<OutputWriter>,
    pub stderr: Option<OutputWriter>,
    pub tty: bool,
    /// Terminal sizes as the client sends them (only with a tty; kubectl sends one at once).
    pub resize: mpsc::Receiver<TerminalSize>,
}

/// Serves an exec or attach session on `io`, an upgraded connection, with the protocol
/// `negotiated` chose. `handler` runs the command with the streams; when it returns, its
/// outcome is sent as the session's status and the session is closed the way kubectl expects.
pub async fn serve_exec<T, F, Fut>(
    io: T,
    negotiated: &Negotiated,
    opts: ExecOptions,
    handler: F,
) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(ExecStreams) -> Fut,
    Fut: Future<Output = ExecOutcome>,
{
    match negotiated.protocol {
        Protocol::WebSocketV5 => ws::serve_exec(io, true, opts, handler).await,
        Protocol::WebSocketV4 => ws::serve_exec(io, false, opts, handler).await,
        Protocol::Spdy => serve_spdy_exec(io, opts, handler).await,
        other => Err(Error::WrongProtocol(other)),
    }
}

/// How long the client has to open the streams its options announce (kubelet: 30 s).
const STREAM_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long to wait for the client to close after the session's end was sent.
pub(crate) const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_spdy_exec<T, F, Fut>(io: T, opts: ExecOptions, handler: F) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(ExecStreams) -> Fut,
    Fut: Future<Output = ExecOutcome>,
{
    let mut session = Session::start(io);
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let wanted = |e: &Option<_>, i: &Option<_>, o: &Option<_>, r: &Option<_>, z: &Option<_>| {
        e.is_none()
            || (opts.stdin && i.is_none())
            || (opts.stdout && o.is_none())
            || (opts.stderr && r.is_none())
            || (opts.tty && z.is_none())
    };
    let collect = async {
        while wanted(&error, &stdin, &stdout, &stderr, &resize) {
            let Some(stream) = session.accept().await else {
                return Err(Error::ClientGone);
            };
            let slot = match stream.header("streamtype") {
                Some("error") => &mut error,
                Some("stdin") => &mut stdin,
                Some("stdout") => &mut stdout,
                Some("stderr") => &mut stderr,
                Some("resize") => &mut resize,
                other => {
                    tracing::debug!(streamtype = ?other, "unexpected exec stream");
                    stream
                        .reset(crate::spdy::frame::status::PROTOCOL_ERROR)
                        .await;
                    continue;
                }
            };
            *slot = Some(stream);
        }
        Ok(())
    };
    tokio::time::timeout(STREAM_CREATION_TIMEOUT, collect)
        .await
        .map_err(|_| Error::StreamsMissing)??;
    let Some(mut error) = error else {
        return Err(Error::StreamsMissing);
    };

    let (resize_tx, resize_rx) = mpsc::channel(16);
    if let Some(stream) = resize {
        tokio::spawn(crate::resize::pump(stream, resize_tx));
    }
    let mut output_fins = Vec::new();
    let mut output = |s: Option<crate::spdy::Stream>| {
        s.map(|s| {
            output_fins.push(s.fin_sent());
            Box::new(s) as OutputWriter
        })
    };
    let streams = ExecStreams {
        stdin: stdin.map(|s| Box::new(s) as StdinReader),
        stdout: output(stdout),
        stderr: output(stderr),
        tty: opts.tty,
        resize: resize_rx,
    };
    let outcome = handler(streams).await;
    // All output must be on the wire before the status: kubectl reads both until EOF.
    for fin in output_fins {
        fin.await;
    }
    let status = serde_json::to_vec(&outcome.status_json()).unwrap_or_default();
    let _ = error.write_all(&status).await;
    let _ = error.shutdown().await;
    let error_fin = error.fin_sent();
    drop(error);
    error_fin.await;
    session.shutdown().await?;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.closed()).await;
    Ok(())
}
