//! Label selectors: validation as `meta/v1/validation.ValidateLabelSelector`, matching, and
//! the Go form Kubernetes prints them in.

use super::{Errs, arr, child, index};
use crate::names;
use crate::{FieldError, go_quote, go_string_map};
use serde_json::{Map, Value, json};

/// Validates a `LabelSelector` (`matchLabels`, `matchExpressions`) at `path`.
pub fn validate_label_selector(selector: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Errs::new();
    errs.extend(names::validate_labels(
        selector.get("matchLabels"),
        &child(path, "matchLabels"),
    ));
    for (i, req) in arr(selector, "matchExpressions").iter().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        let values = arr(req, "values");
        match req.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&p, "operator"),
                json!(other),
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
        let key = req.get("key").and_then(Value::as_str).unwrap_or("");
        errs.extend(names::validate_label_key(key, &child(&p, "key")));
        for (j, v) in values.iter().enumerate() {
            errs.extend(names::validate_label_value(
                v.as_str().unwrap_or(""),
                &index(&child(&p, "values"), j),
            ));
        }
    }
    errs
}

/// Whether the selector selects nothing in particular (no labels, no expressions).
pub(crate) fn is_empty(selector: &Value) -> bool {
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && arr(selector, "matchExpressions").is_empty()
}

/// Whether `selector` matches `labels`.
pub(crate) fn matches(selector: &Value, labels: Option<&Value>) -> bool {
    let empty = Map::new();
    let labels = labels.and_then(Value::as_object).unwrap_or(&empty);
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    arr(selector, "matchExpressions").iter().all(|req| {
        let key = req.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = arr(req, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        match req.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        }
    })
}

/// Go's `%#v` of a `v1.LabelSelector`, as Kubernetes prints it in field errors.
pub(crate) fn go_label_selector(selector: &Value) -> Value {
    let labels = match selector.get("matchLabels").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => go_string_map(m),
        _ => "map[string]string(nil)".to_string(),
    };
    let exprs = arr(selector, "matchExpressions");
    let exprs = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|r| {
                let values: Vec<String> = arr(r, "values")
                    .iter()
                    .map(|v| go_quote(v.as_str().unwrap_or("")))
                    .collect();
                let values = if values.is_empty() {
                    "[]string(nil)".to_string()
                } else {
                    format!("[]string{{{}}}", values.join(", "))
                };
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                    go_quote(r.get("key").and_then(Value::as_str).unwrap_or("")),
                    go_quote(r.get("operator").and_then(Value::as_str).unwrap_or(""))
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    crate::go_repr(format!(
        "v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_matching() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert!(matches(&sel, Some(&json!({"app": "web", "tier": "a"}))));
        assert!(!matches(&sel, Some(&json!({"app": "web", "tier": "c"}))));
        assert!(!matches(&sel, Some(&json!({"app": "web"}))));
        assert!(matches(
            &json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
            None
        ));
    }

    #[test]
    fn selector_validation_messages() {
        let sel = json!({"matchExpressions": [{"key": "a", "operator": "In"}, {"key": "b", "operator": "Exists", "values": ["x"]}, {"key": "c", "operator": "Near"}]});
        let errs: Vec<String> = validate_label_selector(&sel, "spec.selector")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "spec.selector.matchExpressions[2].operator: Unsupported value: \"Near\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"",
            ]
        );
    }

    #[test]
    fn go_form_of_selector() {
        let v = go_label_selector(&json!({"matchLabels": {"app": "nginx2"}}));
        let e = FieldError::invalid("spec.selector", v, "field is immutable");
        assert_eq!(
            e.to_string(),
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"nginx2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
    }
}
