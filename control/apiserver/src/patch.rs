//! The four patch kinds, and the bounds on the work a patch may make the server do.
//!
//! A patch is small, but what it asks for need not be: a JSON patch `copy` duplicates a
//! subtree of the object, so forty of them, each copying a map into itself, double the
//! object forty times. As kube-apiserver does, a JSON patch may have at most
//! [`MAX_JSON_PATCH_OPERATIONS`] operations and its copies may add at most
//! [`MAX_JSON_PATCH_COPY_BYTES`] in all; either past its limit is refused before the copy
//! is made. Merge patches and server-side apply are linear in their inputs; strategic merge
//! patches merge lists through hash indexes (`skiff-strategicpatch`), so that a list of a
//! hundred thousand items costs as much as reading it.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

/// kube-apiserver's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// What all the `copy` operations of one JSON patch may add to the object, in bytes of
/// JSON: kube-apiserver's `JSONPatchMaxCopyBytes`, the request size limit.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = crate::MAX_REQUEST_BODY;

/// How many list items the operations of one JSON patch may shift in all: an `add` or
/// `remove` at the front of a list moves every item after it, so ten thousand of them on
/// a list of half a million would move billions. Far above what a real patch needs (a
/// thousand operations on lists of ten thousand items each is 1% of it).
pub const MAX_JSON_PATCH_LIST_WORK: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> ApiResult<PatchKind> {
        match ct {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" => Ok(PatchKind::Apply),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
            )),
        }
    }
}

/// Checks what can be checked of a patch before the object is read: the shape and the
/// number of operations of a JSON patch (413 past the limit, as kube-apiserver answers).
pub fn check(kind: PatchKind, patch: &Value) -> ApiResult<()> {
    if kind != PatchKind::Json {
        return Ok(());
    }
    let Value::Array(ops) = patch else {
        return Err(ApiError::bad_request(
            "error decoding JSON patch: a JSON patch is a list of operations",
        ));
    };
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                ops.len()
            ),
        ));
    }
    Ok(())
}

/// A patch as a request sent it: read and checked once, then applied to the object as
/// often as a conflicting write makes the handler read it again.
pub struct Patch {
    pub kind: PatchKind,
    /// The patch document (a JSON patch's list of operations, a merge or apply object).
    pub body: Value,
    /// A JSON patch's operations, decoded at the first application (so that a missing
    /// object is reported before a malformed patch, as kube-apiserver does) and kept for
    /// the next.
    operations: std::sync::OnceLock<Result<json_patch::Patch, String>>,
}

impl Patch {
    /// Reads a request body of `kind` (YAML for apply, JSON otherwise).
    pub fn parse(kind: PatchKind, bytes: &[u8]) -> ApiResult<Patch> {
        let body = match kind {
            PatchKind::Apply => crate::yaml::parse(bytes)?,
            _ => serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        Patch::from_value(kind, body)
    }

    /// A patch of `kind` whose document is `body`, with what can be checked before the
    /// object is read checked ([`check`]).
    pub fn from_value(kind: PatchKind, body: Value) -> ApiResult<Patch> {
        check(kind, &body)?;
        Ok(Patch {
            kind,
            body,
            operations: std::sync::OnceLock::new(),
        })
    }

    /// The object `target` (of `resource`) with the patch applied.
    pub fn apply(&self, resource: &Resource, target: Value) -> ApiResult<Value> {
        match self.kind {
            PatchKind::Json => {
                let operations = self
                    .operations
                    .get_or_init(|| {
                        json_patch::Patch::deserialize(&self.body).map_err(|e| e.to_string())
                    })
                    .as_ref()
                    .map_err(|e| {
                        ApiError::bad_request(format!("error decoding JSON patch: {e}"))
                    })?;
                apply_json_patch(target, operations)
            }
            kind => apply_document(resource, kind, target, &self.body),
        }
    }
}

/// A merge, strategic merge or apply patch's document laid over `target`.
fn apply_document(
    resource: &Resource,
    kind: PatchKind,
    target: Value,
    patch: &Value,
) -> ApiResult<Value> {
    match kind {
        PatchKind::Json => unreachable!("JSON patches are applied from their operations"),
        PatchKind::Merge => {
            let mut out = target;
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Strategic => {
            let root = skiff_strategicpatch::root_type(resource.group, resource.kind);
            let root = if target.get("kind") == Some(&json!("Scale")) {
                None
            } else {
                root
            };
            skiff_strategicpatch::apply(&target, patch, root)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        }
        PatchKind::Apply => {
            let root = skiff_strategicpatch::root_type(resource.group, resource.kind);
            Ok(skiff_strategicpatch::merge_for_apply(&target, patch, root))
        }
    }
}

fn patch_error(message: impl std::fmt::Display) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("the server rejected our request due to an error in our request: {message}"),
    );
    e.details = Some(json!({}));
    e
}

/// Applies an RFC 6902 patch one operation at a time, measuring each `copy` before it is
/// made. The target is the caller's copy, dropped on error, so a failed patch changes
/// nothing.
fn apply_json_patch(mut target: Value, ops: &json_patch::Patch) -> ApiResult<Value> {
    let mut copied = 0usize;
    let mut shifted = 0usize;
    for (i, op) in ops.0.iter().enumerate() {
        shifted = shifted.saturating_add(list_work(&target, op));
        if shifted > MAX_JSON_PATCH_LIST_WORK {
            return Err(patch_error(format_args!(
                "operation {i}: the operations of this patch would move more than {MAX_JSON_PATCH_LIST_WORK} list items in all"
            )));
        }
        if let json_patch::PatchOperation::Copy(copy) = op
            && let Some(source) = target.pointer(copy.from.as_str())
        {
            let left = MAX_JSON_PATCH_COPY_BYTES - copied;
            match json_size_within(source, left) {
                Some(size) => copied += size,
                None => {
                    return Err(patch_error(format_args!(
                        "operation {i} (copy from \"{}\"): the copies of this patch would add more than {MAX_JSON_PATCH_COPY_BYTES} bytes to the object",
                        copy.from
                    )));
                }
            }
        }
        json_patch::patch_unsafe(&mut target, std::slice::from_ref(op)).map_err(|e| {
            patch_error(format_args!(
                "operation {i} failed at path '{}': {}",
                e.path, e.kind
            ))
        })?;
    }
    Ok(target)
}

