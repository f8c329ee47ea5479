//! Workloads: Deployment, ReplicaSet, StatefulSet, DaemonSet (apps/v1) and
//! ReplicationController, as `pkg/apis/apps/validation` and the core RC rules.

use super::meta::FIELD_IMMUTABLE;
use super::pod::validate_pod_template_spec;
use super::selector::{go_label_selector, is_empty, matches, validate_label_selector};
use super::{Errs, has, nonnegative, s};
use crate::FieldError;
use crate::names;
use serde_json::{Value, json};

const SELECTOR_MISMATCH: &str = "`selector` does not match template `labels`";
const STS_UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

fn spec_of(obj: &Value) -> &Value {
    static EMPTY: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!({}));
    obj.get("spec").unwrap_or(&EMPTY)
}

/// The selector (required, non-empty, valid), and the template it must match.
fn selector_and_template(spec: &Value, owner: &str, errs: &mut Errs) {
    nonnegative(spec, "replicas", "spec.replicas", errs);
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    let template = spec.get("template").filter(|t| !t.is_null());
    match spec.get("selector").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let sel_errs = validate_label_selector(sel, "spec.selector");
            let valid = sel_errs.is_empty();
            errs.extend(sel_errs);
            if is_empty(sel) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    go_label_selector(sel),
                    format!("empty selector is invalid for {owner}"),
                ));
            } else if valid {
                let labels = template
                    .and_then(|t| t.get("metadata"))
                    .and_then(|m| m.get("labels"));
                if !matches(sel, labels) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        labels.cloned().unwrap_or(json!({})),
                        SELECTOR_MISMATCH,
                    ));
                }
            }
        }
    }
    match template {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(t) => validate_pod_template_spec(t, "spec.template", errs),
    }
}

fn restart_always(spec: &Value, errs: &mut Errs) {
    let ps = spec.get("template").and_then(|t| t.get("spec"));
    if let Some(ps) = ps {
        let rp = s(ps, "restartPolicy");
        if !rp.is_empty() && rp != "Always" {
            errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                json!(rp),
                &["Always"],
            ));
        }
    }
}

fn active_deadline_forbidden(spec: &Value, owner: &str, errs: &mut Errs) {
    if spec
        .get("template")
        .and_then(|t| t.get("spec"))
        .is_some_and(|ps| has(ps, "activeDeadlineSeconds"))
    {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
}

fn selector_immutable(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    if let Some(old) = old {
        let (n, o) = (spec_of(obj).get("selector"), spec_of(old).get("selector"));
        if n != o {
            errs.push(FieldError::invalid(
                "spec.selector",
                go_label_selector(n.unwrap_or(&Value::Null)),
                FIELD_IMMUTABLE,
            ));
        }
    }
}

/// `maxUnavailable`/`maxSurge`: a non-negative integer or a percentage up to 100%.
pub(crate) fn int_or_percent(v: Option<&Value>, path: &str, errs: &mut Errs) {
    match v {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(-1);
            if n < 0 {
                errs.push(FieldError::invalid(
                    path,
                    json!(n),
                    "must be greater than or equal to 0",
                ));
            }
        }
        Some(Value::String(p)) => {
            let msgs = names::is_valid_percent(p);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(path, json!(p), m));
                }
            } else if p.trim_end_matches('%').parse::<u64>().unwrap_or(0) > 100 {
                errs.push(FieldError::invalid(
                    path,
                    json!(p),
                    "must not be greater than 100%",
                ));
            }
        }
        _ => {}
    }
}

fn is_zero(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(p)) => p == "0%",
        _ => true,
    }
}

