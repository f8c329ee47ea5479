//! Server-side `meta.k8s.io/v1` Tables, which `kubectl get` asks for.

use serde_json::{Value, json};

use crate::registry::Resource;

/// How a client wants objects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Object,
    /// A Table; rows carry the object as asked by `includeObject`.
    Table(Include),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

pub fn format(accept: &str, include_object: Option<&str>) -> Format {
    let table = accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        p.contains(&"as=Table") && p.contains(&"g=meta.k8s.io")
    });
    if !table {
        return Format::Object;
    }
    Format::Table(match include_object {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    })
}

fn row(
    resource: &Resource,
    obj: &Value,
    include: Include,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let cells = skiff_printers::row_cells(resource.group, resource.kind, obj, now);
    let object = match include {
        Include::None => Value::Null,
        Include::Object => obj.clone(),
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    };
    let mut r = json!({"cells": cells});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A Table of `items`; column definitions are left out when `with_columns` is false (watch
/// events after the first).
pub fn table(
    resource: &Resource,
    items: &[Value],
    include: Include,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| row(resource, o, include, now))
        .collect();
    let columns = if with_columns {
        Value::Array(skiff_printers::column_definitions(
            resource.group,
            resource.kind,
        ))
    } else {
        Value::Null
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
