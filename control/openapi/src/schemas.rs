//! Component schemas. They come from the schemars impls of the `k8s-openapi` types, whose
//! schema names already are upstream's dotted definition names
//! (`io.k8s.api.core.v1.Pod`), so refs and `kubectl explain` read like a real cluster's. On top
//! of them go the extensions kubectl reads: `x-kubernetes-group-version-kind` on the root types
//! (explain and client-side apply find a kind's schema by it) and the patch meta
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) that client-side apply's
//! three-way strategic merge patch follows.

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, node, policy, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// Where `$ref`s point: OpenAPI 3 components.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

/// Defines the table of kinds Skiff has a schema for, as a list and as a lookup that adds the
/// kind's schema (and everything it references) to a generator.
macro_rules! kinds {
    ($(($group:literal, $version:literal, $kind:literal) => $ty:ty,)*) => {
        /// Every (group, version, kind) with a schema.
        pub(crate) const KNOWN_KINDS: &[(&str, &str, &str)] = &[$(($group, $version, $kind)),*];

        /// Adds the schema of a kind to `generator`, returning the `$ref` to it.
        fn kind_ref(
            generator: &mut SchemaGenerator,
            group: &str,
            version: &str,
            kind: &str,
        ) -> Option<schemars::Schema> {
            match (group, version, kind) {
                $(($group, $version, $kind) => Some(generator.subschema_for::<$ty>()),)*
                _ => None,
            }
        }
    };
}

kinds! {
    ("", "v1", "Namespace") => core::v1::Namespace,
    ("", "v1", "Pod") => core::v1::Pod,
    ("", "v1", "Service") => core::v1::Service,
    ("", "v1", "Endpoints") => core::v1::Endpoints,
    ("", "v1", "ConfigMap") => core::v1::ConfigMap,
    ("", "v1", "Secret") => core::v1::Secret,
    ("", "v1", "Node") => core::v1::Node,
    ("", "v1", "Event") => core::v1::Event,
    ("", "v1", "ServiceAccount") => core::v1::ServiceAccount,
    ("", "v1", "PersistentVolume") => core::v1::PersistentVolume,
    ("", "v1", "PersistentVolumeClaim") => core::v1::PersistentVolumeClaim,
    ("", "v1", "Binding") => core::v1::Binding,
    ("", "v1", "ReplicationController") => core::v1::ReplicationController,
    ("", "v1", "PodTemplate") => core::v1::PodTemplate,
    ("apps", "v1", "Deployment") => apps::v1::Deployment,
    ("apps", "v1", "ReplicaSet") => apps::v1::ReplicaSet,
    ("apps", "v1", "StatefulSet") => apps::v1::StatefulSet,
    ("apps", "v1", "DaemonSet") => apps::v1::DaemonSet,
    ("apps", "v1", "ControllerRevision") => apps::v1::ControllerRevision,
    ("batch", "v1", "Job") => batch::v1::Job,
    ("batch", "v1", "CronJob") => batch::v1::CronJob,
    ("coordination.k8s.io", "v1", "Lease") => coordination::v1::Lease,
    ("policy", "v1", "PodDisruptionBudget") => policy::v1::PodDisruptionBudget,
    ("policy", "v1", "Eviction") => policy::v1::Eviction,
    ("storage.k8s.io", "v1", "StorageClass") => storage::v1::StorageClass,
    ("node.k8s.io", "v1", "RuntimeClass") => node::v1::RuntimeClass,
    ("discovery.k8s.io", "v1", "EndpointSlice") => discovery::v1::EndpointSlice,
    ("events.k8s.io", "v1", "Event") => events::v1::Event,
    ("autoscaling", "v1", "Scale") => autoscaling::v1::Scale,
}

/// The `x-kubernetes-group-version-kind` value of one kind.
pub(crate) fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

/// A `$ref` to a component schema.
pub(crate) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

/// The schemas one document needs, gathered while its paths are built so that it holds exactly
/// what its paths reach (as upstream's per group-version documents do).
pub(crate) struct SchemaSet {
    generator: SchemaGenerator,
    /// Hand-made schemas (the `<Kind>List` types, which have no schemars impl).
    extra: Vec<(String, Value)>,
    /// (definition name, group-version-kind) pairs to tag.
    gvks: Vec<(String, Value)>,
}

impl SchemaSet {
    pub(crate) fn new() -> Self {
        // OpenAPI 3 settings: refs under `#/components/schemas/`, and a `$ref` with siblings
        // (a field's own description) wrapped as `allOf: [{$ref}]`, the form both kubectl explain
        // and the strategic merge patch meta lookup resolve.
        let settings = SchemaSettings::openapi3().with(|s| s.meta_schema = None);
        SchemaSet {
            generator: settings.into_generator(),
            extra: Vec::new(),
            gvks: Vec::new(),
        }
    }

