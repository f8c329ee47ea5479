//! Conversion between the version a resource is served in and the one it is stored in.
//!
//! Only events need it: `events.k8s.io/v1` events are stored as `core/v1` events, so the
//! same event is visible through both APIs (kubectl describe reads core/v1 events).

use serde_json::{Map, Value};

use crate::registry::Resource;

/// `(core/v1 field, events.k8s.io/v1 field)` pairs that differ only in name.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn is_events_v1(resource: &Resource) -> bool {
    resource.group == "events.k8s.io"
}

fn rename(obj: Value, from_core: bool, api_version: &str) -> Value {
    let Value::Object(map) = obj else { return obj };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let renamed = EVENT_RENAMES.iter().find_map(|(core, ev)| {
            if from_core && k == *core {
                Some(*ev)
            } else if !from_core && k == *ev {
                Some(*core)
            } else {
                None
            }
        });
        let key = renamed.map(str::to_string).unwrap_or(k);
        out.insert(key, v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    Value::Object(out)
}

/// The stored form of an object served as `resource`.
pub fn to_storage(resource: &Resource, obj: Value) -> Value {
    if is_events_v1(resource) {
        rename(obj, false, "v1")
    } else {
        obj
    }
}

/// The served form of a stored object.
/// Whether the resource is served exactly as it is stored (all but events.k8s.io/v1).
pub fn stored_as_served(resource: &Resource) -> bool {
    !is_events_v1(resource)
}

pub fn from_storage(resource: &Resource, obj: Value) -> Value {
    if is_events_v1(resource) {
        rename(obj, true, "events.k8s.io/v1")
    } else {
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_versions() {
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        let served = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "regarding": {"name": "p"}, "note": "hi",
            "reason": "Started", "reportingController": "skiff"});
        let stored = to_storage(ev, served.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["reportingComponent"], "skiff");
        assert_eq!(from_storage(ev, stored), served);
    }
}
