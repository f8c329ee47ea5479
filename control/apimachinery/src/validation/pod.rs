//! Pods and pod templates, as `ValidatePodSpec`, `validateContainers`, `ValidatePodUpdate`.

use super::{Errs, arr, child, has, index, key, nonnegative, one_of, s};
use crate::FieldError;
use crate::names;
use crate::quantity::{self, Quantity};
use serde_json::{Value, json};
use std::collections::HashSet;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

pub(crate) fn validate_pod(pod: &Value, old: Option<&Value>, errs: &mut Errs) {
    let empty = json!({});
    let spec = pod.get("spec").unwrap_or(&empty);
    validate_pod_spec(spec, "spec", errs);
    match old {
        Some(old) => validate_pod_update(spec, old.get("spec").unwrap_or(&empty), errs),
        // Ephemeral containers come only through `pods/<name>/ephemeralcontainers`.
        None if !arr(spec, "ephemeralContainers").is_empty() => errs.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        )),
        None => {}
    }
}

/// An update through `pods/<name>/ephemeralcontainers`, as `ValidatePodEphemeralContainersUpdate`:
/// the pod's spec as a whole, and its existing ephemeral containers neither removed nor
/// changed (matched by name: a patch need not keep their order).
pub(crate) fn validate_ephemeral_containers_update(new: &Value, old: &Value) -> Errs {
    let empty = json!({});
    let mut errs = crate::validation::meta::validate_object_meta_update(
        new.get("metadata").unwrap_or(&empty),
        old.get("metadata").unwrap_or(&empty),
    );
    let spec = new.get("spec").unwrap_or(&empty);
    validate_pod_spec(spec, "spec", &mut errs);
    let path = "spec.ephemeralContainers";
    let current = arr(spec, "ephemeralContainers");
    for before in arr(old.get("spec").unwrap_or(&empty), "ephemeralContainers") {
        let name = s(before, "name");
        match current.iter().find(|c| s(c, "name") == name) {
            None => errs.push(FieldError::forbidden(
                path,
                format!("existing ephemeral containers {name:?} may not be removed"),
            )),
            Some(now) if now != before => errs.push(FieldError::forbidden(
                key(path, name),
                format!("existing ephemeral containers {name:?} may not be changed"),
            )),
            Some(_) => {}
        }
    }
    errs
}

