//! Server-side printing: the `meta.k8s.io/v1` Table columns and cells kube-apiserver prints
//! for each built-in kind (`kubectl get`), computed from the stored JSON object.
//!
//! Columns and cell logic follow kube-apiserver 1.33 (`pkg/printers/internalversion`). The
//! server always prints the wide form (`GenerateOptions{Wide: true}`): every row carries a
//! cell for every column, and kubectl hides priority-1 columns unless asked for `-o wide`.

mod columns;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use skiff_selectors::LabelSelector;
use std::collections::{BTreeMap, BTreeSet};

type Now = DateTime<Utc>;

/// A column: name, type, format, priority (1 = `-o wide` only), description.
pub(crate) struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: i32,
    description: &'static str,
}

impl Col {
    pub(crate) const fn new(
        name: &'static str,
        ty: &'static str,
        format: &'static str,
        priority: i32,
        description: &'static str,
    ) -> Self {
        Col {
            name,
            ty,
            format,
            priority,
            description,
        }
    }
}

/// Built-in kinds that kube-apiserver serves with its default table convertor (no printer):
/// `NAME` and `CREATED AT`, the creation time in RFC 3339.
fn without_printer(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole")
            | ("", "LimitRange")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
    )
}

fn all_columns(group: &str, kind: &str) -> Vec<Col> {
    if let Some(cols) = columns::columns(group, kind) {
        return cols;
    }
    let name = Col::new("Name", "string", "name", 0, columns::NAME_DOC);
    if without_printer(group, kind) {
        vec![
            name,
            Col::new("Created At", "date", "", 0, columns::CREATED_DOC),
        ]
    } else {
        // Kinds Skiff has no printer for yet print as custom resources without printer
        // columns do: a name and an age.
        vec![name, Col::new("Age", "string", "", 0, columns::CREATED_DOC)]
    }
}

/// Column definitions as `metav1.TableColumnDefinition` serializes them.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> {
    all_columns(group, kind)
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

// ---- small readers over stored JSON ----

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn has(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).is_some_and(|x| !x.is_null())
}

