use serde_json::{Value, json};

use crate::{Error, apply, field_patch_meta, merge_for_apply, meta, root_type};

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const POD: &str = "io.k8s.api.core.v1.Pod";

fn patched(original: Value, patch: Value, ty: &str) -> Value {
    apply(&original, &patch, Some(ty)).expect("patch applies")
}

fn invalid(original: Value, patch: Value, ty: &str) -> String {
    match apply(&original, &patch, Some(ty)) {
        Err(Error::Invalid(message)) => message,
        Ok(v) => panic!("expected an error, got {v}"),
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect()
}

fn pod(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

/// Asserts that no key starting with `$` is left anywhere.
fn assert_no_directives(value: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                assert!(!k.starts_with('$'), "directive {k} left in result");
                assert_no_directives(v);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_no_directives),
        _ => {}
    }
}

// ---- maps and nulls ----

#[test]
fn maps_merge_recursively() {
    let original = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"labels": {"b": "3", "c": "4"}}});
    let result = patched(original, patch, POD);
    assert_eq!(
        result,
        json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "3", "c": "4"}}})
    );
}

#[test]
fn null_deletes_a_key_and_is_never_stored() {
    let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"labels": {"a": null, "zzz": null}}});
    let result = patched(original, patch, POD);
    assert_eq!(result, json!({"metadata": {"labels": {"b": "2"}}}));
}

#[test]
fn nulls_inside_a_new_subtree_are_dropped() {
    let original = json!({"metadata": {"name": "p"}});
    let patch = json!({"metadata": {"annotations": {"a": "1", "b": null}}});
    let result = patched(original, patch, POD);
    assert_eq!(result["metadata"]["annotations"], json!({"a": "1"}));
}

#[test]
fn key_order_is_kept_and_new_keys_follow() {
    let original = json!({"b": 1, "a": 2, "c": 3});
    let patch = json!({"z": 0, "a": 5});
    let result = apply(&original, &patch, None).unwrap();
    let keys: Vec<&String> = result.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["b", "a", "c", "z"]);
    assert_eq!(result["a"], 5);
}

#[test]
fn a_value_of_another_type_replaces_the_original() {
    let original = json!({"spec": {"x": {"deep": true}, "y": [1, 2]}});
    let patch = json!({"spec": {"x": "flat", "y": {"now": "a map"}}});
    let result = apply(&original, &patch, None).unwrap();
    assert_eq!(
        result,
        json!({"spec": {"x": "flat", "y": {"now": "a map"}}})
    );
}

