//! `pods/<name>/ephemeralcontainers`: the only way to add a container to a pod that exists,
//! as kube-apiserver's `EphemeralContainersStrategy` serves it. `kubectl debug <pod>` sends
//! a strategic merge patch here; GET, PUT and every kind of PATCH are served by the generic
//! handler, which asks this module what a write makes of the stored pod and how it is
//! validated.
//!
//! A write keeps everything of the stored pod but `spec.ephemeralContainers`, whatever else
//! the request changed (kubectl's patch may also drop the pod's labels: ignored here, as
//! there). Validation is `ValidatePodEphemeralContainersUpdate`'s: existing ephemeral
//! containers may neither change nor go, names are unique across all the pod's containers,
//! and an ephemeral container has no ports, probes, resources or lifecycle.

use serde_json::Value;

/// The subresource's name in the path and in the registry.
pub const SUBRESOURCE: &str = "ephemeralcontainers";

/// The pod a write through the subresource makes: `old` with `new`'s ephemeral containers
/// (defaulted), its generation bumped when they changed.
pub fn prepare_update(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    let containers = new
        .pointer("/spec/ephemeralContainers")
        .filter(|v| !v.is_null())
        .cloned();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        match containers {
            Some(list) => {
                spec.insert("ephemeralContainers".into(), list);
            }
            None => {
                spec.remove("ephemeralContainers");
            }
        }
    }
    let pods = crate::registry::find("", "v1", "pods").expect("pods are served");
    crate::handlers::default_and_bump_generation(pods, old, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u", "generation": 1,
                "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "busybox"}]},
            "status": {"phase": "Running"},
        });
        skiff_apimachinery::apply_defaults(
            skiff_apimachinery::Kind {
                group: "",
                kind: "Pod",
            },
            &mut pod,
        );
        pod
    }

    #[test]
    fn only_ephemeral_containers_change() {
        let old = stored();
        let mut asked = old.clone();
        asked["metadata"]["labels"] = Value::Null;
        asked["spec"]["containers"][0]["image"] = json!("other");
        asked["status"] = json!({"phase": "Failed"});
        asked["spec"]["ephemeralContainers"] =
            json!([{"name": "dbg", "image": "busybox", "targetContainerName": "web"}]);
        let new = prepare_update(&old, &asked);
        assert_eq!(new["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(new["spec"]["containers"], old["spec"]["containers"]);
        assert_eq!(new["status"], old["status"]);
        assert_eq!(new["metadata"]["generation"], 2);
        // Defaulted as the pod's other containers are.
        let dbg = &new["spec"]["ephemeralContainers"][0];
        assert_eq!(
            (
                dbg["imagePullPolicy"].as_str(),
                dbg["terminationMessagePolicy"].as_str()
            ),
            (Some("Always"), Some("File"))
        );
        assert!(
            skiff_apimachinery::validate_pod_ephemeral_containers_update(&new, &old).is_empty()
        );
        // Nothing asked of the ephemeral containers: nothing changes.
        let same = prepare_update(&new, &old);
        let errors: Vec<String> =
            skiff_apimachinery::validate_pod_ephemeral_containers_update(&same, &new)
                .iter()
                .map(|e| e.to_string())
                .collect();
        assert_eq!(
            errors,
            [
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed"
            ]
        );
    }
}