fn or(s: &str, default: &str) -> String {
    if s.is_empty() { default } else { s }.to_string()
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `duration.HumanDuration` from k8s.io/apimachinery: `45s`, `3m20s`, `7h`, `3d4h`, `2y`.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        return match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            dy => format!("{}y{dy}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` when it is unset.
fn since(t: &str, now: Now) -> String {
    match parse_time(t) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn age(obj: &Value, now: Now) -> String {
    since(s(obj, "/metadata/creationTimestamp"), now)
}

// ---- selectors and label maps ----

fn string_map(m: Option<&Value>) -> BTreeMap<String, String> {
    m.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `metav1.LabelSelectorAsSelector(sel).String()`, as `/scale` reports `status.selector`
/// and Deployments print it: `None` when the selector is invalid. A missing selector
/// selects nothing and an empty one everything; both print empty.
pub fn label_selector_string(sel: Option<&Value>) -> Option<String> {
    label_selector(sel)
}

fn label_selector(sel: Option<&Value>) -> Option<String> {
    let Some(sel) = sel.filter(|v| !v.is_null()) else {
        return Some(String::new());
    };
    parse_label_selector(sel).ok().map(|s| s.to_string())
}

/// A `metav1.LabelSelector` in JSON as a selector that matches labels; invalid
/// requirements are an error.
pub fn parse_label_selector(sel: &Value) -> Result<LabelSelector, skiff_selectors::ParseError> {
    let exprs: Vec<(String, String, Vec<String>)> = arr(sel, "/matchExpressions")
        .iter()
        .map(|e| {
            let values = arr(e, "/values")
                .iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect();
            (
                s(e, "/key").to_string(),
                s(e, "/operator").to_string(),
                values,
            )
        })
        .collect();
    LabelSelector::from_parts(&string_map(sel.get("matchLabels")), &exprs)
}

/// `metav1.FormatLabelSelector`: a `metav1.LabelSelector` in its string form
/// (`app=web,tier in (a,b)`), `<none>` when it selects everything or nothing, `<error>`
/// when it is invalid.
pub fn selector_string(sel: Option<&Value>) -> String {
    match label_selector(sel) {
        None => "<error>".into(),
        Some(s) if s.is_empty() => "<none>".into(),
        Some(s) => s,
    }
}

/// `labels.FormatLabels`: a label map as `k=v,...` sorted by key, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let parts: Vec<String> = string_map(m)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    or(&parts.join(","), "<none>")
}

/// `layoutContainerCells`: container names and images, comma separated.
fn containers_and_images(pod_spec: Option<&Value>) -> (String, String) {
    let cs = pod_spec
        .and_then(|p| p.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Up to three items, then `+ N more...`; `<unset>` when there are none.
fn list_with_more(items: &[String], empty: &str) -> String {
    const MAX: usize = 3;
    if items.len() > MAX {
        format!("{} + {} more...", items[..MAX].join(","), items.len() - MAX)
    } else if items.is_empty() {
        empty.to_string()
    } else {
        items.join(",")
    }
}

// ---- pods ----

fn condition_true(obj: &Value, pointer: &str, ty: &str) -> bool {
    arr(obj, pointer)
        .iter()
        .any(|c| s(c, "/type") == ty && s(c, "/status") == "True")
}

fn latest(a: Option<Now>, b: Option<Now>) -> Option<Now> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn last_termination(st: &Value) -> Option<Now> {
    st.pointer("/lastState/terminated")
        .and_then(|t| parse_time(s(t, "/finishedAt")))
}

/// A terminated container's reason, or its signal or exit code when it gave none.
fn terminated_reason(t: &Value, prefix: &str) -> String {
    let reason = s(t, "/reason");
    if !reason.is_empty() {
        format!("{prefix}{reason}")
    } else if i(t, "/signal") != 0 {
        format!("{prefix}Signal:{}", i(t, "/signal"))
    } else {
        format!("{prefix}ExitCode:{}", i(t, "/exitCode"))
    }
}

fn pod_row(pod: &Value, now: Now) -> Vec<Value> {
    let phase = s(pod, "/status/phase");
    let mut reason = or(s(pod, "/status/reason"), phase);
    for c in arr(pod, "/status/conditions") {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }
    let init_specs = arr(pod, "/spec/initContainers");
    // Sidecars (init containers that restart always) count as containers of the pod.
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    let total = arr(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| s(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;
    let mut initializing = false;
    for (idx, st) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let name = s(st, "/name");
        restarts += i(st, "/restartCount");
        last_restart = latest(last_restart, last_termination(st));
        if restartable(name) {
            sidecar_restarts += i(st, "/restartCount");
            last_sidecar_restart = latest(last_sidecar_restart, last_termination(st));
        }
        let terminated = st.pointer("/state/terminated");
        let waiting = s(st, "/state/waiting/reason");
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if restartable(name) && st.get("started") == Some(&json!(true)) {
            if st.get("ready") == Some(&json!(true)) {
                ready += 1;
            }
            continue;
        }
        reason = match terminated {
            Some(t) => terminated_reason(t, "Init:"),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{idx}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }
    if !initializing || condition_true(pod, "/status/conditions", "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for st in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(st, "/restartCount");
            last_restart = latest(last_restart, last_termination(st));
            let waiting = s(st, "/state/waiting/reason");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = st.pointer("/state/terminated") {
                reason = terminated_reason(t, "");
            } else if st.get("ready") == Some(&json!(true)) && has(st, "/state/running") {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "/status/conditions", "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = has(pod, "/metadata/deletionTimestamp");
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    // Kubernetes reads `podIPs`; `podIP` alone stands in for writers that set only it.
    let ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip"))
        .unwrap_or_else(|| s(pod, "/status/podIP"));
    let gates = arr(pod, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr(pod, "/status/conditions");
        let true_count = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == s(g, "/conditionType"))
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(s(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(pod, now)),
        json!(or(ip, "<none>")),
        json!(or(s(pod, "/spec/nodeName"), "<none>")),
        json!(or(s(pod, "/status/nominatedNodeName"), "<none>")),
        json!(gates),
    ]
}

// ---- nodes and services ----

fn node_row(node: &Value, now: Now) -> Vec<Value> {
    let mut status = match arr(node, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready")
    {
        Some(c) if s(c, "/status") == "True" => vec!["Ready"],
        Some(_) => vec!["NotReady"],
        None => vec!["Unknown"],
    };
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    for (k, v) in string_map(node.pointer("/metadata/labels")) {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.insert(v);
        }
    }
    let roles: Vec<String> = roles.into_iter().collect();
    let addr = |t: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == t)
            .map_or_else(|| "<none>".to_string(), |a| s(a, "/address").to_string())
    };
    let info = |f: &str| or(s(node, &format!("/status/nodeInfo/{f}")), "<unknown>");
    vec![
        json!(s(node, "/metadata/name")),
        json!(status.join(",")),
        json!(or(&roles.join(","), "<none>")),
        json!(age(node, now)),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn service_external_ip(svc: &Value, ty: &str) -> String {
    let external: Vec<String> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    match ty {
        "ClusterIP" | "NodePort" => or(&external.join(","), "<none>"),
        "LoadBalancer" => {
            // Ingress points print sorted and without repeats; the server prints the wide
            // form, so they are never cut short.
            let ingress: BTreeSet<String> = arr(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|g| or(s(g, "/ip"), s(g, "/hostname")))
                .filter(|a| !a.is_empty())
                .collect();
            let all: Vec<String> = ingress.into_iter().chain(external).collect();
            or(&all.join(","), "<pending>")
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

fn service_row(svc: &Value, now: Now) -> Vec<Value> {
    // The server defaults an unset type to ClusterIP before storing.
    let ty = or(s(svc, "/spec/type"), "ClusterIP");
    let cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| s(svc, "/spec/clusterIP"));
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = or(s(p, "/protocol"), "TCP");
            match i(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{proto}", i(p, "/port")),
                _ => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    vec![
        json!(s(svc, "/metadata/name")),
        json!(ty),
        json!(or(cluster_ip, "<none>")),
        json!(service_external_ip(svc, &ty)),
        json!(or(&ports.join(","), "<none>")),
        json!(age(svc, now)),
        json!(format_labels(svc.pointer("/spec/selector"))),
    ]
}

/// `formatEndpoints`: `ip:port` pairs, three at most; `<none>` without subsets.
fn endpoints_cell(obj: &Value) -> String {
    let subsets = arr(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut all = Vec::new();
    for ss in subsets {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            all.extend(addrs.iter().map(|a| s(a, "/ip").to_string()));
            continue;
        }
        for p in ports {
            for a in addrs {
                let ip = s(a, "/ip");
                let port = i(p, "/port");
                all.push(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    // Subsets without addresses print as nothing at all, not `<none>`.
    list_with_more(&all, "")
}

fn endpoint_slice_row(obj: &Value, now: Now) -> Vec<Value> {
    let ports: Vec<String> = arr(obj, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => or(s(p, "/name"), "*"),
        })
        .collect();
    let addrs: Vec<String> = arr(obj, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses").iter())
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        json!(s(obj, "/metadata/name")),
        json!(s(obj, "/addressType")),
        json!(list_with_more(&ports, "<unset>")),
        json!(list_with_more(&addrs, "<unset>")),
        json!(age(obj, now)),
    ]
}

// ---- events ----

fn event_row(obj: &Value, core: bool, now: Now) -> Vec<Value> {
    // events.k8s.io/v1 names the same fields differently.
    let f = |core_name: &'static str, new_name: &'static str| {
        if core { core_name } else { new_name }
    };
    let regarding = obj
        .get(f("involvedObject", "regarding"))
        .unwrap_or(&Value::Null);
    let first_ts = s(obj, f("/firstTimestamp", "/deprecatedFirstTimestamp"));
    let last_ts = s(obj, f("/lastTimestamp", "/deprecatedLastTimestamp"));
    let first = if parse_time(first_ts).is_some() {
        since(first_ts, now)
    } else {
        since(s(obj, "/eventTime"), now)
    };
    let mut last = if parse_time(last_ts).is_some() {
        since(last_ts, now)
    } else {
        first.clone()
    };
    let mut count = i(obj, f("/count", "/deprecatedCount"));
    if let Some(series) = obj.get("series").filter(|v| !v.is_null()) {
        last = since(s(series, "/lastObservedTime"), now);
        count = i(series, "/count");
    } else if count == 0 {
        // Singleton events carry no count in the newer API.
        count = 1;
    }
    let kind = s(regarding, "/kind").to_lowercase();
    let target = match s(regarding, "/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = or(
        s(obj, f("/source/component", "/deprecatedSource/component")),
        s(obj, f("/reportingComponent", "/reportingController")),
    );
    let host = or(
        s(obj, f("/source/host", "/deprecatedSource/host")),
        s(obj, "/reportingInstance"),
    );
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(target),
        json!(s(regarding, "/fieldPath")),
        json!(source),
        json!(s(obj, f("/message", "/note")).trim()),
        json!(first),
        json!(count),
        json!(s(obj, "/metadata/name")),
    ]
}

// ---- storage ----

/// `GetAccessModesAsString`: short forms in a fixed order, each once.
fn access_modes(modes: &[Value]) -> String {
    let has_mode = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(long, _)| has_mode(long))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class, the beta annotation first as Kubernetes reads it.
fn storage_class(obj: &Value) -> String {
    let annotation = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str);
    annotation
        .unwrap_or_else(|| s(obj, "/spec/storageClassName"))
        .to_string()
}

/// A StorageClass's row: the name marked ` (default)` when either default-class annotation
/// says `true` (`storageutil.IsDefaultAnnotation`), and the defaults of the unset fields.
fn storage_class_row(obj: &Value, now: Now) -> Vec<Value> {
    let annotations = obj.pointer("/metadata/annotations");
    let is_default = skiff_apimachinery::is_default_storage_class(|k| {
        annotations.and_then(|a| a.get(k)).and_then(Value::as_str)
    });
    let mut name = s(obj, "/metadata/name").to_string();
    if is_default {
        name.push_str(" (default)");
    }
    let text_or = |pointer: &str, default: &str| match obj.pointer(pointer) {
        Some(Value::String(v)) => v.clone(),
        _ => default.to_string(),
    };
    vec![
        json!(name),
        json!(s(obj, "/provisioner")),
        json!(text_or("/reclaimPolicy", "Delete")),
        json!(text_or("/volumeBindingMode", "Immediate")),
        json!(
            obj.pointer("/allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
        json!(age(obj, now)),
    ]
}

fn unset_or(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer).and_then(Value::as_str) {
        Some(v) => v.to_string(),
        None => "<unset>".into(),
    }
}

fn pv_row(obj: &Value, now: Now) -> Vec<Value> {
    let claim = if has(obj, "/spec/claimRef") {
        format!(
            "{}/{}",
            s(obj, "/spec/claimRef/namespace"),
            s(obj, "/spec/claimRef/name")
        )
    } else {
        String::new()
    };
    let phase = if has(obj, "/metadata/deletionTimestamp") {
        "Terminating"
    } else {
        s(obj, "/status/phase")
    };
    vec![
        json!(s(obj, "/metadata/name")),
        json!(s(obj, "/spec/capacity/storage")),
        json!(access_modes(arr(obj, "/spec/accessModes"))),
        json!(s(obj, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(obj)),
        json!(unset_or(obj, "/spec/volumeAttributesClassName")),
        json!(s(obj, "/status/reason")),
        json!(age(obj, now)),
        json!(unset_or(obj, "/spec/volumeMode")),
    ]
}

fn pvc_row(obj: &Value, now: Now) -> Vec<Value> {
    let phase = if has(obj, "/metadata/deletionTimestamp") {
        "Terminating"
    } else {
        s(obj, "/status/phase")
    };
    let volume = s(obj, "/spec/volumeName");
    // Capacity and modes are the bound volume's, so they show only once bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            s(obj, "/status/capacity/storage").to_string(),
            access_modes(arr(obj, "/status/accessModes")),
        )
    };
    vec![
        json!(s(obj, "/metadata/name")),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(obj)),
        json!(unset_or(obj, "/spec/volumeAttributesClassName")),
        json!(age(obj, now)),
        json!(unset_or(obj, "/spec/volumeMode")),
    ]
}

// ---- workloads ----

/// `spec.replicas`, which the server defaults to 1.
fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn job_status(job: &Value) -> &'static str {
    // Only the first condition of a type counts, as `hasJobCondition` reads them.
    let is = |t: &str| {
        arr(job, "/status/conditions")
            .iter()
            .find(|c| s(c, "/type") == t)
            .is_some_and(|c| s(c, "/status") == "True")
    };
    if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else if has(job, "/metadata/deletionTimestamp") {
        "Terminating"
    } else if is("Suspended") {
        "Suspended"
    } else if is("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

fn job_row(obj: &Value, now: Now) -> Vec<Value> {
    let succeeded = i(obj, "/status/succeeded");
    let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(n) => format!("{succeeded}/{n}"),
        None => match i(obj, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        parse_time(s(obj, "/status/startTime")),
        parse_time(s(obj, "/status/completionTime")),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let (c, im) = containers_and_images(obj.pointer("/spec/template/spec"));
    vec![
        json!(s(obj, "/metadata/name")),
        json!(job_status(obj)),
        json!(completions),
        json!(duration),
        json!(age(obj, now)),
        json!(c),
        json!(im),
        json!(selector_string(obj.pointer("/spec/selector"))),
    ]
}

fn cron_job_row(obj: &Value, now: Now) -> Vec<Value> {
    let last = match s(obj, "/status/lastScheduleTime") {
        "" => "<none>".to_string(),
        t => since(t, now),
    };
    let suspend = match obj.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let time_zone = obj
        .pointer("/spec/timeZone")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let (c, im) = containers_and_images(obj.pointer("/spec/jobTemplate/spec/template/spec"));
    vec![
        json!(s(obj, "/metadata/name")),
        json!(s(obj, "/spec/schedule")),
        json!(time_zone),
        json!(suspend),
        json!(arr(obj, "/status/active").len()),
        json!(last),
        json!(age(obj, now)),
        json!(c),
        json!(im),
        json!(selector_string(
            obj.pointer("/spec/jobTemplate/spec/selector")
        )),
    ]
}

fn controller_revision_row(obj: &Value, now: Now) -> Vec<Value> {
    let controller = arr(obj, "/metadata/ownerReferences")
        .iter()
        .find(|o| o.get("controller") == Some(&json!(true)))
        .map_or_else(
            || "<none>".to_string(),
            |o| {
                // `kind.group/name`, lower case, as `formatResourceName` writes it.
                let kind = s(o, "/kind");
                let group = s(o, "/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
                let gk = if group.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}.{group}")
                };
                if gk.is_empty() {
                    s(o, "/name").to_string()
                } else {
                    format!("{}/{}", gk.to_lowercase(), s(o, "/name"))
                }
            },
        );
    vec![
        json!(s(obj, "/metadata/name")),
        json!(controller),
        json!(i(obj, "/revision")),
        json!(age(obj, now)),
    ]
}

fn count(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// The cells of one object's row, in the order of `column_definitions`.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: Now) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let template = obj.pointer("/spec/template/spec");
    match (group, kind) {
        ("", "Pod") => pod_row(obj, now),
        ("", "Node") => node_row(obj, now),
        ("", "Service") => service_row(obj, now),
        ("", "Event") => event_row(obj, true, now),
        ("events.k8s.io", "Event") => event_row(obj, false, now),
        ("", "PersistentVolume") => pv_row(obj, now),
        ("", "PersistentVolumeClaim") => pvc_row(obj, now),
        ("storage.k8s.io", "StorageClass") => storage_class_row(obj, now),
        ("batch", "Job") => job_row(obj, now),
        ("batch", "CronJob") => cron_job_row(obj, now),
        ("apps", "ControllerRevision") => controller_revision_row(obj, now),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice_row(obj, now),
        ("", "Namespace") => vec![name, json!(s(obj, "/status/phase")), json!(age(obj, now))],
        ("", "Endpoints") => vec![name, json!(endpoints_cell(obj)), json!(age(obj, now))],
        ("", "ConfigMap") => vec![
            name,
            json!(count(obj, "/data") + count(obj, "/binaryData")),
            json!(age(obj, now)),
        ],
        ("", "Secret") => vec![
            name,
            json!(s(obj, "/type")),
            json!(count(obj, "/data")),
            json!(age(obj, now)),
        ],
        ("", "ServiceAccount") => vec![
            name,
            json!(arr(obj, "/secrets").len()),
            json!(age(obj, now)),
        ],
        ("", "PodTemplate") => {
            let (c, im) = containers_and_images(obj.pointer("/template/spec"));
            vec![
                name,
                json!(c),
                json!(im),
                json!(format_labels(obj.pointer("/template/metadata/labels"))),
            ]
        }
        ("", "ReplicationController") => {
            let (c, im) = containers_and_images(template);
            vec![
                name,
                json!(replicas(obj)),
                json!(i(obj, "/status/replicas")),
                json!(i(obj, "/status/readyReplicas")),
                json!(age(obj, now)),
                json!(c),
                json!(im),
                json!(format_labels(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "Deployment") => {
            let (c, im) = containers_and_images(template);
            // Deployments print the selector bare: empty, not `<none>`, when it is.
            let selector =
                label_selector(obj.pointer("/spec/selector")).unwrap_or_else(|| "<invalid>".into());
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(obj, "/status/readyReplicas"),
                    replicas(obj)
                )),
                json!(i(obj, "/status/updatedReplicas")),
                json!(i(obj, "/status/availableReplicas")),
                json!(age(obj, now)),
                json!(c),
                json!(im),
                json!(selector),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (c, im) = containers_and_images(template);
            vec![
                name,
                json!(replicas(obj)),
                json!(i(obj, "/status/replicas")),
                json!(i(obj, "/status/readyReplicas")),
                json!(age(obj, now)),
                json!(c),
                json!(im),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, im) = containers_and_images(template);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(obj, "/status/readyReplicas"),
                    replicas(obj)
                )),
                json!(age(obj, now)),
                json!(c),
                json!(im),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, im) = containers_and_images(template);
            vec![
                name,
                json!(i(obj, "/status/desiredNumberScheduled")),
                json!(i(obj, "/status/currentNumberScheduled")),
                json!(i(obj, "/status/numberReady")),
                json!(i(obj, "/status/updatedNumberScheduled")),
                json!(i(obj, "/status/numberAvailable")),
                json!(format_labels(
                    obj.pointer("/spec/template/spec/nodeSelector")
                )),
                json!(age(obj, now)),
                json!(c),
                json!(im),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("policy", "PodDisruptionBudget") => {
            let either = |field: &str| match obj.pointer(field) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => "N/A".to_string(),
            };
            vec![
                name,
                json!(either("/spec/minAvailable")),
                json!(either("/spec/maxUnavailable")),
                json!(i(obj, "/status/disruptionsAllowed")),
                json!(age(obj, now)),
            ]
        }
        ("coordination.k8s.io", "Lease") => vec![
            name,
            json!(s(obj, "/spec/holderIdentity")),
            json!(age(obj, now)),
        ],
        ("node.k8s.io", "RuntimeClass") => {
            vec![name, json!(s(obj, "/handler")), json!(age(obj, now))]
        }
        _ if without_printer(group, kind) => {
            // Go formats the zero time too, so an unset timestamp prints as year 1.
            let created = parse_time(s(obj, "/metadata/creationTimestamp")).map_or_else(
                || "0001-01-01T00:00:00Z".to_string(),
                |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
            vec![name, json!(created)]
        }
        _ => vec![name, json!(age(obj, now))],
    }
}

#[cfg(test)]
mod tests;