/// A pod template (`metadata` + `spec`) at `path`: its labels are reported at `path.labels`.
pub(crate) fn validate_pod_template_spec(template: &Value, path: &str, errs: &mut Errs) {
    let empty = json!({});
    let meta = template.get("metadata").unwrap_or(&empty);
    if !arr(
        template.get("spec").unwrap_or(&empty),
        "ephemeralContainers",
    )
    .is_empty()
    {
        errs.push(FieldError::forbidden(
            child(&child(path, "spec"), "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs.extend(names::validate_labels(
        meta.get("labels"),
        &child(path, "labels"),
    ));
    errs.extend(names::validate_annotations(
        meta.get("annotations"),
        &child(path, "annotations"),
    ));
    validate_pod_spec(
        template.get("spec").unwrap_or(&empty),
        &child(path, "spec"),
        errs,
    );
}

pub(crate) fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Errs) {
    let volumes = validate_volumes(spec, &child(path, "volumes"), errs);
    let containers = arr(spec, "containers");
    let mut names_seen = HashSet::new();
    if containers.is_empty() {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        validate_container(
            c,
            &index(&child(path, "containers"), i),
            &volumes,
            &mut names_seen,
            errs,
        );
    }
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        validate_container(
            c,
            &index(&child(path, "initContainers"), i),
            &volumes,
            &mut names_seen,
            errs,
        );
    }
    validate_ephemeral_containers(spec, path, &volumes, &mut names_seen, errs);
    one_of(
        spec,
        "restartPolicy",
        &child(path, "restartPolicy"),
        &["Always", "OnFailure", "Never"],
        true,
        errs,
    );
    one_of(
        spec,
        "dnsPolicy",
        &child(path, "dnsPolicy"),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        true,
        errs,
    );
    if s(spec, "dnsPolicy") == "None" && !has(spec, "dnsConfig") {
        errs.push(FieldError::required(
            child(path, "dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    errs.extend(names::validate_labels(
        spec.get("nodeSelector"),
        &child(path, "nodeSelector"),
    ));
    for f in [
        "serviceAccountName",
        "nodeName",
        "schedulerName",
        "priorityClassName",
    ] {
        let v = s(spec, f);
        if !v.is_empty() {
            errs.extend(names::validate_dns1123_subdomain(v, &child(path, f)));
        }
    }
    for f in ["hostname", "subdomain"] {
        let v = s(spec, f);
        if !v.is_empty() {
            errs.extend(names::validate_dns1123_label(v, &child(path, f)));
        }
    }
    if let Some(ads) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&ads)
    {
        errs.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            json!(ads),
            names::inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    nonnegative(
        spec,
        "terminationGracePeriodSeconds",
        &child(path, "terminationGracePeriodSeconds"),
        errs,
    );
    for (i, t) in arr(spec, "tolerations").iter().enumerate() {
        validate_toleration(t, &index(&child(path, "tolerations"), i), errs);
    }
    for (i, sec) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if s(sec, "name").is_empty() {
            errs.push(FieldError::required(
                child(&index(&child(path, "imagePullSecrets"), i), "name"),
                "",
            ));
        }
    }
}

/// Validates volumes and returns their names.
fn validate_volumes(spec: &Value, path: &str, errs: &mut Errs) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        let p = index(path, i);
        let name = s(v, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            errs.extend(names::validate_dns1123_label(name, &child(&p, "name")));
        }
        if !seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&p, "name"), json!(name)));
        }
        let sources = v.as_object().map_or(0, |o| {
            o.iter()
                .filter(|(k, x)| *k != "name" && !x.is_null())
                .count()
        });
        if sources == 0 {
            errs.push(FieldError::required(&p, "must specify a volume type"));
        } else if sources > 1 {
            errs.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 volume type",
            ));
        }
        for src in ["configMap", "secret"] {
            if let Some(source) = v.get(src) {
                let (field, label) = if src == "secret" {
                    ("secretName", "secretName")
                } else {
                    ("name", "name")
                };
                if s(source, field).is_empty() {
                    errs.push(FieldError::required(child(&child(&p, src), label), ""));
                }
            }
        }
        if let Some(pvc) = v.get("persistentVolumeClaim")
            && s(pvc, "claimName").is_empty()
        {
            errs.push(FieldError::required(
                child(&child(&p, "persistentVolumeClaim"), "claimName"),
                "",
            ));
        }
        if let Some(hp) = v.get("hostPath")
            && s(hp, "path").is_empty()
        {
            errs.push(FieldError::required(
                child(&child(&p, "hostPath"), "path"),
                "",
            ));
        }
    }
    seen
}

