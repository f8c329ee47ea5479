//! The agent's endpoint (the kubelet's port): container logs for `kubectl logs`, exec,
//! attach and port-forward, reached through the API server's `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

use crate::logs::{LogOptions, read_from};
use crate::{Ctx, remote};

pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(remote::exec))
        .route("/attach/{namespace}/{pod}/{container}", any(remote::attach))
        .route("/portForward/{namespace}/{pod}", any(remote::port_forward))
        .with_state(ctx);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("agent endpoint stopped: {e}");
    }
}

fn query_map(raw: Option<String>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn truthy(v: Option<&String>) -> bool {
    matches!(
        v.map(String::as_str),
        Some("true" | "1" | "True" | "t" | "T" | "TRUE")
    )
}

async fn container_logs(
    State(ctx): State<Arc<Ctx>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query_map(raw);
    let previous = truthy(q.get("previous"));
    let since = match (q.get("sinceSeconds"), q.get("sinceTime")) {
        (Some(s), _) => s
            .parse::<i64>()
            .ok()
            .map(|s| Utc::now() - chrono::Duration::seconds(s)),
        (None, Some(t)) => DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    };
    let opts = LogOptions {
        follow: truthy(q.get("follow")) && !previous,
        tail_lines: q
            .get("tailLines")
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v.max(0) as usize),
        timestamps: truthy(q.get("timestamps")),
        since,
        limit_bytes: q.get("limitBytes").and_then(|v| v.parse().ok()),
    };
    let Some(path) = ctx.logs.find(&namespace, &pod, &container, previous) else {
        let message = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: no logs yet")
        };
        return (StatusCode::BAD_REQUEST, message).into_response();
    };
    let (first, offset) = match read_from(&path, 0, &opts, true) {
        Ok(r) => r,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let limit = opts.limit_bytes;
    if !opts.follow {
        let mut body = first;
        if let Some(l) = limit {
            body.truncate(l);
        }
        return ([("content-type", "text/plain")], body).into_response();
    }
    // Follow: send what is there, then what gets written, until the container's attempt
    // ends (its writer goes away) or the client leaves.
    let mut notify = ctx.logs.subscribe(&path);
    let stream = async_stream(path, first, offset, opts, notify.take(), limit);
    ([("content-type", "text/plain")], Body::from_stream(stream)).into_response()
}

fn async_stream(
    path: std::path::PathBuf,
    first: Vec<u8>,
    offset: u64,
    opts: LogOptions,
    notify: Option<tokio::sync::watch::Receiver<u64>>,
    limit: Option<usize>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let state = (Some(first), offset, notify, limit.unwrap_or(usize::MAX));
    futures::stream::unfold(state, move |(pending, offset, mut notify, left)| {
        let path = path.clone();
        let opts = opts.clone();
        async move {
            if left == 0 {
                return None;
            }
            if let Some(mut chunk) = pending
                && !chunk.is_empty()
            {
                chunk.truncate(left);
                let left = left - chunk.len();
                return Some((Ok(bytes::Bytes::from(chunk)), (None, offset, notify, left)));
            }
            loop {
                let rx = notify.as_mut()?;
                // Wake on a write, or every second to notice a rotation or the end.
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
                let (mut chunk, next) = match read_from(&path, offset, &opts, false) {
                    Ok(r) => r,
                    Err(_) => return None,
                };
                if !chunk.is_empty() {
                    chunk.truncate(left);
                    let left = left - chunk.len();
                    return Some((Ok(bytes::Bytes::from(chunk)), (None, next, notify, left)));
                }
                if rx.has_changed().is_err() {
                    return None;
                }
            }
        }
    })
}
