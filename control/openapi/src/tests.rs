use serde_json::{Value, json};

use super::*;

/// The resources Skiff serves (mirrors the API server's registry).
fn served() -> Vec<Resource> {
    let r = |group, kind, plural, namespaced, subresources| Resource {
        group,
        version: "v1",
        kind,
        plural,
        namespaced,
        subresources,
    };
    vec![
        r(
            "",
            "Namespace",
            "namespaces",
            false,
            &["status", "finalize"],
        ),
        r("", "Pod", "pods", true, &["status", "binding", "log"]),
        r("", "Service", "services", true, &["status"]),
        r("", "Endpoints", "endpoints", true, &[]),
        r("", "ConfigMap", "configmaps", true, &[]),
        r("", "Secret", "secrets", true, &[]),
        r("", "Node", "nodes", false, &["status"]),
        r("", "Event", "events", true, &[]),
        r("", "ServiceAccount", "serviceaccounts", true, &[]),
        r(
            "",
            "PersistentVolume",
            "persistentvolumes",
            false,
            &["status"],
        ),
        r(
            "",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
            &["status"],
        ),
        r(
            "apps",
            "Deployment",
            "deployments",
            true,
            &["status", "scale"],
        ),
        r(
            "apps",
            "ReplicaSet",
            "replicasets",
            true,
            &["status", "scale"],
        ),
        r(
            "apps",
            "StatefulSet",
            "statefulsets",
            true,
            &["status", "scale"],
        ),
        r("apps", "DaemonSet", "daemonsets", true, &["status"]),
        r(
            "apps",
            "ControllerRevision",
            "controllerrevisions",
            true,
            &[],
        ),
        r("batch", "Job", "jobs", true, &["status"]),
        r("batch", "CronJob", "cronjobs", true, &["status"]),
        r(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["status"],
        ),
        r(
            "storage.k8s.io",
            "StorageClass",
            "storageclasses",
            false,
            &[],
        ),
        r("coordination.k8s.io", "Lease", "leases", true, &[]),
        r("node.k8s.io", "RuntimeClass", "runtimeclasses", false, &[]),
        r(
            "discovery.k8s.io",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
        ),
        r("events.k8s.io", "Event", "events", true, &[]),
    ]
}

fn gv_path(r: &Resource) -> String {
    if r.group.is_empty() {
        format!("api/{}", r.version)
    } else {
        format!("apis/{}/{}", r.group, r.version)
    }
}

fn gvk_of(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

/// kubectl's QueryParamVerifierV3: the PATCH operations of the GVK (map order is random in Go,
/// so every one of them must qualify) take `fieldValidation` in the query.
fn supports_field_validation(doc: &Value, gvk: &Value) -> bool {
    let mut found = false;
    for item in doc["paths"].as_object().unwrap().values() {
        let Some(patch) = item.get("patch") else {
            continue;
        };
        if patch["x-kubernetes-group-version-kind"] != *gvk {
            continue;
        }
        found = true;
        let has_param = patch["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query");
        if !has_param {
            return false;
        }
    }
    found
}

/// kubectl apply's gvkSupportsPatchOpenAPIV3.
fn supports_strategic_merge(doc: &Value, gvk: &Value) -> bool {
    doc["paths"].as_object().unwrap().values().any(|item| {
        item.get("patch").is_some_and(|patch| {
            patch["x-kubernetes-group-version-kind"] == *gvk
                && patch["requestBody"]["content"]
                    .get("application/strategic-merge-patch+json")
                    .is_some()
        })
    })
}

/// The component schema tagged with `gvk`, as explain and apply find it.
fn schema_for<'a>(doc: &'a Value, gvk: &Value) -> Option<&'a Value> {
    doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .values()
        .find(|s| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|tags| tags.contains(gvk))
        })
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    if let Some(first) = schema.get("allOf").and_then(|a| a.get(0)) {
        schema = first;
    }
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("local ref");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Strategic merge patch meta as kubectl's PatchMetaFromOpenAPIV3 reads it: the field's own
/// extensions, then its (list element's) resolved schema.
fn patch_meta<'a>(doc: &'a Value, schema: &'a Value, field: &str) -> (Value, Value, &'a Value) {
    let property = &schema["properties"][field];
    assert!(property.is_object(), "unable to find api field {field}");
    let strategy = property["x-kubernetes-patch-strategy"].clone();
    let key = property["x-kubernetes-patch-merge-key"].clone();
    let next = match property.get("items") {
        Some(items) => resolve(doc, items),
        None => resolve(doc, property),
    };
    (strategy, key, next)
}