#[test]
fn documents_must_be_objects() {
    assert!(matches!(
        apply(&json!([1]), &json!({}), None),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        apply(&json!({}), &json!("x"), None),
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        apply(&Value::Null, &json!({"a": 1}), None).unwrap(),
        json!({"a": 1})
    );
}

// ---- $patch on maps ----

#[test]
fn patch_replace_on_a_map_drops_unlisted_keys() {
    let original = json!({"spec": {"nodeSelector": {"disk": "ssd", "zone": "a"}, "hostname": "h"}});
    let patch = json!({"spec": {"nodeSelector": {"$patch": "replace", "zone": "b"}}});
    let result = patched(original, patch, POD);
    assert_eq!(
        result["spec"],
        json!({"nodeSelector": {"zone": "b"}, "hostname": "h"})
    );
}

#[test]
fn patch_replace_at_the_root_replaces_the_document() {
    let original = json!({"a": 1, "b": {"c": 2}});
    let patch = json!({"$patch": "replace", "b": {"d": 3}});
    assert_eq!(
        apply(&original, &patch, None).unwrap(),
        json!({"b": {"d": 3}})
    );
}

#[test]
fn patch_delete_on_a_map_empties_it() {
    let original = json!({"metadata": {"labels": {"a": "1"}, "name": "p"}});
    let patch = json!({"metadata": {"labels": {"$patch": "delete"}}});
    let result = patched(original, patch, POD);
    assert_eq!(result["metadata"], json!({"labels": {}, "name": "p"}));
}

#[test]
fn unknown_patch_type_on_a_map_is_invalid_and_names_the_field() {
    let message = invalid(
        json!({"metadata": {"labels": {"a": "1"}}}),
        json!({"metadata": {"labels": {"$patch": "merge"}}}),
        POD,
    );
    assert!(message.contains("metadata.labels"), "{message}");
    assert!(message.contains("unknown patch type"), "{message}");
}

// ---- merged lists of objects ----

#[test]
fn containers_merge_by_name() {
    let original = pod(json!([
        {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
        {"name": "side", "image": "busybox"}
    ]));
    let patch = json!({"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}});
    let result = patched(original, patch, POD);
    assert_eq!(
        result["spec"]["containers"],
        json!([
            {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}
        ])
    );
}

#[test]
fn new_element_without_set_element_order_comes_before_live_only_items() {
    // As apimachinery does (see the kubectl patch task in the Kubernetes docs).
    let original = pod(json!([{"name": "a"}, {"name": "b"}]));
    let patch = json!({"spec": {"containers": [{"name": "c", "image": "x"}]}});
    let result = patched(original, patch, POD);
    assert_eq!(names(&result["spec"]["containers"]), ["c", "a", "b"]);
}

#[test]
fn patch_order_wins_for_items_it_names() {
    let original = pod(json!([{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}]));
    let patch = json!({"spec": {"containers": [
        {"name": "3", "image": "c"}, {"name": "1", "image": "a"}
    ]}});
    let result = patched(original, patch, POD);
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "2", "image": "b"}, {"name": "3", "image": "c"}, {"name": "1", "image": "a"}])
    );
}

#[test]
fn delete_element_by_merge_key() {
    let original = pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let patch = json!({"spec": {"containers": [{"$patch": "delete", "name": "b"}]}});
    let result = patched(original, patch, POD);
    assert_eq!(names(&result["spec"]["containers"]), ["a", "c"]);
}

#[test]
fn delete_element_without_merge_key_is_invalid() {
    let message = invalid(
        pod(json!([{"name": "a"}])),
        json!({"spec": {"containers": [{"$patch": "delete", "image": "x"}]}}),
        POD,
    );
    assert!(message.starts_with("spec.containers:"), "{message}");
    assert!(message.contains("merge key name"), "{message}");
}

#[test]
fn merged_element_without_merge_key_is_invalid() {
    let message = invalid(
        pod(json!([{"name": "a", "image": "x"}])),
        json!({"spec": {"containers": [{"image": "y"}]}}),
        POD,
    );
    assert!(message.starts_with("spec.containers:"), "{message}");
    assert!(
        message.contains("does not contain declared merge key name"),
        "{message}"
    );
}

#[test]
fn patch_replace_inside_a_list_replaces_the_whole_list() {
    let original = pod(json!([{"name": "a", "image": "1"}, {"name": "b"}]));
    let patch = json!({"spec": {"containers": [
        {"name": "z", "image": "2"}, {"$patch": "replace"}
    ]}});
    let result = patched(original, patch, POD);
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "z", "image": "2"}])
    );
}

#[test]
fn patch_merge_inside_a_list_is_rejected() {
    let message = invalid(
        pod(json!([{"name": "a"}])),
        json!({"spec": {"containers": [{"$patch": "merge"}]}}),
        POD,
    );
    assert!(message.contains("spec.containers"), "{message}");
}

