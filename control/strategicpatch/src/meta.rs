//! The patch meta of the built-in types: a static graph from OpenAPI definition names to the
//! fields that either carry a `patchStrategy` tag in the Kubernetes Go types or lead to a type
//! that does. Fields absent here have no strategy: maps merge, lists are replaced.
//!
//! Tags checked against k8s.io/api `*/v1/types.go` and k8s.io/apimachinery
//! `pkg/apis/meta/v1/types.go`. Notably untagged (so replaced whole): `args`, `command`,
//! `envFrom`, `resizePolicy`, `tolerations`, `containerStatuses`, `volumeClaimTemplates`,
//! Endpoints `subsets`, EndpointSlice `endpoints`.

use crate::FieldPatchMeta;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

const POD: &str = "io.k8s.api.core.v1.Pod";
const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const POD_STATUS: &str = "io.k8s.api.core.v1.PodStatus";
const POD_TEMPLATE_SPEC: &str = "io.k8s.api.core.v1.PodTemplateSpec";
const POD_TEMPLATE: &str = "io.k8s.api.core.v1.PodTemplate";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const EPHEMERAL_CONTAINER: &str = "io.k8s.api.core.v1.EphemeralContainer";
const VOLUME: &str = "io.k8s.api.core.v1.Volume";
const RC: &str = "io.k8s.api.core.v1.ReplicationController";
const RC_SPEC: &str = "io.k8s.api.core.v1.ReplicationControllerSpec";
const RC_STATUS: &str = "io.k8s.api.core.v1.ReplicationControllerStatus";
const SERVICE: &str = "io.k8s.api.core.v1.Service";
const SERVICE_SPEC: &str = "io.k8s.api.core.v1.ServiceSpec";
const SERVICE_STATUS: &str = "io.k8s.api.core.v1.ServiceStatus";
const NODE: &str = "io.k8s.api.core.v1.Node";
const NODE_SPEC: &str = "io.k8s.api.core.v1.NodeSpec";
const NODE_STATUS: &str = "io.k8s.api.core.v1.NodeStatus";
const NAMESPACE: &str = "io.k8s.api.core.v1.Namespace";
const NAMESPACE_STATUS: &str = "io.k8s.api.core.v1.NamespaceStatus";
const PVC: &str = "io.k8s.api.core.v1.PersistentVolumeClaim";
const PVC_STATUS: &str = "io.k8s.api.core.v1.PersistentVolumeClaimStatus";
const PV: &str = "io.k8s.api.core.v1.PersistentVolume";
const SERVICE_ACCOUNT: &str = "io.k8s.api.core.v1.ServiceAccount";
const ENDPOINTS: &str = "io.k8s.api.core.v1.Endpoints";
const CONFIG_MAP: &str = "io.k8s.api.core.v1.ConfigMap";
const SECRET: &str = "io.k8s.api.core.v1.Secret";
const CORE_EVENT: &str = "io.k8s.api.core.v1.Event";

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const DEPLOYMENT_SPEC: &str = "io.k8s.api.apps.v1.DeploymentSpec";
const DEPLOYMENT_STATUS: &str = "io.k8s.api.apps.v1.DeploymentStatus";
const DEPLOYMENT_STRATEGY: &str = "io.k8s.api.apps.v1.DeploymentStrategy";
const REPLICA_SET: &str = "io.k8s.api.apps.v1.ReplicaSet";
const REPLICA_SET_SPEC: &str = "io.k8s.api.apps.v1.ReplicaSetSpec";
const REPLICA_SET_STATUS: &str = "io.k8s.api.apps.v1.ReplicaSetStatus";
const STATEFUL_SET: &str = "io.k8s.api.apps.v1.StatefulSet";
const STATEFUL_SET_SPEC: &str = "io.k8s.api.apps.v1.StatefulSetSpec";
const STATEFUL_SET_STATUS: &str = "io.k8s.api.apps.v1.StatefulSetStatus";
const DAEMON_SET: &str = "io.k8s.api.apps.v1.DaemonSet";
const DAEMON_SET_SPEC: &str = "io.k8s.api.apps.v1.DaemonSetSpec";
const DAEMON_SET_STATUS: &str = "io.k8s.api.apps.v1.DaemonSetStatus";
const CONTROLLER_REVISION: &str = "io.k8s.api.apps.v1.ControllerRevision";