pub(crate) fn validate_deployment(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let spec = spec_of(obj);
    selector_and_template(spec, "deployment", errs);
    restart_always(spec, errs);
    active_deadline_forbidden(spec, "ReplicaSet", errs);
    let strategy = spec.get("strategy").cloned().unwrap_or(json!({}));
    match s(&strategy, "type") {
        "RollingUpdate" => {
            if let Some(ru) = strategy.get("rollingUpdate") {
                let (mu, ms) = (ru.get("maxUnavailable"), ru.get("maxSurge"));
                int_or_percent(mu, "spec.strategy.rollingUpdate.maxUnavailable", errs);
                int_or_percent(ms, "spec.strategy.rollingUpdate.maxSurge", errs);
                if is_zero(mu) && is_zero(ms) {
                    errs.push(FieldError::invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        mu.cloned().unwrap_or(json!(0)),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        }
        "Recreate" => {
            if has(&strategy, "rollingUpdate") {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "" => errs.push(FieldError::required("spec.strategy.type", "")),
        other => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            json!(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
    nonnegative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        errs,
    );
    nonnegative(
        spec,
        "progressDeadlineSeconds",
        "spec.progressDeadlineSeconds",
        errs,
    );
    if let (Some(pd), Some(mr)) = (
        spec.get("progressDeadlineSeconds").and_then(Value::as_i64),
        spec.get("minReadySeconds").and_then(Value::as_i64),
    ) && pd <= mr
    {
        errs.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            json!(pd),
            "must be greater than minReadySeconds",
        ));
    }
    selector_immutable(obj, old, errs);
}

pub(crate) fn validate_replica_set(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let spec = spec_of(obj);
    selector_and_template(spec, "deployment", errs);
    restart_always(spec, errs);
    active_deadline_forbidden(spec, "ReplicaSet", errs);
    selector_immutable(obj, old, errs);
}

pub(crate) fn validate_stateful_set(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let spec = spec_of(obj);
    match s(spec, "podManagementPolicy") {
        "OrderedReady" | "Parallel" => {}
        "" => errs.push(FieldError::required("spec.podManagementPolicy", "")),
        other => errs.push(FieldError::invalid(
            "spec.podManagementPolicy",
            json!(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let us = spec.get("updateStrategy").cloned().unwrap_or(json!({}));
    match s(&us, "type") {
        "RollingUpdate" => {
            if let Some(ru) = us.get("rollingUpdate") {
                nonnegative(
                    ru,
                    "partition",
                    "spec.updateStrategy.rollingUpdate.partition",
                    errs,
                );
                int_or_percent(
                    ru.get("maxUnavailable"),
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    errs,
                );
            }
        }
        "OnDelete" => {
            if has(&us, "rollingUpdate") {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    us["rollingUpdate"].clone(),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "" => errs.push(FieldError::required("spec.updateStrategy", "")),
        other => errs.push(FieldError::invalid(
            "spec.updateStrategy",
            json!(other),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    nonnegative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        errs,
    );
    // The pods mount their claims under the templates' names: the template is checked as
    // the pods will have it, claims among its volumes.
    let mut with_claims = spec.clone();
    let claim_names: Vec<String> = super::arr(spec, "volumeClaimTemplates")
        .iter()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    if let Some(pod) = with_claims
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
    {
        let volumes = pod.entry("volumes").or_insert_with(|| json!([]));
        if let Some(list) = volumes.as_array_mut() {
            for name in claim_names {
                list.retain(|v| v.get("name").and_then(Value::as_str) != Some(name.as_str()));
                list.push(json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
            }
        }
    }
    selector_and_template(&with_claims, "statefulset", errs);
    restart_always(spec, errs);
    active_deadline_forbidden(spec, "StatefulSet", errs);
    if let Some(p) = spec.get("persistentVolumeClaimRetentionPolicy") {
        for f in ["whenDeleted", "whenScaled"] {
            super::one_of(
                p,
                f,
                &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                &["Retain", "Delete"],
                false,
                errs,
            );
        }
    }
    if let Some(old) = old {
        let mut a = spec.clone();
        let mut b = spec_of(old).clone();
        for v in [&mut a, &mut b] {
            if let Some(m) = v.as_object_mut() {
                for f in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "revisionHistoryLimit",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(f);
                }
            }
        }
        if a != b {
            errs.push(FieldError::forbidden("spec", STS_UPDATE_FORBIDDEN));
        }
    }
}

pub(crate) fn validate_daemon_set(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let spec = spec_of(obj);
    selector_and_template(spec, "daemonset", errs);
    restart_always(spec, errs);
    if let Some(ads) = spec
        .get("template")
        .and_then(|t| t.get("spec"))
        .and_then(|ps| ps.get("activeDeadlineSeconds"))
        .filter(|v| !v.is_null())
    {
        errs.push(FieldError::invalid(
            "spec.template.spec.activeDeadlineSeconds",
            ads.clone(),
            "activeDeadlineSeconds must be nil for daemon set pods",
        ));
    }
    let us = spec.get("updateStrategy").cloned().unwrap_or(json!({}));
    match s(&us, "type") {
        "OnDelete" => {}
        "RollingUpdate" => match us.get("rollingUpdate") {
            None => errs.push(FieldError::required(
                "spec.updateStrategy.rollingUpdate",
                "",
            )),
            Some(ru) => {
                let (mu, ms) = (ru.get("maxUnavailable"), ru.get("maxSurge"));
                int_or_percent(mu, "spec.updateStrategy.rollingUpdate.maxUnavailable", errs);
                int_or_percent(ms, "spec.updateStrategy.rollingUpdate.maxSurge", errs);
                if is_zero(mu) && is_zero(ms) {
                    errs.push(FieldError::invalid(
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        mu.cloned().unwrap_or(json!(0)),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        },
        other => errs.push(FieldError::not_supported(
            "spec.updateStrategy",
            json!(other),
            &["RollingUpdate", "OnDelete"],
        )),
    }
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    nonnegative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        errs,
    );
    selector_immutable(obj, old, errs);
}

/// `ValidateReplicationControllerSpec`, in its order: minReadySeconds, selector, replicas,
/// then the template.
pub(crate) fn validate_replication_controller(obj: &Value, _old: Option<&Value>, errs: &mut Errs) {
    let spec = spec_of(obj);
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    let selector = spec
        .get("selector")
        .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()));
    match selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => errs.extend(names::validate_labels(Some(sel), "spec.selector")),
    }
    nonnegative(spec, "replicas", "spec.replicas", errs);
    match spec.get("template").filter(|t| !t.is_null()) {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(t) => {
            if let Some(sel) = selector {
                let labels = t.get("metadata").and_then(|m| m.get("labels"));
                if !matches(&json!({"matchLabels": sel}), labels) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        labels.cloned().unwrap_or(json!({})),
                        SELECTOR_MISMATCH,
                    ));
                }
            }
            validate_pod_template_spec(t, "spec.template", errs);
            restart_always(spec, errs);
            active_deadline_forbidden(spec, "ReplicationController", errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Kind, apply_defaults, validate};
    use serde_json::{Value, json};

    fn obj(kind: &str, spec: Value) -> Value {
        let mut o = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        apply_defaults(
            Kind {
                group: "apps",
                kind,
            },
            &mut o,
        );
        o
    }

    fn check(kind: &str, o: &Value, old: Option<&Value>) -> Vec<String> {
        validate(
            Kind {
                group: "apps",
                kind,
            },
            true,
            o,
            old,
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    #[test]
    fn valid_workloads_pass() {
        for kind in ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"] {
            let o = obj(
                kind,
                json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}),
            );
            assert_eq!(check(kind, &o, None), Vec::<String>::new(), "{kind}");
        }
    }

    #[test]
    fn selector_must_match_template() {
        let o = obj(
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "api"}))}),
        );
        assert_eq!(
            check("Deployment", &o, None),
            [
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"
            ]
        );
    }

    #[test]
    fn selector_required_and_not_empty() {
        let o = obj(
            "Deployment",
            json!({"template": template(json!({"app": "web"}))}),
        );
        assert_eq!(
            check("Deployment", &o, None),
            ["spec.selector: Required value"]
        );
        let o = obj(
            "StatefulSet",
            json!({"selector": {}, "template": template(json!({"app": "web"}))}),
        );
        assert_eq!(
            check("StatefulSet", &o, None),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for statefulset"
            ]
        );
    }

    #[test]
    fn template_restart_policy_and_replicas() {
        let mut t = template(json!({"app": "web"}));
        t["spec"]["restartPolicy"] = json!("Never");
        let o = obj(
            "Deployment",
            json!({"replicas": -1, "selector": {"matchLabels": {"app": "web"}}, "template": t}),
        );
        assert_eq!(
            check("Deployment", &o, None),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    #[test]
    fn selector_is_immutable() {
        let old = obj(
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web", "v": "2"}))}),
        );
        let new = obj(
            "Deployment",
            json!({"selector": {"matchLabels": {"app": "web", "v": "2"}}, "template": template(json!({"app": "web", "v": "2"}))}),
        );
        assert_eq!(
            check("Deployment", &new, Some(&old)),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
            ]
        );
    }

    #[test]
    fn statefulset_update_limits() {
        let old = obj(
            "StatefulSet",
            json!({"serviceName": "a", "selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}),
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert!(check("StatefulSet", &new, Some(&old)).is_empty());
        new["spec"]["serviceName"] = json!("b");
        assert_eq!(
            check("StatefulSet", &new, Some(&old)),
            [format!("spec: Forbidden: {}", super::STS_UPDATE_FORBIDDEN)]
        );
    }

    #[test]
    fn rolling_update_bounds() {
        let o = obj(
            "Deployment",
            json!({"strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}},
            "selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}),
        );
        assert_eq!(
            check("Deployment", &o, None),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
            ]
        );
    }

    #[test]
    fn replication_controller_defaults_its_selector() {
        let mut rc = json!({"metadata": {"name": "rc", "namespace": "d"}, "spec": {"template": template(json!({"app": "web"}))}});
        apply_defaults(
            Kind {
                group: "",
                kind: "ReplicationController",
            },
            &mut rc,
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "web"}));
        assert!(
            validate(
                Kind {
                    group: "",
                    kind: "ReplicationController"
                },
                true,
                &rc,
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn replication_controller_errors_name_each_field_in_kubes_order() {
        let kind = Kind {
            group: "",
            kind: "ReplicationController",
        };
        let mut rc = json!({"metadata": {"name": "rc", "namespace": "d"}, "spec": {
            "replicas": -1, "minReadySeconds": -2, "selector": {"app": "other"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "restartPolicy": "Never", "activeDeadlineSeconds": 5,
                "containers": [{"name": "web", "image": "nginx"}]}}}});
        apply_defaults(kind, &mut rc);
        let errs: Vec<String> = validate(kind, true, &rc, None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "spec.minReadySeconds: Invalid value: -2: must be greater than or equal to 0",
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicationController is not Supported",
            ]
        );
        let empty = json!({"metadata": {"name": "rc", "namespace": "d"}, "spec": {}});
        let errs: Vec<String> = validate(kind, true, &empty, None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "spec.selector: Required value",
                "spec.template: Required value"
            ]
        );
    }
}
