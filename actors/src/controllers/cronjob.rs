//! The CronJob controller, as Kubernetes' `CronJobControllerV2`:
//!
//! - At each start time of `schedule` (in `timeZone`) a Job is made from
//!   `jobTemplate`, named `<cronjob>-<start time in minutes since the epoch>`:
//!   the name is the same however often the pass runs, so a restarted node
//!   never makes a start's Job twice.
//! - After a pause (the daemon down, the CronJob suspended) only the latest
//!   missed start runs, and only within `startingDeadlineSeconds` of it; more
//!   than 100 missed starts are reported (`TooManyMissedTimes`).
//! - `concurrencyPolicy`: Allow; Forbid makes no Job while one runs (the
//!   start waits, and runs when that Job ends if it is still the latest and
//!   within `startingDeadlineSeconds`, as in Kubernetes); Replace deletes the
//!   running Jobs first.
//! - Finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are deleted.
//! - Status: `active` (references to running Jobs), `lastScheduleTime`,
//!   `lastSuccessfulTime`.

use super::{Reconciler, SyncContext, SyncResult};
use crate::events::EventKind;
use peapod_core::deletion::{self, Propagation};
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::store::StoreError;
use peapod_core::{cron, writes};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The annotation with a Job's scheduled start time.
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The CronJob controller.
pub struct CronJobs;

impl Reconciler for CronJobs {
    fn name(&self) -> &'static str {
        "cronjob-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::cronjob()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        vec![kinds::job()]
    }

    /// A CronJob adopts nothing.
    fn selects(&self, _owner: &Value, _dependent: &Value) -> bool {
        false
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        Box::pin(async move { sync(&cx, &namespace, &name).await.map_err(|e| e.to_string()) })
    }
}

fn finished(job: &Value) -> Option<&'static str> {
    job["status"]["conditions"].as_array()?.iter().find_map(|c| {
        if c["status"] != "True" {
            return None;
        }
        match c["type"].as_str() {
            Some("Complete") => Some("Complete"),
            Some("Failed") => Some("Failed"),
            _ => None,
        }
    })
}

fn time_of(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
}

fn reference(job: &Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": object::name(job),
        "namespace": object::namespace(job), "uid": object::uid(job),
        "resourceVersion": job["metadata"]["resourceVersion"]})
}

/// Deletes a Job as `kubectl delete` would, its pods after it (background).
async fn delete_job(cx: &SyncContext, job: &Value) -> Result<(), StoreError> {
    writes::delete(&*cx.store, kinds::job(), job, Propagation::Background)
        .await
        .map(drop)
}

