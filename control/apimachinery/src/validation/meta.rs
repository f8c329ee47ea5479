//! `metadata` validation, as apimachinery's `api/validation/objectmeta.go`.

use super::{Errs, arr, child, s};
use crate::names::{self, NameRule};
use crate::{FieldError, Kind};
use serde_json::{Value, json};

pub(crate) const FIELD_IMMUTABLE: &str = "field is immutable";

/// The rule a kind's names follow: DNS-1123 subdomains for most, labels for namespaces,
/// DNS-1035 labels for services, URL path segments for RBAC objects and core/v1 events.
pub fn name_rule(kind: Kind<'_>) -> NameRule {
    match (kind.group, kind.kind) {
        ("", "Namespace") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("", "Event") => NameRule::PathSegment,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// Validates `metadata` of a new object at path `metadata`: name (or generateName),
/// namespace presence, generation, labels, annotations, owner references, finalizers.
pub fn validate_object_meta(meta: &Value, namespaced: bool, rule: NameRule) -> Vec<FieldError> {
    let mut errs = Errs::new();
    let generate = s(meta, "generateName");
    if !generate.is_empty() {
        for m in rule.check(generate, true) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                json!(generate),
                m,
            ));
        }
    }
    let name = s(meta, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for m in rule.check(name, false) {
            errs.push(FieldError::invalid("metadata.name", json!(name), m));
        }
    }
    let namespace = s(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for m in names::is_dns1123_label(namespace) {
                errs.push(FieldError::invalid(
                    "metadata.namespace",
                    json!(namespace),
                    m,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    super::nonnegative(meta, "generation", "metadata.generation", &mut errs);
    common(meta, &mut errs);
    errs
}

fn common(meta: &Value, errs: &mut Errs) {
    errs.extend(names::validate_labels(
        meta.get("labels"),
        "metadata.labels",
    ));
    errs.extend(names::validate_annotations(
        meta.get("annotations"),
        "metadata.annotations",
    ));
    owner_references(meta, errs);
    let finalizers = arr(meta, "finalizers");
    for f in finalizers {
        let f = f.as_str().unwrap_or("");
        errs.extend(names::validate_qualified_name(f, "metadata.finalizers"));
    }
    let has = |n: &str| finalizers.iter().any(|f| f.as_str() == Some(n));
    if has("orphan") && has("foregroundDeletion") {
        errs.push(FieldError::invalid(
            "metadata.finalizers",
            Value::Array(finalizers.to_vec()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

fn owner_references(meta: &Value, errs: &mut Errs) {
    let path = "metadata.ownerReferences";
    let mut first_controller: Option<String> = None;
    for r in arr(meta, "ownerReferences") {
        let api_version = s(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                child(path, "apiVersion"),
                json!(api_version),
                "version must not be empty",
            ));
        }
        for f in ["kind", "name", "uid"] {
            if s(r, f).is_empty() {
                errs.push(FieldError::invalid(
                    child(path, f),
                    json!(s(r, f)),
                    "must not be empty",
                ));
            }
        }
        if api_version == "v1" && s(r, "kind") == "Event" {
            errs.push(FieldError::invalid(
                path,
                r.clone(),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{}/{}", s(r, "kind"), s(r, "name"));
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    meta.get("ownerReferences").cloned().unwrap_or_default(),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

/// Validates `metadata` on update against the stored object's.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Errs::new();
    if old.get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
        let old_f: Vec<&str> = arr(old, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(new, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|f| crate::go_quote(f)).collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}", list.join(", ")),
            ));
        }
    }
    let (ng, og) = (
        new.get("generation").and_then(Value::as_i64),
        old.get("generation").and_then(Value::as_i64),
    );
    if let (Some(n), Some(o)) = (ng, og)
        && n < o
    {
        errs.push(FieldError::invalid(
            "metadata.generation",
            json!(n),
            "must not be decremented",
        ));
    }
    for f in ["name", "namespace"] {
        if s(new, f) != s(old, f) {
            errs.push(FieldError::invalid(
                child("metadata", f),
                json!(s(new, f)),
                FIELD_IMMUTABLE,
            ));
        }
    }
    // An empty uid is filled from the stored object by the server.
    if !s(new, "uid").is_empty() && s(new, "uid") != s(old, "uid") {
        errs.push(FieldError::invalid(
            "metadata.uid",
            json!(s(new, "uid")),
            FIELD_IMMUTABLE,
        ));
    }
    common(new, &mut errs);
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn name_required_unless_generated() {
        let errs = validate_object_meta(
            &json!({"namespace": "default"}),
            true,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            msgs(&errs),
            ["metadata.name: Required value: name or generateName is required"]
        );
        let errs = validate_object_meta(
            &json!({"name": "Web_1", "namespace": "default"}),
            true,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            msgs(&errs),
            [concat!(
                "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', ",
                "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            )]
        );
    }

    #[test]
    fn namespace_rules() {
        let errs = validate_object_meta(&json!({"name": "a"}), true, NameRule::Dns1123Subdomain);
        assert_eq!(msgs(&errs), ["metadata.namespace: Required value"]);
        let errs = validate_object_meta(
            &json!({"name": "a", "namespace": "x"}),
            false,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            msgs(&errs),
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
    }

    #[test]
    fn labels_report_key_and_value() {
        let meta =
            json!({"name": "a", "namespace": "d", "labels": {"bad key": "ok", "k": "bad value"}});
        let errs = validate_object_meta(&meta, true, NameRule::Dns1123Subdomain);
        let m = msgs(&errs);
        assert_eq!(m.len(), 2);
        assert!(m[0].starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters"));
        assert!(m[1].starts_with(
            "metadata.labels: Invalid value: \"bad value\": a valid label must be an empty string"
        ));
    }

    #[test]
    fn update_keeps_name_and_blocks_new_finalizers_while_deleting() {
        let old = json!({"name": "a", "namespace": "d", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["x/y"]});
        let new = json!({"name": "b", "namespace": "d", "finalizers": ["x/y", "x/z"]});
        let m = msgs(&validate_object_meta_update(&new, &old));
        assert_eq!(
            m,
            [
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x/z\"}",
                "metadata.name: Invalid value: \"b\": field is immutable",
            ]
        );
    }
}
