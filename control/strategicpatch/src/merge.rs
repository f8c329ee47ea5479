//! Applying a strategic merge patch, following apimachinery's `mergeMap` with the options the
//! API server uses (`MergeParallelList` and `IgnoreUnmatchedNulls` both on).

use serde_json::{Map, Value};

use crate::{Error, FieldPatchMeta, meta};

pub(crate) const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

type Object = Map<String, Value>;

pub(crate) fn apply(
    original: &Value,
    patch: &Value,
    root_type: Option<&str>,
) -> Result<Value, Error> {
    let original = as_document(original, "the original document")?;
    let patch = as_document(patch, "the patch")?;
    merge_map(original, patch, root_type, "").map(Value::Object)
}

/// A JSON `null` document is an empty one, as when apimachinery unmarshals `null` into a map.
fn as_document(value: &Value, what: &str) -> Result<Object, Error> {
    match value {
        Value::Object(map) => Ok(map.clone()),
        Value::Null => Ok(Object::new()),
        _ => Err(Error::Invalid(format!("{what} is not a JSON object"))),
    }
}

/// The patch meta of `field` in `ty`; unknown types and fields have no strategy.
pub(crate) fn lookup(ty: Option<&str>, field: &str) -> FieldPatchMeta {
    ty.and_then(|ty| meta::field_patch_meta(ty, field))
        .unwrap_or(FieldPatchMeta {
            child_type: None,
            strategy: "",
            merge_key: None,
        })
}

/// The strategy other than `retainKeys` (`"merge"`, `"replace"` or `""`): `retainKeys` only
/// says that the patch may carry a `$retainKeys` directive, which is honoured wherever it is.
pub(crate) fn list_or_map_strategy(strategy: &str) -> &str {
    strategy
        .split(',')
        .find(|part| !part.is_empty() && *part != "retainKeys")
        .unwrap_or("")
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn invalid(path: &str, message: impl std::fmt::Display) -> Error {
    if path.is_empty() {
        Error::Invalid(message.to_string())
    } else {
        Error::Invalid(format!("{path}: {message}"))
    }
}

fn merge_map(
    mut original: Object,
    mut patch: Object,
    ty: Option<&str>,
    path: &str,
) -> Result<Object, Error> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => Ok(materialize_object(patch)),
            Some("delete") => Ok(Object::new()),
            _ => Err(invalid(path, format!("unknown patch type {directive}"))),
        };
    }

    apply_retain_keys(&mut original, &mut patch, path)?;
    apply_element_orders(&mut original, &mut patch, ty, path)?;

    // Deletions from primitive lists run last, so that an element both added and deleted by
    // one patch ends up deleted (apimachinery walks the keys in Go's random map order).
    let mut deletions = Vec::new();
    for (key, patch_value) in patch {
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST, path)?;
            deletions.push((field.to_string(), patch_value));
            continue;
        }
        merge_field(&mut original, key, patch_value, ty, path)?;
    }
    for (field, to_delete) in deletions {
        delete_from_primitive_list(&mut original, &field, to_delete, path)?;
    }
    Ok(original)
}

/// `$setElementOrder/containers` -> `containers`.
fn directive_field<'k>(key: &'k str, prefix: &str, path: &str) -> Result<&'k str, Error> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix && !field.is_empty() => Ok(field),
        _ => Err(invalid(
            path,
            format!("invalid directive {key:?}: expected {prefix}/<field>"),
        )),
    }
}

