//! What differs between resources in the generic handlers, one strategy per resource, as
//! kube-apiserver gives each resource's REST storage its own create, update and delete
//! strategy: the status a new object starts with, what the server fills in or reserves on
//! create, which fields a field selector may use, how a delete is graced. The registry
//! names each resource's strategy; the handlers call the hooks and know no kind by name.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use skiff_apimachinery::quantity::Quantity;
use skiff_store::ListOptions;

use crate::AppState;
use crate::object;
use crate::registry::Resource;
use crate::status::ApiResult;

pub trait Strategy: Sync + Send + std::fmt::Debug {
    /// Fields a field selector may use besides `metadata.name` and `metadata.namespace`
    /// (kube's `GetAttrs` and field label conversions).
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// The status a new object gets, from the zero status of its kind as Go writes it;
    /// `None` keeps what the client sent (nodes and namespaces report theirs at once).
    fn initial_status(&self, zero: Value) -> Option<Value> {
        Some(zero)
    }

    /// Admission that reads the cluster, before defaults and validation (a claim's
    /// default StorageClass).
    fn admit_create<'a>(
        &'a self,
        _state: &'a AppState,
        _obj: &'a mut Value,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// What the server sets on create after defaults, before validation (a pod's QoS
    /// class).
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Reserves what the object needs right before it is written (a node's pod CIDR, a
    /// Service's cluster IP); true when it took something, which `release` gives back if
    /// the create fails. A dry run checks and fills in without taking anything.
    fn reserve<'a>(
        &'a self,
        _state: &'a AppState,
        _obj: &'a mut Value,
        _dry_run: bool,
    ) -> BoxFuture<'a, ApiResult<bool>> {
        Box::pin(async { Ok(false) })
    }

    /// What the server sets on update before defaults and validation (a Service keeps
    /// the values it holds when the client leaves them out).
    fn prepare_for_update(&self, _old: &Value, _new: &mut Value) {}

    /// `reserve` for an update: what `new` needs that `old` does not hold. What it took
    /// goes back by `release_update(old, new)` if the write fails.
    fn reserve_update<'a>(
        &'a self,
        _state: &'a AppState,
        _old: &'a Value,
        _new: &'a mut Value,
        _dry_run: bool,
    ) -> BoxFuture<'a, ApiResult<bool>> {
        Box::pin(async { Ok(false) })
    }

    /// Gives back what `gone` holds and `kept` does not: after a successful update
    /// (`kept` = new, `gone` = old), or a failed one (the reverse).
    fn release_update<'a>(
        &'a self,
        _state: &'a AppState,
        _kept: &'a Value,
        _gone: &'a Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Gives back what `reserve` took, once the object is gone from the store (however it
    /// went) or its create failed; what it did not take stays.
    fn release<'a>(&'a self, _state: &'a AppState, _obj: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Seconds of grace a delete gives (`requested` by the client); 0 removes at once.
    fn deletion_grace(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Whether an object with a deletionTimestamp still waits for someone else to end its
    /// grace period (a pod on a node: its agent deletes it for good).
    fn graceful_pending(&self, _obj: &Value) -> bool {
        false
    }

    /// The label selector of the object's `/scale` (`spec.selector`).
    fn scale_selector(&self, obj: &Value) -> Option<Value> {
        obj.pointer("/spec/selector").cloned()
    }
}

/// Kinds with nothing of their own.
#[derive(Debug)]
pub struct Plain;
impl Strategy for Plain {}

#[derive(Debug)]
pub struct Pods;

impl Strategy for Pods {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }

    fn initial_status(&self, zero: Value) -> Option<Value> {
        Some(pending(zero))
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"]["qosClass"] = json!(qos_class(obj));
    }

    /// Pods bound to a node and not finished get their termination grace period.
    fn deletion_grace(&self, obj: &Value, requested: Option<i64>) -> i64 {
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        requested
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    fn graceful_pending(&self, obj: &Value) -> bool {
        obj.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0
    }
}

