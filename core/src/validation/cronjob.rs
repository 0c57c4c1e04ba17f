//! CronJob (batch/v1) defaulting and validation: the schedule and timeZone
//! through [`crate::cron`], concurrencyPolicy Allow/Forbid/Replace, history
//! limits 3 and 1, and the job template checked as a Job.

use super::{decode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use serde_json::{json, Value};

/// Defaults and validates a new CronJob.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let cj: k8s_openapi::api::batch::v1::CronJob = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&cj.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    // Its Jobs are named <name>-<minutes>, which must stay a valid name.
    if name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            &name,
            "must be no more than 52 characters",
        ));
    }
    if !obj["spec"].is_object() {
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    let spec = &mut obj["spec"];
    match spec["schedule"].as_str() {
        None | Some("") => errs.push(FieldError::required("spec.schedule")),
        Some(s) => {
            if let Err(e) = crate::cron::parse(s) {
                errs.push(FieldError::invalid("spec.schedule", s, e));
            }
        }
    }
    if let Some(tz) = spec["timeZone"].as_str() {
        if let Err(e) = crate::cron::zone(Some(tz)) {
            errs.push(FieldError::invalid("spec.timeZone", tz, e));
        }
    }
    if spec["concurrencyPolicy"].is_null() {
        spec["concurrencyPolicy"] = json!("Allow");
    }
    let policy = spec["concurrencyPolicy"].as_str().unwrap_or("");
    if !["Allow", "Forbid", "Replace"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    for (f, d) in [("successfulJobsHistoryLimit", 3), ("failedJobsHistoryLimit", 1)] {
        if spec[f].is_null() {
            spec[f] = json!(d);
        }
    }
    if spec["suspend"].is_null() {
        spec["suspend"] = json!(false);
    }
    for f in [
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
        "startingDeadlineSeconds",
    ] {
        if let Some(n) = spec[f].as_i64() {
            if n < 0 {
                errs.push(FieldError::invalid(
                    format!("spec.{f}"),
                    n,
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    // The template, checked as the Job it makes would be.
    if spec["jobTemplate"]["spec"].is_object() {
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": format!("{name}-0"), "namespace": obj["metadata"]["namespace"], "uid": "template"},
            "spec": obj["spec"]["jobTemplate"]["spec"].clone()});
        if let Err(e) = super::job::admit_create(&mut job) {
            for mut fe in e.0 {
                fe.path = fe.path.replacen("spec.", "spec.jobTemplate.spec.", 1);
                errs.push(fe);
            }
        }
    } else {
        errs.push(FieldError::required("spec.jobTemplate.spec"));
    }
    obj["status"] = json!({});
    errs.into_result()
}

/// Validates a CronJob update.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    admit_create(new)?;
    new["status"] = old["status"].clone();
    let mut errs = FieldErrors::default();
    if let (Ok(o), Ok(n)) = (decode(&old["metadata"]), decode(&new["metadata"])) {
        validate_meta_update(&o, &n, &mut errs);
    }
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cj(spec: Value) -> Value {
        let mut c = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "default"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        for (k, v) in spec.as_object().unwrap() {
            c["spec"][k] = v.clone();
        }
        c
    }

    #[test]
    fn defaults_and_errors() {
        let mut c = cj(json!({}));
        admit_create(&mut c).unwrap();
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(c["spec"]["failedJobsHistoryLimit"], 1);
        assert!(
            c["spec"]["jobTemplate"]["spec"]["selector"].is_null(),
            "the template is kept as written"
        );
        let mut c = cj(json!({"schedule": "* * *", "timeZone": "Nowhere/City", "concurrencyPolicy": "Sometimes"}));
        let err = admit_create(&mut c).unwrap_err().to_string();
        assert!(
            err.contains("spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields"),
            "{err}"
        );
        assert!(
            err.contains("spec.timeZone: Invalid value: \"Nowhere/City\": unknown time zone Nowhere/City"),
            "{err}"
        );
        assert!(
            err.contains("spec.concurrencyPolicy: Unsupported value: \"Sometimes\""),
            "{err}"
        );
        let mut c = cj(json!({}));
        c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let err = admit_create(&mut c).unwrap_err().to_string();
        assert!(
            err.contains("spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value"),
            "{err}"
        );
    }
}
