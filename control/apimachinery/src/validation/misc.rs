//! Smaller kinds: namespaces, events, volumes and claims, leases, runtime classes, endpoint
//! slices, priority classes, RBAC rules.

use super::meta::FIELD_IMMUTABLE;
use super::{Errs, arr, child, has, index, key, nonnegative, one_of, s};
use crate::{FieldError, names};
use serde_json::{Value, json};

pub(crate) fn validate_namespace(ns: &Value, errs: &mut Errs) {
    let Some(spec) = ns.get("spec") else { return };
    for f in arr(spec, "finalizers") {
        let f = f.as_str().unwrap_or("");
        let msgs = names::is_qualified_name(f);
        if !msgs.is_empty() {
            for m in msgs {
                errs.push(FieldError::invalid("spec.finalizers", json!(f), m));
            }
        } else if !f.contains('/') && f != "kubernetes" {
            errs.push(FieldError::invalid(
                "spec.finalizers",
                json!(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

/// Events. Those written through core/v1 get the legacy rules only, as on a real cluster;
/// events.k8s.io/v1 ones (`strict`) must also name their reporter.
pub(crate) fn validate_event(ev: &Value, strict: bool, errs: &mut Errs) {
    let empty = json!({});
    let ns = ev.get("metadata").map(|m| s(m, "namespace")).unwrap_or("");
    let (regarding, regarding_path) = if strict {
        ("regarding", "regarding.namespace")
    } else {
        ("involvedObject", "involvedObject.namespace")
    };
    let involved = ev.get(regarding).unwrap_or(&empty);
    let involved_ns = s(involved, "namespace");
    let has_event_time = has(ev, "eventTime");
    if !has_event_time {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(FieldError::invalid(
                    regarding_path,
                    json!(involved_ns),
                    "does not match event.namespace",
                ));
            }
        } else if ns != involved_ns {
            errs.push(FieldError::invalid(
                regarding_path,
                json!(involved_ns),
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(
                regarding_path,
                json!(involved_ns),
                "does not match event.namespace",
            ));
        }
        let controller_field = if strict {
            "reportingController"
        } else {
            "reportingComponent"
        };
        let controller = s(
            ev,
            if strict {
                "reportingController"
            } else {
                "reportingComponent"
            },
        );
        if controller.is_empty() {
            errs.push(FieldError::required(controller_field, ""));
        }
        errs.extend(names::validate_qualified_name(controller, controller_field));
        let instance = s(ev, "reportingInstance");
        if instance.is_empty() {
            errs.push(FieldError::required("reportingInstance", ""));
        } else if instance.len() > 128 {
            errs.push(FieldError::invalid(
                "reportingInstance",
                json!(instance),
                "can have at most 128 characters",
            ));
        }
        let action = s(ev, "action");
        if action.is_empty() {
            errs.push(FieldError::required("action", ""));
        } else if action.len() > 128 {
            errs.push(FieldError::invalid(
                "action",
                json!(action),
                "can have at most 128 characters",
            ));
        }
        let reason = s(ev, "reason");
        if reason.is_empty() {
            errs.push(FieldError::required("reason", ""));
        } else if reason.len() > 128 {
            errs.push(FieldError::invalid(
                "reason",
                json!(reason),
                "can have at most 128 characters",
            ));
        }
        let note_field = if strict { "note" } else { "message" };
        let note = s(ev, note_field);
        if note.len() > 1024 {
            errs.push(FieldError::invalid(
                note_field,
                json!(note),
                "can have at most 1024 characters",
            ));
        }
    }
    for m in names::is_dns1123_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", json!(ns), m));
    }
    let ty = s(ev, "type");
    if !ty.is_empty() && ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            json!(ty),
            "has invalid value: ".to_string() + ty,
        ));
    }
}

fn access_modes_and_storage(
    spec: &Value,
    path: &str,
    resources_path: Option<&str>,
    errs: &mut Errs,
) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required(
            child(path, "accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if ![
            "ReadWriteOnce",
            "ReadOnlyMany",
            "ReadWriteMany",
            "ReadWriteOncePod",
        ]
        .contains(&m)
        {
            errs.push(FieldError::not_supported(
                child(path, "accessModes"),
                json!(m),
                &[
                    "ReadOnlyMany",
                    "ReadWriteMany",
                    "ReadWriteOnce",
                    "ReadWriteOncePod",
                ],
            ));
        }
    }
    if let Some(rp) = resources_path {
        let storage = spec
            .get("resources")
            .and_then(|r| r.get("requests"))
            .and_then(|r| r.get("storage"));
        match storage {
            None => errs.push(FieldError::required(key(rp, "storage"), "")),
            Some(q) => match crate::quantity::from_json(q) {
                Some(Ok(q)) if q.nanos > 0 => {}
                Some(Ok(q)) => errs.push(FieldError::invalid(
                    key(rp, "storage"),
                    json!(q.canonical()),
                    "must be greater than zero",
                )),
                _ => errs.push(FieldError::invalid(
                    key(rp, "storage"),
                    q.clone(),
                    crate::quantity::QUANTITY_FORMAT_ERROR,
                )),
            },
        }
    }
    one_of(
        spec,
        "volumeMode",
        &child(path, "volumeMode"),
        &["Block", "Filesystem"],
        false,
        errs,
    );
}