/// kubectl explain's walk along a field path: properties, items, allOf and refs.
fn explain<'a>(doc: &'a Value, gvk: &Value, fields: &[&str]) -> &'a Value {
    let mut schema = schema_for(doc, gvk).expect("schema for gvk");
    for field in fields {
        schema = resolve(doc, &schema["properties"][field]);
        if let Some(items) = schema.get("items") {
            schema = resolve(doc, items);
        }
    }
    schema
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().expect("$ref is a string"));
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_served_kind_supports_server_side_field_validation() {
    let resources = served();
    let docs = Documents::build(&resources);
    for r in &resources {
        let doc = docs
            .get(&gv_path(r))
            .expect("document of served group-version");
        let gvk = gvk_of(r.group, r.version, r.kind);
        assert!(
            supports_field_validation(doc, &gvk),
            "{}/{} {}",
            r.group,
            r.version,
            r.kind
        );
        assert!(supports_strategic_merge(doc, &gvk), "{}", r.kind);
    }
    let apps = docs.get("apis/apps/v1").unwrap();
    assert!(supports_field_validation(
        apps,
        &gvk_of("autoscaling", "v1", "Scale")
    ));
}

#[test]
fn patch_operations_accept_every_patch_media_type_and_force() {
    let doc = group_version_document("apis/apps/v1", &served()).unwrap();
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    let content = patch["requestBody"]["content"].as_object().unwrap();
    for media in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content.contains_key(media), "{media}");
    }
    let names: Vec<&str> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["dryRun", "fieldManager", "fieldValidation", "force"] {
        assert!(names.contains(&name), "{name}");
    }
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
}

