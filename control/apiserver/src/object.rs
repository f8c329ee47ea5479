//! Reading and writing object metadata on the JSON form, and the codec between API objects
//! and store values.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use skiff_store::KeyValue;

use crate::registry::Resource;
use crate::status::{ApiError, ApiResult};

/// `metadata` of an object, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("metadata object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.as_object())
        .map(|l| {
            l.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(|f| f.as_array())
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

/// Drops the metadata lists and maps that are present but empty, as Go's `omitempty`
/// leaves them out: a strategic patch that removes the last finalizer leaves no
/// `finalizers: []` behind.
pub fn drop_empty_meta(obj: &mut Value) {
    let meta = meta_mut(obj);
    for f in [
        "finalizers",
        "ownerReferences",
        "labels",
        "annotations",
        "managedFields",
    ] {
        let empty = match meta.get(f) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            meta.remove(f);
        }
    }
}

/// RFC 3339 with second precision, as Kubernetes' `metav1.Time`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The value Skiff stores: the object without `resourceVersion` (the store's revision is
/// the resource version) and without `selfLink`.
pub fn encode(resource: &Resource, obj: &Value) -> Bytes {
    if crate::convert::stored_as_served(resource) {
        return Bytes::from(serde_json::to_vec(&Stored(obj)).expect("JSON value serializes"));
    }
    let mut obj = obj.clone();
    let meta = meta_mut(&mut obj);
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    let obj = crate::convert::to_storage(resource, obj);
    Bytes::from(serde_json::to_vec(&obj).expect("JSON value serializes"))
}

/// Fields the server sets on what it serves and never stores.
const UNSTORED: [&str; 2] = ["resourceVersion", "selfLink"];

/// An object serialized as stored, without copying it.
struct Stored<'a>(&'a Value);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(map) = self.0 else {
            return self.0.serialize(s);
        };
        let mut out = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    out.serialize_entry(k, &StoredMeta(meta))?;
                }
                _ => out.serialize_entry(k, v)?,
            }
        }
        out.end()
    }
}

struct StoredMeta<'a>(&'a Map<String, Value>);

impl serde::Serialize for StoredMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self
            .0
            .iter()
            .filter(|(k, _)| !UNSTORED.contains(&k.as_str()));
        let mut out = s.serialize_map(None)?;
        for (k, v) in kept {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// An API object from a store value, with `resourceVersion` set from the revision, in the
/// version `resource` serves.
pub fn decode(resource: &Resource, kv: &KeyValue) -> ApiResult<Value> {
    decode_at(resource, &kv.value, kv.mod_revision)
}

/// What [`decode`] makes of `kv`, the store's answer to writing `obj`: for a resource
/// served as it is stored, `obj` itself at the new revision, without parsing it again.
pub fn written(resource: &Resource, mut obj: Value, kv: &KeyValue) -> ApiResult<Value> {
    if !crate::convert::stored_as_served(resource) {
        return decode(resource, kv);
    }
    let meta = meta_mut(&mut obj);
    meta.remove("selfLink");
    meta.insert(
        "resourceVersion".into(),
        Value::String(kv.mod_revision.to_string()),
    );
    Ok(obj)
}

pub fn decode_at(resource: &Resource, value: &[u8], revision: i64) -> ApiResult<Value> {
    let obj: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    let mut obj = crate::convert::from_storage(resource, obj);
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(obj)
}

/// Parses a resourceVersion the client sent (a decimal revision).
pub fn parse_resource_version(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// Letters Kubernetes uses for `generateName` suffixes (no vowels, no lookalikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    // As Kubernetes: the prefix is cut so that the name stays within 63 characters.
    let max_prefix = 63 - 5;
    let prefix = if prefix.len() > max_prefix {
        &prefix[..max_prefix]
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

/// A dotted path (`spec.nodeName`, `involvedObject.name`) read as a string, for field
/// selectors.
pub fn field_value(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
