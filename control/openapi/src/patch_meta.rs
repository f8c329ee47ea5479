//! The one place the documents read patch meta from. The table is skiff-strategicpatch's, the
//! same one the server applies strategic merge patches with: kubectl computes its three-way
//! patch from what the documents say, and a list the client thinks atomic but the server merges
//! by key would keep elements the user removed.

/// `(x-kubernetes-patch-strategy, x-kubernetes-patch-merge-key)` of `field` in the type named
/// `type_name` (an upstream definition name such as `io.k8s.api.core.v1.PodSpec`), or `None`
/// when the field has neither.
pub(crate) fn lookup(
    type_name: &str,
    field: &str,
) -> Option<(Option<&'static str>, Option<&'static str>)> {
    let meta = skiff_strategicpatch::field_patch_meta(type_name, field)?;
    let strategy = (!meta.strategy.is_empty()).then_some(meta.strategy);
    if strategy.is_none() && meta.merge_key.is_none() {
        return None;
    }
    Some((strategy, meta.merge_key))
}
