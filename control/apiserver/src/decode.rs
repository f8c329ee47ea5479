//! Decoding request bodies: JSON or YAML, the apiVersion/kind check, and the typed round
//! trip that finds unknown fields (serde in `k8s-openapi` drops them silently, so they are
//! found by comparing what came in with what the type kept).

use http::HeaderMap;
use serde_json::Value;

use crate::registry::{self, Resource};
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

/// A YAML body as JSON, with what its aliases may expand to bounded (`crate::yaml`).
pub fn yaml(body: &[u8]) -> ApiResult<Value> {
    crate::yaml::parse(body)
}

/// Reads a body's `apiVersion` and `kind` as kube-apiserver's decoder does on create and
/// update (and on what a patch made): what the body leaves out comes from the URL (the
/// kind, and the group and version unless the body names another group), and both are
/// written into the object. A body that names another kind or version is refused with
/// kube-apiserver's message.
pub fn check_type(resource: &Resource, obj: &mut Value) -> ApiResult<()> {
    let (group, version, kind) = type_of(resource, obj)?;
    // `gvkWithDefaults`: the kind, and the version when the group is the URL's or absent.
    let kind = if kind.is_empty() {
        resource.kind.to_string()
    } else {
        kind
    };
    let (group, version) = if version.is_empty() && (group.is_empty() || group == resource.group) {
        (resource.group.to_string(), resource.version.to_string())
    } else {
        (group, version)
    };
    if (group.as_str(), version.as_str(), kind.as_str())
        == (resource.group, resource.version, resource.kind)
    {
        // Written only where the body left them out (most bodies name both).
        if let Some(map) = obj.as_object_mut() {
            for (field, value) in [
                ("apiVersion", resource.api_version()),
                ("kind", resource.kind),
            ] {
                if map.get(field).and_then(Value::as_str) != Some(value) {
                    map.insert(field.into(), Value::String(value.into()));
                }
            }
        }
        return Ok(());
    }
    let api_version = group_version(&group, &version);
    if version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"\" cannot be handled as a {}: Object 'apiVersion' is missing in '{}'",
            resource.kind,
            truncate(&obj.to_string(), 512)
        )));
    }
    // kube-apiserver decodes the body as the type it names, then converts that to the
    // URL's type: another version of the same type converts (and is then refused for its
    // version), any other type does not.
    let named = registry::RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind);
    let same_type = kind == resource.kind
        && (group == resource.group || named.is_some_and(|r| r.storage == resource.storage));
    if same_type {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    let cause = match named {
        Some(_) => format!(
            "converting ({version}.{kind}) to ({}.{}): unknown conversion",
            internal_package(resource),
            resource.kind
        ),
        None => format!(
            "no kind \"{kind}\" is registered for version \"{api_version}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        ),
    };
    Err(ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {}: {cause}",
        resource.kind
    )))
}

/// Checks the `apiVersion` and `kind` of a server-side apply patch, which unlike a create
/// or an update must name both: kube-apiserver's field manager refuses a patch of another
/// version (or none) before anything else.
pub fn check_apply(resource: &Resource, patch: &Value) -> ApiResult<()> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: the apply patch is not a YAML or JSON object",
        ));
    }
    let (group, version, kind) = type_of(resource, patch)?;
    if (group.as_str(), version.as_str()) != (resource.group, resource.version) {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {}, expected: {}",
            group_version(&group, &version),
            resource.api_version()
        )));
    }
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&patch.to_string(), 512)
        )));
    }
    let mut typed = patch.clone();
    check_type(resource, &mut typed)
}

