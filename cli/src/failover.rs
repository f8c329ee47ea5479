//! A kube client over several API servers of one cluster, for `skiff agent --server A,B`:
//! each request goes to the current server; one that cannot reach it (refused, reset,
//! timed out) moves the client to the next server and fails, and its caller retries as
//! every agent loop does (the heartbeat at its next tick, watches with their back-off), so
//! an agent follows the cluster when the server it used goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
struct Failover {
    servers: Arc<Vec<Uri>>,
    current: Arc<AtomicUsize>,
    http: HttpClient<HttpConnector, kube::client::Body>,
}

/// The request's path and query on `base` (whose own path, if any, is a prefix).
fn rebase(base: &Uri, uri: &Uri) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(base.authority().map_or("", |a| a.as_str()))
        .path_and_query(format!("{prefix}{path}"))
        .build()
}

impl tower::Service<Request<kube::client::Body>> for Failover {
    type Response = Response<hyper::body::Incoming>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<kube::client::Body>) -> Self::Future {
        let index = self.current.load(Ordering::Relaxed) % self.servers.len();
        let base = self.servers[index].clone();
        let (servers, current, http) = (
            self.servers.clone(),
            self.current.clone(),
            self.http.clone(),
        );
        Box::pin(async move {
            *req.uri_mut() = rebase(&base, req.uri())?;
            match http.request(req).await {
                Ok(resp) => Ok(resp),
                Err(e) => {
                    if e.is_connect() && servers.len() > 1 {
                        let next = (index + 1) % servers.len();
                        if current
                            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                        {
                            eprintln!(
                                "skiff: API server {base} unreachable ({e}); moving to {}",
                                servers[next]
                            );
                        }
                    }
                    Err(e.into())
                }
            }
        })
    }
}

/// A client of the API servers `urls` (plain HTTP, as `skiff server` listens today),
/// moving to the next when one cannot be reached.
pub fn client(urls: &[String]) -> anyhow::Result<kube::Client> {
    let servers: Vec<Uri> = urls
        .iter()
        .map(|u| {
            u.trim()
                .parse::<Uri>()
                .with_context(|| format!("--server: {u:?} is not a URL"))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!servers.is_empty(), "--server needs at least one URL");
    for s in &servers {
        anyhow::ensure!(
            s.scheme_str() == Some("http") && s.authority().is_some(),
            "--server: {s} is not an http://host:port URL (more than one server is supported over plain HTTP for now)"
        );
    }
    let mut connector = HttpConnector::new();
    // A server that is gone is noticed in seconds, not at the kernel's TCP timeout.
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    let http = HttpClient::builder(TokioExecutor::new()).build(connector);
    let service = Failover {
        servers: Arc::new(servers),
        current: Arc::new(AtomicUsize::new(0)),
        http,
    };
    Ok(kube::Client::new(service, "default"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_path_on_each_server() {
        let base: Uri = "http://10.0.0.2:6443".parse().unwrap();
        let req: Uri = "/api/v1/nodes?watch=true".parse().unwrap();
        assert_eq!(
            rebase(&base, &req).unwrap().to_string(),
            "http://10.0.0.2:6443/api/v1/nodes?watch=true"
        );
        let prefixed: Uri = "http://lb/k8s/".parse().unwrap();
        assert_eq!(
            rebase(&prefixed, &req).unwrap().to_string(),
            "http://lb/k8s/api/v1/nodes?watch=true"
        );
        assert!(client(&["https://a:6443".into()]).is_err());
        assert!(client(&["not a url".into()]).is_err());
    }
}