fn validate_container(
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    seen: &mut HashSet<String>,
    errs: &mut Errs,
) {
    let name = s(c, "name");
    let name_path = child(path, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        errs.extend(names::validate_dns1123_label(name, &name_path));
    }
    if !name.is_empty() && !seen.insert(name.to_string()) {
        errs.push(FieldError::duplicate(&name_path, json!(name)));
    }
    let image = s(c, "image");
    if image.is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            child(path, "image"),
            json!(image),
            "must not have leading or trailing whitespace",
        ));
    }
    one_of(
        c,
        "imagePullPolicy",
        &child(path, "imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        true,
        errs,
    );
    one_of(
        c,
        "terminationMessagePolicy",
        &child(path, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        true,
        errs,
    );
    validate_ports(c, &child(path, "ports"), errs);
    validate_env(c, &child(path, "env"), errs);
    validate_env_from(c, &child(path, "envFrom"), errs);
    let mut mount_paths = HashSet::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let p = index(&child(path, "volumeMounts"), i);
        let vol = s(m, "name");
        if vol.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        if !volumes.contains(vol) {
            errs.push(FieldError::not_found(child(&p, "name"), json!(vol)));
        }
        let mount_path = s(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(child(&p, "mountPath"), ""));
        }
        if !mount_paths.insert(mount_path.to_string()) {
            errs.push(FieldError::invalid(
                child(&p, "mountPath"),
                json!(mount_path),
                "must be unique",
            ));
        }
        let sub = s(m, "subPath");
        if sub.starts_with('/') {
            errs.push(FieldError::invalid(
                child(&p, "subPath"),
                json!(sub),
                "must be a relative path",
            ));
        } else if sub.split('/').any(|seg| seg == "..") {
            errs.push(FieldError::invalid(
                child(&p, "subPath"),
                json!(sub),
                "must not contain '..'",
            ));
        }
    }
    validate_resources(c.get("resources"), &child(path, "resources"), errs);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe).filter(|p| !p.is_null()) {
            let pp = child(path, probe);
            validate_probe(p, &pp, errs);
            if probe != "readinessProbe"
                && let Some(st) = p.get("successThreshold").and_then(Value::as_i64)
                && st != 1
            {
                errs.push(FieldError::invalid(
                    child(&pp, "successThreshold"),
                    json!(st),
                    "must be 1",
                ));
            }
        }
    }
}

/// Container fields an ephemeral container may not set, in the Go type's field order:
/// ephemeral containers do not serve, get no resources of their own, and are never probed
/// or restarted.
const EPHEMERAL_FORBIDDEN: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

/// As `validateEphemeralContainers`: each is a valid container whose name no other container
/// of the pod has, whose `targetContainerName` names a container or init container of the
/// pod, and which sets none of [`EPHEMERAL_FORBIDDEN`] nor a volume subPath.
fn validate_ephemeral_containers(
    spec: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names_seen: &mut HashSet<String>,
    errs: &mut Errs,
) {
    let ephemeral = arr(spec, "ephemeralContainers");
    // Most pod writes (the agent's status writes among them) have none: nothing to build.
    if ephemeral.is_empty() {
        return;
    }
    let others: HashSet<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| arr(spec, list))
        .map(|c| s(c, "name"))
        .collect();
    let list = child(path, "ephemeralContainers");
    for (i, c) in ephemeral.iter().enumerate() {
        let p = index(&list, i);
        validate_container(c, &p, volumes, names_seen, errs);
        let target = s(c, "targetContainerName");
        if !target.is_empty() && !others.contains(target) {
            errs.push(FieldError::not_found(
                child(&p, "targetContainerName"),
                json!(target),
            ));
        }
        for field in EPHEMERAL_FORBIDDEN {
            if c.get(*field).is_some_and(|v| !is_zero(v)) {
                errs.push(FieldError::forbidden(
                    child(&p, field),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        for (j, m) in arr(c, "volumeMounts").iter().enumerate() {
            for field in ["subPath", "subPathExpr"] {
                if !s(m, field).is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&index(&child(&p, "volumeMounts"), j), field),
                        "cannot be set for an Ephemeral Container",
                    ));
                }
            }
        }
    }
}

/// Whether a value is its Go type's zero value as JSON carries it: absent in effect.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_zero),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

fn validate_ports(c: &Value, path: &str, errs: &mut Errs) {
    let mut seen = HashSet::new();
    for (i, port) in arr(c, "ports").iter().enumerate() {
        let p = index(path, i);
        let name = s(port, "name");
        if !name.is_empty() {
            let msgs = names::is_valid_port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(child(&p, "name"), json!(name), m));
                }
            } else if !seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&p, "name"), json!(name)));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => errs.push(FieldError::required(child(&p, "containerPort"), "")),
            Some(n) => {
                for m in names::is_valid_port_num(n) {
                    errs.push(FieldError::invalid(child(&p, "containerPort"), json!(n), m));
                }
            }
        }
        if let Some(h) = port.get("hostPort").and_then(Value::as_i64)
            && h != 0
        {
            for m in names::is_valid_port_num(h) {
                errs.push(FieldError::invalid(child(&p, "hostPort"), json!(h), m));
            }
        }
        one_of(
            port,
            "protocol",
            &child(&p, "protocol"),
            PROTOCOLS,
            true,
            errs,
        );
    }
}

