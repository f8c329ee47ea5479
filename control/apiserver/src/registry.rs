//! The resources the API server serves: one static table, from which discovery, OpenAPI,
//! routing, storage keys and typed decoding are all derived.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::strategy::{self, Strategy};

/// Decodes a JSON object as its `k8s-openapi` type and encodes it back. What comes back is
/// the object as Skiff stores it: only known fields, in canonical form.
pub type Canonicalize = fn(&Value) -> Result<Value, serde_json::Error>;

fn canonical<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, serde_json::Error> {
    let typed: T = T::deserialize(value)?;
    serde_json::to_value(typed)
}

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// `v1`, `apps/v1`: fixed when the table is built, so no write formats it.
    pub api_version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources besides the object itself: `status`, `scale`, `binding`, ...
    pub subresources: &'static [&'static str],
    /// Where the objects live in the store: `/registry/<storage>/`. Two resources may share
    /// it (core/v1 and events.k8s.io/v1 events).
    pub storage: &'static str,
    pub canonicalize: Canonicalize,
    /// Whether `metadata.generation` follows spec changes (kinds with a spec).
    pub has_spec: bool,
    /// What the generic handlers do differently for this resource.
    pub(crate) strategy: &'static dyn Strategy,
}

impl Resource {
    pub fn api_version(&self) -> &'static str {
        self.api_version
    }

    /// `pods`, `deployments.apps`: how Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod`, `Deployment.apps`: how Kubernetes names a kind in "is invalid" messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// The store prefix of every object of this resource (in one namespace when given).
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.storage, ns),
            _ => format!("/registry/{}/", self.storage),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{}", self.prefix(namespace), name)
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.is_namespaces() {
            // kube-apiserver serves no delete-collection of namespaces.
            return &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ];
        }
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    pub fn is_namespaces(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }
}

/// The `apiVersion` of a group and version: the version alone for the core group.
macro_rules! api_version {
    ("", $version:tt) => {
        $version
    };
    ($group:tt, $version:tt) => {
        concat!($group, "/", $version)
    };
}

macro_rules! resource {
    // `tt`, not `literal`: a literal passed on to `api_version!` could no longer match `""`.
    ($group:tt, $version:tt, $ty:ty, $kind:expr, $plural:expr, $singular:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], namespaced: $ns:expr,
     sub: [$($sub:expr),*], storage: $storage:expr, spec: $spec:expr) => {
        resource!($group, $version, $ty, $kind, $plural, $singular, short: [$($short),*],
            cat: [$($cat),*], namespaced: $ns, sub: [$($sub),*], storage: $storage,
            spec: $spec, strategy: &strategy::Plain)
    };
    ($group:tt, $version:tt, $ty:ty, $kind:expr, $plural:expr, $singular:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], namespaced: $ns:expr,
     sub: [$($sub:expr),*], storage: $storage:expr, spec: $spec:expr,
     strategy: $strategy:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            api_version: api_version!($group, $version),
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            namespaced: $ns,
            subresources: &[$($sub),*],
            storage: $storage,
            canonicalize: canonical::<$ty>,
            has_spec: $spec,
            strategy: $strategy,
        }
    };
}

use k8s_openapi::api::{apps, batch, coordination, core, discovery, events, node, policy, storage};

