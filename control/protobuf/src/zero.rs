//! Go's zero values: the fields kube-apiserver writes even when nothing set them.
//!
//! kube-apiserver encodes objects with Go's `encoding/json`, which writes every field not
//! tagged `omitempty` (its zero when unset) and every non-pointer struct, since `omitempty`
//! never omits a struct: a DaemonSet created without a status is answered with
//! `status: {currentNumberScheduled: 0, numberMisscheduled: 0, ...}`, a container with
//! `resources: {}`. Clients count on them (the Python client refuses a model whose required
//! field is missing). The generated table says per field what Go writes ([`Unset`]), and
//! [`fill`] inserts what an object lacks, walking only into messages that have something to
//! fill ([`Message::fills`]): on an object that lacks nothing it reads and allocates nothing
//! beyond the lookups.

use serde_json::{Map, Value};

use crate::schema::ROOTS;
use crate::types::{Field, Kind, Message, Unset};

/// The table's message for a top-level kind.
pub fn root(api_version: &str, kind: &str) -> Option<&'static Message> {
    ROOTS
        .iter()
        .find(|r| r.kind == kind && (r.api_version.is_empty() || r.api_version == api_version))
        .map(|r| r.message)
}

/// Inserts into `object` (its fields, as `msg`) every zero Go would write that it lacks.
/// A field that holds a value, even a wrong one, is never replaced; a `null` is, as Go
/// would read it as the zero.
pub fn fill(msg: &'static Message, object: &mut Map<String, Value>) {
    if !msg.fills {
        return;
    }
    for field in msg.fields {
        if let Kind::Inline(inner) = field.kind {
            fill(inner, object);
            continue;
        }
        let walk = walks_into(field);
        if field.unset != Unset::Zero && walk.is_none() {
            continue;
        }
        match object.get_mut(field.json) {
            Some(value) if value.is_null() => {
                if field.unset == Unset::Zero {
                    *value = zero(field);
                }
            }
            Some(value) => {
                if let Some(inner) = walk {
                    descend(field, inner, value);
                }
            }
            None => {
                if field.unset == Unset::Zero {
                    object.insert(field.json.to_owned(), zero(field));
                }
            }
        }
    }
}

/// The message a present value of `field` holds, when it has something to fill.
fn walks_into(field: &Field) -> Option<&'static Message> {
    match field.kind {
        Kind::Message(m) | Kind::Map(&Kind::Message(m)) if m.fills => Some(m),
        _ => None,
    }
}

/// Fills a present value of `field`, whose message is `msg`: each item of a list, each
/// value of a map, or the object itself.
fn descend(field: &Field, msg: &'static Message, value: &mut Value) {
    match value {
        Value::Array(items) if field.repeated => {
            for item in items {
                if let Value::Object(object) = item {
                    fill(msg, object);
                }
            }
        }
        Value::Object(map) if matches!(field.kind, Kind::Map(_)) => {
            for v in map.values_mut() {
                if let Value::Object(object) = v {
                    fill(msg, object);
                }
            }
        }
        Value::Object(object) if !field.repeated => fill(msg, object),
        // A value of the wrong shape is validation's to report.
        _ => {}
    }
}

/// What Go writes for the field of `msg` named `json` at its zero, if anything.
pub fn field_zero(msg: &'static Message, json: &str) -> Option<Value> {
    msg.fields
        .iter()
        .find(|f| f.json == json && f.unset == Unset::Zero)
        .map(zero)
}