#[test]
fn nested_lists_merge_inside_merged_elements() {
    let original = pod(json!([{"name": "web", "env": [
        {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
    ], "volumeMounts": [{"mountPath": "/data", "name": "d"}]}]));
    let patch = json!({"spec": {"containers": [{"name": "web",
        "env": [{"name": "B", "value": "3"}],
        "volumeMounts": [{"mountPath": "/data", "readOnly": true}]}]}});
    let result = patched(original, patch, POD);
    let web = &result["spec"]["containers"][0];
    assert_eq!(
        web["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
    );
    assert_eq!(
        web["volumeMounts"],
        json!([{"mountPath": "/data", "name": "d", "readOnly": true}])
    );
}

#[test]
fn container_ports_merge_by_container_port_across_number_forms() {
    let original = pod(json!([{"name": "web", "ports": [{"containerPort": 80, "name": "http"}]}]));
    let patch = json!({"spec": {"containers": [{"name": "web",
        "ports": [{"containerPort": 80.0, "protocol": "TCP"}]}]}});
    let result = patched(original, patch, POD);
    let ports = result["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "http");
    assert_eq!(ports[0]["protocol"], "TCP");
}

#[test]
fn mixed_element_types_are_invalid() {
    let message = invalid(
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"finalizers": [{"x": 1}]}}),
        POD,
    );
    assert!(message.contains("metadata.finalizers"), "{message}");
}

// ---- $setElementOrder ----

#[test]
fn set_element_order_places_a_new_container_last() {
    let original = pod(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        "containers": [{"name": "c", "image": "3"}]
    }});
    let result = patched(original, patch, POD);
    assert_eq!(names(&result["spec"]["containers"]), ["a", "b", "c"]);
    assert_no_directives(&result);
}

#[test]
fn set_element_order_keeps_server_only_items_in_place() {
    // apimachinery's "set elements order in a list with server-only items 3".
    let original = json!({"status": {"conditions": [
        {"type": "1", "x": "a"}, {"type": "2"}, {"type": "7"}, {"type": "9"},
        {"type": "8"}, {"type": "3"}, {"type": "4"}
    ]}});
    let patch = json!({"status": {"$setElementOrder/conditions": [
        {"type": "2"}, {"type": "1"}, {"type": "4"}, {"type": "3"}
    ]}});
    let result = patched(original, patch, POD);
    let order: Vec<&str> = result["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["2", "1", "7", "9", "8", "4", "3"]);
    assert_eq!(result["status"]["conditions"][1]["x"], "a");
}

#[test]
fn set_element_order_that_contradicts_the_patch_list_is_invalid() {
    let message = invalid(
        pod(json!([{"name": "1"}, {"name": "3"}, {"name": "2"}])),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
            "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}]
        }}),
        POD,
    );
    assert!(message.starts_with("spec.containers:"), "{message}");
    assert!(message.contains("doesn't match"), "{message}");
}

#[test]
fn set_element_order_reorders_a_primitive_list() {
    let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["c", "a", "b"]}});
    let result = patched(original, patch, POD);
    assert_eq!(result["metadata"]["finalizers"], json!(["c", "a", "b"]));
}

#[test]
fn malformed_set_element_order_is_invalid() {
    let message = invalid(
        pod(json!([{"name": "a"}])),
        json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
        POD,
    );
    assert!(message.contains("spec.containers"), "{message}");
    let message = invalid(
        pod(json!([{"name": "a"}])),
        json!({"spec": {"$setElementOrder": []}}),
        POD,
    );
    assert!(message.starts_with("spec:"), "{message}");
}

// ---- lists of primitives ----

#[test]
fn finalizers_merge_as_a_set() {
    let original = json!({"metadata": {"finalizers": ["a", "b"]}});
    let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
    let result = patched(original, patch, POD);
    assert_eq!(result["metadata"]["finalizers"], json!(["a", "b", "c"]));
}

#[test]
fn delete_from_primitive_list() {
    let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}});
    let result = patched(original, patch, POD);
    assert_eq!(result["metadata"], json!({"finalizers": ["a", "c"]}));
}