/// Every resource Skiff serves.
pub static RESOURCES: &[Resource] = &[
    resource!("", "v1", core::v1::Namespace, "Namespace", "namespaces", "namespace",
        short: ["ns"], cat: [], namespaced: false, sub: ["status", "finalize"],
        storage: "core/namespaces", spec: true, strategy: &strategy::Namespaces),
    resource!("", "v1", core::v1::Pod, "Pod", "pods", "pod",
        short: ["po"], cat: ["all"], namespaced: true, sub: ["status", "binding", "eviction", "log", "exec", "attach", "portforward",
        "ephemeralcontainers"],
        storage: "core/pods", spec: true, strategy: &strategy::Pods),
    resource!("", "v1", core::v1::Service, "Service", "services", "service",
        short: ["svc"], cat: ["all"], namespaced: true, sub: ["status"],
        storage: "core/services", spec: true, strategy: &strategy::Services),
    resource!("", "v1", core::v1::Endpoints, "Endpoints", "endpoints", "endpoints",
        short: ["ep"], cat: [], namespaced: true, sub: [],
        storage: "core/endpoints", spec: false),
    resource!("", "v1", core::v1::ConfigMap, "ConfigMap", "configmaps", "configmap",
        short: ["cm"], cat: [], namespaced: true, sub: [],
        storage: "core/configmaps", spec: false),
    resource!("", "v1", core::v1::Secret, "Secret", "secrets", "secret",
        short: [], cat: [], namespaced: true, sub: [],
        storage: "core/secrets", spec: false, strategy: &strategy::SECRETS),
    resource!("", "v1", core::v1::Node, "Node", "nodes", "node",
        short: ["no"], cat: [], namespaced: false, sub: ["status"],
        storage: "core/nodes", spec: true, strategy: &strategy::Nodes),
    resource!("", "v1", core::v1::Event, "Event", "events", "event",
        short: ["ev"], cat: [], namespaced: true, sub: [],
        storage: "core/events", spec: false, strategy: &strategy::CORE_EVENTS),
    resource!("", "v1", core::v1::ServiceAccount, "ServiceAccount", "serviceaccounts",
        "serviceaccount", short: ["sa"], cat: [], namespaced: true, sub: [],
        storage: "core/serviceaccounts", spec: false),
    resource!("", "v1", core::v1::PersistentVolume, "PersistentVolume", "persistentvolumes",
        "persistentvolume", short: ["pv"], cat: [], namespaced: false, sub: ["status"],
        storage: "core/persistentvolumes", spec: true, strategy: &strategy::PersistentVolumes),
    resource!("", "v1", core::v1::PersistentVolumeClaim, "PersistentVolumeClaim",
        "persistentvolumeclaims", "persistentvolumeclaim", short: ["pvc"], cat: [],
        namespaced: true, sub: ["status"], storage: "core/persistentvolumeclaims", spec: true, strategy: &strategy::PersistentVolumeClaims),
    resource!("", "v1", core::v1::ReplicationController, "ReplicationController",
        "replicationcontrollers", "replicationcontroller", short: ["rc"], cat: ["all"],
        namespaced: true, sub: ["status", "scale"], storage: "core/replicationcontrollers",
        spec: true, strategy: &strategy::ReplicaSets { label_map_selector: true }),
    resource!("apps", "v1", apps::v1::Deployment, "Deployment", "deployments", "deployment",
        short: ["deploy"], cat: ["all"], namespaced: true, sub: ["status", "scale"],
        storage: "apps/deployments", spec: true),
    resource!("apps", "v1", apps::v1::ReplicaSet, "ReplicaSet", "replicasets", "replicaset",
        short: ["rs"], cat: ["all"], namespaced: true, sub: ["status", "scale"],
        storage: "apps/replicasets", spec: true, strategy: &strategy::ReplicaSets { label_map_selector: false }),
    resource!("apps", "v1", apps::v1::StatefulSet, "StatefulSet", "statefulsets",
        "statefulset", short: ["sts"], cat: ["all"], namespaced: true,
        sub: ["status", "scale"], storage: "apps/statefulsets", spec: true),
    resource!("apps", "v1", apps::v1::DaemonSet, "DaemonSet", "daemonsets", "daemonset",
        short: ["ds"], cat: ["all"], namespaced: true, sub: ["status"],
        storage: "apps/daemonsets", spec: true),
    resource!("apps", "v1", apps::v1::ControllerRevision, "ControllerRevision",
        "controllerrevisions", "controllerrevision", short: [], cat: [], namespaced: true,
        sub: [], storage: "apps/controllerrevisions", spec: false),
    resource!("batch", "v1", batch::v1::Job, "Job", "jobs", "job",
        short: [], cat: ["all"], namespaced: true, sub: ["status"],
        storage: "batch/jobs", spec: true, strategy: &strategy::JOBS),
    resource!("batch", "v1", batch::v1::CronJob, "CronJob", "cronjobs", "cronjob",
        short: ["cj"], cat: ["all"], namespaced: true, sub: ["status"],
        storage: "batch/cronjobs", spec: true),
    resource!("policy", "v1", policy::v1::PodDisruptionBudget, "PodDisruptionBudget",
        "poddisruptionbudgets", "poddisruptionbudget", short: ["pdb"], cat: [], namespaced: true,
        sub: ["status"], storage: "policy/poddisruptionbudgets", spec: true),
    resource!("storage.k8s.io", "v1", storage::v1::StorageClass, "StorageClass",
        "storageclasses", "storageclass", short: ["sc"], cat: [], namespaced: false, sub: [],
        storage: "storage.k8s.io/storageclasses", spec: false),
    resource!("coordination.k8s.io", "v1", coordination::v1::Lease, "Lease", "leases", "lease",
        short: [], cat: [], namespaced: true, sub: [],
        storage: "coordination.k8s.io/leases", spec: true),
    resource!("node.k8s.io", "v1", node::v1::RuntimeClass, "RuntimeClass", "runtimeclasses",
        "runtimeclass", short: [], cat: [], namespaced: false, sub: [],
        storage: "node.k8s.io/runtimeclasses", spec: false),
    resource!("discovery.k8s.io", "v1", discovery::v1::EndpointSlice, "EndpointSlice",
        "endpointslices", "endpointslice", short: [], cat: [], namespaced: true, sub: [],
        storage: "discovery.k8s.io/endpointslices", spec: false),
    resource!("events.k8s.io", "v1", events::v1::Event, "Event", "events", "event",
        short: ["ev"], cat: [], namespaced: true, sub: [],
        storage: "core/events", spec: false, strategy: &strategy::EVENTS),
];