/// `status.phase: Pending` on the zero status.
fn pending(mut zero: Value) -> Value {
    zero["phase"] = json!("Pending");
    zero
}

/// A pod's QoS class, as the API server records it on create: requests and limits are
/// compared as quantities (`1` and `1000m` of cpu are equal).
pub(crate) fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let amount = |v: Option<&Value>| v.and_then(Value::as_str).map(Quantity::parse);
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        for res in ["cpu", "memory"] {
            let l = amount(limits.and_then(|m| m.get(res)));
            // A request not given is the limit (the defaults do the same).
            let r = amount(requests.and_then(|m| m.get(res))).or(l);
            if r.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[derive(Debug)]
pub struct Nodes;

impl Strategy for Nodes {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }

    fn initial_status(&self, _zero: Value) -> Option<Value> {
        None
    }

    /// A pod CIDR from the cluster's range, unless the node names its own.
    fn reserve<'a>(
        &'a self,
        state: &'a AppState,
        obj: &'a mut Value,
        dry_run: bool,
    ) -> BoxFuture<'a, ApiResult<bool>> {
        Box::pin(async move {
            if dry_run {
                return Ok(false);
            }
            let named = obj
                .pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty());
            if named {
                return Ok(false);
            }
            let name = object::name(obj).to_string();
            let cidr = crate::ipam::allocate(
                &*state.store,
                state.cluster_cidr,
                state.node_cidr_mask,
                &name,
            )
            .await?;
            obj["spec"]["podCIDR"] = json!(cidr);
            obj["spec"]["podCIDRs"] = json!([cidr]);
            Ok(true)
        })
    }

    /// A node's pod CIDR goes back to the pool with it.
    fn release<'a>(&'a self, state: &'a AppState, obj: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(cidr) = obj.pointer("/spec/podCIDR").and_then(Value::as_str) {
                crate::ipam::release(&*state.store, cidr, object::name(obj)).await;
            }
        })
    }
}

/// Services hold cluster IPs and node ports (`serviceips`).
#[derive(Debug)]
pub struct Services;

fn services() -> &'static Resource {
    crate::registry::find("", "v1", "services").expect("services are served")
}

/// `serviceips::assign` for a create (`old` None) or an update; whether it took anything.
async fn assign_service_values(
    state: &AppState,
    old: Option<&Value>,
    new: &mut Value,
    dry_run: bool,
) -> ApiResult<bool> {
    let (store, ranges) = (&*state.store, &state.service_ranges);
    let taken = crate::serviceips::assign(store, ranges, services(), old, new, dry_run).await?;
    Ok(!taken.is_empty())
}

impl Strategy for Services {
    fn prepare_for_create(&self, obj: &mut Value) {
        crate::serviceips::normalize(obj);
    }

    fn reserve<'a>(
        &'a self,
        state: &'a AppState,
        obj: &'a mut Value,
        dry_run: bool,
    ) -> BoxFuture<'a, ApiResult<bool>> {
        Box::pin(assign_service_values(state, None, obj, dry_run))
    }

    fn release<'a>(&'a self, state: &'a AppState, obj: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(crate::serviceips::release_all(&*state.store, obj))
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        crate::serviceips::prepare_for_update(old, new);
        crate::serviceips::normalize(new);
    }

    fn reserve_update<'a>(
        &'a self,
        state: &'a AppState,
        old: &'a Value,
        new: &'a mut Value,
        dry_run: bool,
    ) -> BoxFuture<'a, ApiResult<bool>> {
        Box::pin(assign_service_values(state, Some(old), new, dry_run))
    }

    fn release_update<'a>(
        &'a self,
        state: &'a AppState,
        kept: &'a Value,
        gone: &'a Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(crate::serviceips::release_dropped(
            &*state.store,
            gone,
            kept,
        ))
    }
}

#[derive(Debug)]
pub struct Namespaces;

impl Strategy for Namespaces {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.phase"]
    }

    fn initial_status(&self, _zero: Value) -> Option<Value> {
        None
    }
}

#[derive(Debug)]
pub struct PersistentVolumes;

