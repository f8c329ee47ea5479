//! API errors and their wire form: a `meta.k8s.io/v1` `Status`, as kube-apiserver writes
//! it, so kubectl prints the same messages it prints against a real cluster.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use skiff_apimachinery::FieldError;

use crate::registry::Resource;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// kube-apiserver's `NewInternalError`: the message is also the one cause.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {message}"),
        );
        e.details = Some(json!({"causes": [{"message": message}]}));
        e
    }

    /// What kube-apiserver's router answers for a method a path does not take (a generic
    /// server response: `details` present and empty).
    pub fn method_not_allowed() -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        e.details = Some(json!({}));
        e
    }

    /// A 404 for a path that names no resource, as kube-apiserver's router gives it: with
    /// `details` present and empty. kubectl relies on both halves: `kubectl debug` reads
    /// `details.name` of a 404 to tell a missing subresource (empty name) from a missing
    /// pod, and dereferences `details` to do so.
    pub fn no_route() -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.details = Some(json!({}));
        e
    }

    /// kube-apiserver's `NewForbidden` for one object.
    pub fn forbidden(resource: &Resource, name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", resource.qualified()),
        )
        .with_details(resource, name)
    }

    /// kube-apiserver's `NewConflict`: `Operation cannot be fulfilled on <resource> "<name>":
    /// <why>`.
    pub fn conflict_because(resource: &Resource, name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                resource.qualified()
            ),
        )
        .with_details(resource, name)
    }

    /// kube-apiserver's `NewInvalid` for a kind that is not a served resource (the options
    /// of a request, such as `DeleteOptions.meta.k8s.io`).
    pub fn invalid_options(qualified_kind: &str, errors: &[FieldError]) -> Self {
        let (kind, group) = qualified_kind
            .split_once('.')
            .unwrap_or((qualified_kind, ""));
        Self::invalid_kind(qualified_kind, group, kind, "", errors)
    }

    pub fn not_found(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{}\" not found", resource.qualified(), name),
        )
        .with_details(resource, name)
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
        )
        .with_details_raw("", "namespaces", ns)
    }

    pub fn already_exists(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{}\" already exists", resource.qualified(), name),
        )
        .with_details(resource, name)
    }

    pub fn conflict(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                resource.qualified(),
                name
            ),
        )
        .with_details(resource, name)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: limit is {}",
                crate::MAX_REQUEST_BODY
            ),
        )
    }

    /// 422 with one cause per field, and the message kube-apiserver writes:
    /// `Deployment.apps "web" is invalid: [a: Required value, b: Invalid value: ...]`.
    pub fn invalid(resource: &Resource, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_kind(
            &resource.qualified_kind(),
            resource.group,
            resource.kind,
            name,
            errors,
        )
    }

    fn invalid_kind(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        errors: &[FieldError],
    ) -> Self {
        let list = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            format!(
                "[{}]",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                json!({
                    "reason": e.error_type.reason(),
                    "message": e.cause_message(),
                    "field": e.field,
                })
            })
            .collect();
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {list}"),
        );
        // Go leaves empty strings out of StatusDetails.
        let mut details = serde_json::Map::new();
        for (k, v) in [("name", name), ("group", group), ("kind", kind)] {
            if !v.is_empty() {
                details.insert(k.into(), json!(v));
            }
        }
        details.insert("causes".into(), Value::Array(causes));
        err.details = Some(Value::Object(details));
        err
    }

    pub fn with_details(self, resource: &Resource, name: &str) -> Self {
        self.with_details_raw(resource.group, resource.plural, name)
    }

    fn with_details_raw(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": kind});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        self.details = Some(d);
        self
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut resp = (self.code, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl From<skiff_store::Error> for ApiError {
    fn from(e: skiff_store::Error) -> Self {
        match e {
            skiff_store::Error::Compacted {
                requested,
                compacted,
            } => ApiError::gone(format!(
                "The resourceVersion for the provided list is too old: {requested} \
                 (compacted at {compacted})"
            )),
            skiff_store::Error::FutureRevision { requested, current } => {
                let mut e = ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!(
                        "Too large resource version: {requested}, current resource version: {current}"
                    ),
                );
                e.details = Some(json!({"causes": [{"reason": "ResourceVersionTooLarge",
                    "message": "Too large resource version"}], "retryAfterSeconds": 1}));
                e
            }
            skiff_store::Error::TooLarge { size, limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("object of {size} bytes exceeds the store limit of {limit} bytes"),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