fn validate_env(c: &Value, path: &str, errs: &mut Errs) {
    for (i, e) in arr(c, "env").iter().enumerate() {
        let p = index(path, i);
        let name = s(e, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        for m in names::is_env_var_name(name) {
            errs.push(FieldError::invalid(child(&p, "name"), json!(name), m));
        }
        let Some(from) = e.get("valueFrom").filter(|v| !v.is_null()) else {
            continue;
        };
        let fp = child(&p, "valueFrom");
        let sources = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ];
        let n = sources.iter().filter(|k| has(from, k)).count();
        if n == 0 {
            errs.push(FieldError::invalid(&fp, json!(""), "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
        } else if !s(e, "value").is_empty() {
            errs.push(FieldError::invalid(
                &fp,
                json!(""),
                "may not be specified when `value` is not empty",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                &fp,
                json!(""),
                "may not have more than one field specified at a time",
            ));
        }
        for kind in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = from.get(kind).filter(|v| !v.is_null()) {
                let rp = child(&fp, kind);
                if s(r, "name").is_empty() {
                    errs.push(FieldError::required(child(&rp, "name"), ""));
                }
                let k = s(r, "key");
                if k.is_empty() {
                    errs.push(FieldError::required(child(&rp, "key"), ""));
                } else {
                    for m in names::is_config_map_key(k) {
                        errs.push(FieldError::invalid(child(&rp, "key"), json!(k), m));
                    }
                }
            }
        }
        if let Some(fr) = from.get("fieldRef").filter(|v| !v.is_null())
            && s(fr, "fieldPath").is_empty()
        {
            errs.push(FieldError::required(
                child(&child(&fp, "fieldRef"), "fieldPath"),
                "",
            ));
        }
        if let Some(rr) = from.get("resourceFieldRef").filter(|v| !v.is_null()) {
            validate_resource_field_ref(rr, &child(&fp, "resourceFieldRef"), errs);
        }
    }
}

/// The container resources a `resourceFieldRef` may name, and the divisors each allows
/// (kube's `validateContainerResourceFieldSelector` and `validateContainerResourceDivisor`).
fn validate_resource_field_ref(rr: &Value, path: &str, errs: &mut Errs) {
    const RESOURCES: [&str; 6] = [
        "limits.cpu",
        "limits.ephemeral-storage",
        "limits.memory",
        "requests.cpu",
        "requests.ephemeral-storage",
        "requests.memory",
    ];
    let resource = s(rr, "resource");
    let hugepages =
        resource.starts_with("limits.hugepages-") || resource.starts_with("requests.hugepages-");
    if resource.is_empty() {
        errs.push(FieldError::required(child(path, "resource"), ""));
    } else if !RESOURCES.contains(&resource) && !hugepages {
        errs.push(FieldError::not_supported(
            child(path, "resource"),
            json!(resource),
            &RESOURCES,
        ));
    }
    let Some(divisor) = quantity::from_json(rr.get("divisor").unwrap_or(&Value::Null)) else {
        return;
    };
    let dp = child(path, "divisor");
    let divisor = match divisor {
        Ok(d) if d.nanos == 0 => return,
        Ok(d) => d.canonical(),
        Err(m) => {
            errs.push(FieldError::invalid(dp, rr["divisor"].clone(), m));
            return;
        }
    };
    const BYTES: [&str; 13] = [
        "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
    ];
    let what = match resource.split_once('.').map(|(_, name)| name) {
        Some("cpu") => {
            if !["1m", "1"].contains(&divisor.as_str()) {
                errs.push(FieldError::invalid(
                    dp,
                    json!(resource),
                    "only divisor's values 1m and 1 are supported with the cpu resource",
                ));
            }
            return;
        }
        Some("memory") => "memory",
        Some("ephemeral-storage") => "local ephemeral storage",
        _ if hugepages => "hugepages",
        _ => return,
    };
    if !BYTES.contains(&divisor.as_str()) {
        errs.push(FieldError::invalid(
            dp,
            json!(resource),
            format!(
                "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the {what} resource"
            ),
        ));
    }
}

fn validate_env_from(c: &Value, path: &str, errs: &mut Errs) {
    for (i, e) in arr(c, "envFrom").iter().enumerate() {
        let p = index(path, i);
        let prefix = s(e, "prefix");
        if !prefix.is_empty() {
            for m in names::is_env_var_name(prefix) {
                errs.push(FieldError::invalid(child(&p, "prefix"), json!(prefix), m));
            }
        }
        let n = ["configMapRef", "secretRef"]
            .iter()
            .filter(|k| has(e, k))
            .count();
        if n == 0 {
            errs.push(FieldError::invalid(
                &p,
                json!(""),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                &p,
                json!(""),
                "may not have more than one field specified at a time",
            ));
        }
        for kind in ["configMapRef", "secretRef"] {
            if let Some(r) = e.get(kind).filter(|v| !v.is_null()) {
                let name = s(r, "name");
                if name.is_empty() {
                    errs.push(FieldError::required(child(&child(&p, kind), "name"), ""));
                } else {
                    errs.extend(names::validate_dns1123_subdomain(
                        name,
                        &child(&child(&p, kind), "name"),
                    ));
                }
            }
        }
    }
}

/// Resource quantities: valid, non-negative, and requests no greater than limits.
pub(crate) fn validate_resources(resources: Option<&Value>, path: &str, errs: &mut Errs) {
    let Some(resources) = resources else { return };
    let mut parsed = |which: &str| -> Vec<(String, Quantity)> {
        let mut out = Vec::new();
        let Some(map) = resources.get(which).and_then(Value::as_object) else {
            return out;
        };
        for (name, v) in map {
            let p = key(&child(path, which), name);
            if name.is_empty() {
                errs.push(FieldError::required(&p, ""));
                continue;
            }
            if !name.contains('/') && !is_standard_resource(name) {
                errs.push(FieldError::invalid(
                    &p,
                    json!(name),
                    "must be a standard resource type or fully qualified",
                ));
            }
            match quantity::from_json(v) {
                Some(Ok(q)) if q.nanos < 0 => {
                    errs.push(FieldError::invalid(
                        &p,
                        json!(q.canonical()),
                        "must be greater than or equal to 0",
                    ));
                }
                Some(Ok(q)) => out.push((name.clone(), q)),
                _ => errs.push(FieldError::invalid(
                    &p,
                    v.clone(),
                    quantity::QUANTITY_FORMAT_ERROR,
                )),
            }
        }
        out
    };
    let limits = parsed("limits");
    let requests = parsed("requests");
    for (name, req) in &requests {
        if let Some((_, lim)) = limits.iter().find(|(n, _)| n == name)
            && req > lim
        {
            errs.push(FieldError::invalid(
                key(&child(path, "requests"), name),
                json!(req.canonical()),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    lim.canonical()
                ),
            ));
        }
    }
}

