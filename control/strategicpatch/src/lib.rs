//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`), applied on
//! `serde_json::Value`, with the patch strategies and merge keys of the built-in types.
//!
//! The semantics follow apimachinery's `StrategicMergePatch` as the API server runs it. Where
//! it is unspecified or odd, the choices are written where they are made:
//! - list order follows apimachinery exactly: without `$setElementOrder`, items the patch names
//!   take the patch's order and new ones land before the live-only items that follow them
//!   (so one new container alone comes first); kubectl always sends the directive;
//! - `$patch: merge` is rejected, on maps and in lists, as apimachinery does;
//! - `$deleteFromPrimitiveList/<field>` runs after the rest of the map is merged;
//! - a `$patch: replace` map stored where the original had nothing keeps its content;
//! - `$`-keys other than the directives are data (CRD schemas have `$ref`, `$schema`).
//!
//! The result keeps the original's key order; new keys follow in patch order.

mod apply_merge;
mod merge;
mod meta;
#[cfg(test)]
mod tests;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The patch is malformed for the strategy (for example a merged list element without
    /// its merge key, or an unknown `$patch` directive). The message names the field.
    #[error("{0}")]
    Invalid(String),
}

/// How one field of a Kubernetes type is patched (from the Go types' `patchStrategy` and
/// `patchMergeKey` tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPatchMeta {
    /// The OpenAPI definition name of the field's type, or of the list's element type
    /// (e.g. `io.k8s.api.core.v1.Container`), when patching below it needs meta.
    pub child_type: Option<&'static str>,
    /// `"merge"`, `"retainKeys"`, `"merge,retainKeys"` or `""` (replace).
    pub strategy: &'static str,
    /// For merged lists of objects: the key that identifies an element.
    pub merge_key: Option<&'static str>,
}

/// The OpenAPI definition name of a kind's root type, e.g. `("apps", "Deployment")` ->
/// `io.k8s.api.apps.v1.Deployment`. `group` is `""` for core.
pub fn root_type(group: &str, kind: &str) -> Option<&'static str> {
    meta::root_type(group, kind)
}

/// Patch meta of `field` in the type `type_name` (an OpenAPI definition name).
/// `None` for fields without a strategy that lead to no tagged field.
pub fn field_patch_meta(type_name: &str, field: &str) -> Option<FieldPatchMeta> {
    meta::field_patch_meta(type_name, field)
}

/// Applies a strategic merge patch to `original`, whose root type is `root_type`
/// (`None`: no type known, so every list is replaced and maps merge).
/// Both documents must be JSON objects (`null` counts as `{}`). Directives never reach the
/// result.
pub fn apply(original: &Value, patch: &Value, root_type: Option<&str>) -> Result<Value, Error> {
    merge::apply(original, patch, root_type)
}

/// Lays `applied` over `live` for a simple server-side apply: maps merge recursively, lists
/// with the `merge` strategy merge by key (primitives as a set; live items keep their place,
/// new ones are appended in the applied order), other lists and scalars take the applied value.
/// Nothing is ever deleted: nulls in `applied` are ignored, and `applied` is plain data
/// (no directives). A merged list whose applied elements lack the merge key is replaced.
pub fn merge_for_apply(live: &Value, applied: &Value, root_type: Option<&str>) -> Value {
    apply_merge::merge_for_apply(live, applied, root_type)
}