/// A class name, when given, is a DNS subdomain (kube's `ValidateClassName`); a class that
/// does not exist is no error (the claim waits for it, as on Kubernetes).
fn storage_class_name(spec: &Value, path: &str, errs: &mut Errs) {
    let class = s(spec, "storageClassName");
    if class.is_empty() {
        return;
    }
    errs.extend(names::validate_dns1123_subdomain(
        class,
        &child(path, "storageClassName"),
    ));
}

pub(crate) fn validate_pvc(pvc: &Value, old: Option<&Value>, errs: &mut Errs) {
    let empty = json!({});
    let spec = pvc.get("spec").unwrap_or(&empty);
    access_modes_and_storage(spec, "spec", Some("spec.resources"), errs);
    storage_class_name(spec, "spec", errs);
    if let Some(old) = old {
        let old_spec = old.get("spec").unwrap_or(&empty);
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("resources");
                m.remove("volumeAttributesClassName");
                // Binding fills in the volume name.
                if s(old_spec, "volumeName").is_empty() {
                    m.remove("volumeName");
                }
            }
            v
        };
        if strip(spec) != strip(old_spec) {
            errs.push(FieldError::forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
        }
    }
}

const PV_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "nfs",
    "rbd",
    "iscsi",
    "cinder",
    "cephfs",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

pub(crate) fn validate_pv(pv: &Value, errs: &mut Errs) {
    let empty = json!({});
    let spec = pv.get("spec").unwrap_or(&empty);
    access_modes_and_storage(spec, "spec", None, errs);
    storage_class_name(spec, "spec", errs);
    if spec
        .get("capacity")
        .and_then(Value::as_object)
        .is_none_or(|c| c.is_empty())
    {
        errs.push(FieldError::required("spec.capacity", ""));
    }
    let n = PV_SOURCES.iter().filter(|k| has(spec, k)).count();
    if n == 0 {
        errs.push(FieldError::required("spec", "must specify a volume type"));
    } else if n > 1 {
        errs.push(FieldError::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        ));
    }
    one_of(
        spec,
        "persistentVolumeReclaimPolicy",
        "spec.persistentVolumeReclaimPolicy",
        &["Delete", "Recycle", "Retain"],
        false,
        errs,
    );
}

pub(crate) fn validate_lease(lease: &Value, errs: &mut Errs) {
    let Some(spec) = lease.get("spec") else {
        return;
    };
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            json!(d),
            "must be greater than 0",
        ));
    }
    nonnegative(spec, "leaseTransitions", "spec.leaseTransitions", errs);
    let preferred = s(spec, "preferredHolder");
    if !preferred.is_empty() && s(spec, "strategy").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
}

pub(crate) fn validate_runtime_class(rc: &Value, old: Option<&Value>, errs: &mut Errs) {
    let handler = s(rc, "handler");
    for m in names::NameRule::Dns1123Label.check(handler, false) {
        errs.push(FieldError::invalid("handler", json!(handler), m));
    }
    if let Some(scheduling) = rc.get("scheduling") {
        errs.extend(names::validate_labels(
            scheduling.get("nodeSelector"),
            "scheduling.nodeSelector",
        ));
    }
    if let Some(old) = old {
        super::immutable(rc, old, "handler", "handler", errs);
    }
}