#[test]
fn delete_from_a_missing_primitive_list_does_not_create_it() {
    let original = json!({"metadata": {"name": "p"}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}});
    let result = patched(original, patch, POD);
    assert_eq!(result, json!({"metadata": {"name": "p"}}));
}

#[test]
fn delete_from_primitive_list_with_set_element_order() {
    // What kubectl apply sends after one finalizer is removed from the manifest.
    let original = json!({"metadata": {"finalizers": ["x/a", "x/b", "x/c"]}});
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["x/c", "x/a"],
        "$deleteFromPrimitiveList/finalizers": ["x/b"]
    }});
    let result = patched(original, patch, POD);
    assert_eq!(result["metadata"]["finalizers"], json!(["x/c", "x/a"]));
    assert_no_directives(&result);
}

#[test]
fn delete_from_primitive_list_on_objects_is_invalid() {
    let message = invalid(
        pod(json!([{"name": "a"}])),
        json!({"spec": {"$deleteFromPrimitiveList/containers": [{"name": "a"}]}}),
        POD,
    );
    assert!(message.starts_with("spec.containers:"), "{message}");
}

#[test]
fn pod_cidrs_merge_as_a_set_on_nodes() {
    let original = json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}});
    let patch = json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}});
    let result = patched(original, patch, "io.k8s.api.core.v1.Node");
    assert_eq!(
        result["spec"]["podCIDRs"],
        json!(["10.0.0.0/24", "fd00::/64"])
    );
}

// ---- atomic lists ----

#[test]
fn args_and_command_are_replaced() {
    let original = pod(json!([{"name": "a", "command": ["sh", "-c"], "args": ["one", "two"]}]));
    let patch = json!({"spec": {"containers": [{"name": "a", "args": ["three"]}]}});
    let result = patched(original, patch, POD);
    let a = &result["spec"]["containers"][0];
    assert_eq!(a["args"], json!(["three"]));
    assert_eq!(a["command"], json!(["sh", "-c"]));
}

#[test]
fn tolerations_are_replaced() {
    let original = json!({"spec": {"tolerations": [
        {"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}
    ]}});
    let patch = json!({"spec": {"tolerations": [{"key": "c", "operator": "Exists"}]}});
    let result = patched(original, patch, POD);
    assert_eq!(
        result["spec"]["tolerations"],
        json!([{"key": "c", "operator": "Exists"}])
    );
}

#[test]
fn without_a_type_every_list_is_replaced() {
    let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let patch = json!({"spec": {"containers": [{"name": "c"}]}});
    let result = apply(&original, &patch, None).unwrap();
    assert_eq!(result["spec"]["containers"], json!([{"name": "c"}]));
}

// ---- $retainKeys ----

#[test]
fn retain_keys_clears_the_other_deployment_strategy() {
    let original = json!({"spec": {"strategy": {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}
    }}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let result = patched(original, patch, DEPLOYMENT);
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn retain_keys_switches_a_volume_source() {
    let original = json!({"spec": {"containers": [], "volumes": [
        {"name": "v", "emptyDir": {}}, {"name": "w", "hostPath": {"path": "/x"}}
    ]}});
    let patch = json!({"spec": {"volumes": [
        {"name": "v", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}}
    ]}});
    let result = patched(original, patch, POD);
    assert_eq!(
        result["spec"]["volumes"],
        json!([{"name": "v", "configMap": {"name": "cm"}}, {"name": "w", "hostPath": {"path": "/x"}}])
    );
}

#[test]
fn retain_keys_must_list_every_field_the_patch_sets() {
    let message = invalid(
        json!({"spec": {"strategy": {"type": "RollingUpdate"}}}),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
            "rollingUpdate": {"maxSurge": 1}}}}),
        DEPLOYMENT,
    );
    assert!(message.starts_with("spec.strategy:"), "{message}");
    assert!(message.contains("rollingUpdate"), "{message}");
}

// ---- kinds and nesting ----