/// What Go writes for `field` at its zero value (only asked of `Unset::Zero` fields).
fn zero(field: &Field) -> Value {
    match field.kind {
        Kind::String => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::Int32 | Kind::Int64 | Kind::Double | Kind::IntOrString => Value::from(0),
        Kind::Quantity => Value::String("0".into()),
        Kind::Duration => Value::String("0s".into()),
        Kind::Message(msg) => {
            let mut object = Map::new();
            fill(msg, &mut object);
            Value::Object(object)
        }
        // The generator marks no other kind `Zero`: a nil `[]byte`, map or Time is `null`.
        Kind::Bytes
        | Kind::Inline(_)
        | Kind::Map(_)
        | Kind::Time
        | Kind::MicroTime
        | Kind::RawExtension
        | Kind::FieldsV1 => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::fill_go_zero_values;
    use crate::schema::ROOTS;

    fn filled(api_version: &str, kind: &str, mut object: Value) -> Value {
        assert!(fill_go_zero_values(api_version, kind, &mut object));
        object
    }

    fn nulls(v: &Value) -> usize {
        match v {
            Value::Null => 1,
            Value::Array(a) => a.iter().map(nulls).sum(),
            Value::Object(o) => o.values().map(nulls).sum(),
            _ => 0,
        }
    }

    #[test]
    fn a_daemonset_without_status_gets_the_four_counts() {
        let ds = filled(
            "apps/v1",
            "DaemonSet",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"}}),
        );
        assert_eq!(
            ds["status"],
            json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0})
        );
        // Non-pointer structs, empty; slices, maps and pointers stay out.
        assert_eq!(
            ds["spec"],
            json!({"template": {"metadata": {}, "spec": {}}, "updateStrategy": {}})
        );
        assert_eq!(ds["metadata"], json!({"name": "d"}));
        // An empty status, or a null one (Go reads it as the zero), gets them too.
        for status in [json!({}), Value::Null] {
            let ds = filled("apps/v1", "DaemonSet", json!({"status": status}));
            assert_eq!(ds["status"]["numberMisscheduled"], 0);
        }
    }

    #[test]
    fn a_deployment_gets_an_empty_status() {
        let d = filled(
            "apps/v1",
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 2}}),
        );
        assert_eq!(d["status"], json!({}));
        assert_eq!(d["spec"]["strategy"], json!({}));
        assert_eq!(d["spec"]["replicas"], 2);
    }

    #[test]
    fn nested_structs_in_lists_inline_structs_and_special_kinds() {
        let pod = filled(
            "v1",
            "Pod",
            json!({"spec": {
                "containers": [{"name": "c", "ports": [{"name": "http"}],
                    "livenessProbe": {"httpGet": {"path": "/"}}}],
                "volumes": [{"name": "v", "hostPath": {}}]},
                "status": {"containerStatuses": [{"name": "c"}],
                    "conditions": [{"type": "Ready"}]}}),
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0], json!({"name": "http", "containerPort": 0}));
        // httpGet sits in ProbeHandler, inlined into Probe; its port is an IntOrString.
        assert_eq!(
            c["livenessProbe"]["httpGet"],
            json!({"path": "/", "port": 0})
        );
        // hostPath sits in VolumeSource, inlined into Volume.
        assert_eq!(pod["spec"]["volumes"][0]["hostPath"], json!({"path": ""}));
        assert_eq!(
            pod["status"]["containerStatuses"][0],
            json!({"name": "c", "state": {}, "lastState": {}, "ready": false,
                "restartCount": 0, "image": "", "imageID": ""})
        );
        // lastProbeTime and lastTransitionTime are Times: Go writes null, Skiff nothing.
        assert_eq!(
            pod["status"]["conditions"][0],
            json!({"type": "Ready", "status": ""})
        );
        let node = filled("v1", "Node", json!({"status": {}}));
        assert_eq!(
            node["status"]["daemonEndpoints"],
            json!({"kubeletEndpoint": {"Port": 0}})
        );
        assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "");
        let svc = filled("v1", "Service", json!({"spec": {"ports": [{"port": 80}]}}));
        assert_eq!(svc["status"], json!({"loadBalancer": {}}));
        // targetPort, a non-pointer IntOrString, is 0 until defaulted (Go writes 0 too).
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 0);
    }

    #[test]
    fn fields_that_are_set_are_never_overwritten() {
        let ds = json!({"spec": {"updateStrategy": {"type": "OnDelete"},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                    {"name": "c", "resources": {"limits": {"cpu": "1"}}}]}}},
            "status": {"numberReady": 3, "currentNumberScheduled": "not a number",
                "numberMisscheduled": 1, "desiredNumberScheduled": 4}});
        let out = filled("apps/v1", "DaemonSet", ds.clone());
        assert_eq!(out["status"], ds["status"]);
        assert_eq!(out["spec"]["updateStrategy"], ds["spec"]["updateStrategy"]);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "1"}})
        );
        // A value of the wrong shape is left for validation to report.
        let odd = json!({"status": "Running", "spec": {"containers": "none"}});
        assert_eq!(filled("v1", "Pod", odd.clone())["status"], odd["status"]);
        assert_eq!(filled("v1", "Pod", odd.clone())["spec"], odd["spec"]);
    }

    #[test]
    fn every_kind_fills_once_without_nulls() {
        for root in ROOTS {
            let once = filled(root.api_version, root.kind, json!({}));
            assert_eq!(nulls(&once), 0, "{}: {once}", root.kind);
            let twice = filled(root.api_version, root.kind, once.clone());
            assert_eq!(once, twice, "{}", root.kind);
        }
    }

    #[test]
    fn unknown_kinds_are_left_alone() {
        let mut v = json!({"spec": {}});
        assert!(!fill_go_zero_values("v1", "Widget", &mut v));
        assert!(!fill_go_zero_values("apps/v2", "DaemonSet", &mut v));
        assert_eq!(v, json!({"spec": {}}));
    }
}