#[test]
fn explain_finds_kind_from_paths_and_follows_fields() {
    let resources = served();
    let core = group_version_document("api/v1", &resources).unwrap();
    // explain takes the GVK from the first operation on the resource's paths.
    let list = &core["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    let gvk = list["x-kubernetes-group-version-kind"].clone();
    assert_eq!(gvk, gvk_of("", "v1", "Pod"));

    let pod_spec = explain(&core, &gvk, &["spec"]);
    assert!(
        pod_spec["description"]
            .as_str()
            .is_some_and(|d| d.contains("pod"))
    );
    let containers = &pod_spec["properties"]["containers"];
    assert!(
        containers["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    let container = explain(&core, &gvk, &["spec", "containers"]);
    assert!(container["properties"]["image"]["description"].is_string());

    let apps = group_version_document("apis/apps/v1", &resources).unwrap();
    let deployment = gvk_of("apps", "v1", "Deployment");
    let template = explain(&apps, &deployment, &["spec", "template"]);
    assert!(
        template["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert!(template["properties"]["spec"].is_object());
    assert!(template["properties"]["metadata"].is_object());
    // The field's own description sits next to the ref, as explain prints it.
    let spec_field = &schema_for(&apps, &deployment).unwrap()["properties"]["spec"];
    assert!(spec_field["description"].is_string());
}

#[test]
fn definitions_use_upstream_names() {
    let apps = group_version_document("apis/apps/v1", &served()).unwrap();
    let schemas = apps["components"]["schemas"].as_object().unwrap();
    for name in [
        "io.k8s.api.apps.v1.Deployment",
        "io.k8s.api.apps.v1.DeploymentList",
        "io.k8s.api.core.v1.PodTemplateSpec",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        "io.k8s.api.autoscaling.v1.Scale",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    // Only what apps/v1 reaches: no core-only kinds.
    assert!(!schemas.contains_key("io.k8s.api.core.v1.Pod"));
}

#[test]
fn every_ref_resolves_in_its_document() {
    let docs = Documents::build(&served());
    for (path, doc) in &docs.documents {
        let mut refs = Vec::new();
        collect_refs(doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{path}: non-local ref {r}"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{path}: {r} does not resolve"
            );
        }
    }
}

#[test]
fn client_side_apply_finds_merge_keys() {
    let resources = served();
    let apps = group_version_document("apis/apps/v1", &resources).unwrap();
    let deployment = schema_for(&apps, &gvk_of("apps", "v1", "Deployment")).unwrap();
    let (_, _, spec) = patch_meta(&apps, deployment, "spec");
    let (strategy, _, _) = patch_meta(&apps, spec, "strategy");
    assert_eq!(strategy, "retainKeys");
    let (_, _, template) = patch_meta(&apps, spec, "template");
    let (_, _, pod_spec) = patch_meta(&apps, template, "spec");
    let (strategy, key, container) = patch_meta(&apps, pod_spec, "containers");
    assert_eq!((strategy, key), (json!("merge"), json!("name")));
    let (strategy, key, _) = patch_meta(&apps, container, "env");
    assert_eq!((strategy, key), (json!("merge"), json!("name")));
    let (_, key, _) = patch_meta(&apps, container, "ports");
    assert_eq!(key, "containerPort");
    let (strategy, key, _) = patch_meta(&apps, pod_spec, "volumes");
    assert_eq!((strategy, key), (json!("merge,retainKeys"), json!("name")));
    // Lists without a strategy are replaced whole.
    let (strategy, key, _) = patch_meta(&apps, container, "args");
    assert_eq!((strategy, key), (Value::Null, Value::Null));

    let core = group_version_document("api/v1", &resources).unwrap();
    let service = schema_for(&core, &gvk_of("", "v1", "Service")).unwrap();
    let (_, _, metadata) = patch_meta(&core, service, "metadata");
    let (strategy, _, _) = patch_meta(&core, metadata, "finalizers");
    assert_eq!(strategy, "merge");
    let (_, key, _) = patch_meta(&core, metadata, "ownerReferences");
    assert_eq!(key, "uid");
    let (_, _, service_spec) = patch_meta(&core, service, "spec");
    let (_, key, _) = patch_meta(&core, service_spec, "ports");
    assert_eq!(key, "port");
}

#[test]
fn index_lists_every_group_version_with_a_content_hash() {
    let resources = served();
    let docs = Documents::build(&resources);
    let paths = docs.index["paths"].as_object().unwrap();
    let expected = [
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/policy/v1",
        "apis/storage.k8s.io/v1",
        "apis/coordination.k8s.io/v1",
        "apis/node.k8s.io/v1",
        "apis/discovery.k8s.io/v1",
        "apis/events.k8s.io/v1",
    ];
    assert_eq!(paths.len(), expected.len());
    for gv in expected {
        let url = paths[gv]["serverRelativeURL"].as_str().unwrap();
        let hash = url
            .strip_prefix(&format!("/openapi/v3/{gv}?hash="))
            .unwrap_or_else(|| panic!("{url}"));
        assert_eq!(hash.len(), 32);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert!(docs.get(gv).is_some());
    }
    assert_eq!(index(&resources), docs.index);

    // A different document under the same path gets a different hash, so clients refetch.
    let fewer: Vec<Resource> = resources
        .iter()
        .filter(|r| r.kind != "Secret")
        .cloned()
        .collect();
    let other = index(&fewer);
    assert_ne!(
        other["paths"]["api/v1"]["serverRelativeURL"],
        paths["api/v1"]["serverRelativeURL"]
    );
    assert_eq!(
        other["paths"]["apis/apps/v1"]["serverRelativeURL"],
        paths["apis/apps/v1"]["serverRelativeURL"]
    );
}

#[test]
fn paths_cover_collections_items_and_subresources() {
    let core = group_version_document("api/v1", &served()).unwrap();
    let paths = core["paths"].as_object().unwrap();
    let pods = &paths["/api/v1/namespaces/{namespace}/pods"];
    assert_eq!(pods["get"]["x-kubernetes-action"], "list");
    assert_eq!(pods["post"]["x-kubernetes-action"], "post");
    assert_eq!(pods["delete"]["x-kubernetes-action"], "deletecollection");
    let pod = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
    for (method, action) in [
        ("get", "get"),
        ("put", "put"),
        ("patch", "patch"),
        ("delete", "delete"),
    ] {
        assert_eq!(pod[method]["x-kubernetes-action"], action, "{method}");
    }
    assert!(paths.contains_key("/api/v1/pods"));
    assert!(paths.contains_key("/api/v1/namespaces/{namespace}/pods/{name}/status"));
    assert!(paths.contains_key("/api/v1/namespaces/{namespace}/pods/{name}/log"));
    let binding = &paths["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"];
    assert_eq!(
        binding["x-kubernetes-group-version-kind"],
        gvk_of("", "v1", "Binding")
    );
    // Cluster-scoped kinds have no namespace in their paths.
    assert!(paths.contains_key("/api/v1/nodes/{name}"));
    assert!(paths.contains_key("/api/v1/namespaces/{name}/finalize"));
    assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/nodes"));
}

#[test]
fn unknown_group_versions_have_no_document() {
    let resources = served();
    assert!(group_version_document("apis/apps/v2", &resources).is_none());
    assert!(group_version_document("apis/example.com/v1", &resources).is_none());
    assert!(group_version_document("api", &resources).is_none());
    assert!(group_version_document("api/v1", &resources).is_some());
}

#[test]
fn all_component_schemas_cover_every_known_kind() {
    let all = all_component_schemas();
    for name in [
        "io.k8s.api.core.v1.Pod",
        "io.k8s.api.core.v1.PodList",
        "io.k8s.api.events.v1.Event",
        "io.k8s.api.discovery.v1.EndpointSlice",
        "io.k8s.api.node.v1.RuntimeClass",
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    ] {
        assert!(all.contains_key(name), "{name}");
    }
}

/// Not a check: prints how long building every document takes and how big they are.
/// Run with `cargo test -p skiff-openapi -- --ignored --nocapture measure`.
#[test]
#[ignore]
fn measure_build_time_and_size() {
    let resources = served();
    let started = std::time::Instant::now();
    let docs = Documents::build(&resources);
    let elapsed = started.elapsed();
    let mut total = 0;
    for (path, doc) in &docs.documents {
        let bytes = serde_json::to_vec(doc).unwrap().len();
        total += bytes;
        println!(
            "{path}: {bytes} bytes, {} schemas",
            doc["components"]["schemas"].as_object().unwrap().len()
        );
    }
    println!("all documents: {total} bytes, built in {elapsed:?}");
}