#[test]
fn deployment_pod_template_is_merged_down_to_env() {
    let original = json!({"kind": "Deployment", "spec": {"replicas": 1, "template": {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx", "env": [
            {"name": "A", "value": "1"}
        ]}]}
    }}});
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "B", "value": "2"}]}
    ]}}}});
    let result = patched(original, patch, DEPLOYMENT);
    let web = &result["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(web["image"], "nginx");
    assert_eq!(names(&web["env"]), ["B", "A"]);
    assert_eq!(
        result["spec"]["template"]["metadata"]["labels"]["app"],
        "web"
    );
}

#[test]
fn cron_job_reaches_containers_through_the_job_template() {
    let original = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
        "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}
    }}}}});
    let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "b", "image": "3"}]
    }}}}}});
    let result = patched(original, patch, "io.k8s.api.batch.v1.CronJob");
    let containers = &result["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers,
        &json!([{"name": "a", "image": "1"}, {"name": "b", "image": "3"}])
    );
}

#[test]
fn service_ports_merge_by_port() {
    let original = json!({"spec": {"ports": [
        {"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}
    ]}});
    let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}});
    let result = patched(original, patch, "io.k8s.api.core.v1.Service");
    assert_eq!(
        result["spec"]["ports"],
        json!([{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 9443}])
    );
}

#[test]
fn node_status_conditions_and_addresses_merge_by_type() {
    let original = json!({"status": {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
    }});
    let patch = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]
    }});
    let result = patched(original, patch, "io.k8s.api.core.v1.Node");
    assert_eq!(
        result["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}])
    );
    assert_eq!(
        result["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.0.2"}])
    );
}

#[test]
fn job_status_conditions_merge_by_type() {
    let original = json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
    let patch = json!({"status": {"conditions": [
        {"type": "Suspended", "status": "False"}, {"type": "Complete", "status": "True"}
    ]}});
    let result = patched(original, patch, "io.k8s.api.batch.v1.Job");
    assert_eq!(
        result["status"]["conditions"],
        json!([{"type": "Suspended", "status": "False"}, {"type": "Complete", "status": "True"}])
    );
}

#[test]
fn owner_references_merge_by_uid_on_any_kind() {
    let original = json!({"metadata": {"ownerReferences": [
        {"uid": "u1", "kind": "Deployment", "name": "a"}
    ]}});
    let patch = json!({"metadata": {"ownerReferences": [
        {"uid": "u1", "controller": true}, {"uid": "u2", "kind": "Foo", "name": "b"}
    ]}});
    let result = patched(original, patch, "io.k8s.api.core.v1.ConfigMap");
    let refs = result["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 2);
    let u1 = refs.iter().find(|r| r["uid"] == "u1").unwrap();
    assert_eq!(
        u1,
        &json!({"uid": "u1", "kind": "Deployment", "name": "a", "controller": true})
    );
}

// ---- what kubectl apply sends ----

#[test]
fn kubectl_apply_changes_an_image_and_adds_a_container() {
    let live = json!({"kind": "Deployment", "metadata": {"name": "web", "uid": "1"},
    "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
        "containers": [{"name": "web", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log"}],
        "restartPolicy": "Always"
    }}}});
    // CreateThreeWayMergePatch's output for that manifest change.
    let patch = json!({"metadata": {"annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
    "spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"image": "nginx:1.27", "name": "web"},
            {"image": "busybox", "name": "sidecar", "args": ["sleep", "inf"]}]
    }}}});
    let result = patched(live, patch, DEPLOYMENT);
    let spec = &result["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"],
        json!([
            {"name": "web", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log"},
            {"image": "busybox", "name": "sidecar", "args": ["sleep", "inf"]}
        ])
    );
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(result["spec"]["replicas"], 2);
    assert_no_directives(&result);
}

