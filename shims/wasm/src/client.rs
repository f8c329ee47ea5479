//! A guest's outgoing `wasi:http` requests, sent from its pod's network.
//!
//! wasmtime-wasi-http's own client connects with `TcpStream::connect`, which makes its socket
//! in the calling thread's namespace and lets the kernel pick the source address. A pod
//! with a namespace of its own can use it polled inside that namespace, but a pod that has
//! only an address in the namespace address-only pods share needs its socket bound to that
//! address (or the peer would see another pod's), and its loopback mapped to itself. So
//! Skiff opens the connection itself ([`PodNet::outgoing`]) and hands it to hyper's HTTP/1
//! client, with rustls and the webpki roots for `https`, and the request options' connect,
//! first-byte and between-bytes timeouts as wasmtime's client applies them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, timeout};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use crate::netns::PodNet;

/// wasmtime's client's default for each of the three timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What the guest gets back: the response, and the connection's own work, which ends when
/// the response body has been read (or the connection failed).
pub(crate) type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Sends `req` (absolute URI, as wasmtime-wasi-http hands it over) from `net`.
pub(crate) async fn send(
    net: PodNet,
    mut req: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Sent, Error> {
    let uri = req.uri();
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let options = options.unwrap_or_default();
    let connect_timeout = options.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let first_byte = options.first_byte_timeout.unwrap_or(DEFAULT_TIMEOUT);
    // A zero interval would never let a frame through; wasmtime clamps it the same way.
    let between_bytes = options
        .between_bytes_timeout
        .unwrap_or(DEFAULT_TIMEOUT)
        .max(Duration::from_nanos(1));

    let stream = timeout(connect_timeout, connect(&net, &host, port))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.as_str())
            .map_err(Error::InvalidDnsNameError)?
            .to_owned();
        let tls = timeout(connect_timeout, tls_connector().connect(name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // On the wire the request line names only the path: the authority went into `Host`.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *req.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection is driven while the response head is awaited, then handed back.
    let mut conn = Box::pin(conn);
    let mut conn_done = false;
    let response = sender.send_request(req);
    tokio::pin!(response);
    let deadline = tokio::time::sleep(first_byte);
    tokio::pin!(deadline);
    let response = loop {
        tokio::select! {
            r = &mut response => break r?,
            r = &mut conn, if !conn_done => {
                conn_done = true;
                r?;
            }
            () = &mut deadline => return Err(Error::ConnectionReadTimeout),
        }
    };
    drop(sender);
    let response = response.map(|body| {
        TimedBody {
            body,
            idle: between_bytes,
            timer: Box::pin(tokio::time::sleep(between_bytes)),
        }
        .boxed_unsync()
    });
    let io = async move {
        match conn_done {
            false => conn.await.map_err(Error::from),
            true => Ok(()),
        }
    };
    Ok((response, Box::new(io)))
}

/// A TCP connection to `host:port` from the pod: every address the name resolves to, in
/// turn, until one answers. Names are resolved as the pod's `resolv.conf` says.
async fn connect(net: &PodNet, host: &str, port: u16) -> Result<TcpStream, Error> {
    // wasmtime reports this error (its text) as a DNS error to the guest.
    let addresses = net
        .resolver
        .lookup(host, port)
        .await
        .map_err(Error::Connect)?;
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for address in addresses {
        let to = net.destination(address);
        match net.outgoing(to) {
            Ok(socket) => match socket.connect(to).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
    }
    Err(match last.kind() {
        io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
        _ => Error::Connect(last),
    })
}

/// A stream hyper's client can drive: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// TLS with the webpki roots (the Mozilla set), made once.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// A response body that fails with `ConnectionReadTimeout` when no frame comes for `idle`.
struct TimedBody {
    body: Incoming,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
