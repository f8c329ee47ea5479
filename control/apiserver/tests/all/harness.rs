use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

/// An API server on a fresh embedded store, called in process.
pub struct Server {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

/// A reply: status, headers and the body as JSON.
pub struct Reply {
    pub code: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Server {
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = skiff_store::embedded::EmbeddedStore::open(&dir.path().join("store"))
            .expect("open store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = skiff_apiserver::ApiServer::start(
            Arc::new(store),
            listener,
            skiff_apiserver::Config::default(),
        )
        .await
        .expect("start API server");
        Server {
            router: skiff_apiserver::router(server.state),
            _dir: dir,
        }
    }

    async fn send(&self, method: Method, uri: &str, body: Option<&Value>) -> http::Response<Body> {
        use tower::Service;
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).expect("JSON"))
            }
            None => Body::empty(),
        };
        let mut router = self.router.clone();
        std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut router, cx))
            .await
            .expect("router ready");
        router
            .call(req.body(body).expect("request"))
            .await
            .expect("router answers")
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<&Value>) -> Reply {
        let resp = self.send(method, uri, body).await;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Reply {
            code: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: &Value) -> Reply {
        self.call(Method::POST, uri, Some(body)).await
    }

    pub async fn put(&self, uri: &str, body: &Value) -> Reply {
        self.call(Method::PUT, uri, Some(body)).await
    }

    /// The first event of a watch (`uri` with `watch=1`).
    pub async fn first_event(&self, uri: &str) -> Value {
        let resp = self.send(Method::GET, uri, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let read = async {
            while !buf.contains(&b'\n') {
                let frame = body.frame().await.expect("watch open").expect("frame");
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("a watch event within 10 s");
        let line = buf.split(|b| *b == b'\n').next().expect("a line");
        serde_json::from_slice(line).expect("event JSON")
    }
}
