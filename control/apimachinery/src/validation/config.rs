//! ConfigMaps and Secrets: key syntax, the 1 MiB size limit, secret types, immutability.

use super::{Errs, key, s};
use crate::{FieldError, names};
use serde_json::{Value, json};

/// The most a ConfigMap's or Secret's data may hold, in bytes.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

fn keys(map: Option<&Value>, path: &str, errs: &mut Errs) {
    if let Some(Value::Object(m)) = map {
        for k in m.keys() {
            for msg in names::is_config_map_key(k) {
                errs.push(FieldError::invalid(key(path, k), json!(k), msg));
            }
        }
    }
}

/// The decoded length of base64 text.
fn base64_len(text: &str) -> usize {
    let t = text.trim_end_matches('=');
    t.len() * 3 / 4
}

fn immutability(obj: &Value, old: Option<&Value>, fields: &[&str], errs: &mut Errs) {
    let Some(old) = old else { return };
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        if obj.get(*f) != old.get(*f) {
            errs.push(FieldError::forbidden(
                *f,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

pub(crate) fn validate_config_map(cm: &Value, old: Option<&Value>, errs: &mut Errs) {
    keys(cm.get("data"), "data", errs);
    keys(cm.get("binaryData"), "binaryData", errs);
    let data = cm.get("data").and_then(Value::as_object);
    let binary = cm.get("binaryData").and_then(Value::as_object);
    let mut total = 0;
    if let Some(d) = data {
        for (k, v) in d {
            if binary.is_some_and(|b| b.contains_key(k)) {
                errs.push(FieldError::invalid(
                    key("data", k),
                    json!(k),
                    "duplicate of key present in binaryData",
                ));
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if let Some(b) = binary {
        for (k, v) in b {
            if data.is_some_and(|d| d.contains_key(k)) {
                errs.push(FieldError::invalid(
                    key("binaryData", k),
                    json!(k),
                    "duplicate of key present in data",
                ));
            }
            total += base64_len(v.as_str().unwrap_or(""));
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(crate::too_long("", MAX_SECRET_SIZE));
    }
    immutability(cm, old, &["data", "binaryData"], errs);
}

pub(crate) fn validate_secret(secret: &Value, old: Option<&Value>, errs: &mut Errs) {
    keys(secret.get("data"), "data", errs);
    let data = secret.get("data").and_then(Value::as_object);
    let total: usize = data.map_or(0, |d| {
        d.values()
            .map(|v| base64_len(v.as_str().unwrap_or("")))
            .sum()
    });
    if total > MAX_SECRET_SIZE {
        errs.push(crate::too_long("data", MAX_SECRET_SIZE));
    }
    let present = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let non_empty = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    match s(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let annotated = secret
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .map(|a| s(a, "kubernetes.io/service-account.name"))
                .is_some_and(|n| !n.is_empty());
            if !annotated {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if !present(".dockercfg") => {
            errs.push(FieldError::required("data[.dockercfg]", ""))
        }
        "kubernetes.io/dockerconfigjson" if !present(".dockerconfigjson") => {
            errs.push(FieldError::required("data[.dockerconfigjson]", ""));
        }
        "kubernetes.io/basic-auth" if !present("username") && !present("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !non_empty("ssh-privatekey") => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""))
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !present(k) {
                    errs.push(FieldError::required(key("data", k), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        super::immutable(secret, old, "type", "type", errs);
    }
    immutability(secret, old, &["data"], errs);
}

#[cfg(test)]
mod tests {
    use crate::{Kind, apply_defaults, validate};
    use serde_json::{Value, json};

    fn check(kind: &str, mut o: Value, old: Option<&Value>) -> Vec<String> {
        apply_defaults(Kind { group: "", kind }, &mut o);
        validate(Kind { group: "", kind }, true, &o, old)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn config_map_keys_and_size() {
        let errs = check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a/b": "x", "ok.key": "y"}}),
            None,
        );
        assert_eq!(
            errs,
            [
                "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
            ]
        );
        let big = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"k": "x".repeat(super::MAX_SECRET_SIZE + 1)}});
        assert_eq!(
            check("ConfigMap", big, None),
            [": Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn immutable_config_map() {
        let old = json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "data": {"a": "1"}});
        let new = json!({"metadata": {"name": "c", "namespace": "d"}, "immutable": true, "data": {"a": "2"}});
        assert_eq!(
            check("ConfigMap", new, Some(&old)),
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );
    }

    #[test]
    fn secret_types() {
        let tls = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(
            check("Secret", tls, None),
            ["data[tls.key]: Required value"]
        );
        let ok =
            json!({"metadata": {"name": "s", "namespace": "d"}, "stringData": {"password": "p"}});
        assert!(check("Secret", ok, None).is_empty());
        let old = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque"});
        let changed = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/basic-auth", "data": {"username": "dQ=="}});
        assert_eq!(
            check("Secret", changed, Some(&old)),
            ["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
        );
    }
}