fn merge_field(
    original: &mut Object,
    key: String,
    patch_value: Value,
    ty: Option<&str>,
    path: &str,
) -> Result<(), Error> {
    if patch_value.is_null() {
        original.shift_remove(&key);
        return Ok(());
    }
    let field_path = join(path, &key);
    let meta = lookup(ty, &key);
    let strategy = list_or_map_strategy(meta.strategy);
    let current = original.get_mut(&key).map(std::mem::take);
    let merged = match (current, patch_value) {
        (Some(Value::Object(current)), Value::Object(patch)) if strategy != "replace" => Some(
            Value::Object(merge_map(current, patch, meta.child_type, &field_path)?),
        ),
        (Some(Value::Array(current)), Value::Array(patch)) if strategy == "merge" => {
            Some(Value::Array(merge_list(current, patch, meta, &field_path)?))
        }
        // Absent, of another JSON type, a primitive, or a field whose strategy replaces.
        (_, patch) => materialize(patch),
    };
    match merged {
        // Inserting over an existing key keeps its position.
        Some(value) => {
            original.insert(key, value);
        }
        None => {
            original.shift_remove(&key);
        }
    }
    Ok(())
}

/// `$retainKeys`: the original keeps only the listed fields, and the patch may only set
/// listed fields.
fn apply_retain_keys(original: &mut Object, patch: &mut Object, path: &str) -> Result<(), Error> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(invalid(
            path,
            "invalid patch format of $retainKeys: not a list",
        ));
    };
    let retain: std::collections::HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    let listed = |key: &str| retain.contains(key);
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(key) {
            return Err(invalid(
                path,
                format!("invalid patch format of $retainKeys: {key} is not listed"),
            ));
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// Every `$setElementOrder/<field>`: merges the field's list (when the patch has one) and
/// orders the result: patch items as the directive says, server-only items kept in their
/// live order relative to them.
fn apply_element_orders(
    original: &mut Object,
    patch: &mut Object,
    ty: Option<&str>,
    path: &str,
) -> Result<(), Error> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let order = patch.shift_remove(&key).unwrap_or(Value::Null);
        let field = directive_field(&key, SET_ELEMENT_ORDER, path)?;
        let field_path = join(path, field);
        let Value::Array(order) = order else {
            return Err(invalid(&field_path, format!("{key} is not a list")));
        };
        let current = match original.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(_) => return Err(invalid(&field_path, "not a list in the original")),
        };
        let patch_list = match patch.shift_remove(field) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(invalid(&field_path, "not a list in the patch")),
        };
        let meta = lookup(ty, field);
        if let Some(patch_list) = &patch_list {
            validate_element_order(patch_list, &order, meta.merge_key, &field_path)?;
        }
        let (merged, live_order) = match (current, patch_list) {
            (None, None) => continue,
            (Some(current), None) => (current.clone(), current),
            (None, Some(patch)) => (materialize_list(patch), Vec::new()),
            (Some(current), Some(patch)) => {
                if list_or_map_strategy(meta.strategy) == "merge" {
                    let merged = merge_list_keeping_order(current, patch, meta, &field_path)?;
                    (merged.items, merged.live_order)
                } else {
                    (materialize_list(patch), current)
                }
            }
        };
        let ordered = normalize_order(merged, &order, &live_order, meta.merge_key, &field_path)?;
        original.insert(field.to_string(), Value::Array(ordered));
    }
    Ok(())
}

/// The patch list must name its items in the same relative order as `$setElementOrder`, and
/// only items the directive names (deletions aside).
fn validate_element_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    path: &str,
) -> Result<(), Error> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = patch_list.iter().filter(|v| !has_directive(v)).collect();
    let mut at_patch = 0;
    let mut at_order = 0;
    while at_patch < items.len() && at_order < order.len() {
        let same = match merge_key {
            Some(key) => {
                let left = identity(items[at_patch], Some(key))
                    .ok_or_else(|| missing_merge_key(path, items[at_patch], key))?;
                let right = identity(&order[at_order], Some(key))
                    .ok_or_else(|| missing_merge_key(path, &order[at_order], key))?;
                json_eq(left, right)
            }
            None => json_eq(items[at_patch], &order[at_order]),
        };
        if same {
            at_patch += 1;
        }
        at_order += 1;
    }
    if at_patch < items.len() {
        return Err(invalid(
            path,
            "the order in the patch list doesn't match the $setElementOrder list",
        ));
    }
    Ok(())
}