const JOB: &str = "io.k8s.api.batch.v1.Job";
const JOB_SPEC: &str = "io.k8s.api.batch.v1.JobSpec";
const JOB_STATUS: &str = "io.k8s.api.batch.v1.JobStatus";
const JOB_TEMPLATE_SPEC: &str = "io.k8s.api.batch.v1.JobTemplateSpec";
const CRON_JOB: &str = "io.k8s.api.batch.v1.CronJob";
const CRON_JOB_SPEC: &str = "io.k8s.api.batch.v1.CronJobSpec";

const LEASE: &str = "io.k8s.api.coordination.v1.Lease";
const RUNTIME_CLASS: &str = "io.k8s.api.node.v1.RuntimeClass";
const ENDPOINT_SLICE: &str = "io.k8s.api.discovery.v1.EndpointSlice";
const EVENTS_EVENT: &str = "io.k8s.api.events.v1.Event";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// Kinds served by Skiff: (group, kind, root type).
const ROOTS: &[(&str, &str, &str)] = &[
    ("", "Namespace", NAMESPACE),
    ("", "Pod", POD),
    ("", "Service", SERVICE),
    ("", "Endpoints", ENDPOINTS),
    ("", "ConfigMap", CONFIG_MAP),
    ("", "Secret", SECRET),
    ("", "Node", NODE),
    ("", "Event", CORE_EVENT),
    ("", "ServiceAccount", SERVICE_ACCOUNT),
    ("", "PersistentVolume", PV),
    ("", "PersistentVolumeClaim", PVC),
    ("", "ReplicationController", RC),
    ("", "PodTemplate", POD_TEMPLATE),
    ("apps", "Deployment", DEPLOYMENT),
    ("apps", "ReplicaSet", REPLICA_SET),
    ("apps", "StatefulSet", STATEFUL_SET),
    ("apps", "DaemonSet", DAEMON_SET),
    ("apps", "ControllerRevision", CONTROLLER_REVISION),
    ("batch", "Job", JOB),
    ("batch", "CronJob", CRON_JOB),
    ("coordination.k8s.io", "Lease", LEASE),
    ("node.k8s.io", "RuntimeClass", RUNTIME_CLASS),
    ("discovery.k8s.io", "EndpointSlice", ENDPOINT_SLICE),
    ("events.k8s.io", "Event", EVENTS_EVENT),
    ("autoscaling", "Scale", SCALE),
];

/// A field that only leads to a type with tagged fields below it.
const fn child(ty: &'static str) -> FieldPatchMeta {
    FieldPatchMeta {
        child_type: Some(ty),
        strategy: "",
        merge_key: None,
    }
}

/// A list merged by `key`, whose elements are of type `ty` when known.
const fn merged_by(key: &'static str, ty: Option<&'static str>) -> FieldPatchMeta {
    FieldPatchMeta {
        child_type: ty,
        strategy: "merge",
        merge_key: Some(key),
    }
}

/// A list of primitives merged as a set.
const SET: FieldPatchMeta = FieldPatchMeta {
    child_type: None,
    strategy: "merge",
    merge_key: None,
};