/// The groups in the order discovery lists them (core first).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn group_served(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}

/// The resource whose store prefix holds `key`: the first one by table order, so a key of
/// `core/events` maps to core/v1 events.
pub fn for_key(key: &str) -> Option<&'static Resource> {
    let rest = key.strip_prefix("/registry/")?;
    RESOURCES.iter().find(|r| {
        rest.strip_prefix(r.storage)
            .is_some_and(|tail| tail.starts_with('/'))
    })
}

/// The OpenAPI description of everything served.
pub fn openapi_resources() -> Vec<skiff_openapi::Resource> {
    RESOURCES
        .iter()
        .map(|r| skiff_openapi::Resource {
            group: r.group,
            version: r.version,
            kind: r.kind,
            plural: r.plural,
            namespaced: r.namespaced,
            subresources: r.subresources,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_the_group_and_version() {
        for r in RESOURCES {
            let expected = if r.group.is_empty() {
                r.version.to_string()
            } else {
                format!("{}/{}", r.group, r.version)
            };
            assert_eq!(r.api_version(), expected, "{}", r.plural);
        }
    }

    #[test]
    fn keys_map_back_to_their_resource() {
        for r in RESOURCES {
            let key = r.key(Some("default"), "x");
            let back = for_key(&key).expect("key maps back");
            assert_eq!(back.storage, r.storage, "{}", r.plural);
        }
        // "core/pods" must not claim keys of a resource whose storage merely starts alike.
        assert!(for_key("/registry/core/podsx/default/a").is_none());
    }

    #[test]
    fn canonical_form_drops_unknown_fields() {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "bogus": 1}
        });
        let r = find("", "v1", "pods").unwrap();
        let out = (r.canonicalize)(&pod).unwrap();
        assert!(out["spec"].get("bogus").is_none());
        assert_eq!(out["spec"]["containers"][0]["image"], "i");
    }
}