/// The group, version and kind a body names (empty when it names none), read as
/// `SimpleMetaFactory.Interpret` and `schema.ParseGroupVersion` read them.
fn type_of(resource: &Resource, obj: &Value) -> ApiResult<(String, String, String)> {
    let unrecognized = |cause: String| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): {cause} ({})",
            resource.kind,
            summary(obj)
        ))
    };
    if !obj.is_object() {
        return Err(unrecognized(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            go_json_type(obj)
        )));
    }
    let field = |name: &str| -> ApiResult<String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(unrecognized(format!(
                "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go struct field .{name} of type string",
                go_json_type(other)
            ))),
        }
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    let (group, version) = match api_version.split('/').collect::<Vec<_>>()[..] {
        [""] | ["", ""] => (String::new(), String::new()),
        [version] => (String::new(), version.to_string()),
        [group, version] => (group.to_string(), version.to_string()),
        _ => {
            return Err(unrecognized(format!(
                "unexpected GroupVersion string: {api_version}"
            )));
        }
    };
    Ok((group, version, kind))
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The Go package of kube-apiserver's internal type for a resource (`core`, `apps`,
/// `batch`, ...), which its conversion errors name. Resources stored together share it
/// (events.k8s.io Events are `core.Event` inside).
fn internal_package(resource: &Resource) -> &'static str {
    let group = resource.storage.split('/').next().unwrap_or("");
    group.split('.').next().unwrap_or(group)
}