#[test]
fn kubectl_apply_removes_an_env_var() {
    let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [
        {"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}
    ]}]}}}});
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [{"name": "web",
            "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
            "env": [{"$patch": "delete", "name": "B"}]}]
    }}}});
    let result = patched(live, patch, DEPLOYMENT);
    assert_eq!(
        result["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
    );
    assert_no_directives(&result);
}

#[test]
fn kubectl_apply_swaps_a_container_next_to_an_injected_one() {
    // Live: a and b from the manifest, d injected by someone else. The new manifest drops a
    // and adds c. apimachinery puts c after d (its in-place list edits let c take a's slot
    // in the live order it compares with).
    let live = pod(json!([{"name": "a"}, {"name": "b"}, {"name": "d"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}],
        "containers": [{"name": "c", "image": "x"}, {"$patch": "delete", "name": "a"}]
    }});
    let result = patched(live, patch, POD);
    assert_eq!(names(&result["spec"]["containers"]), ["b", "d", "c"]);
}

#[test]
fn a_new_merged_list_is_stored_without_its_directives() {
    let live = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    let patch =
        json!({"spec": {"imagePullSecrets": [{"name": "s1"}, {"$patch": "delete", "name": "s0"}]}});
    let result = patched(live, patch, POD);
    assert_eq!(result["spec"]["imagePullSecrets"], json!([{"name": "s1"}]));
}

#[test]
fn empty_patch_list_leaves_a_merged_list_alone() {
    let live = pod(json!([{"name": "a"}, {"name": "b"}]));
    let result = patched(live.clone(), json!({"spec": {"containers": []}}), POD);
    assert_eq!(result, live);
}

#[test]
fn ephemeral_and_init_containers_merge_by_name() {
    let live = json!({"spec": {"containers": [],
        "initContainers": [{"name": "i", "image": "1"}],
        "ephemeralContainers": [{"name": "dbg", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]}});
    let patch = json!({"spec": {
        "initContainers": [{"name": "i", "image": "2"}],
        "ephemeralContainers": [{"name": "dbg", "env": [{"name": "A", "value": "2"}]}]}});
    let result = patched(live, patch, POD);
    assert_eq!(
        result["spec"]["initContainers"],
        json!([{"name": "i", "image": "2"}])
    );
    assert_eq!(
        result["spec"]["ephemeralContainers"],
        json!([{"name": "dbg", "image": "busybox", "env": [{"name": "A", "value": "2"}]}])
    );
}

#[test]
fn directives_in_a_new_subtree_never_reach_the_result() {
    let live = json!({"spec": {"replicas": 1}});
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"name": "a", "$setElementOrder/env": [{"name": "X"}],
            "env": [{"name": "X", "value": "1"}, {"$patch": "delete", "name": "Y"}]}],
        "volumes": [{"$patch": "replace"}, {"name": "v", "emptyDir": {}}],
        "$retainKeys": ["containers", "volumes"]
    }}}});
    let result = patched(live, patch, DEPLOYMENT);
    assert_no_directives(&result);
    let spec = &result["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"],
        json!([{"name": "a", "env": [{"name": "X", "value": "1"}]}])
    );
    assert_eq!(spec["volumes"], json!([{"name": "v", "emptyDir": {}}]));
}

// ---- patch meta ----

#[test]
fn root_types_of_served_kinds() {
    assert_eq!(root_type("apps", "Deployment"), Some(DEPLOYMENT));
    assert_eq!(root_type("", "Pod"), Some(POD));
    assert_eq!(
        root_type("events.k8s.io", "Event"),
        Some("io.k8s.api.events.v1.Event")
    );
    assert_eq!(root_type("", "Event"), Some("io.k8s.api.core.v1.Event"));
    assert_eq!(
        root_type("autoscaling", "Scale"),
        Some("io.k8s.api.autoscaling.v1.Scale")
    );
    assert_eq!(root_type("apps", "Pod"), None);
    assert_eq!(root_type("example.com", "Widget"), None);
}

