//! Defaulting, as the `SetDefaults_*` functions of `pkg/apis/*/v1` (and the few values the
//! registry and built-in admission plugins fill on create), applied to the JSON form.

use crate::Kind;
use serde_json::{Map, Value, json};

type Obj = Map<String, Value>;

/// Sets `key` to `value` when it is absent or null.
fn set(obj: &mut Obj, key: &str, value: Value) {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.into(), value);
        }
        Some(Value::String(s)) if s.is_empty() && value.is_string() => {
            obj.insert(key.into(), value);
        }
        _ => {}
    }
}

/// The object at `key`, created empty when absent (or not an object).
fn child<'a>(obj: &'a mut Obj, key: &str) -> &'a mut Obj {
    if !obj.get(key).is_some_and(Value::is_object) {
        obj.insert(key.into(), json!({}));
    }
    obj.get_mut(key)
        .and_then(Value::as_object_mut)
        .expect("just inserted")
}

/// The object at `key` if present.
fn get_obj<'a>(obj: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    obj.get_mut(key).and_then(Value::as_object_mut)
}

/// Every object in the array at `key`.
fn each<'a>(obj: &'a mut Obj, key: &str) -> impl Iterator<Item = &'a mut Obj> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut().filter_map(Value::as_object_mut))
}