fn missing_merge_key(path: &str, element: &Value, key: &str) -> Error {
    invalid(
        path,
        format!("element {element} does not contain declared merge key {key}"),
    )
}

fn has_directive(value: &Value) -> bool {
    value.as_object().is_some_and(|m| m.contains_key(DIRECTIVE))
}

/// The kind of the elements of a merged list; they must all be alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Null,
    Bool,
    Number,
    String,
    Object,
}

fn element_kind(lists: &[&[Value]], path: &str) -> Result<Option<ElementKind>, Error> {
    let mut kind = None;
    for value in lists.iter().flat_map(|l| l.iter()) {
        let this = match value {
            Value::Null => ElementKind::Null,
            Value::Bool(_) => ElementKind::Bool,
            Value::Number(_) => ElementKind::Number,
            Value::String(_) => ElementKind::String,
            Value::Object(_) => ElementKind::Object,
            Value::Array(_) => return Err(invalid(path, "lists of lists are not supported")),
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                return Err(invalid(path, "list element types are not identical"));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Merges a list whose strategy is `merge`: primitives as a set, objects by merge key.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: FieldPatchMeta,
    path: &str,
) -> Result<Vec<Value>, Error> {
    merge_list_keeping_order(original, patch, meta, path).map(|merged| merged.items)
}

struct MergedList {
    items: Vec<Value>,
    /// The live order that a `$setElementOrder` on this list sorts server-only items by.
    /// apimachinery edits the live list in place, so there it is the list after deletions
    /// with the first new items in the freed slots; its tests assert orders that follow
    /// from this (e.g. "add map and delete map from merging list").
    live_order: Vec<Value>,
}

fn merge_list_keeping_order(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: FieldPatchMeta,
    path: &str,
) -> Result<MergedList, Error> {
    if original.is_empty() && patch.is_empty() {
        return Ok(MergedList {
            items: Vec::new(),
            live_order: original,
        });
    }
    if element_kind(&[&original, &patch], path)? != Some(ElementKind::Object) {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        let mut seen = std::collections::HashSet::with_capacity(merged.capacity());
        for value in original.iter().chain(patch.iter()) {
            if seen.insert(Id::of(value)) {
                merged.push(value.clone());
            }
        }
        let items = normalize_order(merged, &patch, &original, None, path)?;
        return Ok(MergedList {
            items,
            live_order: original,
        });
    }
    let Some(key) = meta.merge_key else {
        return Err(invalid(
            path,
            "cannot merge a list of objects without a merge key",
        ));
    };

    // Elements carrying `$patch` first: deletions by key and a whole-list replace.
    let live_len = original.len();
    let live = original.clone();
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    let mut deleted = std::collections::HashSet::new();
    for element in patch {
        let Some(directive) = element.get(DIRECTIVE) else {
            plain.push(element);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(value) = element.get(key) else {
                    return Err(missing_merge_key(path, &element, key));
                };
                deleted.insert(Id::of(value).into_owned());
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(invalid(
                    path,
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => return Err(invalid(path, format!("unknown patch type {directive}"))),
        }
    }
    if !deleted.is_empty() {
        original.retain(|e| identity(e, Some(key)).is_none_or(|v| !deleted.contains(&Id::of(v))));
    }
    if replace {
        if let Some(element) = plain.iter().find(|e| identity(e, Some(key)).is_none()) {
            return Err(missing_merge_key(path, element, key));
        }
        return Ok(MergedList {
            items: materialize_list(plain),
            live_order: live,
        });
    }

    let after_deletions = original.clone();
    let mut merged = original;
    // Where each key first appears: merging stays linear in the two lists' lengths.
    let mut at_key = IdIndex::new(&after_deletions, Some(key));
    for element in &plain {
        let Some(value) = identity(element, Some(key)) else {
            return Err(missing_merge_key(path, element, key));
        };
        let element_path = format!("{path}[{key}={value}]");
        let Value::Object(patch_element) = element.clone() else {
            unreachable!("element kinds were checked to be objects");
        };
        match at_key.first(value) {
            Some(at) => {
                let Value::Object(current) = std::mem::take(&mut merged[at]) else {
                    unreachable!("element kinds were checked to be objects");
                };
                merged[at] = Value::Object(merge_map(
                    current,
                    patch_element,
                    meta.child_type,
                    &element_path,
                )?);
            }
            None => {
                if let Some(new) = materialize_object_value(patch_element) {
                    at_key.add(value, merged.len());
                    merged.push(new);
                }
            }
        }
    }
    let mut live_order = after_deletions.clone();
    let new_items = merged.iter().skip(after_deletions.len());
    live_order.extend(new_items.take(live_len - after_deletions.len()).cloned());
    let items = normalize_order(merged, &plain, &after_deletions, Some(key), path)?;
    Ok(MergedList { items, live_order })
}

/// What identifies a list item: its merge key's value, or the item itself for primitives.
fn identity<'v>(item: &'v Value, merge_key: Option<&str>) -> Option<&'v Value> {
    match merge_key {
        Some(key) => item.as_object()?.get(key),
        None => Some(item),
    }
}

/// A JSON value as a hash key with [`json_eq`]'s equality: numbers by their `f64` value,
/// objects whatever their key order. Lists are merged through these so that the work is
/// linear in their lengths: a patch can carry hundreds of thousands of items in 3 MiB, and
/// comparing each with each would hold a CPU for hours.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Id<'v> {
    Null,
    Bool(bool),
    Number(u64),
    String(std::borrow::Cow<'v, str>),
    /// Lists and objects, written out canonically (sorted keys, numbers as above).
    Composite(String),
}

impl<'v> Id<'v> {
    pub(crate) fn of(value: &'v Value) -> Id<'v> {
        match value {
            Value::Null => Id::Null,
            Value::Bool(b) => Id::Bool(*b),
            Value::Number(n) => Id::Number(number_bits(n)),
            Value::String(s) => Id::String(std::borrow::Cow::Borrowed(s)),
            other => {
                let mut out = String::new();
                write_canonical(other, &mut out);
                Id::Composite(out)
            }
        }
    }

    /// The same identity, borrowing nothing.
    pub(crate) fn into_owned(self) -> Id<'static> {
        match self {
            Id::Null => Id::Null,
            Id::Bool(b) => Id::Bool(b),
            Id::Number(n) => Id::Number(n),
            Id::String(s) => Id::String(std::borrow::Cow::Owned(s.into_owned())),
            Id::Composite(c) => Id::Composite(c),
        }
    }
}

/// `80` and `80.0` alike, `-0.0` as `0.0`, as Go's decoded `float64`s compare.
fn number_bits(n: &serde_json::Number) -> u64 {
    let f = n.as_f64().unwrap_or(0.0);
    if f == 0.0 { 0 } else { f.to_bits() }
}

fn write_canonical(value: &Value, out: &mut String) {
    use std::fmt::Write;
    match value {
        Value::Null => out.push('n'),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Number(n) => {
            let _ = write!(out, "#{:x}", number_bits(n));
        }
        Value::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        Value::Array(items) => {
            out.push('[');
            for item in items {
                write_canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                let _ = write!(out, "{k:?}:");
                write_canonical(&map[k], out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// The first position of each identity in a list (items without one are skipped).
pub(crate) struct IdIndex<'v> {
    first: std::collections::HashMap<Id<'v>, usize>,
}

impl<'v> IdIndex<'v> {
    pub(crate) fn new(list: &'v [Value], merge_key: Option<&str>) -> Self {
        let mut first = std::collections::HashMap::with_capacity(list.len());
        for (at, item) in list.iter().enumerate() {
            if let Some(id) = identity(item, merge_key) {
                first.entry(Id::of(id)).or_insert(at);
            }
        }
        IdIndex { first }
    }

    pub(crate) fn first(&self, id: &Value) -> Option<usize> {
        self.first.get(&Id::of(id)).copied()
    }

    pub(crate) fn add(&mut self, id: &'v Value, at: usize) {
        self.first.entry(Id::of(id)).or_insert(at);
    }
}

/// apimachinery's `normalizeElementOrder`: items named by `patch_order` are sorted by it,
/// the others ("server-only") by `live_order`, then the server-only items are slotted in
/// before the first patch item that comes after them in the live list. Items absent from
/// the live list (new ones) therefore come before the remaining server-only items.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    live_order: &[Value],
    merge_key: Option<&str>,
    path: &str,
) -> Result<Vec<Value>, Error> {
    struct Item {
        patch_at: Option<usize>,
        live_at: Option<usize>,
        value: Value,
    }
    let patch_index = IdIndex::new(patch_order, merge_key);
    let live_index = IdIndex::new(live_order, merge_key);
    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for value in merged {
        let Some(id) = identity(&value, merge_key) else {
            return Err(missing_merge_key(
                path,
                &value,
                merge_key.unwrap_or_default(),
            ));
        };
        let (patch_at, live_at) = (patch_index.first(id), live_index.first(id));
        let item = Item {
            patch_at,
            live_at,
            value,
        };
        if item.patch_at.is_some() {
            from_patch.push(item);
        } else {
            server_only.push(item);
        }
    }
    from_patch.sort_by_key(|item| item.patch_at);
    // Stable sort; items missing from the live list (only after a replace) go last.
    server_only.sort_by_key(|item| item.live_at.unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((l.live_at, r.live_at), (Some(a), Some(b)) if a < b),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next.map(|item| item.value));
    }
    Ok(out)
}

fn delete_from_primitive_list(
    original: &mut Object,
    field: &str,
    to_delete: Value,
    path: &str,
) -> Result<(), Error> {
    if to_delete.is_null() {
        // apimachinery drops the field itself for `$deleteFromPrimitiveList/<field>: null`.
        original.shift_remove(field);
        return Ok(());
    }
    // Nothing to delete from, or not a list: the directive does nothing.
    let Some(Value::Array(current)) = original.get_mut(field) else {
        return Ok(());
    };
    let Value::Array(to_delete) = to_delete else {
        return Ok(());
    };
    if element_kind(&[current, &to_delete], &join(path, field))? == Some(ElementKind::Object) {
        return Err(invalid(
            &join(path, field),
            "$deleteFromPrimitiveList applies only to lists of primitives",
        ));
    }
    let to_delete: std::collections::HashSet<Id> = to_delete.iter().map(Id::of).collect();
    current.retain(|v| !to_delete.contains(&Id::of(v)));
    Ok(())
}

/// A patch value stored where there is nothing to merge it with: `$patch` elements and maps
/// marked `$patch: delete` are dropped, other directives and null fields removed.
fn materialize(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => materialize_object_value(map),
        Value::Array(items) => Some(Value::Array(materialize_list(items))),
        other => Some(other),
    }
}

fn materialize_object_value(mut map: Object) -> Option<Value> {
    if let Some(directive) = map.shift_remove(DIRECTIVE) {
        // A new map marked `replace` is simply its content. apimachinery drops any map with
        // a `$patch` here; Skiff keeps the replace, which is what the patch asks for.
        if directive.as_str() != Some("replace") {
            return None;
        }
    }
    Some(Value::Object(materialize_object(map)))
}

fn materialize_object(map: Object) -> Object {
    map.into_iter()
        .filter(|(key, value)| !value.is_null() && !is_directive_key(key))
        .filter_map(|(key, value)| materialize(value).map(|v| (key, v)))
        .collect()
}

fn materialize_list(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .filter(|item| !has_directive(item))
        .filter_map(materialize)
        .collect()
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// JSON equality where numbers compare by value (`80` equals `80.0`), as Go's decoded
/// `float64`s do.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
