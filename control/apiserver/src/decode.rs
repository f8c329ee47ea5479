//! Decoding request bodies: JSON or YAML, the apiVersion/kind check, and the typed round
//! trip that finds unknown fields (serde in `k8s-openapi` drops them silently, so they are
//! found by comparing what came in with what the type kept).

use http::HeaderMap;
use serde_json::Value;

use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

/// `fieldValidation`: what to do with unknown fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_query(v: Option<&str>) -> ApiResult<Self> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter has an invalid value {other:?}: must be one of \"Ignore\", \"Warn\", or \"Strict\""
            ))),
        }
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The body of a create or update as JSON.
pub fn body_object(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type(headers);
    let value: Value = match ct.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => yaml(body)?,
        // kubectl 1.32+ sends its imperative creates (`kubectl create configmap ...`, `run`,
        // `expose`) as protobuf; Skiff stores JSON, so transcode.
        skiff_protobuf::CONTENT_TYPE => skiff_protobuf::to_json(body).map_err(|e| match e {
            skiff_protobuf::Error::UnknownKind { .. } => ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("{e}: send it as application/json or application/yaml"),
            ),
            e => ApiError::bad_request(format!("failed to decode protobuf body: {e}")),
        })?,
        other => {
            return Err(ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other})"
                ),
            ));
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    }
    Ok(value)
}

pub fn yaml(body: &[u8]) -> ApiResult<Value> {
    serde_yaml::from_slice::<Value>(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Checks `apiVersion` and `kind` against the resource the request is for.
pub fn check_type(resource: &Resource, obj: &Value) -> ApiResult<()> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&obj.to_string(), 512)
        )));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{}'",
            truncate(&obj.to_string(), 512)
        )));
    }
    if api_version != resource.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    if kind != resource.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The object in canonical form and the warnings to send. Unknown fields are an error
/// under `Strict`, a warning under `Warn`; either way they are not stored.
pub fn canonical(
    resource: &Resource,
    obj: &Value,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let prefix = format!(
        "{} in version \"{}\" cannot be handled as a {}",
        resource.kind, resource.version, resource.kind
    );
    let mut out = (resource.canonicalize)(obj)
        .map_err(|e| ApiError::bad_request(format!("{prefix}: {e}")))?;
    // kube-apiserver's JSON carries the zeros of Go's non-`omitempty` fields (a DaemonSet's
    // status counts, `resources: {}`): added once per write, stored and served from there.
    skiff_protobuf::fill_go_zero_values(&resource.api_version(), resource.kind, &mut out);
    let mut unknown = Vec::new();
    if validation != FieldValidation::Ignore {
        unknown_fields(obj, &out, &mut String::new(), &mut unknown);
    }
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match validation {
        FieldValidation::Strict if !messages.is_empty() => Err(ApiError::bad_request(format!(
            "{prefix}: strict decoding error: {}",
            messages.join(", ")
        ))),
        FieldValidation::Warn => Ok((out, messages)),
        _ => Ok((out, Vec::new())),
    }
}

/// Paths present (and not null) in `input` but absent from `kept`.
fn unknown_fields(input: &Value, kept: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, kept) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    None => out.push(path.clone()),
                    Some(kv) => unknown_fields(v, kv, path, out),
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                unknown_fields(x, y, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;
    use serde_json::json;

    #[test]
    fn strict_names_every_unknown_field() {
        let r = find("apps", "v1", "deployments").unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "replicass": 3,
              "template": {"metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "imagee": "x"}]}}}});
        let err = canonical(r, &d, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("strict decoding error: unknown field \"spec.replicass\", unknown field \"spec.template.spec.containers[0].imagee\""), "{}", err.message);
        let (out, warnings) = canonical(r, &d, FieldValidation::Warn).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(out["spec"].get("replicass").is_none());
    }

    #[test]
    fn wrong_types_are_bad_requests() {
        let r = find("", "v1", "pods").unwrap();
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let err = canonical(r, &p, FieldValidation::Strict).unwrap_err();
        assert!(
            err.message
                .starts_with("Pod in version \"v1\" cannot be handled as a Pod:")
        );
    }

    #[test]
    fn api_version_must_match() {
        let r = find("apps", "v1", "deployments").unwrap();
        let err = check_type(r, &json!({"apiVersion": "v1", "kind": "Deployment"})).unwrap_err();
        assert!(
            err.message
                .contains("does not match the expected API version (apps/v1)")
        );
    }
}