fn str_of<'a>(obj: &'a Obj, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn apply(kind: Kind<'_>, object: &mut Value) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    match (kind.group, kind.kind) {
        ("", "Pod") => pod(obj),
        ("", "PodTemplate") => {
            if let Some(t) = get_obj(obj, "template") {
                pod_template(t);
            }
        }
        ("", "ReplicationController") => replication_controller(obj),
        ("", "Service") => service(obj),
        ("", "Secret") => secret(obj),
        ("", "Namespace") => namespace(obj),
        ("", "PersistentVolumeClaim") => pvc(obj),
        ("", "PersistentVolume") => pv(obj),
        ("", "Endpoints") => {
            for subset in each(obj, "subsets") {
                for p in each(subset, "ports") {
                    set(p, "protocol", json!("TCP"));
                }
            }
        }
        ("", "Node") => node(obj),
        ("", "LimitRange") => limit_range(obj),
        ("apps", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") => {
            let spec = child(obj, "spec");
            set(spec, "replicas", json!(1));
            template_of(spec);
        }
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => cron_job(obj),
        ("discovery.k8s.io", "EndpointSlice") => {
            for p in each(obj, "ports") {
                set(p, "name", json!(""));
                set(p, "protocol", json!("TCP"));
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj),
        ("storage.k8s.io", "StorageClass") => {
            set(obj, "reclaimPolicy", json!("Delete"));
            set(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            set(obj, "preemptionPolicy", json!("PreemptLowerPriority"))
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            for s in each(obj, "subjects") {
                let group = if matches!(str_of(s, "kind"), "User" | "Group") {
                    "rbac.authorization.k8s.io"
                } else {
                    ""
                };
                if !s.contains_key("apiGroup") {
                    s.insert("apiGroup".into(), json!(group));
                }
            }
        }
        _ => {}
    }
}

/// A Pod: its spec's defaults, the Pod-only ones (`SetDefaults_Pod`), and those the Priority,
/// ServiceAccount and DefaultTolerationSeconds admission plugins add on a real cluster.
fn pod(obj: &mut Obj) {
    let spec = child(obj, "spec");
    pod_spec(spec);
    set(spec, "enableServiceLinks", json!(true));
    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for key in ["containers", "initContainers"] {
        for c in each(spec, key) {
            requests_from_limits(c);
            if host_network {
                for p in each(c, "ports") {
                    if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
                        && let Some(cp) = p.get("containerPort").cloned()
                    {
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
        }
    }
    // Priority admission.
    let priority = match str_of(spec, "priorityClassName") {
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        "" => Some(0),
        _ => None,
    };
    if let Some(p) = priority {
        set(spec, "priority", json!(p));
        set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
    // ServiceAccount admission (without the token volume, which needs a token issuer).
    let sa = spec
        .get("serviceAccountName")
        .or(spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let sa = if sa.is_empty() {
        "default".to_string()
    } else {
        sa.to_string()
    };
    set(spec, "serviceAccountName", json!(sa));
    set(spec, "serviceAccount", json!(sa));
    // DefaultTolerationSeconds admission.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = list.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == key
                    || (k.is_empty()
                        && t.get("operator").and_then(Value::as_str) == Some("Exists")))
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !tolerated {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
}

fn requests_from_limits(c: &mut Obj) {
    let Some(limits) = c
        .get("resources")
        .and_then(|r| r.get("limits"))
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let requests = child(child(c, "resources"), "requests");
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// A pod template (`metadata` + `spec`) inside a workload.
fn pod_template(template: &mut Obj) {
    pod_spec(child(template, "spec"));
}

fn template_of(spec: &mut Obj) {
    if let Some(t) = get_obj(spec, "template") {
        pod_template(t);
    }
}

/// `SetDefaults_PodSpec` and the defaults of everything inside a pod spec.
pub(crate) fn pod_spec(spec: &mut Obj) {
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "securityContext", json!({}));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "schedulerName", json!("default-scheduler"));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each(spec, key) {
            container(c);
            // A hostNetwork pod's ports are the node's: hostPort is containerPort.
            if host_network && key != "ephemeralContainers" {
                for p in each(c, "ports") {
                    if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
                        && let Some(port) = p.get("containerPort").cloned()
                    {
                        p.insert("hostPort".into(), port);
                    }
                }
            }
        }
    }
    for v in each(spec, "volumes") {
        volume(v);
    }
}

fn container(c: &mut Obj) {
    if str_of(c, "imagePullPolicy").is_empty() {
        let policy = if image_tag(str_of(c, "image")) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    set(c, "resources", json!({}));
    for p in each(c, "ports") {
        set(p, "protocol", json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = get_obj(c, probe) {
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            handler(p);
        }
    }
    if let Some(lc) = get_obj(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get_obj(lc, hook) {
                handler(h);
            }
        }
    }
    for e in each(c, "env") {
        if let Some(fr) = get_obj(e, "valueFrom").and_then(|vf| get_obj(vf, "fieldRef")) {
            set(fr, "apiVersion", json!("v1"));
        }
    }
}

fn handler(h: &mut Obj) {
    if let Some(g) = get_obj(h, "httpGet") {
        set(g, "path", json!("/"));
        set(g, "scheme", json!("HTTP"));
    }
}

/// The tag of an image reference: `latest` when it has neither tag nor digest.
pub(crate) fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[last_slash + i + 1..],
        None if digest.is_some() => "",
        None => "latest",
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Obj) {
    if !VOLUME_SOURCES
        .iter()
        .any(|s| v.get(*s).is_some_and(|x| !x.is_null()))
    {
        v.insert("emptyDir".into(), json!({}));
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = get_obj(v, src) {
            set(s, "defaultMode", json!(420));
        }
    }
    if let Some(hp) = get_obj(v, "hostPath") {
        set(hp, "type", json!(""));
    }
    if let Some(d) = get_obj(v, "downwardAPI") {
        downward_items(d);
    }
    if let Some(p) = get_obj(v, "projected") {
        for s in each(p, "sources") {
            if let Some(t) = get_obj(s, "serviceAccountToken") {
                set(t, "expirationSeconds", json!(3600));
            }
            if let Some(d) = get_obj(s, "downwardAPI") {
                downward_items(d);
            }
        }
    }
    if let Some(spec) = get_obj(v, "ephemeral")
        .and_then(|e| get_obj(e, "volumeClaimTemplate"))
        .and_then(|t| get_obj(t, "spec"))
    {
        set(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(img) = get_obj(v, "image")
        && str_of(img, "pullPolicy").is_empty()
    {
        let policy = if image_tag(str_of(img, "reference")) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        img.insert("pullPolicy".into(), json!(policy));
    }
}

fn downward_items(d: &mut Obj) {
    for item in each(d, "items") {
        if let Some(fr) = get_obj(item, "fieldRef") {
            set(fr, "apiVersion", json!("v1"));
        }
    }
}

fn replication_controller(obj: &mut Obj) {
    let labels = obj
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .cloned();
    if let Some(labels @ Value::Object(_)) = labels {
        let spec = child(obj, "spec");
        if spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            spec.insert("selector".into(), labels.clone());
        }
        let meta = child(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            meta.insert("labels".into(), labels);
        }
    }
    let spec = child(obj, "spec");
    set(spec, "replicas", json!(1));
    template_of(spec);
}

fn deployment(obj: &mut Obj) {
    let spec = child(obj, "spec");
    set(spec, "replicas", json!(1));
    let strategy = child(spec, "strategy");
    set(strategy, "type", json!("RollingUpdate"));
    if str_of(strategy, "type") == "RollingUpdate" {
        let ru = child(strategy, "rollingUpdate");
        set(ru, "maxUnavailable", json!("25%"));
        set(ru, "maxSurge", json!("25%"));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    template_of(spec);
}

fn stateful_set(obj: &mut Obj) {
    let spec = child(obj, "spec");
    set(spec, "podManagementPolicy", json!("OrderedReady"));
    let us = child(spec, "updateStrategy");
    if str_of(us, "type").is_empty() {
        us.insert("type".into(), json!("RollingUpdate"));
        child(us, "rollingUpdate");
    }
    if str_of(us, "type") == "RollingUpdate"
        && let Some(ru) = get_obj(us, "rollingUpdate")
    {
        set(ru, "partition", json!(0));
    }
    let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
    set(retention, "whenDeleted", json!("Retain"));
    set(retention, "whenScaled", json!("Retain"));
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    template_of(spec);
    for claim in each(spec, "volumeClaimTemplates") {
        pvc(claim);
    }
}

fn daemon_set(obj: &mut Obj) {
    let spec = child(obj, "spec");
    let us = child(spec, "updateStrategy");
    set(us, "type", json!("RollingUpdate"));
    if str_of(us, "type") == "RollingUpdate" {
        let ru = child(us, "rollingUpdate");
        set(ru, "maxUnavailable", json!(1));
        set(ru, "maxSurge", json!(0));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    template_of(spec);
}

fn job_spec(spec: &mut Obj) {
    let completions = spec.get("completions").is_some_and(|v| !v.is_null());
    let parallelism = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !completions && !parallelism {
        spec.insert("completions".into(), json!(1));
    }
    set(spec, "parallelism", json!(1));
    set(spec, "backoffLimit", json!(6));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    let has_failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    set(
        spec,
        "podReplacementPolicy",
        json!(if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    template_of(spec);
}

fn job(obj: &mut Obj) {
    job_spec(child(obj, "spec"));
    let uid = obj
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !uid.is_empty() {
        let mut whole = Value::Object(std::mem::take(obj));
        crate::validation::batch::prepare_job_for_create(&mut whole, &uid);
        if let Value::Object(m) = whole {
            *obj = m;
        }
    }
    let labels = obj
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .cloned();
    if let Some(labels @ Value::Object(_)) = labels {
        let meta = child(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            meta.insert("labels".into(), labels);
        }
    }
}

fn cron_job(obj: &mut Obj) {
    let spec = child(obj, "spec");
    set(spec, "concurrencyPolicy", json!("Allow"));
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
    // The job template gets only the pod template's defaults, not `SetDefaults_Job`: on a
    // real cluster those appear on each Job when it is created.
    if let Some(js) = get_obj(spec, "jobTemplate").and_then(|t| get_obj(t, "spec")) {
        template_of(js);
    }
}

fn service(obj: &mut Obj) {
    let spec = child(obj, "spec");
    set(spec, "sessionAffinity", json!("None"));
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    set(spec, "type", json!("ClusterIP"));
    for p in each(spec, "ports") {
        set(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    }
    let ty = str_of(spec, "type").to_string();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible =
        ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        // Set by the IP allocator on a real cluster; Skiff's clusters are single-stack IPv4.
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "ipFamilies", json!(["IPv4"]));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    child(child(obj, "status"), "loadBalancer");
}

fn secret(obj: &mut Obj) {
    set(obj, "type", json!("Opaque"));
    // `stringData` is write-only: Kubernetes folds it into `data` when decoding, and its
    // entries win over `data`'s.
    if let Some(Value::Object(string_data)) = obj.remove("stringData") {
        let data = child(obj, "data");
        for (k, v) in string_data {
            data.insert(k, json!(base64_encode(v.as_str().unwrap_or("").as_bytes())));
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn namespace(obj: &mut Obj) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        child(child(obj, "metadata"), "labels")
            .insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    // The namespace registry adds the `kubernetes` finalizer on create.
    let spec = child(obj, "spec");
    set(spec, "finalizers", json!(["kubernetes"]));
    set(child(obj, "status"), "phase", json!("Active"));
}

fn pvc(obj: &mut Obj) {
    set(child(obj, "spec"), "volumeMode", json!("Filesystem"));
    set(child(obj, "status"), "phase", json!("Pending"));
}

fn pv(obj: &mut Obj) {
    let spec = child(obj, "spec");
    set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
    set(spec, "volumeMode", json!("Filesystem"));
    set(child(obj, "status"), "phase", json!("Pending"));
}

fn node(obj: &mut Obj) {
    let Some(status) = get_obj(obj, "status") else {
        return;
    };
    if status.get("allocatable").is_none_or(Value::is_null)
        && let Some(cap) = status.get("capacity").cloned()
    {
        status.insert("allocatable".into(), cap);
    }
}

fn limit_range(obj: &mut Obj) {
    let Some(spec) = get_obj(obj, "spec") else {
        return;
    };
    for item in each(spec, "limits") {
        if str_of(item, "type") != "Container" {
            continue;
        }
        let max = item
            .get("max")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let min = item
            .get("min")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let default = child(item, "default");
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
        let default = default.clone();
        let request = child(item, "defaultRequest");
        for (k, v) in default.into_iter().chain(min) {
            request.entry(k).or_insert(v);
        }
    }
}

fn network_policy(obj: &mut Obj) {
    let spec = child(obj, "spec");
    for dir in ["ingress", "egress"] {
        for rule in each(spec, dir) {
            for p in each(rule, "ports") {
                set(p, "protocol", json!("TCP"));
            }
        }
    }
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        let mut types = vec![json!("Ingress")];
        if spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, mut v: Value) -> Value {
        apply(Kind { group, kind }, &mut v);
        v
    }

    #[test]
    fn host_network_ports_are_the_nodes() {
        let pod = |host_network: bool| {
            defaulted(
                "",
                "Pod",
                json!({"metadata": {"name": "p"}, "spec": {"hostNetwork": host_network,
                "containers": [{"name": "web", "image": "nginx",
                 "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 9081}]}]}}),
            )
        };
        let ports = &pod(true)["spec"]["containers"][0]["ports"];
        assert_eq!(
            (ports[0]["hostPort"].clone(), ports[1]["hostPort"].clone()),
            (json!(80), json!(9081))
        );
        let ports = &pod(false)["spec"]["containers"][0]["ports"];
        assert!(ports[0].get("hostPort").is_none(), "{ports}");
    }

    #[test]
    fn pod_gets_kubernetes_defaults() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
             "livenessProbe": {"httpGet": {"port": 80}},
             "resources": {"limits": {"cpu": "1"}}},
            {"name": "side", "image": "busybox:1.36"}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        let c0 = &spec["containers"][0];
        assert_eq!(c0["imagePullPolicy"], "Always");
        assert_eq!(c0["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c0["terminationMessagePolicy"], "File");
        assert_eq!(c0["ports"][0]["protocol"], "TCP");
        assert_eq!(c0["resources"]["requests"]["cpu"], "1");
        let probe = &c0["livenessProbe"];
        assert_eq!(
            (
                probe["timeoutSeconds"].clone(),
                probe["periodSeconds"].clone()
            ),
            (json!(1), json!(10))
        );
        assert_eq!(
            (
                probe["successThreshold"].clone(),
                probe["failureThreshold"].clone()
            ),
            (json!(1), json!(3))
        );
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][1]["resources"], json!({}));
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:latest"), "latest");
        assert_eq!(image_tag("localhost:5000/app"), "latest");
        assert_eq!(image_tag("localhost:5000/app:v2"), "v2");
        assert_eq!(image_tag("nginx@sha256:abc"), "");
    }

    #[test]
    fn explicit_values_are_kept() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "a", "image": "nginx", "imagePullPolicy": "Never"}]}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 0);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let ps = &d["spec"]["template"]["spec"];
        assert_eq!(ps["restartPolicy"], "Always");
        assert_eq!(ps["containers"][0]["imagePullPolicy"], "IfNotPresent");
        // Pod-only defaults stay off templates, as on a real cluster.
        assert!(ps.get("enableServiceLinks").is_none());
        let recreate = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn statefulset_and_daemonset_defaults() {
        let s = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]}}),
        );
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(s["spec"]["replicas"], 1);
        let d = defaulted("apps", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn job_and_cronjob_defaults() {
        let j = defaulted(
            "batch",
            "Job",
            json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"restartPolicy": "Never"}}}}),
        );
        let s = &j["spec"];
        assert_eq!(
            (
                s["completions"].clone(),
                s["parallelism"].clone(),
                s["backoffLimit"].clone()
            ),
            (json!(1), json!(1), json!(6))
        );
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"a": "b"}));
        let parallel = defaulted("batch", "Job", json!({"spec": {"parallelism": 3}}));
        assert!(parallel["spec"].get("completions").is_none());
        let c = defaulted(
            "batch",
            "CronJob",
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}}),
        );
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(c["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(
            c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        assert!(
            c["spec"]["jobTemplate"]["spec"]
                .get("backoffLimit")
                .is_none()
        );
    }

    #[test]
    fn service_defaults() {
        let s = defaulted(
            "",
            "Service",
            json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(
            spec["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(spec["ports"][1]["targetPort"], "https");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert!(spec.get("externalTrafficPolicy").is_none());
        let lb = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP"}}),
        );
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            lb["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
    }

    #[test]
    fn secret_namespace_volume_defaults() {
        let s = defaulted(
            "",
            "Secret",
            json!({"stringData": {"user": "admin"}, "data": {"user": "eA=="}}),
        );
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert!(s.get("stringData").is_none());
        assert_eq!(base64_encode(b"ab"), "YWI=");
        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "dev"}}));
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "dev"
        );
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"volumes": [{"name": "tmp"}, {"name": "cfg", "configMap": {"name": "c"}}]}}),
        );
        assert_eq!(pod["spec"]["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(pod["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
        let pv = defaulted("", "PersistentVolume", json!({"spec": {}}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        let pvc = defaulted("", "PersistentVolumeClaim", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    }
}
