//! Kubernetes API machinery for Skiff's API server: field errors, name and label
//! validation, and the defaulting and validation Kubernetes applies to each built-in kind.
//!
//! Everything here works on the JSON form of an object (`serde_json::Value`, as the API
//! server stores it) so the server stays generic over kinds.

use serde_json::Value;

pub mod cron;
mod defaults;
pub mod names;
pub mod quantity;
mod validation;

pub use cron::parse_schedule;
pub use names::{
    NameRule, is_c_identifier, is_config_map_key, is_dns1035_label, is_dns1123_label,
    is_dns1123_subdomain, is_env_var_name, is_qualified_name, is_valid_label_value,
    is_valid_port_name, is_valid_port_num, validate_annotations, validate_label_key,
    validate_label_value, validate_labels, validate_qualified_name,
};
pub use validation::batch::prepare_job_for_create;
pub use validation::meta::{name_rule, validate_object_meta, validate_object_meta_update};
pub use validation::selector::validate_label_selector;

/// Whether a StorageClass with these annotations is a default class: either of the two
/// annotations Kubernetes reads (`storageutil.IsDefaultAnnotation`: the GA one and the
/// beta one) says `true`. `annotation` looks one up by key.
pub fn is_default_storage_class<'a>(annotation: impl Fn(&str) -> Option<&'a str>) -> bool {
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotation(k) == Some("true"))
}

/// The kind of a field error, as `k8s.io/apimachinery/pkg/util/validation/field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `FieldValueRequired`: "Required value"
    Required,
    /// `FieldValueInvalid`: "Invalid value"
    Invalid,
    /// `FieldValueDuplicate`: "Duplicate value"
    Duplicate,
    /// `FieldValueNotSupported`: "Unsupported value"
    NotSupported,
    /// `FieldValueForbidden`: "Forbidden"
    Forbidden,
    /// `FieldValueTooLong`: "Too long"
    TooLong,
    /// `FieldValueTooMany`: "Too many"
    TooMany,
    /// `FieldValueNotFound`: "Not found"
    NotFound,
}

impl ErrorType {
    /// The `reason` of a `StatusCause` (`FieldValueRequired`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }

    /// The words Kubernetes prints for it.
    pub fn words(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::NotFound => "Not found",
        }
    }
}

/// One invalid field, as `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub error_type: ErrorType,
    /// The path, as Kubernetes writes it: `spec.template.spec.containers[0].name`,
    /// `metadata.labels`, `data[key]`.
    pub field: String,
    /// The offending value, if any (printed Go-style by `Display`).
    pub value: Option<Value>,
    /// Extra detail, e.g. the rule a name broke.
    pub detail: String,
}

impl FieldError {
    pub fn new(
        error_type: ErrorType,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            error_type,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value), detail)
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }
    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        Self::new(ErrorType::Duplicate, field, Some(value), "")
    }
    pub fn not_found(field: impl Into<String>, value: Value) -> Self {
        Self::new(ErrorType::NotFound, field, Some(value), "")
    }
    /// `Unsupported value: "x": supported values: "a", "b"` (values listed in the given order).
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|v| format!("{v:?}")).collect();
        Self::new(
            ErrorType::NotSupported,
            field,
            Some(value),
            format!("supported values: {}", list.join(", ")),
        )
    }
    /// `Too many: N: must have at most M items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let items = if max == 1 { "item" } else { "items" };
        Self::new(
            ErrorType::TooMany,
            field,
            Some(Value::from(actual)),
            format!("must have at most {max} {items}"),
        )
    }
    /// The message of a `StatusCause`: what `Display` prints without the field, e.g.
    /// `Invalid value: "Foo": a lowercase RFC 1123 subdomain must ...`.
    pub fn cause_message(&self) -> String {
        let mut s = self.error_type.words().to_string();
        if let Some(v) = &self.value
            && !matches!(
                self.error_type,
                ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong
            )
        {
            s.push_str(": ");
            s.push_str(&go_value(v));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.cause_message())
    }
}

/// `Too long: may not be more than N bytes` at `field`.
pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
    let bytes = if max == 1 { "byte" } else { "bytes" };
    FieldError::new(
        ErrorType::TooLong,
        field,
        None,
        format!("may not be more than {max} {bytes}"),
    )
}

/// The key under which [`go_repr`] keeps a preformatted Go value.
const GO_REPR_KEY: &str = "\u{0}go";

/// A value that prints verbatim: for the values Kubernetes prints with Go's `%#v`, such as
/// `v1.LabelSelector{MatchLabels:...}`, which have no JSON equivalent.
pub fn go_repr(text: impl Into<String>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(GO_REPR_KEY.into(), Value::String(text.into()));
    Value::Object(m)
}

/// Prints a value the way Kubernetes' field errors do: strings quoted, numbers bare, string
/// maps and lists as Go's `%#v` prints them.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Null => "null".into(),
        Value::Object(m) => {
            if let Some(Value::String(text)) = m.get(GO_REPR_KEY) {
                return text.clone();
            }
            if m.values().all(Value::is_string) {
                return go_string_map(m);
            }
            v.to_string()
        }
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let items: Vec<String> = a
                .iter()
                .map(|s| go_quote(s.as_str().unwrap_or("")))
                .collect();
            format!("[]string{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Go's `%q`: a double-quoted string with Go escapes.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%#v` of a `map[string]string`: keys sorted.
pub(crate) fn go_string_map(m: &serde_json::Map<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let items: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:{}", go_quote(k), go_quote(m[*k].as_str().unwrap_or(""))))
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

/// Identifies a kind: `group` is `""` for the core group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind<'a> {
    pub group: &'a str,
    pub kind: &'a str,
}

/// Fills in the defaults Kubernetes applies to `object` of `kind` on create and update
/// (pod restartPolicy, dnsPolicy, terminationGracePeriodSeconds, imagePullPolicy,
/// terminationMessagePath, container port protocol, deployment strategy, replicas, ...).
pub fn apply_defaults(kind: Kind<'_>, object: &mut Value) {
    defaults::apply(kind, object)
}

/// Validates a pod written through `pods/<name>/ephemeralcontainers` (`new`, already made
/// from `old` with only `spec.ephemeralContainers` taken from the request), as
/// `ValidatePodEphemeralContainersUpdate`: the pod's spec, and its existing ephemeral
/// containers neither removed nor changed.
pub fn validate_pod_ephemeral_containers_update(new: &Value, old: &Value) -> Vec<FieldError> {
    validation::pod::validate_ephemeral_containers_update(new, old)
}

/// Validates `object` of `kind` as Kubernetes does; `old` is the stored object on update
/// (for immutable fields). Metadata (name syntax, labels, annotations) is validated too;
/// `namespaced` says whether the kind is namespaced.
pub fn validate(
    kind: Kind<'_>,
    namespaced: bool,
    object: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    validation::validate(kind, namespaced, object, old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_default_class_annotation_marks_a_default() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let pairs = pairs.to_vec();
            is_default_storage_class(move |k| {
                pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
            })
        };
        assert!(with(&[(
            "storageclass.kubernetes.io/is-default-class",
            "true"
        )]));
        assert!(with(&[(
            "storageclass.beta.kubernetes.io/is-default-class",
            "true"
        )]));
        assert!(!with(&[(
            "storageclass.kubernetes.io/is-default-class",
            "false"
        )]));
        assert!(!with(&[(
            "storageclass.kubernetes.io/is-default-class",
            "True"
        )]));
        assert!(!with(&[]));
    }
}