impl Strategy for PersistentVolumes {
    fn initial_status(&self, zero: Value) -> Option<Value> {
        Some(pending(zero))
    }
}

#[derive(Debug)]
pub struct PersistentVolumeClaims;

impl Strategy for PersistentVolumeClaims {
    fn initial_status(&self, zero: Value) -> Option<Value> {
        Some(pending(zero))
    }

    /// kube-apiserver's DefaultStorageClass admission: a claim that names no class (the
    /// field absent, not empty) gets the default one, the newest if several say so.
    fn admit_create<'a>(
        &'a self,
        state: &'a AppState,
        claim: &'a mut Value,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if claim
                .pointer("/spec/storageClassName")
                .is_some_and(|v| !v.is_null())
            {
                return Ok(());
            }
            let classes = crate::registry::find("storage.k8s.io", "v1", "storageclasses")
                .expect("storage classes served");
            let page = state
                .store
                .list(&classes.prefix(None), ListOptions::default())
                .await?;
            let mut defaults: Vec<Value> = Vec::new();
            for kv in &page.items {
                let class = object::decode(classes, kv)?;
                let annotations = class.pointer("/metadata/annotations");
                if skiff_apimachinery::is_default_storage_class(|k| {
                    annotations.and_then(|a| a.get(k)).and_then(Value::as_str)
                }) {
                    defaults.push(class);
                }
            }
            defaults.sort_by(|a, b| {
                let t = |v: &Value| {
                    object::meta_str(v, "creationTimestamp")
                        .unwrap_or("")
                        .to_string()
                };
                t(b).cmp(&t(a))
                    .then_with(|| object::name(a).cmp(object::name(b)))
            });
            if let Some(class) = defaults.first()
                && let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("storageClassName".into(), json!(object::name(class)));
            }
            Ok(())
        })
    }
}

/// Kinds whose only difference is the fields a field selector may use (Events, Secrets,
/// Jobs).
#[derive(Debug)]
pub struct Fields(pub &'static [&'static str]);

impl Strategy for Fields {
    fn selectable_fields(&self) -> &'static [&'static str] {
        self.0
    }
}

/// core/v1 Events.
pub const CORE_EVENTS: Fields = Fields(&[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
]);

/// events.k8s.io/v1 Events.
pub const EVENTS: Fields = Fields(&[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "reason",
    "type",
    "reportingController",
]);

pub const SECRETS: Fields = Fields(&["type"]);

pub const JOBS: Fields = Fields(&["status.successful"]);

/// ReplicaSets and ReplicationControllers.
#[derive(Debug)]
pub struct ReplicaSets {
    /// A ReplicationController's selector is a plain label map (`SelectorFromSet`).
    pub label_map_selector: bool,
}

impl Strategy for ReplicaSets {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }

    fn scale_selector(&self, obj: &Value) -> Option<Value> {
        let selector = obj.pointer("/spec/selector").cloned();
        if self.label_map_selector {
            selector.map(|labels| json!({"matchLabels": labels}))
        } else {
            selector
        }
    }
}

/// Whether a field selector may use `field` for `resource`, as kube-apiserver allows.
pub fn field_supported(resource: &Resource, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || resource.strategy.selectable_fields().contains(&field)
}

/// Resets a new object's status to what its kind starts with (the zero status as Go
/// writes it: a DaemonSet's four counts, a Service's `loadBalancer: {}`).
pub fn reset_status_on_create(resource: &Resource, obj: &mut Value) {
    if !resource.has_subresource("status") {
        return;
    }
    let zero = skiff_protobuf::go_zero_field(resource.api_version(), resource.kind, "status")
        .unwrap_or_else(|| json!({}));
    if let Some(status) = resource.strategy.initial_status(zero) {
        obj.as_object_mut()
            .expect("object")
            .insert("status".into(), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let same = json!({"spec": {"containers": [{"resources": {
            "requests": {"cpu": "1000m", "memory": "1024Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&same), "Guaranteed", "equal as quantities");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
