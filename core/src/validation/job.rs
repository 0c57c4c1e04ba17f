//! Job (batch/v1) defaulting and validation, as Kubernetes' `SetDefaults_Job`
//! and `ValidateJob`: the generated selector (`batch.kubernetes.io/controller-uid`),
//! completions and parallelism, backoffLimit 6, completionMode, podFailurePolicy.

use super::workloads::admit_template;
use super::{decode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use serde_json::{json, Value};

/// The label (and selector) that ties a Job's pods to it.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label with the Job's name on its pods.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// An Indexed Job pod's index (label and annotation).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn non_negative(spec: &Value, field: &str, errs: &mut FieldErrors) {
    match &spec[field] {
        Value::Null => {}
        v => match v.as_i64() {
            Some(n) if n >= 0 => {}
            _ => errs.push(FieldError::invalid(
                format!("spec.{field}"),
                v,
                "must be greater than or equal to 0",
            )),
        },
    }
}

/// Defaults and validates a new Job (its uid is already set, for the selector).
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let job: k8s_openapi::api::batch::v1::Job = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&job.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    if !obj["spec"].is_object() {
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = &mut obj["spec"];
    if spec["manualSelector"] != true {
        if !spec["selector"].is_null() {
            errs.push(FieldError::invalid(
                "spec.selector",
                &spec["selector"],
                "`selector` will be auto-generated",
            ));
        }
        spec["selector"] = json!({"matchLabels": {CONTROLLER_UID: uid}});
        for (k, v) in [
            (CONTROLLER_UID, &uid),
            (JOB_NAME, &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            spec["template"]["metadata"]["labels"][k] = json!(v);
        }
    }
    if spec["parallelism"].is_null() {
        spec["parallelism"] = json!(1);
    }
    if spec["completions"].is_null() && spec["parallelism"] == 1 && spec["completionMode"] != "Indexed" {
        spec["completions"] = json!(1);
    }
    if spec["completionMode"].is_null() {
        spec["completionMode"] = json!("NonIndexed");
    }
    if spec["suspend"].is_null() {
        spec["suspend"] = json!(false);
    }
    if spec["backoffLimit"].is_null() {
        spec["backoffLimit"] = json!(if spec["backoffLimitPerIndex"].is_null() {
            6
        } else {
            i64::from(i32::MAX)
        });
    }
    if spec["podReplacementPolicy"].is_null() {
        spec["podReplacementPolicy"] = json!(if spec["podFailurePolicy"].is_null() {
            "TerminatingOrFailed"
        } else {
            "Failed"
        });
    }
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        non_negative(spec, f, &mut errs);
    }
    if let Some(d) = spec["activeDeadlineSeconds"].as_i64() {
        if d <= 0 {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                d,
                "must be greater than 0",
            ));
        }
    }
    match spec["completionMode"].as_str() {
        Some("NonIndexed") => {
            if !spec["backoffLimitPerIndex"].is_null() {
                errs.push(FieldError::invalid(
                    "spec.backoffLimitPerIndex",
                    &spec["backoffLimitPerIndex"],
                    "requires indexed completion mode",
                ));
            }
        }
        Some("Indexed") => {
            if spec["completions"].is_null() {
                errs.push(FieldError {
                    detail: "when completion mode is Indexed".into(),
                    ..FieldError::required("spec.completions")
                });
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.completionMode",
            other.unwrap_or(""),
            &["NonIndexed", "Indexed"],
        )),
    }
    for (i, rule) in spec["podFailurePolicy"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.podFailurePolicy.rules[{i}]");
        let action = rule["action"].as_str().unwrap_or("");
        if !["FailJob", "Ignore", "Count", "FailIndex"].contains(&action) {
            errs.push(FieldError::not_supported(
                format!("{path}.action"),
                action,
                &["Count", "FailIndex", "FailJob", "Ignore"],
            ));
        }
        let codes = !rule["onExitCodes"].is_null();
        let conds = rule["onPodConditions"].as_array().is_some_and(|c| !c.is_empty());
        if codes == conds {
            errs.push(FieldError::invalid(
                &path,
                "",
                "specifying one of OnExitCodes and OnPodConditions is required",
            ));
        }
        if codes {
            let op = rule["onExitCodes"]["operator"].as_str().unwrap_or("");
            if !["In", "NotIn"].contains(&op) {
                errs.push(FieldError::not_supported(
                    format!("{path}.onExitCodes.operator"),
                    op,
                    &["In", "NotIn"],
                ));
            }
            let values = rule["onExitCodes"]["values"].as_array().cloned().unwrap_or_default();
            if values.is_empty() {
                errs.push(FieldError::required(format!("{path}.onExitCodes.values")));
            }
            if op == "In" && values.iter().any(|v| v.as_i64() == Some(0)) {
                errs.push(FieldError::invalid(
                    format!("{path}.onExitCodes.values"),
                    0,
                    "must not be 0 for the In operator",
                ));
            }
        }
    }
    let restart = spec["template"]["spec"]["restartPolicy"].as_str().unwrap_or("");
    if restart.is_empty() || restart == "Always" {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            if restart.is_empty() { "Always" } else { restart },
            &["OnFailure", "Never"],
        ));
    }
    if !spec["podFailurePolicy"].is_null() && restart != "Never" {
        errs.push(FieldError::invalid(
            "spec.template.spec.restartPolicy",
            restart,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    if !errs.is_empty() {
        return errs.into_result();
    }
    admit_template(obj, &["OnFailure", "Never"], &mut errs);
    obj["status"] = json!({});
    errs.into_result()
}

/// Validates a Job update: the template and completions are immutable;
/// parallelism, suspend and activeDeadlineSeconds may change.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: k8s_openapi::api::batch::v1::Job = decode(old)?;
    let n: k8s_openapi::api::batch::v1::Job = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    // Fields a manifest applied again leaves out keep their stored values.
    for f in [
        "selector",
        "parallelism",
        "completions",
        "completionMode",
        "suspend",
        "backoffLimit",
        "podReplacementPolicy",
    ] {
        if new["spec"][f].is_null() {
            new["spec"][f] = old["spec"][f].clone();
        }
    }
    if let Some(labels) = old["spec"]["template"]["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if new["spec"]["template"]["metadata"]["labels"][k].is_null() {
                new["spec"]["template"]["metadata"]["labels"][k] = v.clone();
            }
        }
    }
    let mut template = FieldErrors::default();
    admit_template(new, &["OnFailure", "Never"], &mut template);
    errs.0.extend(template.0);
    for f in [
        "template",
        "selector",
        "completions",
        "completionMode",
        "manualSelector",
        "podFailurePolicy",
        "backoffLimitPerIndex",
    ] {
        if old["spec"][f] != new["spec"][f]
            && !(f == "completions"
                && old["spec"]["completionMode"] == "Indexed"
                && new["spec"]["completions"] == new["spec"]["parallelism"])
        {
            errs.push(FieldError::invalid(
                format!("spec.{f}"),
                &new["spec"][f],
                "field is immutable",
            ));
        }
    }
    new["status"] = old["status"].clone();
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        for (k, v) in spec.as_object().unwrap() {
            j["spec"][k] = v.clone();
        }
        j
    }

    #[test]
    fn defaults_and_the_generated_selector() {
        let mut j = job(json!({}));
        admit_create(&mut j).unwrap();
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {CONTROLLER_UID: "u-1"}}));
        assert_eq!(j["spec"]["template"]["metadata"]["labels"][JOB_NAME], "pi");
        let mut j = job(json!({"parallelism": 3}));
        admit_create(&mut j).unwrap();
        assert!(j["spec"]["completions"].is_null(), "a work queue: no completions");
    }

    #[test]
    fn bad_jobs_are_named() {
        let mut j = job(json!({}));
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let err = admit_create(&mut j).unwrap_err().to_string();
        assert!(err.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""), "{err}");
        let mut j = job(json!({"completionMode": "Indexed", "parallelism": 2}));
        assert!(admit_create(&mut j)
            .unwrap_err()
            .to_string()
            .contains("spec.completions: Required value"));
        let mut j = job(json!({"backoffLimitPerIndex": 1}));
        assert!(admit_create(&mut j)
            .unwrap_err()
            .to_string()
            .contains("requires indexed completion mode"));
        let mut j = job(
            json!({"podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0]}}]}}),
        );
        assert!(admit_create(&mut j)
            .unwrap_err()
            .to_string()
            .contains("must not be 0 for the In operator"));
    }

    #[test]
    fn the_template_is_immutable() {
        let mut old = job(json!({"completions": 3}));
        admit_create(&mut old).unwrap();
        let mut new = old.clone();
        new["spec"]["parallelism"] = json!(2);
        new["spec"]["suspend"] = json!(true);
        admit_update(&old, &mut new).unwrap();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        let err = admit_update(&old, &mut new).unwrap_err().to_string();
        assert!(
            err.contains("spec.template: Invalid value") && err.contains("field is immutable"),
            "{err}"
        );
    }
}