/// The list items an operation may move: the length of each list whose items it inserts
/// or removes (the list holding its `path`, and for `move` the one holding its `from`).
fn list_work(doc: &Value, op: &json_patch::PatchOperation) -> usize {
    use json_patch::PatchOperation as Op;
    let parent_len = |pointer: &str| {
        pointer
            .rsplit_once('/')
            .and_then(|(parent, _)| doc.pointer(parent))
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    match op {
        Op::Add(o) => parent_len(o.path.as_str()),
        Op::Remove(o) => parent_len(o.path.as_str()),
        Op::Copy(o) => parent_len(o.path.as_str()),
        Op::Move(o) => parent_len(o.path.as_str()) + parent_len(o.from.as_str()),
        Op::Replace(_) | Op::Test(_) => 0,
    }
}

/// The length of `value` written as JSON, or `None` as soon as it passes `limit` (so a
/// huge value is not written out to be measured).
pub fn json_size_within(value: &Value, limit: usize) -> Option<usize> {
    struct Counter {
        written: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written += buf.len();
            if self.written > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { written: 0, limit };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    fn apply(r: &Resource, kind: PatchKind, target: Value, patch: &Value) -> ApiResult<Value> {
        Patch::from_value(kind, patch.clone())?.apply(r, target)
    }

    fn configmap() -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "c", "annotations": {"a": "x".repeat(100)}}})
    }

    /// Each copy doubles the annotations: forty of them would make a 100-terabyte object.
    fn doubling_patch(n: usize) -> Value {
        Value::Array(
            (0..n)
                .map(|i| {
                    json!({"op": "copy", "from": "/metadata/annotations",
                                "path": format!("/metadata/annotations/k{i}")})
                })
                .collect(),
        )
    }

    #[test]
    fn copies_that_add_more_than_the_limit_are_refused() {
        let r = find("", "v1", "configmaps").unwrap();
        let err = apply(r, PatchKind::Json, configmap(), &doubling_patch(40)).unwrap_err();
        assert_eq!(
            err.code,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            err.message
        );
        assert!(
            err.message.contains("copy from \"/metadata/annotations\""),
            "{}",
            err.message
        );
        assert!(
            err.message.contains(&MAX_JSON_PATCH_COPY_BYTES.to_string()),
            "{}",
            err.message
        );
        // A few doublings are within the limit and applied.
        let out = apply(r, PatchKind::Json, configmap(), &doubling_patch(3)).unwrap();
        assert_eq!(out["metadata"]["annotations"].as_object().unwrap().len(), 4);
        assert_eq!(
            out["metadata"]["annotations"]["k2"]["k1"]["k0"]["a"],
            json!("x".repeat(100))
        );
    }

    #[test]
    fn more_operations_than_kubernetes_allows_are_refused_unread() {
        let ops = Value::Array(vec![
            json!({"op": "test", "path": "/kind", "value": "ConfigMap"});
            10_001
        ]);
        let err = check(PatchKind::Json, &ops).unwrap_err();
        assert_eq!(err.code, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            err.message
                .contains("maximum operations in a JSON patch is 10000, got 10001")
        );
        let ten_thousand = Value::Array(vec![
            json!({"op": "test", "path": "/kind", "value": "ConfigMap"});
            10_000
        ]);
        let r = find("", "v1", "configmaps").unwrap();
        assert!(apply(r, PatchKind::Json, configmap(), &ten_thousand).is_ok());
    }

    #[test]
    fn a_failed_operation_names_its_index() {
        let r = find("", "v1", "configmaps").unwrap();
        let patch = json!([{"op": "add", "path": "/data", "value": {}},
                           {"op": "remove", "path": "/nope"}]);
        let err = apply(r, PatchKind::Json, configmap(), &patch).unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            err.message.contains("operation 1 failed at path '/nope'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn operations_that_would_shift_a_long_list_too_often_are_refused() {
        let r = find("", "v1", "configmaps").unwrap();
        let long: Vec<Value> = (0..100_000).map(|i| json!(i)).collect();
        let target = json!({"metadata": {"name": "c"}, "list": long});
        let front = json!({"op": "add", "path": "/list/0", "value": 1});
        let patch = Value::Array(vec![front; 1000]);
        let err = apply(r, PatchKind::Json, target.clone(), &patch).unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.contains("move more than"), "{}", err.message);
        // Appending costs as much, and a few hundred edits are fine.
        let patch = Value::Array(vec![
            json!({"op": "add", "path": "/list/-", "value": 1});
            300
        ]);
        let out = apply(r, PatchKind::Json, target, &patch).unwrap();
        assert_eq!(out["list"].as_array().unwrap().len(), 100_300);
    }

    #[test]
    fn sizes_stop_at_the_limit() {
        let v = json!({"a": "x".repeat(1000)});
        assert_eq!(
            json_size_within(&v, 10_000),
            Some(serde_json::to_vec(&v).unwrap().len())
        );
        assert_eq!(json_size_within(&v, 100), None);
    }
}