/// How Go's encoding/json names a JSON value's type in its errors.
fn go_json_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// The start of a body, as kube-apiserver quotes it in decode errors (`summarizeData`): 30
/// bytes, as text when it is a JSON object and in hex otherwise.
fn summary(obj: &Value) -> String {
    let text = obj.to_string();
    let bytes = text.as_bytes();
    let head = &bytes[..bytes.len().min(30)];
    let mut out = if text.starts_with('{') {
        String::from_utf8_lossy(head).into_owned()
    } else {
        head.iter().map(|b| format!("{b:02x}")).collect()
    };
    if bytes.len() > 30 {
        out.push_str(" ...");
    }
    out
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The object in canonical form, with the zero values Go writes, and the warnings to send.
/// Unknown fields are an error under `Strict`, a warning under `Warn`; either way they are
/// not stored.
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
    skiff_protobuf::fill_go_zero_values(resource.api_version(), resource.kind, &mut out);
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

    fn checked(group: &str, plural: &str, body: Value) -> Result<Value, String> {
        let r = find(group, "v1", plural).unwrap();
        let mut body = body;
        match check_type(r, &mut body) {
            Ok(()) => Ok(body),
            Err(e) => {
                assert_eq!(e.code, 400, "{}", e.message);
                Err(e.message)
            }
        }
    }

    #[test]
    fn the_url_fills_in_what_the_body_leaves_out() {
        // The Python client's documented call sends neither apiVersion nor kind.
        let ns = checked("", "namespaces", json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(
            (&ns["apiVersion"], &ns["kind"]),
            (&json!("v1"), &json!("Namespace"))
        );
        for body in [
            json!({"metadata": {"name": "w"}}),
            json!({"apiVersion": "apps/v1", "metadata": {"name": "w"}}),
            json!({"kind": "Deployment", "metadata": {"name": "w"}}),
            json!({"apiVersion": "apps/", "kind": "Deployment"}),
            json!({"apiVersion": null, "kind": null}),
        ] {
            let d = checked("apps", "deployments", body.clone()).unwrap();
            assert_eq!(d["apiVersion"], "apps/v1", "{body}");
            assert_eq!(d["kind"], "Deployment", "{body}");
        }
    }

    #[test]
    fn a_body_of_another_type_is_refused_as_kube_apiserver_refuses_it() {
        assert_eq!(
            checked("", "pods", json!({"apiVersion": "v1", "kind": "ConfigMap"})).unwrap_err(),
            "ConfigMap in version \"v1\" cannot be handled as a Pod: converting (v1.ConfigMap) to (core.Pod): unknown conversion"
        );
        assert_eq!(
            checked(
                "apps",
                "statefulsets",
                json!({"apiVersion": "apps/v1", "kind": "Deployment"})
            )
            .unwrap_err(),
            "Deployment in version \"v1\" cannot be handled as a StatefulSet: converting (v1.Deployment) to (apps.StatefulSet): unknown conversion"
        );
        // A kind the body spells wrong; a kind alone takes the URL's version.
        assert_eq!(
            checked("", "pods", json!({"apiVersion": "v1", "kind": "pod"})).unwrap_err(),
            "pod in version \"v1\" cannot be handled as a Pod: no kind \"pod\" is registered for version \"v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        );
        assert_eq!(
            checked("apps", "deployments", json!({"kind": "Foo"})).unwrap_err(),
            "Foo in version \"v1\" cannot be handled as a Deployment: no kind \"Foo\" is registered for version \"apps/v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        );
        // The right kind in a group that does not have it.
        assert_eq!(
            checked(
                "apps",
                "deployments",
                json!({"apiVersion": "v1", "kind": "Deployment"})
            )
            .unwrap_err(),
            "Deployment in version \"v1\" cannot be handled as a Deployment: no kind \"Deployment\" is registered for version \"v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        );
        // A group without its version.
        assert!(
            checked("", "pods", json!({"apiVersion": "apps/", "kind": "Pod"}))
                .unwrap_err()
                .starts_with("Pod in version \"\" cannot be handled as a Pod: Object 'apiVersion' is missing in '")
        );
    }

    #[test]
    fn another_version_of_the_same_type_is_refused_for_its_version() {
        assert_eq!(
            checked(
                "apps",
                "deployments",
                json!({"apiVersion": "apps/v1beta2", "kind": "Deployment"})
            )
            .unwrap_err(),
            "the API version in the data (apps/v1beta2) does not match the expected API version (apps/v1)"
        );
        // events.k8s.io/v1 and core/v1 Events are one type inside kube-apiserver.
        assert_eq!(
            checked(
                "",
                "events",
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event"})
            )
            .unwrap_err(),
            "the API version in the data (events.k8s.io/v1) does not match the expected API version (v1)"
        );
    }

    #[test]
    fn an_unreadable_type_is_unrecognized() {
        assert_eq!(
            checked("", "configmaps", json!({"kind": 5})).unwrap_err(),
            "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: json: cannot unmarshal number into Go struct field .kind of type string ({\"kind\":5})"
        );
        // What a JSON patch that replaced the whole object with a number left.
        assert_eq!(
            checked("", "configmaps", json!(5)).unwrap_err(),
            "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: json: cannot unmarshal number into Go value of type struct { APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" } (35)"
        );
        let err = checked(
            "",
            "configmaps",
            json!({"apiVersion": "a/b/c", "metadata": {"name": "a-rather-long-name"}}),
        )
        .unwrap_err();
        assert!(
            err.starts_with("the object provided is unrecognized (must be of type ConfigMap): unexpected GroupVersion string: a/b/c ({\"apiVersion\":\"a/b/c\",\"metadat ...)"),
            "{err}"
        );
    }

    #[test]
    fn an_apply_patch_names_its_version_and_kind() {
        let r = find("", "v1", "configmaps").unwrap();
        let err = check_apply(r, &json!(["a"])).unwrap_err();
        assert!(
            err.message
                .contains("the apply patch is not a YAML or JSON object")
        );
        let err = check_apply(r, &json!({"metadata": {"name": "a"}})).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "Incorrect version specified in apply patch. Specified patch version: , expected: v1"
        );
        let err =
            check_apply(r, &json!({"apiVersion": "apps/v1", "kind": "ConfigMap"})).unwrap_err();
        assert!(
            err.message
                .contains("Specified patch version: apps/v1, expected: v1")
        );
        let err = check_apply(r, &json!({"apiVersion": "v1"})).unwrap_err();
        assert!(err.message.starts_with("Object 'Kind' is missing in '"));
        let err = check_apply(r, &json!({"apiVersion": "v1", "kind": "Secret"})).unwrap_err();
        assert!(
            err.message
                .contains("converting (v1.Secret) to (core.ConfigMap)")
        );
        check_apply(r, &json!({"apiVersion": "v1", "kind": "ConfigMap"})).unwrap();
    }
}