fn is_standard_resource(name: &str) -> bool {
    matches!(
        name,
        "cpu" | "memory" | "ephemeral-storage" | "storage" | "pods"
    ) || name.starts_with("hugepages-")
        || name.starts_with("requests.")
        || name.starts_with("limits.")
}

fn validate_probe(p: &Value, path: &str, errs: &mut Errs) {
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"];
    let n = handlers.iter().filter(|h| has(p, h)).count();
    if n == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    } else if n > 1 {
        errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        ));
    }
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonnegative(p, f, &child(path, f), errs);
    }
    if let Some(g) = p.get("httpGet").filter(|v| !v.is_null()) {
        let gp = child(path, "httpGet");
        if s(g, "path").is_empty() {
            errs.push(FieldError::required(child(&gp, "path"), ""));
        }
        port_num_or_name(g.get("port"), &child(&gp, "port"), errs);
        one_of(
            g,
            "scheme",
            &child(&gp, "scheme"),
            &["HTTP", "HTTPS"],
            false,
            errs,
        );
    }
    if let Some(t) = p.get("tcpSocket").filter(|v| !v.is_null()) {
        port_num_or_name(
            t.get("port"),
            &child(&child(path, "tcpSocket"), "port"),
            errs,
        );
    }
}

/// An `IntOrString` port: a number in range or a valid port name.
pub(crate) fn port_num_or_name(port: Option<&Value>, path: &str, errs: &mut Errs) {
    match port {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            for m in names::is_valid_port_num(n) {
                errs.push(FieldError::invalid(path, json!(n), m));
            }
        }
        Some(Value::String(name)) => {
            for m in names::is_valid_port_name(name) {
                errs.push(FieldError::invalid(path, json!(name), m));
            }
        }
        _ => errs.push(FieldError::required(path, "")),
    }
}

