//! `pods/log`: proxied to the node agent that runs the pod, as kube-apiserver proxies it to
//! the kubelet (`/containerLogs/<namespace>/<pod>/<container>`), streaming for `follow`.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::AppState;
use crate::object;
use crate::request::Query;
use crate::status::{ApiError, ApiResult};

/// Query parameters of `pods/log` the agent understands.
const FORWARDED: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

pub async fn pod_log(state: &Arc<AppState>, pod: &Value, query: &Query) -> ApiResult<Response> {
    let name = object::name(pod);
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let container = pod_container(pod, query)?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let endpoint = node_endpoint(state, node).await?;
    let mut url = format!("http://{endpoint}/containerLogs/{namespace}/{name}/{container}");
    let params: Vec<(&str, &str)> = FORWARDED
        .iter()
        .filter_map(|k| query.get(k).map(|v| (*k, v)))
        .collect();
    if !params.is_empty() {
        url.push('?');
        url.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish(),
        );
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ApiError::internal(format!("node endpoint url: {e}")))?;
    let client =
        Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(uri).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Get \"{url}\": {e}"),
        )
    })?;
    if !resp.status().is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(ApiError::bad_request(
            String::from_utf8_lossy(&body).trim().to_string(),
        ));
    }
    let body = Body::new(resp.into_body().map_err(std::io::Error::other));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .header("cache-control", "no-cache, private")
        .body(body)
        .expect("static headers"))
}

/// The container `?container=` names (any of the pod's, init containers included), or the
/// pod's only app container; kube-apiserver's messages otherwise.
pub(crate) fn pod_container(pod: &Value, query: &Query) -> ApiResult<String> {
    let name = object::name(pod);
    // App containers first: the default is the only one of them.
    let containers: Vec<&str> = [
        "/spec/containers",
        "/spec/initContainers",
        "/spec/ephemeralContainers",
    ]
    .iter()
    .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
    .flatten()
    .filter_map(|c| c.get("name").and_then(Value::as_str))
    .collect();
    let app_containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if app_containers == 1 => Ok(containers[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers[..app_containers].join(" ")
        ))),
    }
}

/// `InternalIP:port` of the node's agent endpoint (status.daemonEndpoints).
pub(crate) async fn node_endpoint(state: &Arc<AppState>, node: &str) -> ApiResult<String> {
    let kv = state
        .store
        .get(&format!("/registry/core/nodes/{node}"))
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("node {node} not found")))?;
    let obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored node: {e}")))?;
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(10250);
    let addresses = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
                .and_then(|a| a.get("address").and_then(Value::as_str))
        })
        .ok_or_else(|| ApiError::bad_request(format!("node {node} has no address")))?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(format!("{host}:{port}"))
}