#[test]
fn field_meta_matches_the_go_tags() {
    let containers = field_patch_meta("io.k8s.api.core.v1.PodSpec", "containers").unwrap();
    assert_eq!(containers.strategy, "merge");
    assert_eq!(containers.merge_key, Some("name"));
    assert_eq!(containers.child_type, Some("io.k8s.api.core.v1.Container"));
    let volumes = field_patch_meta("io.k8s.api.core.v1.PodSpec", "volumes").unwrap();
    assert_eq!(volumes.strategy, "merge,retainKeys");
    let ports = field_patch_meta("io.k8s.api.core.v1.ServiceSpec", "ports").unwrap();
    assert_eq!(ports.merge_key, Some("port"));
    assert!(field_patch_meta("io.k8s.api.core.v1.PodSpec", "tolerations").is_none());
    assert!(field_patch_meta("io.k8s.api.core.v1.Container", "args").is_none());
}

#[test]
fn every_kind_reaches_object_meta_and_every_child_type_is_known() {
    let types: Vec<&str> = meta::all_fields().iter().map(|(ty, _, _)| *ty).collect();
    // Types reached for retainKeys or documentation only, with no tagged field below them.
    let leaves = [
        "io.k8s.api.core.v1.Volume",
        "io.k8s.api.apps.v1.DeploymentStrategy",
    ];
    for (_, _, m) in meta::all_fields() {
        if let Some(child) = m.child_type {
            assert!(
                types.contains(&child) || leaves.contains(&child),
                "{child} has no fields"
            );
        }
        if m.merge_key.is_some() {
            assert!(m.strategy.split(',').any(|s| s == "merge"));
        }
    }
    for (group, kind, ty) in meta::all_roots() {
        let metadata = field_patch_meta(ty, "metadata")
            .unwrap_or_else(|| panic!("{group}/{kind} lacks metadata"));
        assert_eq!(
            metadata.child_type,
            Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        );
    }
}

// ---- merge_for_apply ----

#[test]
fn merge_for_apply_never_deletes() {
    let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
        "spec": {"replicas": 3}});
    let applied = json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"]},
        "spec": {"replicas": null}});
    let result = merge_for_apply(&live, &applied, Some(DEPLOYMENT));
    assert_eq!(
        result,
        json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}, "finalizers": ["x", "y"]},
            "spec": {"replicas": 3}})
    );
}

#[test]
fn merge_for_apply_merges_containers_by_name_and_appends_new_ones() {
    let live = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "1", "imagePullPolicy": "Always", "args": ["x", "y"]},
        {"name": "b", "image": "2"}
    ], "tolerations": [{"key": "t1"}]}}}});
    let applied = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "3"}, {"name": "a", "image": "9", "args": ["z"]}
    ], "tolerations": [{"key": "t2"}]}}}});
    let result = merge_for_apply(&live, &applied, Some(DEPLOYMENT));
    let spec = &result["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"],
        json!([
            {"name": "a", "image": "9", "imagePullPolicy": "Always", "args": ["z"]},
            {"name": "b", "image": "2"},
            {"name": "c", "image": "3"}
        ])
    );
    assert_eq!(spec["tolerations"], json!([{"key": "t2"}]));
}

#[test]
fn merge_for_apply_replaces_a_merged_list_whose_elements_lack_the_key() {
    let live = pod(json!([{"name": "a"}]));
    let applied = json!({"spec": {"containers": [{"image": "x"}]}});
    let result = merge_for_apply(&live, &applied, Some(POD));
    assert_eq!(result["spec"]["containers"], json!([{"image": "x"}]));
}