async fn sync(cx: &SyncContext, ns: &str, name: &str) -> Result<Option<Duration>, StoreError> {
    let store = &*cx.store;
    let cj = match store.get(&kinds::cronjob().resource(), ns, name).await {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if object::deletion_timestamp(&cj).is_some() {
        return Ok(None);
    }
    let uid = object::uid(&cj).to_string();
    let (jobs, _) = store.list(&kinds::job().resource(), Some(ns)).await?;
    let mut jobs: Vec<Value> = jobs
        .into_iter()
        .filter(|j| deletion::owner_refs(j).iter().any(|r| r.controller && r.uid == uid))
        .filter(|j| object::deletion_timestamp(j).is_none())
        .collect();
    jobs.sort_by_key(|j| j["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string());
    let mut status = cj["status"].clone();
    if !status.is_object() {
        status = json!({});
    }

    // Finished Jobs: record them, keep the history limits.
    let seen: Vec<String> = status["active"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(str::to_string))
        .collect();
    for j in &jobs {
        if let Some(how) = finished(j) {
            if seen.iter().any(|u| u == object::uid(j)) {
                cx.events.object_event(
                    &cj,
                    EventKind::Normal,
                    "SawCompletedJob",
                    format!("Saw completed job: {}, condition: {how}", object::name(j)),
                );
            }
            if how == "Complete" {
                let t = j["status"]["completionTime"].clone();
                if time_of(&t) > time_of(&status["lastSuccessfulTime"]) {
                    status["lastSuccessfulTime"] = t;
                }
            }
        }
    }
    for (how, field) in [
        ("Complete", "successfulJobsHistoryLimit"),
        ("Failed", "failedJobsHistoryLimit"),
    ] {
        let limit = cj["spec"][field]
            .as_i64()
            .unwrap_or(if how == "Complete" { 3 } else { 1 })
            .max(0) as usize;
        let done: Vec<&Value> = jobs.iter().filter(|j| finished(j) == Some(how)).collect();
        if done.len() > limit {
            for j in &done[..done.len() - limit] {
                delete_job(cx, j).await?;
                cx.events.object_event(
                    &cj,
                    EventKind::Normal,
                    "SuccessfulDelete",
                    format!("Deleted job {}", object::name(j)),
                );
            }
        }
    }
    let mut active: Vec<Value> = jobs.iter().filter(|j| finished(j).is_none()).cloned().collect();

    // Is a start due?
    let (Ok(schedule), Ok(tz)) = (
        cron::parse(cj["spec"]["schedule"].as_str().unwrap_or("")),
        cron::zone(cj["spec"]["timeZone"].as_str()),
    ) else {
        return Ok(None);
    };
    let now = chrono::Utc::now();
    let since = time_of(&status["lastScheduleTime"])
        .or_else(|| time_of(&cj["metadata"]["creationTimestamp"]))
        .unwrap_or(now);
    let again = cron::next_after(&schedule, &tz, now)
        .map(|t| (t - now).to_std().unwrap_or_default() + Duration::from_millis(200));
    if cj["spec"]["suspend"] != true {
        let (due, missed) = cron::most_recent(&schedule, &tz, since, now);
        if missed > cron::MAX_MISSED {
            cx.events.object_event(
                &cj,
                EventKind::Warning,
                "TooManyMissedTimes",
                "too many missed start times: set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
            );
        }
        if let Some(due) = due {
            let deadline = cj["spec"]["startingDeadlineSeconds"].as_i64();
            let too_late = deadline.is_some_and(|d| {
                due.checked_add_signed(chrono::TimeDelta::try_seconds(d).unwrap_or(chrono::TimeDelta::MAX))
                    .is_some_and(|last| last < now)
            });
            let policy = cj["spec"]["concurrencyPolicy"].as_str().unwrap_or("Allow");
            if too_late {
                cx.events.object_event(
                    &cj,
                    EventKind::Warning,
                    "MissSchedule",
                    format!(
                        "Missed scheduled time to start a job: {}",
                        due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                );
            } else if policy == "Forbid" && !active.is_empty() {
                // The running Job's end starts a pass (it is a dependent).
                cx.events.object_event(
                    &cj,
                    EventKind::Normal,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                );
            } else {
                if policy == "Replace" {
                    for j in active.drain(..) {
                        delete_job(cx, &j).await?;
                        cx.events.object_event(
                            &cj,
                            EventKind::Normal,
                            "SuccessfulDelete",
                            format!("Deleted job {}", object::name(&j)),
                        );
                    }
                }
                let job_name = format!("{name}-{}", due.timestamp().div_euclid(60));
                let template = &cj["spec"]["jobTemplate"];
                let mut meta = json!({"name": job_name, "namespace": ns,
                    "ownerReferences": [super::replicaset::controller_ref(&cj)]});
                for f in ["labels", "annotations"] {
                    if !template["metadata"][f].is_null() {
                        meta[f] = template["metadata"][f].clone();
                    }
                }
                meta["annotations"][SCHEDULED] = json!(due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]});
                match writes::create(store, kinds::job(), job).await {
                    Ok(j) => {
                        cx.events.object_event(
                            &cj,
                            EventKind::Normal,
                            "SuccessfulCreate",
                            format!("Created job {job_name}"),
                        );
                        active.push(j);
                    }
                    // Made already (by a pass before a restart): nothing to do.
                    Err(writes::CreateError::Store(StoreError::AlreadyExists { .. })) => {
                        if let Ok(j) = store.get(&kinds::job().resource(), ns, &job_name).await {
                            if finished(&j).is_none() && !active.iter().any(|a| object::uid(a) == object::uid(&j)) {
                                active.push(j);
                            }
                        }
                    }
                    Err(e) => {
                        cx.events.object_event(
                            &cj,
                            EventKind::Warning,
                            "FailedCreate",
                            format!("Error creating job: {e}"),
                        );
                        return Err(StoreError::Invalid(e.to_string()));
                    }
                }
                status["lastScheduleTime"] = json!(due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
        }
    }
    let refs: Vec<Value> = active.iter().map(reference).collect();
    if refs.is_empty() {
        if let Some(m) = status.as_object_mut() {
            m.remove("active");
        }
    } else {
        status["active"] = Value::Array(refs);
    }
    if cj["status"] != status {
        writes::modify(store, kinds::cronjob(), &cj, |o| {
            o["status"] = status.clone();
            true
        })
        .await?;
    }
    Ok(again)
}
