//! Jobs and CronJobs, as `pkg/apis/batch/validation`, and the selector the Job registry
//! generates on create.

use super::meta::FIELD_IMMUTABLE;
use super::pod::validate_pod_template_spec;
use super::selector::{go_label_selector, matches, validate_label_selector};
use super::{Errs, child, nonnegative, one_of, s};
use crate::{FieldError, names};
use serde_json::{Value, json};

/// Gives a Job without `manualSelector: true` the selector and pod labels Kubernetes
/// generates from its uid (`batch.kubernetes.io/controller-uid`, `job-name`, ...). Called by
/// defaulting when the object has a uid; idempotent.
pub fn prepare_job_for_create(job: &mut Value, uid: &str) {
    let name = job
        .get("metadata")
        .map(|m| s(m, "name").to_string())
        .unwrap_or_default();
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true)
        || spec.get("selector").is_some_and(|v| !v.is_null())
    {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if !template.is_object() {
        return;
    }
    let meta = template
        .as_object_mut()
        .expect("object")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid),
            ("job-name", name.as_str()),
        ] {
            labels.insert(k.into(), json!(v));
        }
    }
}

fn job_spec(spec: &Value, path: &str, errs: &mut Errs) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        nonnegative(spec, f, &child(path, f), errs);
    }
    one_of(
        spec,
        "completionMode",
        &child(path, "completionMode"),
        &["NonIndexed", "Indexed"],
        false,
        errs,
    );
    if s(spec, "completionMode") == "Indexed" && spec.get("completions").is_none_or(Value::is_null)
    {
        errs.push(FieldError::required(
            child(path, "completions"),
            "when completion mode is Indexed",
        ));
    }
    one_of(
        spec,
        "podReplacementPolicy",
        &child(path, "podReplacementPolicy"),
        &["Failed", "TerminatingOrFailed"],
        false,
        errs,
    );
    let tp = child(path, "template");
    match spec.get("template").filter(|t| !t.is_null()) {
        None => errs.push(FieldError::required(&tp, "")),
        Some(t) => {
            validate_pod_template_spec(t, &tp, errs);
            let rp = t.get("spec").map(|ps| s(ps, "restartPolicy")).unwrap_or("");
            if rp != "OnFailure" && rp != "Never" {
                errs.push(FieldError::not_supported(
                    child(&tp, "spec.restartPolicy"),
                    json!(rp),
                    &["OnFailure", "Never"],
                ));
            }
        }
    }
}

pub(crate) fn validate_job(job: &Value, old: Option<&Value>, errs: &mut Errs) {
    let empty = json!({});
    let spec = job.get("spec").unwrap_or(&empty);
    job_spec(spec, "spec", errs);
    match spec.get("selector").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let sel_errs = validate_label_selector(sel, "spec.selector");
            let valid = sel_errs.is_empty();
            errs.extend(sel_errs);
            let labels = spec
                .get("template")
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels"));
            if valid && !matches(sel, labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    labels.cloned().unwrap_or(json!({})),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(old) = old {
        let old_spec = old.get("spec").unwrap_or(&empty);
        if spec.get("selector") != old_spec.get("selector") {
            errs.push(FieldError::invalid(
                "spec.selector",
                go_label_selector(spec.get("selector").unwrap_or(&Value::Null)),
                FIELD_IMMUTABLE,
            ));
        }
        if spec.get("template") != old_spec.get("template")
            && !spec
                .get("suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        {
            errs.push(FieldError::invalid(
                "spec.template",
                crate::go_repr("core.PodTemplateSpec{...}"),
                FIELD_IMMUTABLE,
            ));
        }
        if s(spec, "completionMode") != "Indexed" {
            super::immutable(spec, old_spec, "completions", "spec.completions", errs);
        }
        super::immutable(
            spec,
            old_spec,
            "completionMode",
            "spec.completionMode",
            errs,
        );
    }
}

pub(crate) fn validate_cron_job(cj: &Value, errs: &mut Errs) {
    let name = cj.get("metadata").map(|m| s(m, "name")).unwrap_or("");
    if name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be no more than 52 characters",
        ));
    }
    let empty = json!({});
    let spec = cj.get("spec").unwrap_or(&empty);
    let schedule = s(spec, "schedule");
    let tz = spec.get("timeZone").and_then(Value::as_str);
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        if let Err(e) = crate::cron::parse_schedule(schedule) {
            errs.push(FieldError::invalid("spec.schedule", json!(schedule), e));
        }
        if schedule.contains("TZ") {
            let msg = if tz.is_some() {
                "cannot use both timeZone field and TZ or CRON_TZ in schedule"
            } else {
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            };
            errs.push(FieldError::invalid("spec.schedule", json!(schedule), msg));
        }
    }
    if let Some(tz) = tz {
        if tz.is_empty() {
            errs.push(FieldError::invalid(
                "spec.timeZone",
                json!(tz),
                "timeZone must be nil or non-empty string",
            ));
        } else if tz.eq_ignore_ascii_case("local") {
            errs.push(FieldError::invalid(
                "spec.timeZone",
                json!(tz),
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ));
        } else if jiff::tz::TimeZone::get(tz).is_err() {
            errs.push(FieldError::invalid(
                "spec.timeZone",
                json!(tz),
                format!("unknown time zone {tz}"),
            ));
        }
    }
    one_of(
        spec,
        "concurrencyPolicy",
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        true,
        errs,
    );
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        nonnegative(spec, f, &child("spec", f), errs);
    }
    let jt = spec.get("jobTemplate").unwrap_or(&empty);
    if let Some(meta) = jt.get("metadata") {
        errs.extend(names::validate_labels(
            meta.get("labels"),
            "spec.jobTemplate.metadata.labels",
        ));
        errs.extend(names::validate_annotations(
            meta.get("annotations"),
            "spec.jobTemplate.metadata.annotations",
        ));
    }
    job_spec(
        jt.get("spec").unwrap_or(&empty),
        "spec.jobTemplate.spec",
        errs,
    );
}