fn validate_toleration(t: &Value, path: &str, errs: &mut Errs) {
    let k = s(t, "key");
    if !k.is_empty() {
        errs.extend(names::validate_label_key(k, &child(path, "key")));
    }
    let op = s(t, "operator");
    if k.is_empty() && op != "Exists" {
        errs.push(FieldError::invalid(
            child(path, "operator"),
            json!(op),
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ));
    }
    if has(t, "tolerationSeconds") && s(t, "effect") != "NoExecute" {
        errs.push(FieldError::invalid(
            child(path, "effect"),
            json!(s(t, "effect")),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    match op {
        "" | "Equal" => {
            let v = s(t, "value");
            for m in names::is_valid_label_value(v) {
                errs.push(FieldError::invalid(child(path, "value"), json!(v), m));
            }
        }
        "Exists" => {
            if !s(t, "value").is_empty() {
                errs.push(FieldError::invalid(
                    child(path, "operator"),
                    json!(s(t, "value")),
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            child(path, "operator"),
            json!(other),
            &["Equal", "Exists"],
        )),
    }
    let effect = s(t, "effect");
    if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        errs.push(FieldError::not_supported(
            child(path, "effect"),
            json!(effect),
            &["NoExecute", "NoSchedule", "PreferNoSchedule"],
        ));
    }
}

/// On update a pod's spec may only change container images, `activeDeadlineSeconds` (set or
/// lowered), tolerations (by additions), and a negative grace period to 1.
fn validate_pod_update(new: &Value, old: &Value, errs: &mut Errs) {
    if arr(new, "containers").len() != arr(old, "containers").len() {
        errs.push(FieldError::forbidden(
            "spec.containers",
            "pod updates may not add or remove containers",
        ));
        return;
    }
    if arr(new, "initContainers").len() != arr(old, "initContainers").len() {
        errs.push(FieldError::forbidden(
            "spec.initContainers",
            "pod updates may not add or remove containers",
        ));
        return;
    }
    match (
        new.get("activeDeadlineSeconds").and_then(Value::as_i64),
        old.get("activeDeadlineSeconds").and_then(Value::as_i64),
    ) {
        (Some(n), Some(o)) if n > o => {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                json!(n),
                "must be less than or equal to previous value",
            ));
            return;
        }
        (None, Some(_)) => {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                Value::Null,
                "must not update from a positive integer to nil value",
            ));
            return;
        }
        _ => {}
    }
    let mut munged = new.clone();
    let Some(m) = munged.as_object_mut() else {
        return;
    };
    for list in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            for (c, oc) in cs.iter_mut().zip(arr(old, list)) {
                if let (Some(c), Some(img)) = (c.as_object_mut(), oc.get("image")) {
                    c.insert("image".into(), img.clone());
                }
            }
        }
    }
    match old.get("activeDeadlineSeconds") {
        Some(v) => m.insert("activeDeadlineSeconds".into(), v.clone()),
        None => m.remove("activeDeadlineSeconds"),
    };
    let old_tolerations = arr(old, "tolerations");
    let new_tolerations = arr(new, "tolerations");
    if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
        match old.get("tolerations") {
            Some(v) => m.insert("tolerations".into(), v.clone()),
            None => m.remove("tolerations"),
        };
    }
    let old_grace = old
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    if old_grace.is_some_and(|g| g < 0)
        && new
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(1)
    {
        m.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
    }
    // Scheduling gates may only be removed.
    let old_gates = arr(old, "schedulingGates");
    if arr(new, "schedulingGates")
        .iter()
        .all(|g| old_gates.contains(g))
    {
        match old.get("schedulingGates") {
            Some(v) => m.insert("schedulingGates".into(), v.clone()),
            None => m.remove("schedulingGates"),
        };
    }
    if &munged != old {
        errs.push(FieldError::forbidden("spec", POD_UPDATE_FORBIDDEN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, apply_defaults, validate};

    fn pod(spec: Value) -> Value {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        apply_defaults(
            Kind {
                group: "",
                kind: "Pod",
            },
            &mut p,
        );
        p
    }

    fn check(p: &Value, old: Option<&Value>) -> Vec<String> {
        validate(
            Kind {
                group: "",
                kind: "Pod",
            },
            true,
            p,
            old,
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    #[test]
    fn valid_pod_passes() {
        let p = pod(
            json!({"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}],
            "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "128Mi"}}}],
            "volumes": [{"name": "data"}]}),
        );
        assert_eq!(check(&p, None), Vec::<String>::new());
    }

    #[test]
    fn resource_field_refs_name_a_resource_and_a_divisor_it_allows() {
        let env = |resource: &str, divisor: Value| {
            let p = pod(
                json!({"containers": [{"name": "c", "image": "busybox", "env": [
                {"name": "X", "valueFrom": {"resourceFieldRef": {"resource": resource, "divisor": divisor}}}]}]}),
            );
            check(&p, None)
        };
        assert_eq!(env("limits.memory", json!("1Mi")), Vec::<String>::new());
        assert_eq!(env("requests.cpu", json!("1000m")), Vec::<String>::new());
        assert_eq!(env("limits.cpu", json!(null)), Vec::<String>::new());
        let field = "spec.containers[0].env[0].valueFrom.resourceFieldRef";
        assert_eq!(
            env("limits.gpu", json!(null)),
            [format!(
                "{field}.resource: Unsupported value: \"limits.gpu\": supported values: \"limits.cpu\", \"limits.ephemeral-storage\", \"limits.memory\", \"requests.cpu\", \"requests.ephemeral-storage\", \"requests.memory\""
            )]
        );
        assert_eq!(
            env("limits.cpu", json!("10m")),
            [format!(
                "{field}.divisor: Invalid value: \"limits.cpu\": only divisor's values 1m and 1 are supported with the cpu resource"
            )]
        );
        assert_eq!(
            env("requests.memory", json!("3Mi")),
            [format!(
                "{field}.divisor: Invalid value: \"requests.memory\": only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the memory resource"
            )]
        );
    }

    #[test]
    fn containers_required() {
        assert_eq!(
            check(&pod(json!({})), None),
            ["spec.containers: Required value"]
        );
    }

    #[test]
    fn typical_container_mistakes() {
        let p = pod(json!({"restartPolicy": "Sometimes", "containers": [
            {"name": "Web", "image": "", "imagePullPolicy": "Maybe", "ports": [{"containerPort": 70000}],
             "env": [{"name": "A=B"}], "volumeMounts": [{"name": "missing", "mountPath": "/m"}]},
            {"name": "side", "image": "busybox"}],
            "initContainers": [{"name": "side", "image": "busybox"}]}));
        let errs = check(&p, None);
        let expected = [
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.containers[0].image: Required value",
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
            "spec.initContainers[0].name: Duplicate value: \"side\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ];
        assert_eq!(errs, expected);
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        let p = pod(
            json!({"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1024Mi"}}}]}),
        );
        assert_eq!(
            check(&p, None),
            [
                "spec.containers[0].resources.requests[cpu]: Invalid value: \"1500m\": must be less than or equal to cpu limit of 1"
            ]
        );
    }

    #[test]
    fn duplicate_volumes_and_negative_grace() {
        let p = pod(
            json!({"terminationGracePeriodSeconds": -5, "volumes": [{"name": "v"}, {"name": "v"}], "containers": [{"name": "a", "image": "x"}]}),
        );
        assert_eq!(
            check(&p, None),
            [
                "spec.volumes[1].name: Duplicate value: \"v\"",
                "spec.terminationGracePeriodSeconds: Invalid value: -5: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn pod_update_allows_image_only() {
        let old = pod(
            json!({"containers": [{"name": "a", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["metadata"]["labels"] = json!({"x": "y"});
        assert_eq!(check(&new, Some(&old)), Vec::<String>::new());
        new["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81);
        assert_eq!(
            check(&new, Some(&old)),
            [format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}")]
        );
    }

    #[test]
    fn pod_update_tolerations_only_grow() {
        let old = pod(json!({"containers": [{"name": "a", "image": "x"}]}));
        let mut new = old.clone();
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "k", "operator": "Exists"}));
        assert!(check(&new, Some(&old)).is_empty());
        new["spec"]["tolerations"] = json!([]);
        assert_eq!(check(&new, Some(&old)).len(), 1);
    }

    #[test]
    fn ephemeral_containers_only_through_their_subresource() {
        let mut p = pod(json!({"containers": [{"name": "a", "image": "x"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}));
        assert_eq!(
            check(&p, None),
            ["spec.ephemeralContainers: Forbidden: cannot be set on create"]
        );
        // Through the pod itself, an update may not add one either.
        let old = pod(json!({"containers": [{"name": "a", "image": "x"}]}));
        assert_eq!(
            check(&p, Some(&old)),
            [format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}")]
        );
        // Through the subresource it may.
        assert!(validate_ephemeral_containers_update(&p, &old).is_empty());
        // But not with a name another container has, fields it may not set, or a target
        // that is not a container of the pod.
        p["spec"]["ephemeralContainers"] = json!([{"name": "a", "image": "busybox",
            "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File",
            "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {},
            "readinessProbe": {"exec": {"command": ["true"]}}, "targetContainerName": "nope",
            "volumeMounts": []}]);
        let errs: Vec<String> = validate_ephemeral_containers_update(&p, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "spec.ephemeralContainers[0].name: Duplicate value: \"a\"",
                "spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\"",
                "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[0].readinessProbe: Forbidden: cannot be set for an Ephemeral Container",
            ]
        );
    }

    #[test]
    fn existing_ephemeral_containers_neither_change_nor_go() {
        let old = pod(json!({"containers": [{"name": "a", "image": "x"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox", "targetContainerName": "a"}]}));
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(
                json!({"name": "dbg2", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePolicy": "File"}),
            );
        assert!(validate_ephemeral_containers_update(&new, &old).is_empty());
        // Order is free: matched by name.
        new["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .reverse();
        assert!(validate_ephemeral_containers_update(&new, &old).is_empty());
        new["spec"]["ephemeralContainers"][1]["image"] = json!("alpine");
        let changed: Vec<String> = validate_ephemeral_containers_update(&new, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changed,
            [
                "spec.ephemeralContainers[dbg]: Forbidden: existing ephemeral containers \"dbg\" may not be changed"
            ]
        );
        new["spec"]["ephemeralContainers"] = json!([]);
        let removed: Vec<String> = validate_ephemeral_containers_update(&new, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            removed,
            [
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed"
            ]
        );
    }

    #[test]
    fn templates_have_no_ephemeral_containers() {
        let mut errs = Errs::new();
        validate_pod_template_spec(
            &json!({"spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always",
                    "terminationMessagePolicy": "File"}],
                "ephemeralContainers": [{"name": "b", "image": "x", "imagePullPolicy": "Always",
                    "terminationMessagePolicy": "File"}]}}),
            "spec.template",
            &mut errs,
        );
        assert_eq!(
            errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "spec.template.spec.ephemeralContainers: Forbidden: ephemeral containers not allowed in pod template"
            ]
        );
    }
}