pub(crate) fn validate_endpoint_slice(es: &Value, old: Option<&Value>, errs: &mut Errs) {
    let address_type = s(es, "addressType");
    let endpoints = arr(es, "endpoints");
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), 1000));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let p = child(&index("endpoints", i), "addresses");
        let addresses = arr(ep, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(&p, "must contain at least 1 address"));
        } else if addresses.len() > 100 {
            errs.push(FieldError::too_many(&p, addresses.len(), 100));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ap = index(&p, j);
            match address_type {
                "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => errs.push(
                    FieldError::invalid(ap, json!(a), "must be a valid IPv4 address"),
                ),
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => errs.push(
                    FieldError::invalid(ap, json!(a), "must be a valid IPv6 address"),
                ),
                "FQDN" => errs.extend(names::validate_dns1123_subdomain(
                    a.trim_end_matches('.'),
                    &ap,
                )),
                _ => {}
            }
        }
    }
    let ports = arr(es, "ports");
    let mut seen = std::collections::HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index("ports", i);
        let name = s(port, "name");
        if !name.is_empty() {
            errs.extend(names::validate_dns1123_label(name, &child(&p, "name")));
        }
        if !seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&p, "name"), json!(name)));
        }
        one_of(
            port,
            "protocol",
            &child(&p, "protocol"),
            &["SCTP", "TCP", "UDP"],
            true,
            errs,
        );
    }
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !["IPv4", "IPv6", "FQDN"].contains(&address_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            json!(address_type),
            &["FQDN", "IPv4", "IPv6"],
        ));
    }
    if let Some(old) = old
        && s(old, "addressType") != address_type
    {
        errs.push(FieldError::invalid(
            "addressType",
            json!(address_type),
            FIELD_IMMUTABLE,
        ));
    }
}