#[cfg(test)]
mod tests {
    use crate::{Kind, apply_defaults, validate};
    use serde_json::{Value, json};

    fn job(spec: Value) -> Value {
        let mut j =
            json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u-1"}, "spec": spec});
        apply_defaults(
            Kind {
                group: "batch",
                kind: "Job",
            },
            &mut j,
        );
        j
    }

    fn check(kind: &str, o: &Value, old: Option<&Value>) -> Vec<String> {
        validate(
            Kind {
                group: "batch",
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

    #[test]
    fn job_gets_generated_selector() {
        let j = job(
            json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}),
        );
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(
            j["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "pi"
        );
        assert_eq!(check("Job", &j, None), Vec::<String>::new());
    }

    #[test]
    fn job_restart_policy_must_not_be_always() {
        let j =
            job(json!({"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}}));
        assert_eq!(
            check("Job", &j, None),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
    }

    #[test]
    fn job_template_is_immutable() {
        let old = job(
            json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}),
        );
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        assert_eq!(
            check("Job", &new, Some(&old)),
            ["spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"]
        );
    }

    #[test]
    fn cronjob_schedule_and_policy() {
        let mut cj = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"schedule": "* * * *", "concurrencyPolicy": "Sometimes",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "b"}]}}}}}});
        apply_defaults(
            Kind {
                group: "batch",
                kind: "CronJob",
            },
            &mut cj,
        );
        assert_eq!(
            check("CronJob", &cj, None),
            [
                "spec.schedule: Invalid value: \"* * * *\": expected exactly 5 fields, found 4: [* * * *]",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            ]
        );
        cj["spec"]["schedule"] = json!("*/5 * * * *");
        cj["spec"]["concurrencyPolicy"] = json!("Forbid");
        assert!(check("CronJob", &cj, None).is_empty());
        cj["spec"].as_object_mut().unwrap().remove("schedule");
        assert_eq!(
            check("CronJob", &cj, None),
            ["spec.schedule: Required value"]
        );
    }

    #[test]
    fn cronjob_name_limit() {
        let mut cj = json!({"metadata": {"name": "a".repeat(53), "namespace": "d"}, "spec": {"schedule": "@daily",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "b"}]}}}}}});
        apply_defaults(
            Kind {
                group: "batch",
                kind: "CronJob",
            },
            &mut cj,
        );
        assert_eq!(
            check("CronJob", &cj, None),
            [format!(
                "metadata.name: Invalid value: \"{}\": must be no more than 52 characters",
                "a".repeat(53)
            )]
        );
    }
}
