//! The agent's side of `kubectl exec`, `attach` and `port-forward`: the API server proxies
//! the upgrade request here (`/exec/<ns>/<pod>/<container>`, `/attach/...`,
//! `/portForward/<ns>/<pod>`, the kubelet's paths), and this module answers it.
//!
//! [`Running`] knows the containers that run now, with their shim's handle, so a request is
//! refused with a clear `Status` before any upgrade when the container is not running or its
//! runtime has no processes (a Wasm instance), instead of leaving kubectl waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use skiff_shim::Container;

use crate::Ctx;

/// One running pod, as exec and port-forward need it.
struct RunningPod {
    uid: String,
    containers: HashMap<String, Arc<dyn Container>>,
}

/// The containers running on this node, by namespace and pod name.
#[derive(Default)]
pub struct Running {
    pods: Mutex<HashMap<(String, String), RunningPod>>,
}

impl Running {
    /// Records a container that started.
    pub fn started(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        handle: Arc<dyn Container>,
    ) {
        let mut pods = self.pods.lock().expect("running lock");
        let entry = pods
            .entry((namespace.to_string(), pod.to_string()))
            .or_insert_with(|| RunningPod {
                uid: uid.to_string(),
                containers: HashMap::new(),
            });
        // A pod recreated under the same name is another pod.
        if entry.uid != uid {
            *entry = RunningPod {
                uid: uid.to_string(),
                containers: HashMap::new(),
            };
        }
        entry.containers.insert(container.to_string(), handle);
    }

    /// Forgets a container that exited.
    pub fn exited(&self, namespace: &str, pod: &str, uid: &str, container: &str) {
        let mut pods = self.pods.lock().expect("running lock");
        let key = (namespace.to_string(), pod.to_string());
        if let Some(entry) = pods.get_mut(&key)
            && entry.uid == uid
        {
            entry.containers.remove(container);
            if entry.containers.is_empty() {
                pods.remove(&key);
            }
        }
    }

    fn container(&self, namespace: &str, pod: &str, container: &str) -> Lookup {
        let pods = self.pods.lock().expect("running lock");
        match pods.get(&(namespace.to_string(), pod.to_string())) {
            None => Lookup::NoPod,
            Some(p) => match p.containers.get(container) {
                None => Lookup::NotRunning,
                Some(c) => Lookup::Found(c.clone()),
            },
        }
    }
}

enum Lookup {
    NoPod,
    NotRunning,
    Found(Arc<dyn Container>),
}

/// A Kubernetes `Status` failure, which kubectl prints as `Error from server (<reason>)`.
pub fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `/exec/...` and `/attach/...`, for any method (WebSocket GET or SPDY POST).
pub async fn exec(
    State(ctx): State<Arc<Ctx>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
) -> Response {
    match ctx.running.container(&namespace, &pod, &container) {
        Lookup::NoPod => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {namespace}/{pod} has no running container on this node"),
        ),
        Lookup::NotRunning => status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container} is not running in pod {namespace}/{pod}"),
        ),
        Lookup::Found(handle) => match handle.exec_refusal() {
            Some(why) => status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("cannot exec into container {container} of pod {namespace}/{pod}: {why}"),
            ),
            None => status(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                format!("exec into container {container} is not available on this node yet"),
            ),
        },
    }
}