pub(crate) fn validate_priority_class(pc: &Value, errs: &mut Errs) {
    let name = pc.get("metadata").map(|m| s(m, "name")).unwrap_or("");
    let system = ["system-node-critical", "system-cluster-critical"].contains(&name);
    if name.starts_with("system-") && !system {
        errs.push(FieldError::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved",
        ));
    }
    if !system
        && let Some(v) = pc.get("value").and_then(Value::as_i64)
        && v > 1_000_000_000
    {
        errs.push(FieldError::forbidden(
            "value",
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    one_of(
        pc,
        "preemptionPolicy",
        "preemptionPolicy",
        &["Never", "PreemptLowerPriority"],
        false,
        errs,
    );
}

pub(crate) fn validate_rbac_rules(role: &Value, errs: &mut Errs) {
    for (i, rule) in arr(role, "rules").iter().enumerate() {
        let p = index("rules", i);
        if arr(rule, "verbs").is_empty() {
            errs.push(FieldError::required(
                child(&p, "verbs"),
                "verbs must contain at least one value",
            ));
        }
        if !arr(rule, "nonResourceURLs").is_empty() {
            if !arr(rule, "resources").is_empty() || !arr(rule, "apiGroups").is_empty() {
                errs.push(FieldError::invalid(
                    child(&p, "nonResourceURLs"),
                    rule["nonResourceURLs"].clone(),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else if arr(rule, "resources").is_empty() && arr(rule, "resourceNames").is_empty() {
            errs.push(FieldError::required(
                child(&p, "resources"),
                "resource rules must supply at least one resource",
            ));
        } else if arr(rule, "apiGroups").is_empty() {
            errs.push(FieldError::required(
                child(&p, "apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
    }
}

/// A PodDisruptionBudget (`ValidatePodDisruptionBudgetSpec`): one of minAvailable and
/// maxUnavailable, each a non-negative count or a percentage up to 100%.
pub(super) fn validate_pod_disruption_budget(pdb: &Value, errs: &mut Errs) {
    let empty = json!({});
    let spec = pdb.get("spec").unwrap_or(&empty);
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            spec.clone(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    super::apps::int_or_percent(min, "spec.minAvailable", errs);
    super::apps::int_or_percent(max, "spec.maxUnavailable", errs);
    if let Some(sel) = spec.get("selector").filter(|v| !v.is_null()) {
        errs.extend(super::selector::validate_label_selector(
            sel,
            "spec.selector",
        ));
    }
    super::one_of(
        spec,
        "unhealthyPodEvictionPolicy",
        "spec.unhealthyPodEvictionPolicy",
        &["AlwaysAllow", "IfHealthyBudget"],
        false,
        errs,
    );
}

/// A StorageClass (`ValidateStorageClass`, and `ValidateStorageClassUpdate` when `old` is
/// given): a qualified provisioner name, bounded parameters, a supported reclaim policy and
/// binding mode; on update the provisioner, parameters, reclaim policy and binding mode stay.
pub(super) fn validate_storage_class(sc: &Value, old: Option<&Value>, errs: &mut Errs) {
    let provisioner = s(sc, "provisioner");
    if provisioner.is_empty() {
        errs.push(FieldError::required("provisioner", ""));
    } else {
        errs.extend(names::validate_qualified_name(
            &provisioner.to_lowercase(),
            "provisioner",
        ));
    }
    if let Some(params) = sc.get("parameters").and_then(Value::as_object) {
        if params.len() > 512 {
            errs.push(crate::too_long("parameters", 512));
        } else {
            if params.contains_key("") {
                errs.push(FieldError::invalid(
                    "parameters",
                    json!(""),
                    "field can not be empty.",
                ));
            }
            let size: usize = params
                .iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum();
            if size > 256 * 1024 {
                errs.push(crate::too_long("parameters", 256 * 1024));
            }
        }
    }
    // An empty reclaim policy passes, as in Kubernetes; defaulting fills it in anyway.
    if sc.get("reclaimPolicy") != Some(&json!("")) {
        one_of(
            sc,
            "reclaimPolicy",
            "reclaimPolicy",
            &["Delete", "Retain"],
            false,
            errs,
        );
    }
    one_of(
        sc,
        "volumeBindingMode",
        "volumeBindingMode",
        &["Immediate", "WaitForFirstConsumer"],
        true,
        errs,
    );
    let Some(old) = old else { return };
    // Go compares the maps; a nil and an empty one read back alike from storage.
    let params = |v: &Value| {
        v.get("parameters")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
            .cloned()
    };
    if params(sc) != params(old) {
        errs.push(FieldError::forbidden(
            "parameters",
            "updates to parameters are forbidden.",
        ));
    }
    if provisioner != s(old, "provisioner") {
        errs.push(FieldError::forbidden(
            "provisioner",
            "updates to provisioner are forbidden.",
        ));
    }
    if s(sc, "reclaimPolicy") != s(old, "reclaimPolicy") {
        errs.push(FieldError::forbidden(
            "reclaimPolicy",
            "updates to reclaimPolicy are forbidden.",
        ));
    }
    super::immutable(sc, old, "volumeBindingMode", "volumeBindingMode", errs);
}

#[cfg(test)]
mod tests {
    use crate::{Kind, apply_defaults, validate};
    use serde_json::{Value, json};

    fn check(group: &str, kind: &str, namespaced: bool, mut o: Value) -> Vec<String> {
        apply_defaults(Kind { group, kind }, &mut o);
        validate(Kind { group, kind }, namespaced, &o, None)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn namespace_name_is_a_label() {
        assert!(check("", "Namespace", false, json!({"metadata": {"name": "dev"}})).is_empty());
        assert_eq!(
            check(
                "",
                "Namespace",
                false,
                json!({"metadata": {"name": "dev.team"}})
            ),
            ["metadata.name: Invalid value: \"dev.team\": must not contain dots"]
        );
        assert_eq!(
            check(
                "",
                "Namespace",
                false,
                json!({"metadata": {"name": "dev"}, "spec": {"finalizers": ["custom"]}})
            ),
            [
                "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
    }

    #[test]
    fn leases_and_runtime_classes() {
        let lease = json!({"metadata": {"name": "l", "namespace": "kube-node-lease"}, "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
        assert_eq!(
            check("coordination.k8s.io", "Lease", true, lease),
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        let rc = json!({"metadata": {"name": "wasm"}, "handler": "Wasm.Time"});
        let errs = check("node.k8s.io", "RuntimeClass", false, rc);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .starts_with("handler: Invalid value: \"Wasm.Time\": a lowercase RFC 1123 label")
        );
        assert!(
            check(
                "node.k8s.io",
                "RuntimeClass",
                false,
                json!({"metadata": {"name": "wasm"}, "handler": "wasmtime"})
            )
            .is_empty()
        );
    }

    #[test]
    fn endpoint_slices() {
        let es = json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IPv5", "endpoints": [{"addresses": []}], "ports": [{"port": 80}]});
        assert_eq!(
            check("discovery.k8s.io", "EndpointSlice", true, es),
            [
                "endpoints[0].addresses: Required value: must contain at least 1 address",
                "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
            ]
        );
        let ok = json!({"metadata": {"name": "e", "namespace": "d"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]});
        assert!(check("discovery.k8s.io", "EndpointSlice", true, ok).is_empty());
    }

    #[test]
    fn events_match_their_object_namespace() {
        let ev = json!({"metadata": {"name": "web.17a", "namespace": "apps"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": "other"}});
        assert_eq!(
            check("", "Event", true, ev),
            ["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
        );
        let ok = json!({"metadata": {"name": "web.17a", "namespace": "apps"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": "apps"}});
        assert!(check("", "Event", true, ok).is_empty());
    }

    #[test]
    fn claims_need_modes_and_storage() {
        let pvc = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {}});
        assert_eq!(
            check("", "PersistentVolumeClaim", true, pvc),
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
            ]
        );
    }

    #[test]
    fn storage_class_names_are_subdomains() {
        let pvc = |class: &str| {
            json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": class}})
        };
        assert!(check("", "PersistentVolumeClaim", true, pvc("fast-ssd")).is_empty());
        assert!(check("", "PersistentVolumeClaim", true, pvc("")).is_empty());
        assert_eq!(
            check("", "PersistentVolumeClaim", true, pvc("Fast_SSD")),
            [
                "spec.storageClassName: Invalid value: \"Fast_SSD\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
    }

    #[test]
    fn rbac_names_are_path_segments() {
        let role = json!({"metadata": {"name": "system:controller:foo"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(check("rbac.authorization.k8s.io", "ClusterRole", false, role).is_empty());
        let bad = json!({"metadata": {"name": "a/b"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]});
        assert_eq!(
            check("rbac.authorization.k8s.io", "ClusterRole", false, bad),
            [
                "metadata.name: Invalid value: \"a/b\": may not contain '/'",
                "rules[0].verbs: Required value: verbs must contain at least one value",
            ]
        );
    }

    #[test]
    fn storage_classes() {
        let sc = "StorageClass";
        let group = "storage.k8s.io";
        let ok = json!({"metadata": {"name": "fast"}, "provisioner": "example.com/Fast"});
        assert!(check(group, sc, false, ok).is_empty());
        assert_eq!(
            check(group, sc, false, json!({"metadata": {"name": "fast"}})),
            ["provisioner: Required value"]
        );
        let bad = json!({"metadata": {"name": "fast"}, "provisioner": "a/b/c",
            "reclaimPolicy": "Recycle", "volumeBindingMode": "Later", "parameters": {"": "x"}});
        let errs = check(group, sc, false, bad);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("provisioner: Invalid value: \"a/b/c\": a qualified name"));
        assert_eq!(
            errs[1..],
            [
                "parameters: Invalid value: \"\": field can not be empty.",
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
                "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"",
            ]
        );
    }

    #[test]
    fn storage_class_updates_keep_provisioning() {
        let kind = Kind {
            group: "storage.k8s.io",
            kind: "StorageClass",
        };
        let mut old = json!({"metadata": {"name": "fast", "resourceVersion": "1"},
            "provisioner": "example.com/fast", "parameters": {"type": "ssd"}});
        apply_defaults(kind, &mut old);
        let mut same = old.clone();
        same["allowVolumeExpansion"] = json!(true);
        same["metadata"]["labels"] = json!({"tier": "gold"});
        assert!(validate(kind, false, &same, Some(&old)).is_empty());
        let mut changed = old.clone();
        changed["provisioner"] = json!("example.com/slow");
        changed["parameters"] = json!({"type": "hdd"});
        changed["reclaimPolicy"] = json!("Retain");
        changed["volumeBindingMode"] = json!("WaitForFirstConsumer");
        let errs: Vec<String> = validate(kind, false, &changed, Some(&old))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "parameters: Forbidden: updates to parameters are forbidden.",
                "provisioner: Forbidden: updates to provisioner are forbidden.",
                "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
                "volumeBindingMode: Invalid value: \"WaitForFirstConsumer\": field is immutable",
            ]
        );
    }
}
