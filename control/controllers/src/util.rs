//! Helpers the controllers share: pod readiness and availability as Kubernetes counts them,
//! selectors, owner references, and int-or-percent values.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use skiff_selectors::LabelSelector as Selector;

/// A pod that counts towards its controller's replicas: not finished, not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// Whether `pod` has been ready for `min_ready` (Kubernetes' "available"); when it is ready
/// but not yet for long enough, how long is left.
pub fn available(pod: &Pod, min_ready: i32) -> (bool, Option<Duration>) {
    let Some(c) = ready_condition(pod).filter(|c| c.status == "True") else {
        return (false, None);
    };
    if min_ready <= 0 {
        return (true, None);
    }
    let Some(since) = &c.last_transition_time else {
        return (true, None);
    };
    let since = since.0.as_millisecond();
    let now = chrono::Utc::now().timestamp_millis();
    let due = since + i64::from(min_ready) * 1000;
    if now >= due {
        (true, None)
    } else {
        (false, Some(Duration::from_millis((due - now) as u64)))
    }
}

/// A `metav1.LabelSelector` as a matcher. A missing selector selects nothing (`None`).
pub fn selector(sel: Option<&LabelSelector>) -> Result<Option<Selector>, String> {
    let Some(sel) = sel else { return Ok(None) };
    let exprs: Vec<(String, String, Vec<String>)> = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            (
                e.key.clone(),
                e.operator.clone(),
                e.values.clone().unwrap_or_default(),
            )
        })
        .collect();
    Selector::from_parts(&sel.match_labels.clone().unwrap_or_default(), &exprs)
        .map(Some)
        .map_err(|e| e.0)
}

/// An object's labels, borrowed (an object without labels has none).
pub fn labels<K: Resource>(obj: &K) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    obj.meta().labels.as_ref().unwrap_or(&NONE)
}

/// The controller reference an owner puts on what it makes.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The API of a namespaced object's kind, in its namespace.
pub fn api_of<K>(client: &kube::Client, obj: &K) -> kube::Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    kube::Api::namespaced(
        client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    )
}

/// A namespaced object the controllers patch.
pub trait Patchable:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Patchable for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// A JSON merge patch of a namespaced object, by its name and namespace.
pub async fn merge_patch<K: Patchable>(
    client: &kube::Client,
    obj: &K,
    patch: &serde_json::Value,
) -> Result<K, kube::Error> {
    merge_patch_at(client, obj, None, patch).await
}

/// A JSON merge patch of a namespaced object's `status` subresource.
pub async fn merge_patch_status<K: Patchable>(
    client: &kube::Client,
    obj: &K,
    patch: &serde_json::Value,
) -> Result<K, kube::Error> {
    merge_patch_at(client, obj, Some("status"), patch).await
}

async fn merge_patch_at<K: Patchable>(
    client: &kube::Client,
    obj: &K,
    subresource: Option<&str>,
    patch: &serde_json::Value,
) -> Result<K, kube::Error> {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let params = kube::api::PatchParams::default();
    let patch = kube::api::Patch::Merge(patch);
    let api = api_of(client, obj);
    match subresource {
        None => api.patch(name, &params, &patch).await,
        Some(sub) => api.patch_subresource(sub, name, &params, &patch).await,
    }
}

/// The sooner of two optional deadlines.
pub fn min_some(
    a: Option<std::time::Duration>,
    b: Option<std::time::Duration>,
) -> Option<std::time::Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The status (`True`, `False`, `Unknown`) of a node's condition `type_`, if it has one.
pub fn node_condition<'a>(
    node: &'a k8s_openapi::api::core::v1::Node,
    type_: &str,
) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// A node's Ready condition status.
pub fn node_ready(node: &k8s_openapi::api::core::v1::Node) -> Option<&str> {
    node_condition(node, "Ready")
}

/// An int-or-percent of `total`, a percentage rounded up or down; an unparsable value is 0
/// (the API server's validation refuses those).
pub fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let n = p * i64::from(total);
            let v = if round_up {
                (n + 99).div_euclid(100)
            } else {
                n.div_euclid(100)
            };
            v as i32
        }
    }
}

/// Runs `make(0..n)` as kube's slow start runs creations: 1, 2, 4, ... at a time,
/// stopping after the first batch with a failure (a quota or a webhook that refuses one of
/// a thousand refuses them all). Returns the results of those tried, in order.
pub async fn slow_start<T, F, Fut>(n: usize, mut make: F) -> (usize, Vec<Result<T, kube::Error>>)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut results = Vec::with_capacity(n);
    let mut batch = 1;
    while results.len() < n {
        let start = results.len();
        let size = batch.min(n - start);
        let out = futures::future::join_all((start..start + size).map(&mut make)).await;
        let failed = out.iter().any(Result::is_err);
        results.extend(out);
        if failed {
            break;
        }
        batch *= 2;
    }
    (results.len(), results)
}

/// A count in a status as JSON; a missing one is zero.
pub fn num(status: &serde_json::Value, field: &str) -> i64 {
    status
        .get(field)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
}

/// A count for a status field Go leaves out when zero (`omitempty`): `null` in a merge
/// patch, so a count that fell to zero is removed rather than kept.
pub fn count(n: i32) -> serde_json::Value {
    if n == 0 {
        serde_json::Value::Null
    } else {
        serde_json::json!(n)
    }
}

pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(chrono::Utc::now().timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_kubernetes_rounds_them() {
        let p = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&p), 10, true), 3);
        assert_eq!(scaled(Some(&p), 10, false), 2);
        assert_eq!(scaled(Some(&p), 4, true), 1);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10, true), 2);
        assert_eq!(scaled(None, 10, true), 0);
    }
}