/// A 3 MiB patch holds a couple of hundred thousand list items. Merging them item by item
/// against each other (as the first implementation did) would keep a CPU busy for hours;
/// through the identity indexes it is linear, and the results are the same as for small
/// lists.
#[test]
fn lists_of_hundreds_of_thousands_merge_as_small_ones_do() {
    const N: usize = 200_000;
    // A primitive list with the merge strategy: finalizers are a set.
    let live: Vec<Value> = (0..N).map(|i| json!(format!("f{i}"))).collect();
    let patch: Vec<Value> = (N / 2..N + N / 2).map(|i| json!(format!("f{i}"))).collect();
    let out = patched(
        json!({"metadata": {"finalizers": live}}),
        json!({"metadata": {"finalizers": patch}}),
        POD,
    );
    let finalizers = out["metadata"]["finalizers"].as_array().unwrap();
    assert_eq!(finalizers.len(), N + N / 2);
    let distinct: std::collections::HashSet<&str> =
        finalizers.iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(distinct.len(), N + N / 2);

    // A list of objects merged by key, ordered by `$setElementOrder`, with deletions.
    let containers: Vec<Value> = (0..N)
        .map(|i| json!({"name": format!("c{i}"), "image": "old"}))
        .collect();
    let mut patch_list: Vec<Value> = (0..N)
        .rev()
        .filter(|i| i % 2 == 0)
        .map(|i| json!({"name": format!("c{i}"), "image": "new"}))
        .collect();
    patch_list.push(json!({"name": "c1", "$patch": "delete"}));
    let order: Vec<Value> = (0..N)
        .rev()
        .filter(|i| *i != 1)
        .map(|i| json!({"name": format!("c{i}")}))
        .collect();
    let out = patched(
        pod(Value::Array(containers)),
        json!({"spec": {"containers": patch_list, "$setElementOrder/containers": order}}),
        POD,
    );
    let merged = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(merged.len(), N - 1);
    assert_eq!(
        merged[0],
        json!({"name": format!("c{}", N - 1), "image": "old"})
    );
    assert_eq!(
        merged[1],
        json!({"name": format!("c{}", N - 2), "image": "new"})
    );
    assert!(merged.iter().all(|c| c["name"] != "c1"));

    // Deleting most of a primitive list.
    let to_delete: Vec<Value> = (0..N - 1).map(|i| json!(format!("f{i}"))).collect();
    let live: Vec<Value> = (0..N).map(|i| json!(format!("f{i}"))).collect();
    let out = patched(
        json!({"metadata": {"finalizers": live}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": to_delete}}),
        POD,
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!([format!("f{}", N - 1)])
    );

    // Server-side apply's merge of the same lists.
    let live: Vec<Value> = (0..N)
        .map(|i| json!({"name": format!("c{i}"), "image": "old"}))
        .collect();
    let applied: Vec<Value> = (N / 2..N + N / 2)
        .map(|i| json!({"name": format!("c{i}"), "image": "applied"}))
        .collect();
    let out = merge_for_apply(
        &pod(Value::Array(live)),
        &pod(Value::Array(applied)),
        Some(POD),
    );
    let merged = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(merged.len(), N + N / 2);
    assert_eq!(merged[N / 2]["image"], "applied");
    assert_eq!(merged[N / 2 - 1]["image"], "old");
}

/// Identities compare as `json_eq` does: numbers by value, objects whatever their order.
#[test]
fn identities_follow_json_equality() {
    use crate::merge::Id;
    assert_eq!(Id::of(&json!(80)), Id::of(&json!(80.0)));
    assert_eq!(Id::of(&json!(0)), Id::of(&json!(-0.0)));
    assert_ne!(Id::of(&json!(80)), Id::of(&json!("80")));
    assert_eq!(
        Id::of(&json!({"a": 1, "b": [1, "x"]})),
        Id::of(&json!({"b": [1.0, "x"], "a": 1}))
    );
    assert_ne!(Id::of(&json!([1, 2])), Id::of(&json!([2, 1])));
    // A string that looks like a written-out composite is still a string.
    assert_ne!(Id::of(&json!("[#0,]")), Id::of(&json!([0])));
}
