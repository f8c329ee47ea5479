//! Server-side printing: the `meta.k8s.io/v1` Table columns and cells real clusters print
//! for each built-in kind (`kubectl get`), computed from the stored JSON object. Column
//! names, order and `-o wide` priorities follow kube-apiserver's printers.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

type Now = DateTime<Utc>;

/// A column: name, type, priority (1 = `-o wide` only), description.
struct Col(&'static str, &'static str, i32, &'static str);

const NAME: Col = Col(
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const CONTAINERS: Col = Col(
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
);
const IMAGES: Col = Col(
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);
const AGE: Col = Col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn columns(group: &str, kind: &str) -> Vec<Col> {
    let c = |n, t, p, d| Col(n, t, p, d);
    match (group, kind) {
        ("", "Pod") => vec![
            NAME,
            c(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            c(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            c(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            c(
                "IP",
                "string",
                1,
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            c(
                "Node",
                "string",
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
            ),
            c(
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            c(
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        ("", "Namespace") => vec![
            NAME,
            c("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        ("", "Node") => vec![
            NAME,
            c("Status", "string", 0, "The status of the node"),
            c("Roles", "string", 0, "The roles of the node"),
            AGE,
            c(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            c(
                "Internal-IP",
                "string",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            c(
                "External-IP",
                "string",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            c(
                "OS-Image",
                "string",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            c(
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            c(
                "Container-Runtime",
                "string",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        ("", "Service") => vec![
            NAME,
            c(
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            c(
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            c(
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            c(
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            c(
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        ("", "Endpoints") => vec![
            NAME,
            c(
                "Endpoints",
                "string",
                0,
                "Endpoints is the list of endpoints for this service.",
            ),
            AGE,
        ],
        ("", "ConfigMap") => vec![
            NAME,
            c("Data", "string", 0, "Data contains the configuration data."),
            AGE,
        ],
        ("", "Secret") => vec![
            NAME,
            c("Type", "string", 0, "The type of data stored in the secret"),
            c("Data", "string", 0, "The number of entries in the secret"),
            AGE,
        ],
        ("", "ServiceAccount") => vec![
            NAME,
            c(
                "Secrets",
                "string",
                0,
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            AGE,
        ],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            c("Last Seen", "string", 0, "Time when last event occurred"),
            c(
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            c("Reason", "string", 0, "Reason why this event was generated"),
            c("Object", "string", 0, "The object that this event is about"),
            c(
                "Subobject",
                "string",
                1,
                "The subobject that this event is about",
            ),
            c("Source", "string", 1, "The component reporting this event"),
            c(
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            c("First Seen", "string", 1, "Time when first event occurred"),
            c(
                "Count",
                "string",
                1,
                "The number of times this event has occurred",
            ),
            NAME,
        ],
        ("", "PersistentVolume") => vec![
            NAME,
            c(
                "Capacity",
                "string",
                0,
                "capacity is the description of the persistent volume's resources and capacity.",
            ),
            c(
                "Access Modes",
                "string",
                0,
                "accessModes contains all ways the volume can be mounted.",
            ),
            c(
                "Reclaim Policy",
                "string",
                0,
                "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
            ),
            c(
                "Status",
                "string",
                0,
                "phase indicates if a volume is available, bound to a claim, or released by a claim.",
            ),
            c(
                "Claim",
                "string",
                0,
                "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
            ),
            c(
                "StorageClass",
                "string",
                0,
                "storageClassName is the name of StorageClass to which this persistent volume belongs.",
            ),
            c(
                "VolumeAttributesClass",
                "string",
                0,
                "Name of VolumeAttributesClass to which this persistent volume belongs.",
            ),
            c(
                "Reason",
                "string",
                0,
                "reason is a brief CamelCase string that describes any failure.",
            ),
            AGE,
            c(
                "VolumeMode",
                "string",
                1,
                "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
            ),
        ],
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            c(
                "Status",
                "string",
                0,
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            c(
                "Volume",
                "string",
                0,
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            c(
                "Capacity",
                "string",
                0,
                "capacity represents the actual resources of the underlying volume.",
            ),
            c(
                "Access Modes",
                "string",
                0,
                "accessModes contains the actual access modes the volume backing the PVC has.",
            ),
            c(
                "StorageClass",
                "string",
                0,
                "storageClassName is the name of the StorageClass required by the claim.",
            ),
            c(
                "VolumeAttributesClass",
                "string",
                0,
                "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.",
            ),
            AGE,
            c(
                "VolumeMode",
                "string",
                1,
                "volumeMode defines what type of volume is required by the claim.",
            ),
        ],
        ("apps", "Deployment") => vec![
            NAME,
            c("Ready", "string", 0, "Number of the pod with ready state"),
            c(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            c(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            c(
                "Selector",
                "string",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        ("apps", "ReplicaSet") => vec![
            NAME,
            c(
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired pods.",
            ),
            c(
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            c(
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            c(
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        ("apps", "StatefulSet") => vec![
            NAME,
            c("Ready", "string", 0, "Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("apps", "DaemonSet") => vec![
            NAME,
            c(
                "Desired",
                "integer",
                0,
                "The total number of nodes that should be running the daemon pod.",
            ),
            c(
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            c(
                "Ready",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            c(
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod",
            ),
            c(
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            ),
            c(
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            c(
                "Selector",
                "string",
                1,
                "A label query over pods that are managed by the daemon set.",
            ),
        ],
        ("apps", "ControllerRevision") => vec![
            NAME,
            c("Controller", "string", 0, "Controller of the object"),
            c(
                "Revision",
                "integer",
                0,
                "Revision indicates the revision of the state represented by Data.",
            ),
            AGE,
        ],
        ("batch", "Job") => vec![
            NAME,
            c("Status", "string", 0, "Status of the job."),
            c(
                "Completions",
                "string",
                0,
                "The completion status of the job.",
            ),
            c(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            c(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count.",
            ),
        ],
        ("batch", "CronJob") => vec![
            NAME,
            c("Schedule", "string", 0, "The schedule in Cron format."),
            c(
                "Timezone",
                "string",
                0,
                "The time zone name for the given schedule.",
            ),
            c(
                "Suspend",
                "boolean",
                0,
                "This flag tells the controller to suspend subsequent executions.",
            ),
            c(
                "Active",
                "integer",
                0,
                "A list of pointers to currently running jobs.",
            ),
            c(
                "Last Schedule",
                "string",
                0,
                "Information when was the last time the job was successfully scheduled.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            c(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count.",
            ),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            NAME,
            c(
                "Holder",
                "string",
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            AGE,
        ],
        ("node.k8s.io", "RuntimeClass") => vec![
            NAME,
            c(
                "Handler",
                "string",
                0,
                "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
            ),
            AGE,
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            NAME,
            c(
                "AddressType",
                "string",
                0,
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            c(
                "Ports",
                "string",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            c(
                "Endpoints",
                "string",
                0,
                "endpoints is a list of unique endpoints in this slice.",
            ),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// Column definitions as `metav1.TableColumnDefinition` serializes them.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> {
    columns(group, kind)
        .into_iter()
        .map(|Col(name, ty, priority, description)| {
            json!({
                "name": name,
                "type": ty,
                "format": if name == "Name" { "name" } else { "" },
                "description": description,
                "priority": priority,
            })
        })
        .collect()
}

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

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
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
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value, now: Now) -> String {
    translate(s(obj, "/metadata/creationTimestamp"), now)
}

fn translate(t: &str, now: Now) -> String {
    match parse_time(t) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// A `metav1.LabelSelector` in its string form (`a=b,c in (d,e)`), `<none>` when empty.
pub fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = s(e, "/key");
        let values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        match s(e, "/operator") {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.sort();
    or_none(parts.join(","))
}

fn map_selector(m: Option<&Value>) -> String {
    let mut parts: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    or_none(parts.join(","))
}

fn containers_and_images(obj: &Value, spec: &str) -> (String, String) {
    let cs = arr(obj, &format!("{spec}/containers"));
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn pod_row(pod: &Value, now: Now) -> Vec<Value> {
    let containers = arr(pod, "/spec/containers");
    let statuses = arr(pod, "/status/containerStatuses");
    let mut restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut reason = s(pod, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(pod, "/status/phase").to_string();
    }
    // Init containers first, as the pod printer does.
    let mut initializing = false;
    let inits = arr(pod, "/spec/initContainers");
    for (idx, st) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        restarts += i(st, "/restartCount");
        if let Some(t) = parse_time(s(st, "/lastState/terminated/finishedAt")) {
            last_restart = Some(last_restart.map_or(t, |l| l.max(t)));
        }
        let term = st.pointer("/state/terminated");
        if term.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        initializing = true;
        reason = if let Some(t) = term {
            let r = s(t, "/reason");
            if !r.is_empty() {
                format!("Init:{r}")
            } else if i(t, "/signal") != 0 {
                format!("Init:Signal:{}", i(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", i(t, "/exitCode"))
            }
        } else {
            let w = s(st, "/state/waiting/reason");
            if !w.is_empty() && w != "PodInitializing" {
                format!("Init:{w}")
            } else {
                format!("Init:{idx}/{}", inits.len())
            }
        };
        break;
    }
    if !initializing {
        restarts = 0;
        let mut has_running = false;
        for st in statuses.iter().rev() {
            restarts += i(st, "/restartCount");
            if let Some(t) = parse_time(s(st, "/lastState/terminated/finishedAt")) {
                last_restart = Some(last_restart.map_or(t, |l| l.max(t)));
            }
            let w = s(st, "/state/waiting/reason");
            let t = st.pointer("/state/terminated");
            if !w.is_empty() {
                reason = w.to_string();
            } else if let Some(t) = t {
                let r = s(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if i(t, "/signal") != 0 {
                    format!("Signal:{}", i(t, "/signal"))
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if st.pointer("/state/running").is_some()
                && st.get("ready") == Some(&json!(true))
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
            {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(pod, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    let gates = arr(pod, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                arr(pod, "/status/conditions")
                    .iter()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(s(pod, "/metadata/name")),
        json!(format!("{ready}/{}", containers.len())),
        json!(reason),
        json!(restarts),
        json!(age(pod, now)),
        json!(or_none(s(pod, "/status/podIP").to_string())),
        json!(or_none(s(pod, "/spec/nodeName").to_string())),
        json!(or_none(s(pod, "/status/nominatedNodeName").to_string())),
        json!(gates),
    ]
}

fn node_row(node: &Value, now: Now) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    let ready = arr(node, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready");
    match ready {
        Some(c) if s(c, "/status") == "True" => status.push("Ready".into()),
        _ => status.push("NotReady".into()),
    }
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == t)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(s(node, "/metadata/name")),
        json!(status.join(",")),
        json!(or_none(roles.join(","))),
        json!(age(node, now)),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(or_none(s(node, "/status/nodeInfo/osImage").to_string())),
        json!(or_none(
            s(node, "/status/nodeInfo/kernelVersion").to_string()
        )),
        json!(or_none(
            s(node, "/status/nodeInfo/containerRuntimeVersion").to_string()
        )),
    ]
}

fn service_row(svc: &Value, now: Now) -> Vec<Value> {
    let ty = s(svc, "/spec/type");
    let ty = if ty.is_empty() { "ClusterIP" } else { ty };
    let mut external: Vec<String> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let external = match ty {
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            for ing in arr(svc, "/status/loadBalancer/ingress") {
                let ip = s(ing, "/ip");
                external.push(if ip.is_empty() {
                    s(ing, "/hostname").to_string()
                } else {
                    ip.to_string()
                });
            }
            if external.is_empty() {
                "<pending>".into()
            } else {
                external.join(",")
            }
        }
        _ => or_none(external.join(",")),
    };
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = if s(p, "/protocol").is_empty() {
                "TCP"
            } else {
                s(p, "/protocol")
            };
            match i(p, "/nodePort") {
                0 => format!("{}/{proto}", i(p, "/port")),
                n => format!("{}:{n}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    let cluster_ip = s(svc, "/spec/clusterIP");
    vec![
        json!(s(svc, "/metadata/name")),
        json!(ty),
        json!(or_none(cluster_ip.to_string())),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age(svc, now)),
        json!(map_selector(svc.pointer("/spec/selector"))),
    ]
}

fn count(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The cells of one object's row, in the order of `column_definitions`.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: Now) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    match (group, kind) {
        ("", "Pod") => pod_row(obj, now),
        ("", "Node") => node_row(obj, now),
        ("", "Service") => service_row(obj, now),
        ("", "Namespace") => vec![name, json!(s(obj, "/status/phase")), json!(age(obj, now))],
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for subset in arr(obj, "/subsets") {
                for a in arr(subset, "/addresses") {
                    let ports = arr(subset, "/ports");
                    if ports.is_empty() {
                        eps.push(s(a, "/ip").to_string());
                    }
                    for p in ports {
                        eps.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                or_none(eps.join(","))
            };
            vec![name, json!(shown), json!(age(obj, now))]
        }
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
        ("", "Event") | ("events.k8s.io", "Event") => {
            let core = group.is_empty();
            let (regarding, first, last, count_field, source_field, message) = if core {
                (
                    "/involvedObject",
                    "/firstTimestamp",
                    "/lastTimestamp",
                    "/count",
                    "/source/component",
                    "/message",
                )
            } else {
                (
                    "/regarding",
                    "/deprecatedFirstTimestamp",
                    "/deprecatedLastTimestamp",
                    "/deprecatedCount",
                    "/reportingController",
                    "/note",
                )
            };
            let event_time = s(obj, "/eventTime");
            let last_seen = if !s(obj, last).is_empty() {
                translate(s(obj, last), now)
            } else if !event_time.is_empty() {
                translate(event_time, now)
            } else {
                translate(s(obj, "/metadata/creationTimestamp"), now)
            };
            let first_seen = if !s(obj, first).is_empty() {
                translate(s(obj, first), now)
            } else {
                last_seen.clone()
            };
            let object = format!(
                "{}/{}",
                s(obj, &format!("{regarding}/kind")).to_lowercase(),
                s(obj, &format!("{regarding}/name"))
            );
            let count = i(obj, count_field).max(1);
            vec![
                json!(last_seen),
                json!(s(obj, "/type")),
                json!(s(obj, "/reason")),
                json!(object),
                json!(s(obj, &format!("{regarding}/fieldPath"))),
                json!(s(obj, source_field)),
                json!(s(obj, message).trim()),
                json!(first_seen),
                json!(count.to_string()),
                name,
            ]
        }
        ("", "PersistentVolume") => {
            let claim = if obj.pointer("/spec/claimRef").is_some() {
                format!(
                    "{}/{}",
                    s(obj, "/spec/claimRef/namespace"),
                    s(obj, "/spec/claimRef/name")
                )
            } else {
                String::new()
            };
            vec![
                name,
                json!(s(obj, "/spec/capacity/storage")),
                json!(access_modes(arr(obj, "/spec/accessModes"))),
                json!(s(obj, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(obj, "/status/phase")),
                json!(claim),
                json!(s(obj, "/spec/storageClassName")),
                json!(or_unset(s(obj, "/spec/volumeAttributesClassName"))),
                json!(s(obj, "/status/reason")),
                json!(age(obj, now)),
                json!(or_none(s(obj, "/spec/volumeMode").to_string())),
            ]
        }
        ("", "PersistentVolumeClaim") => vec![
            name,
            json!(s(obj, "/status/phase")),
            json!(s(obj, "/spec/volumeName")),
            json!(s(obj, "/status/capacity/storage")),
            json!(access_modes(arr(obj, "/status/accessModes"))),
            json!(s(obj, "/spec/storageClassName")),
            json!(or_unset(s(obj, "/spec/volumeAttributesClassName"))),
            json!(age(obj, now)),
            json!(or_none(s(obj, "/spec/volumeMode").to_string())),
        ],
        ("apps", "Deployment") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
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
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
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
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
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
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            vec![
                name,
                json!(i(obj, "/status/desiredNumberScheduled")),
                json!(i(obj, "/status/currentNumberScheduled")),
                json!(i(obj, "/status/numberReady")),
                json!(i(obj, "/status/updatedNumberScheduled")),
                json!(i(obj, "/status/numberAvailable")),
                json!(map_selector(
                    obj.pointer("/spec/template/spec/nodeSelector")
                )),
                json!(age(obj, now)),
                json!(c),
                json!(im),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "ControllerRevision") => {
            let controller = arr(obj, "/metadata/ownerReferences")
                .iter()
                .find(|o| o.get("controller") == Some(&json!(true)))
                .map(|o| format!("{}/{}", controller_kind(o), s(o, "/name")))
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(controller),
                json!(i(obj, "/revision")),
                json!(age(obj, now)),
            ]
        }
        ("batch", "Job") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(n) => format!("{}/{n}", i(obj, "/status/succeeded")),
                None => format!(
                    "{}/1 of {}",
                    i(obj, "/status/succeeded"),
                    obj.pointer("/spec/parallelism")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
            };
            let start = parse_time(s(obj, "/status/startTime"));
            let end = parse_time(s(obj, "/status/completionTime"));
            let duration = match (start, end) {
                (Some(st), Some(e)) => human_duration(e - st),
                (Some(st), None) => human_duration(now - st),
                _ => String::new(),
            };
            vec![
                name,
                json!(job_status(obj)),
                json!(completions),
                json!(duration),
                json!(age(obj, now)),
                json!(c),
                json!(im),
                json!(selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("batch", "CronJob") => {
            let (c, im) = containers_and_images(obj, "/spec/jobTemplate/spec/template/spec");
            let last = s(obj, "/status/lastScheduleTime");
            vec![
                name,
                json!(s(obj, "/spec/schedule")),
                json!(or_none(s(obj, "/spec/timeZone").to_string())),
                json!(
                    obj.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                        .to_string()
                        .replace("false", "False")
                        .replace("true", "True")
                ),
                json!(arr(obj, "/status/active").len()),
                json!(if last.is_empty() {
                    "<none>".to_string()
                } else {
                    translate(last, now)
                }),
                json!(age(obj, now)),
                json!(c),
                json!(im),
                json!(selector_string(
                    obj.pointer("/spec/jobTemplate/spec/selector")
                )),
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
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = arr(obj, "/ports")
                .iter()
                .map(|p| i(p, "/port").to_string())
                .collect();
            let addrs: Vec<String> = arr(obj, "/endpoints")
                .iter()
                .flat_map(|e| {
                    arr(e, "/addresses")
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            let shown = if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else if addrs.is_empty() {
                "<unset>".into()
            } else {
                addrs.join(",")
            };
            vec![
                name,
                json!(s(obj, "/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(shown),
                json!(age(obj, now)),
            ]
        }
        _ => vec![name, json!(age(obj, now))],
    }
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn or_unset(v: &str) -> String {
    if v.is_empty() {
        "<unset>".into()
    } else {
        v.into()
    }
}

fn controller_kind(owner: &Value) -> String {
    let api = s(owner, "/apiVersion");
    let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
    if group.is_empty() {
        s(owner, "/kind").to_lowercase()
    } else {
        format!("{}.{group}", s(owner, "/kind").to_lowercase())
    }
}

fn access_modes(modes: &[Value]) -> String {
    let short: Vec<&str> = modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    short.join(",")
}

fn job_status(job: &Value) -> String {
    let conds = arr(job, "/status/conditions");
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
    };
    if has("Complete") {
        "Complete".into()
    } else if has("Failed") {
        "Failed".into()
    } else if job.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else if has("Suspended") {
        "Suspended".into()
    } else if has("FailureTarget") {
        "FailureTarget".into()
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet".into()
    } else {
        "Running".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Now {
        parse_time("2026-01-01T01:00:00Z").unwrap()
    }

    fn names(group: &str, kind: &str) -> Vec<String> {
        column_definitions(group, kind)
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn every_row_has_a_cell_per_column() {
        let kinds = [
            ("", "Pod"),
            ("", "Namespace"),
            ("", "Node"),
            ("", "Service"),
            ("", "Endpoints"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "ServiceAccount"),
            ("", "Event"),
            ("", "PersistentVolume"),
            ("", "PersistentVolumeClaim"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("apps", "ControllerRevision"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("coordination.k8s.io", "Lease"),
            ("node.k8s.io", "RuntimeClass"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("events.k8s.io", "Event"),
            ("x", "Other"),
        ];
        for (g, k) in kinds {
            let cells = row_cells(g, k, &json!({"metadata": {"name": "n"}}), now());
            assert_eq!(cells.len(), column_definitions(g, k).len(), "{g}/{k}");
        }
    }

    #[test]
    fn pod_columns_and_wide_priorities() {
        assert_eq!(
            names("", "Pod"),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let defs = column_definitions("", "Pod");
        assert_eq!(defs[0]["format"], "name");
        assert_eq!(defs[4]["priority"], 0);
        assert_eq!(defs[5]["priority"], 1);
    }

    #[test]
    fn pod_status_cells() {
        let pending = json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:59:15Z"},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        let cells = row_cells("", "Pod", &pending, now());
        assert_eq!(
            cells[..5],
            [
                json!("p"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("45s")
            ]
        );
        assert_eq!(cells[5], "<none>");
        let crashing = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"finishedAt": "2026-01-01T00:55:00Z", "exitCode": 1}}}]}});
        let cells = row_cells("", "Pod", &crashing, now());
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "5 (5m ago)");
        let init = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(row_cells("", "Pod", &init, now())[2], "Init:0/1");
        let done = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}});
        assert_eq!(row_cells("", "Pod", &done, now())[2], "Completed");
        let deleting = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": []}, "status": {"phase": "Running"}});
        assert_eq!(row_cells("", "Pod", &deleting, now())[2], "Terminating");
    }

    #[test]
    fn selector_strings() {
        let s = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "old", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(Some(&s)), "!old,app=web,tier in (a,b)");
        assert_eq!(selector_string(Some(&json!({}))), "<none>");
    }

    #[test]
    fn human_durations() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(45)), "45s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(200)), "3m20s");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(3 * 3600 + 60)), "3h1m");
        assert_eq!(human_duration(d(20 * 3600)), "20h");
        assert_eq!(human_duration(d(3 * 86400 + 4 * 3600)), "3d4h");
        assert_eq!(human_duration(d(100 * 86400)), "100d");
        assert_eq!(human_duration(d(3 * 365 * 86400)), "3y");
    }

    #[test]
    fn services() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"}}});
        let cells = row_cells("", "Service", &svc, now());
        assert_eq!(
            cells[1..5],
            [
                json!("LoadBalancer"),
                json!("10.0.0.1"),
                json!("<pending>"),
                json!("80:30080/TCP,53/UDP")
            ]
        );
        assert_eq!(cells[6], "app=web");
        let plain = json!({"metadata": {"name": "a"}, "spec": {"clusterIP": "None"}});
        let cells = row_cells("", "Service", &plain, now());
        assert_eq!(
            cells[1..5],
            [
                json!("ClusterIP"),
                json!("None"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn deployments_and_replicasets() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "a", "image": "i:1"}, {"name": "b", "image": "j:2"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let cells = row_cells("apps", "Deployment", &d, now());
        assert_eq!(cells[1..4], [json!("2/3"), json!(3), json!(2)]);
        assert_eq!(
            cells[5..],
            [json!("a,b"), json!("i:1,j:2"), json!("app=web")]
        );
        assert_eq!(
            names("apps", "ReplicaSet")[..4],
            ["Name", "Desired", "Current", "Ready"]
        );
    }

    #[test]
    fn configmaps_secrets_events() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
        assert_eq!(row_cells("", "ConfigMap", &cm, now())[1], 3);
        let sec = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": ""}});
        assert_eq!(
            row_cells("", "Secret", &sec, now())[1..3],
            [json!("Opaque"), json!(1)]
        );
        let ev = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Scheduled", "message": "ok",
            "involvedObject": {"kind": "Pod", "name": "p"}, "lastTimestamp": "2026-01-01T00:58:00Z", "count": 2});
        let cells = row_cells("", "Event", &ev, now());
        assert_eq!(
            cells[..4],
            [
                json!("2m"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/p")
            ]
        );
        assert_eq!(cells[8], "2");
    }
}