/// (type, field, meta). Types with only `metadata` below them are listed too, so that
/// finalizers and ownerReferences merge on every kind.
const FIELDS: &[(&str, &str, FieldPatchMeta)] = &[
    // meta/v1 ObjectMeta
    (META, "ownerReferences", merged_by("uid", None)),
    (META, "finalizers", SET),
    // core/v1 Pod
    (POD, "metadata", child(META)),
    (POD, "spec", child(POD_SPEC)),
    (POD, "status", child(POD_STATUS)),
    (
        POD_SPEC,
        "volumes",
        FieldPatchMeta {
            child_type: Some(VOLUME),
            strategy: "merge,retainKeys",
            merge_key: Some("name"),
        },
    ),
    (
        POD_SPEC,
        "initContainers",
        merged_by("name", Some(CONTAINER)),
    ),
    (POD_SPEC, "containers", merged_by("name", Some(CONTAINER))),
    (
        POD_SPEC,
        "ephemeralContainers",
        merged_by("name", Some(EPHEMERAL_CONTAINER)),
    ),
    (POD_SPEC, "imagePullSecrets", merged_by("name", None)),
    (POD_SPEC, "hostAliases", merged_by("ip", None)),
    (
        POD_SPEC,
        "topologySpreadConstraints",
        merged_by("topologyKey", None),
    ),
    (POD_SPEC, "schedulingGates", merged_by("name", None)),
    (
        POD_SPEC,
        "resourceClaims",
        FieldPatchMeta {
            child_type: None,
            strategy: "merge,retainKeys",
            merge_key: Some("name"),
        },
    ),
    (CONTAINER, "ports", merged_by("containerPort", None)),
    (CONTAINER, "env", merged_by("name", None)),
    (CONTAINER, "volumeMounts", merged_by("mountPath", None)),
    (CONTAINER, "volumeDevices", merged_by("devicePath", None)),
    (
        EPHEMERAL_CONTAINER,
        "ports",
        merged_by("containerPort", None),
    ),
    (EPHEMERAL_CONTAINER, "env", merged_by("name", None)),
    (
        EPHEMERAL_CONTAINER,
        "volumeMounts",
        merged_by("mountPath", None),
    ),
    (
        EPHEMERAL_CONTAINER,
        "volumeDevices",
        merged_by("devicePath", None),
    ),
    (POD_STATUS, "conditions", merged_by("type", None)),
    (POD_STATUS, "hostIPs", merged_by("ip", None)),
    (POD_STATUS, "podIPs", merged_by("ip", None)),
    (
        POD_STATUS,
        "resourceClaimStatuses",
        FieldPatchMeta {
            child_type: None,
            strategy: "merge,retainKeys",
            merge_key: Some("name"),
        },
    ),
    (POD_TEMPLATE_SPEC, "metadata", child(META)),
    (POD_TEMPLATE_SPEC, "spec", child(POD_SPEC)),
    (POD_TEMPLATE, "metadata", child(META)),
    (POD_TEMPLATE, "template", child(POD_TEMPLATE_SPEC)),
    // core/v1 ReplicationController
    (RC, "metadata", child(META)),
    (RC, "spec", child(RC_SPEC)),
    (RC, "status", child(RC_STATUS)),
    (RC_SPEC, "template", child(POD_TEMPLATE_SPEC)),
    (RC_STATUS, "conditions", merged_by("type", None)),
    // core/v1 Service
    (SERVICE, "metadata", child(META)),
    (SERVICE, "spec", child(SERVICE_SPEC)),
    (SERVICE, "status", child(SERVICE_STATUS)),
    (SERVICE_SPEC, "ports", merged_by("port", None)),
    (SERVICE_STATUS, "conditions", merged_by("type", None)),
    // core/v1 Node
    (NODE, "metadata", child(META)),
    (NODE, "spec", child(NODE_SPEC)),
    (NODE, "status", child(NODE_STATUS)),
    (NODE_SPEC, "podCIDRs", SET),
    (NODE_STATUS, "conditions", merged_by("type", None)),
    (NODE_STATUS, "addresses", merged_by("type", None)),
    // core/v1 Namespace, PersistentVolumeClaim, ServiceAccount and metadata-only kinds
    (NAMESPACE, "metadata", child(META)),
    (NAMESPACE, "status", child(NAMESPACE_STATUS)),
    (NAMESPACE_STATUS, "conditions", merged_by("type", None)),
    (PVC, "metadata", child(META)),
    (PVC, "status", child(PVC_STATUS)),
    (PVC_STATUS, "conditions", merged_by("type", None)),
    (SERVICE_ACCOUNT, "metadata", child(META)),
    (SERVICE_ACCOUNT, "secrets", merged_by("name", None)),
    (PV, "metadata", child(META)),
    (ENDPOINTS, "metadata", child(META)),
    (CONFIG_MAP, "metadata", child(META)),
    (SECRET, "metadata", child(META)),
    (CORE_EVENT, "metadata", child(META)),
    // apps/v1
    (DEPLOYMENT, "metadata", child(META)),
    (DEPLOYMENT, "spec", child(DEPLOYMENT_SPEC)),
    (DEPLOYMENT, "status", child(DEPLOYMENT_STATUS)),
    (DEPLOYMENT_SPEC, "template", child(POD_TEMPLATE_SPEC)),
    (
        DEPLOYMENT_SPEC,
        "strategy",
        FieldPatchMeta {
            child_type: Some(DEPLOYMENT_STRATEGY),
            strategy: "retainKeys",
            merge_key: None,
        },
    ),
    (DEPLOYMENT_STATUS, "conditions", merged_by("type", None)),
    (REPLICA_SET, "metadata", child(META)),
    (REPLICA_SET, "spec", child(REPLICA_SET_SPEC)),
    (REPLICA_SET, "status", child(REPLICA_SET_STATUS)),
    (REPLICA_SET_SPEC, "template", child(POD_TEMPLATE_SPEC)),
    (REPLICA_SET_STATUS, "conditions", merged_by("type", None)),
    (STATEFUL_SET, "metadata", child(META)),
    (STATEFUL_SET, "spec", child(STATEFUL_SET_SPEC)),
    (STATEFUL_SET, "status", child(STATEFUL_SET_STATUS)),
    (STATEFUL_SET_SPEC, "template", child(POD_TEMPLATE_SPEC)),
    (STATEFUL_SET_STATUS, "conditions", merged_by("type", None)),
    (DAEMON_SET, "metadata", child(META)),
    (DAEMON_SET, "spec", child(DAEMON_SET_SPEC)),
    (DAEMON_SET, "status", child(DAEMON_SET_STATUS)),
    (DAEMON_SET_SPEC, "template", child(POD_TEMPLATE_SPEC)),
    (DAEMON_SET_STATUS, "conditions", merged_by("type", None)),
    (CONTROLLER_REVISION, "metadata", child(META)),
    // batch/v1
    (JOB, "metadata", child(META)),
    (JOB, "spec", child(JOB_SPEC)),
    (JOB, "status", child(JOB_STATUS)),
    (JOB_SPEC, "template", child(POD_TEMPLATE_SPEC)),
    (JOB_STATUS, "conditions", merged_by("type", None)),
    (CRON_JOB, "metadata", child(META)),
    (CRON_JOB, "spec", child(CRON_JOB_SPEC)),
    (CRON_JOB_SPEC, "jobTemplate", child(JOB_TEMPLATE_SPEC)),
    (JOB_TEMPLATE_SPEC, "metadata", child(META)),
    (JOB_TEMPLATE_SPEC, "spec", child(JOB_SPEC)),
    // other groups: only metadata carries tags
    (LEASE, "metadata", child(META)),
    (RUNTIME_CLASS, "metadata", child(META)),
    (ENDPOINT_SLICE, "metadata", child(META)),
    (EVENTS_EVENT, "metadata", child(META)),
    (SCALE, "metadata", child(META)),
];

pub(crate) fn root_type(group: &str, kind: &str) -> Option<&'static str> {
    ROOTS
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, ty)| *ty)
}

pub(crate) fn field_patch_meta(type_name: &str, field: &str) -> Option<FieldPatchMeta> {
    FIELDS
        .iter()
        .find(|(ty, f, _)| *ty == type_name && *f == field)
        .map(|(_, _, meta)| *meta)
}

#[cfg(test)]
pub(crate) fn all_fields() -> &'static [(&'static str, &'static str, FieldPatchMeta)] {
    FIELDS
}

#[cfg(test)]
pub(crate) fn all_roots() -> &'static [(&'static str, &'static str, &'static str)] {
    ROOTS
}