    /// Adds a kind's schema and tags it with its group-version-kind. `None` when Skiff has no
    /// schema for the kind.
    pub(crate) fn kind(&mut self, group: &str, version: &str, kind: &str) -> Option<String> {
        let reference = kind_ref(&mut self.generator, group, version, kind)?;
        let name = ref_name(reference.as_value())?;
        self.tag(&name, gvk(group, version, kind));
        Some(name)
    }

    /// Adds `<Kind>List`, built like upstream's list types: `items` of the kind and `ListMeta`.
    pub(crate) fn list(&mut self, group: &str, version: &str, kind: &str) -> Option<String> {
        let item = self.kind(group, version, kind)?;
        let name = format!("{item}List");
        if !self.extra.iter().any(|(n, _)| *n == name) {
            let list_meta = self.meta::<meta::ListMeta>();
            let schema = json!({
                "description": format!("{kind}List is a list of {kind} objects."),
                "type": "object",
                "properties": {
                    "apiVersion": {
                        "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                        "type": "string",
                    },
                    "items": {
                        "description": format!("List of {kind} objects."),
                        "type": "array",
                        "items": schema_ref(&item),
                    },
                    "kind": {
                        "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                        "type": "string",
                    },
                    "metadata": {
                        "allOf": [schema_ref(&list_meta)],
                        "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
                    },
                },
                "required": ["items"],
            });
            self.extra.push((name.clone(), schema));
        }
        self.tag(&name, gvk(group, version, &format!("{kind}List")));
        Some(name)
    }

    /// Adds a meta/v1 type (`Status`, `DeleteOptions`, `Patch`, ...).
    pub(crate) fn meta<T: schemars::JsonSchema>(&mut self) -> String {
        let reference = self.generator.subschema_for::<T>();
        ref_name(reference.as_value()).unwrap_or_else(|| T::schema_name().into_owned())
    }

    /// Adds a meta/v1 type that is tagged with a group-version-kind (upstream tags `Status`,
    /// `DeleteOptions` and `WatchEvent` with every group-version that serves them).
    pub(crate) fn tagged_meta<T: schemars::JsonSchema>(&mut self, gvks: &[Value]) -> String {
        let name = self.meta::<T>();
        for g in gvks {
            self.tag(&name, g.clone());
        }
        name
    }

    fn tag(&mut self, name: &str, gvk: Value) {
        if !self.gvks.iter().any(|(n, g)| n == name && *g == gvk) {
            self.gvks.push((name.to_owned(), gvk));
        }
    }

    /// The finished `components.schemas`, sorted by name.
    pub(crate) fn finish(mut self) -> Map<String, Value> {
        let mut all: std::collections::BTreeMap<String, Value> =
            self.generator.take_definitions(true).into_iter().collect();
        all.extend(self.extra);
        for (name, gvk) in self.gvks {
            if let Some(Value::Object(schema)) = all.get_mut(&name) {
                let tags = schema
                    .entry("x-kubernetes-group-version-kind")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(tags) = tags {
                    tags.push(gvk);
                }
            }
        }
        for (name, schema) in all.iter_mut() {
            add_patch_meta(name, schema);
        }
        all.into_iter().collect()
    }
}

/// The definition name a `{"$ref": "#/components/schemas/<name>"}` points at.
pub(crate) fn ref_name(reference: &Value) -> Option<String> {
    reference
        .get("$ref")?
        .as_str()?
        .strip_prefix(REF_PREFIX)
        .map(str::to_owned)
}

/// Puts the patch strategy and merge key of each property of `schema` (the type named
/// `type_name`) on the property itself, where kubectl's `PatchMetaFromOpenAPIV3` reads them
/// before following the property's ref.
fn add_patch_meta(type_name: &str, schema: &mut Value) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        let Some((strategy, merge_key)) = crate::patch_meta::lookup(type_name, field) else {
            continue;
        };
        let Value::Object(property) = property else {
            continue;
        };
        if let Some(strategy) = strategy {
            property.insert("x-kubernetes-patch-strategy".into(), strategy.into());
        }
        if let Some(key) = merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
    }
}

/// Every component schema Skiff knows: each known kind, its list, and the meta/v1 types the
/// documents use. Handy for tools that want one flat dictionary.
pub fn all_component_schemas() -> Map<String, Value> {
    let mut set = SchemaSet::new();
    for (group, version, kind) in KNOWN_KINDS {
        set.list(group, version, kind);
    }
    set.meta::<meta::Status>();
    set.meta::<meta::DeleteOptions>();
    set.meta::<meta::Patch>();
    set.meta::<meta::WatchEvent<()>>();
    set.finish()
}
