//! The merge behind Skiff's simple server-side apply: the applied object is laid over the
//! live one with the same patch meta as strategic merge patch, but it never deletes.

use serde_json::{Map, Value};

use crate::FieldPatchMeta;
use crate::merge::{Id, IdIndex, list_or_map_strategy, lookup};

pub(crate) fn merge_for_apply(live: &Value, applied: &Value, root_type: Option<&str>) -> Value {
    match (live, applied) {
        (_, Value::Null) => live.clone(),
        (Value::Object(live), Value::Object(applied)) => {
            Value::Object(merge_objects(live, applied, root_type))
        }
        _ => without_nulls(applied),
    }
}

fn merge_objects(
    live: &Map<String, Value>,
    applied: &Map<String, Value>,
    ty: Option<&str>,
) -> Map<String, Value> {
    let mut out = live.clone();
    for (key, value) in applied {
        // A null in an applied object means "not set by me", never "delete".
        if value.is_null() {
            continue;
        }
        let merged = match out.get(key) {
            Some(current) => merge_field(current, value, lookup(ty, key)),
            None => without_nulls(value),
        };
        out.insert(key.clone(), merged);
    }
    out
}

fn merge_field(live: &Value, applied: &Value, meta: FieldPatchMeta) -> Value {
    let strategy = list_or_map_strategy(meta.strategy);
    match (live, applied) {
        (Value::Object(live), Value::Object(applied)) if strategy != "replace" => {
            Value::Object(merge_objects(live, applied, meta.child_type))
        }
        (Value::Array(live), Value::Array(applied)) if strategy == "merge" => {
            merge_lists(live, applied, meta)
                .unwrap_or_else(|| without_nulls(&Value::Array(applied.clone())))
        }
        _ => without_nulls(applied),
    }
}

/// Live items keep their order and position; applied items not yet live are appended in the
/// applied order. `None` when the applied list cannot be merged (an element without its
/// merge key, or objects in a list of primitives): it then replaces the live one.
fn merge_lists(live: &[Value], applied: &[Value], meta: FieldPatchMeta) -> Option<Value> {
    let mut out = live.to_vec();
    match meta.merge_key {
        None => {
            if applied.iter().any(|v| v.is_object() || v.is_array()) {
                return None;
            }
            let mut seen: std::collections::HashSet<Id> = live.iter().map(Id::of).collect();
            for value in applied {
                if seen.insert(Id::of(value)) {
                    out.push(value.clone());
                }
            }
        }
        Some(key) => {
            if applied
                .iter()
                .any(|v| v.as_object().and_then(|m| m.get(key)).is_none())
            {
                return None;
            }
            // Linear in both lists: where each key first appears.
            let mut at_key = IdIndex::new(live, Some(key));
            for element in applied {
                let id = &element[key];
                let at = at_key.first(id);
                if at.is_none() {
                    at_key.add(id, out.len());
                }
                match (at, element) {
                    (Some(at), Value::Object(applied)) => {
                        out[at] = match &out[at] {
                            Value::Object(current) => {
                                Value::Object(merge_objects(current, applied, meta.child_type))
                            }
                            _ => without_nulls(element),
                        };
                    }
                    _ => out.push(without_nulls(element)),
                }
            }
        }
    }
    Some(Value::Array(out))
}

/// The applied value with null fields dropped at every depth.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}
