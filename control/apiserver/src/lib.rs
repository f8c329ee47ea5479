//! Skiff's API server: the Kubernetes REST API over a [`skiff_store::Store`], spoken well
//! enough that an unmodified `kubectl` and the official client libraries drive it.
//!
//! One generic handler serves every resource of [`registry::RESOURCES`]: objects are
//! handled as JSON, checked against their `k8s-openapi` type on the way in (unknown fields
//! are detected there), defaulted and validated by `skiff-apimachinery`, and stored as JSON
//! under `/registry/<group>/<resource>/[<namespace>/]<name>`. Every watch is served from one
//! shared [`watch::WatchCache`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use skiff_store::Store;

mod controllers;
mod convert;
mod decode;
mod discovery;
mod ephemeral;
mod handlers;
mod ipam;
mod logs;
mod object;
mod patch;
pub mod registry;
mod remote;
mod request;
pub mod serviceips;
mod status;
mod strategy;
mod table;
pub mod watch;
mod yaml;

pub use status::ApiError;

/// Bodies larger than this are refused with 413, as kube-apiserver does (3 MiB).
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

/// The Kubernetes API version Skiff implements; `/version` reports it so that the kubectl
/// dispatcher picks the matching client.
pub const KUBERNETES_MINOR: &str = "33";

/// Namespaces that exist from the start, as in every Kubernetes cluster.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Clone)]
pub struct Config {
    /// How many recent events the watch cache keeps for clients that resume a watch.
    pub watch_cache_events: usize,
    /// How often the store is compacted, and how much history is kept: at each tick the
    /// store is compacted to the revision it had one interval earlier (kube-apiserver's
    /// default is 5 minutes).
    pub compaction_interval: Duration,
    /// The cluster's pod network, from which each node gets a block (see `ipam`).
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    /// The prefix length of each node's block (22 by default: 1,022 pod addresses).
    pub node_cidr_mask: u8,
    /// How long an event is kept after its last write (kube-apiserver's `--event-ttl`).
    pub event_ttl: Duration,
    /// Where Services' cluster IPs and node ports come from (`serviceips`).
    pub service_ranges: serviceips::Ranges,
    /// The address and port the `kubernetes` Service's endpoints name (kube-apiserver's
    /// `--advertise-address` and secure port); `None` when the server listens on loopback
    /// only, where no pod could reach it.
    pub advertise: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            watch_cache_events: 8192,
            compaction_interval: Duration::from_secs(300),
            cluster_cidr: ipam::CLUSTER_CIDR,
            node_cidr_mask: ipam::NODE_MASK,
            event_ttl: Duration::from_secs(3600),
            service_ranges: serviceips::Ranges::default(),
            advertise: None,
        }
    }
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub cache: Arc<watch::WatchCache>,
    /// OpenAPI documents, built on first request (they take a while and most clients of a
    /// small edge cluster never ask).
    openapi: OnceLock<skiff_openapi::Documents>,
    /// `host:port` clients reach this server at.
    pub server_address: String,
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    pub node_cidr_mask: u8,
    pub service_ranges: serviceips::Ranges,
}

/// A running API server.
pub struct ApiServer {
    pub state: Arc<AppState>,
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Prepares the store (system namespaces), starts the watch cache, the built-in
    /// controllers and the HTTP listener.
    pub async fn start(
        store: Arc<dyn Store>,
        listener: tokio::net::TcpListener,
        config: Config,
    ) -> anyhow::Result<ApiServer> {
        let local_addr = listener.local_addr()?;
        controllers::ensure_system_namespaces(&store).await?;
        controllers::ensure_runtime_classes(&store).await?;
        let cache = watch::WatchCache::start(store.clone(), config.watch_cache_events).await?;
        let state = Arc::new(AppState {
            store: store.clone(),
            cache: cache.clone(),
            openapi: OnceLock::new(),
            server_address: local_addr.to_string(),
            cluster_cidr: config.cluster_cidr,
            node_cidr_mask: config.node_cidr_mask,
            service_ranges: config.service_ranges.clone(),
        });
        let kubernetes = controllers::KubernetesService {
            cluster_ip: config.service_ranges.kubernetes_ip(),
            advertise: config.advertise,
            port: local_addr.port(),
        };
        // Before the first request: the first address is the kubernetes Service's.
        controllers::ensure_kubernetes_service(&store, &kubernetes).await?;
        controllers::spawn(
            store.clone(),
            cache.clone(),
            config.compaction_interval,
            config.event_ttl,
            kubernetes,
        );
        let app = router(state.clone());
        // Watch events are small writes on long-lived connections: without TCP_NODELAY,
        // Nagle's algorithm holds them back behind the peer's delayed ACKs.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "API server stopped");
            }
        });
        Ok(ApiServer {
            state,
            local_addr,
            task,
        })
    }

    /// Runs until the listener fails.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api", axum::routing::any(handlers::api))
        .route("/api/{*rest}", axum::routing::any(handlers::api))
        .route("/apis", axum::routing::any(handlers::api))
        .route("/apis/{*rest}", axum::routing::any(handlers::api))
        .fallback(|| async { ApiError::no_route() })
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Logs each request at debug level with its latency.
async fn log_request(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %uri,
        status = resp.status().as_u16(),
        latency_us = start.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-skiff.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
        }),
    )
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn health(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let ok = state.store.current_revision().await.is_ok();
    let verbose = req.uri().query().is_some_and(|q| q.contains("verbose"));
    let (code, text) = match (ok, verbose) {
        (true, false) => (StatusCode::OK, "ok".to_string()),
        (true, true) => (
            StatusCode::OK,
            "[+]ping ok\n[+]store ok\nhealthz check passed\n".into(),
        ),
        (false, _) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "[+]ping ok\n[-]store failed: reason withheld\nhealthz check failed\n".into(),
        ),
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

fn openapi(state: &AppState) -> &skiff_openapi::Documents {
    state
        .openapi
        .get_or_init(|| skiff_openapi::Documents::build(&registry::openapi_resources()))
}

async fn openapi_index(State(state): State<Arc<AppState>>) -> Response {
    let state = state.clone();
    let api = tokio::task::spawn_blocking(move || openapi(&state).index.clone())
        .await
        .unwrap_or(Value::Null);
    json_response(StatusCode::OK, &api)
}

async fn openapi_document(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let state = state.clone();
    let doc = tokio::task::spawn_blocking(move || openapi(&state).get(&path).cloned())
        .await
        .ok()
        .flatten();
    match doc {
        Some(doc) => json_response(StatusCode::OK, &doc),
        None => ApiError::no_route().into_response(),
    }
}

pub(crate) fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = (code, Body::from(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
