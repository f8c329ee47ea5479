//! Validation, as `pkg/apis/*/validation` in Kubernetes: one module per API area. Every
//! function appends to an error list so a request gets every problem at once.

pub(crate) mod apps;
pub(crate) mod batch;
mod config;
pub(crate) mod meta;
mod misc;
pub(crate) mod pod;
pub(crate) mod selector;
mod service;

use crate::{FieldError, Kind};
use serde_json::{Value, json};

pub(crate) type Errs = Vec<FieldError>;

pub(crate) fn validate(
    kind: Kind<'_>,
    namespaced: bool,
    object: &Value,
    old: Option<&Value>,
) -> Errs {
    let mut errs = Errs::new();
    let empty = json!({});
    let metadata = object.get("metadata").unwrap_or(&empty);
    match old {
        None => errs.extend(meta::validate_object_meta(
            metadata,
            namespaced,
            meta::name_rule(kind),
        )),
        Some(old) => errs.extend(meta::validate_object_meta_update(
            metadata,
            old.get("metadata").unwrap_or(&empty),
        )),
    }
    match (kind.group, kind.kind) {
        ("", "Pod") => pod::validate_pod(object, old, &mut errs),
        ("", "PodTemplate") => pod::validate_pod_template_spec(
            object.get("template").unwrap_or(&empty),
            "template",
            &mut errs,
        ),
        ("", "ReplicationController") => {
            apps::validate_replication_controller(object, old, &mut errs)
        }
        ("", "Service") => service::validate_service(object, old, &mut errs),
        ("", "ConfigMap") => config::validate_config_map(object, old, &mut errs),
        ("", "Secret") => config::validate_secret(object, old, &mut errs),
        ("", "Namespace") => misc::validate_namespace(object, &mut errs),
        ("", "Event") => misc::validate_event(object, false, &mut errs),
        ("events.k8s.io", "Event") => misc::validate_event(object, true, &mut errs),
        ("", "PersistentVolumeClaim") => misc::validate_pvc(object, old, &mut errs),
        ("", "PersistentVolume") => misc::validate_pv(object, &mut errs),
        ("apps", "Deployment") => apps::validate_deployment(object, old, &mut errs),
        ("apps", "ReplicaSet") => apps::validate_replica_set(object, old, &mut errs),
        ("apps", "StatefulSet") => apps::validate_stateful_set(object, old, &mut errs),
        ("apps", "DaemonSet") => apps::validate_daemon_set(object, old, &mut errs),
        ("batch", "Job") => batch::validate_job(object, old, &mut errs),
        ("batch", "CronJob") => batch::validate_cron_job(object, &mut errs),
        ("coordination.k8s.io", "Lease") => misc::validate_lease(object, &mut errs),
        ("policy", "PodDisruptionBudget") => {
            misc::validate_pod_disruption_budget(object, &mut errs)
        }
        ("storage.k8s.io", "StorageClass") => misc::validate_storage_class(object, old, &mut errs),
        ("node.k8s.io", "RuntimeClass") => misc::validate_runtime_class(object, old, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => {
            misc::validate_endpoint_slice(object, old, &mut errs)
        }
        ("scheduling.k8s.io", "PriorityClass") => misc::validate_priority_class(object, &mut errs),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            misc::validate_rbac_rules(object, &mut errs)
        }
        _ => {}
    }
    errs
}

/// `parent.name` (or `name` at the root).
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// `parent[i]`
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `parent[key]`
pub(crate) fn key(parent: &str, k: &str) -> String {
    format!("{parent}[{k}]")
}

/// The string at `k`, or `""`.
pub(crate) fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The array at `k`, or an empty slice.
pub(crate) fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether `k` is present and not null.
pub(crate) fn has(v: &Value, k: &str) -> bool {
    v.get(k).is_some_and(|x| !x.is_null())
}

/// `must be greater than or equal to 0` when the integer at `k` is negative.
pub(crate) fn nonnegative(v: &Value, k: &str, path: &str, errs: &mut Errs) {
    if let Some(n) = v.get(k).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            path,
            json!(n),
            "must be greater than or equal to 0",
        ));
    }
}

/// A field that may not change on update: `Invalid value: <new>: field is immutable`.
pub(crate) fn immutable(new: &Value, old: &Value, k: &str, path: &str, errs: &mut Errs) {
    let n = new.get(k).unwrap_or(&Value::Null);
    let o = old.get(k).unwrap_or(&Value::Null);
    if n != o {
        errs.push(FieldError::invalid(
            path,
            n.clone(),
            crate::validation::meta::FIELD_IMMUTABLE,
        ));
    }
}

/// `Unsupported value` unless the string at `k` is one of `supported`; `Required value` when
/// it is missing and `required`.
pub(crate) fn one_of(
    v: &Value,
    k: &str,
    path: &str,
    supported: &[&str],
    required: bool,
    errs: &mut Errs,
) {
    match v.get(k) {
        None | Some(Value::Null) => {
            if required {
                errs.push(FieldError::required(path, ""));
            }
        }
        Some(Value::String(x)) if x.is_empty() && required => {
            errs.push(FieldError::required(path, ""))
        }
        Some(Value::String(x)) if supported.contains(&x.as_str()) => {}
        Some(other) => errs.push(FieldError::not_supported(path, other.clone(), supported)),
    }
}
