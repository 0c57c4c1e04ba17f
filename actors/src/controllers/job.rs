//! The Job controller, as Kubernetes' `JobController`:
//!
//! - Pods run to completion (`completions`, `parallelism`; no completions: a
//!   work queue, done when one succeeds and none runs). `completionMode:
//!   Indexed` gives each pod an index (`<job>-<index>-xxxxx`, hostname
//!   `<job>-<index>`, the `batch.kubernetes.io/job-completion-index`
//!   annotation and label, `JOB_COMPLETION_INDEX` from it) and counts
//!   `completedIndexes`; `backoffLimitPerIndex` fails an index, not the Job.
//! - Finished pods are counted durably, as Kubernetes does with its tracking
//!   finalizer: each pod carries `batch.kubernetes.io/job-tracking`; a
//!   finished one is first listed in `status.uncountedTerminatedPods`, then
//!   loses the finalizer, then moves to `succeeded`/`failed`. A deleted pod
//!   does not take its count with it, and a crash between the steps counts
//!   nothing twice.
//! - Failures: `backoffLimit` (failed pods, plus container restarts under
//!   OnFailure), the exponential back-off before a new pod (10 s doubling, at
//!   most 6 min), `podFailurePolicy` (FailJob, FailIndex, Ignore, Count on
//!   exit codes or pod conditions), `activeDeadlineSeconds`; the Job gets
//!   `FailureTarget` and then `Failed`, success `SuccessCriteriaMet` and then
//!   `Complete`, as Kubernetes 1.31+ sets them.
//! - `suspend` deletes the running pods (condition Suspended);
//!   `ttlSecondsAfterFinished` deletes a finished Job (its pods go with it).

use super::replicaset::{delete_pod, is_active, pod_from_template, ready_since};
use super::{claim, Reconciler, SyncContext, SyncResult};
use crate::events::EventKind;
use peapod_core::deletion;
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::store::StoreError;
use peapod_core::validation::job::COMPLETION_INDEX;
use peapod_core::validation::workloads::label_selector;
use peapod_core::writes;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The finalizer that keeps a Job's pod until the Job counted it.
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
/// The first back-off after a failed pod (Kubernetes' DefaultJobPodFailureBackOff).
const BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off (MaxJobPodFailureBackOff).
const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// The Job controller.
pub struct Jobs;

impl Reconciler for Jobs {
    fn name(&self) -> &'static str {
        "job-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::job()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        vec![kinds::pod()]
    }

    fn selects(&self, owner: &Value, dependent: &Value) -> bool {
        object::deletion_timestamp(owner).is_none()
            && label_selector(&owner["spec"]["selector"])
                .is_ok_and(|s| !s.is_empty() && s.matches(&object::labels(dependent)))
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        Box::pin(async move { sync(&cx, &namespace, &name).await.map_err(|e| e.to_string()) })
    }
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn index_of(p: &Value) -> Option<i64> {
    p["metadata"]["annotations"][COMPLETION_INDEX]
        .as_str()
        .and_then(|i| i.parse().ok())
}

fn has_tracking(p: &Value) -> bool {
    deletion::finalizers(p).iter().any(|f| f == TRACKING)
}

fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

fn finished(job: &Value) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

/// Sets a condition (replacing one of its type), keeping its transition time if unchanged.
fn set_condition(status: &mut Value, type_: &str, cond: &str, reason: &str, message: &str) {
    let now = object::now_rfc3339();
    let mut list: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let since = list
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == cond)
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
        .unwrap_or_else(|| now.clone());
    list.retain(|c| c["type"] != type_);
    list.push(
        json!({"type": type_, "status": cond, "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": since}),
    );
    status["conditions"] = Value::Array(list);
}

/// Indexes as Kubernetes writes them: `0-2,4`.
pub fn format_indexes(set: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().peekable();
    while let Some(&start) = it.next() {
        let mut end = start;
        while it.peek().is_some_and(|n| **n == end + 1) {
            end = *it.next().unwrap_or(&end);
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// The indexes of `0-2,4`.
pub fn parse_indexes(text: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i64>().ok()),
        }
    }
    out
}

/// What the pod failure policy says about a failed pod: its action and the message.
pub fn failure_policy(job: &Value, pod: &Value) -> Option<(String, String)> {
    let statuses: Vec<&Value> = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["status"]["initContainerStatuses"].as_array().into_iter().flatten())
        .collect();
    for (i, rule) in job["spec"]["podFailurePolicy"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let action = rule["action"].as_str().unwrap_or("").to_string();
        if let Some(on) = rule["onExitCodes"].as_object() {
            let values: Vec<i64> = on
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            let container = on.get("containerName").and_then(Value::as_str);
            let is_in = on.get("operator").and_then(Value::as_str) == Some("In");
            for c in &statuses {
                if container.is_some_and(|n| c["name"] != n) {
                    continue;
                }
                let Some(code) = c["state"]["terminated"]["exitCode"].as_i64() else {
                    continue;
                };
                if code != 0 && values.contains(&code) == is_in {
                    let message = format!(
                        "Container {} for pod {}/{} failed with exit code {code} matching {action} rule at index {i}",
                        c["name"].as_str().unwrap_or(""),
                        object::namespace(pod),
                        object::name(pod)
                    );
                    return Some((action, message));
                }
            }
        }
        for pc in rule["onPodConditions"].as_array().into_iter().flatten() {
            let want = pc["status"].as_str().unwrap_or("True");
            let hit = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == pc["type"] && c["status"] == want);
            if hit {
                let message = format!(
                    "Pod {}/{} has condition {} matching {action} rule at index {i}",
                    object::namespace(pod),
                    object::name(pod),
                    pc["type"].as_str().unwrap_or("")
                );
                return Some((action, message));
            }
        }
    }
    None
}

/// The back-off before the next pod after `failures` consecutive failures.
pub fn backoff(failures: i64) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let shift = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(16);
    BACKOFF.saturating_mul(1u32 << shift).min(MAX_BACKOFF)
}

/// When the pod ended (its last container's finish), if it did.
fn finished_at(p: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .filter_map(|c| c["state"]["terminated"]["finishedAt"].as_str())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .max()
}

/// A new pod of the Job, for `index` in Indexed mode.
fn new_pod(job: &Value, index: Option<i64>) -> Value {
    let mut pod = pod_from_template(job);
    pod["metadata"]["finalizers"] = json!([TRACKING]);
    if let Some(i) = index {
        let name = object::name(job);
        pod["metadata"]["generateName"] = json!(format!("{name}-{i}-"));
        pod["metadata"]["annotations"][COMPLETION_INDEX] = json!(i.to_string());
        pod["metadata"]["labels"][COMPLETION_INDEX] = json!(i.to_string());
        pod["spec"]["hostname"] = json!(format!("{name}-{i}"));
        let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef":
            {"fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
        for list in ["containers", "initContainers"] {
            for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
                let mut vars = c["env"].as_array().cloned().unwrap_or_default();
                vars.retain(|v| v["name"] != "JOB_COMPLETION_INDEX");
                vars.insert(0, env.clone());
                c["env"] = Value::Array(vars);
            }
        }
    }
    pod
}

async fn write_status(cx: &SyncContext, job: &Value, status: &Value) -> Result<Value, StoreError> {
    if job["status"] == *status {
        return Ok(job.clone());
    }
    let out = writes::modify(&*cx.store, kinds::job(), job, |o| {
        o["status"] = status.clone();
        true
    })
    .await?;
    Ok(out.unwrap_or_else(|| job.clone()))
}

async fn release(cx: &SyncContext, pod: &Value) -> Result<(), StoreError> {
    writes::modify(&*cx.store, kinds::pod(), pod, |p| {
        deletion::remove_finalizer(p, TRACKING)
    })
    .await
    .map(drop)
}

/// The pods of a Job that is gone lose the tracking finalizer (the garbage
/// collector deletes them).
async fn release_orphans(cx: &SyncContext, ns: &str, name: &str) -> Result<(), StoreError> {
    let (pods, _) = cx.store.list(&kinds::pod().resource(), Some(ns)).await?;
    for p in pods.iter().filter(|p| has_tracking(p)) {
        let ours = deletion::owner_refs(p)
            .iter()
            .any(|r| r.controller && r.kind == "Job" && r.name == name);
        if ours {
            release(cx, p).await?;
        }
    }
    Ok(())
}

async fn sync(cx: &SyncContext, ns: &str, name: &str) -> Result<Option<Duration>, StoreError> {
    let store = &*cx.store;
    let job = match store.get(&kinds::job().resource(), ns, name).await {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => {
            release_orphans(cx, ns, name).await?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let Ok(selector) = label_selector(&job["spec"]["selector"]) else {
        return Ok(None);
    };
    let (pods, _) = store.list(&kinds::pod().resource(), Some(ns)).await?;
    let owned = claim(store, kinds::pod(), &job, &selector, pods).await?;
    let indexed = job["spec"]["completionMode"] == "Indexed";
    let completions = job["spec"]["completions"].as_i64();
    let mut status = job["status"].clone();
    if !status.is_object() {
        status = json!({});
    }

    // 1. Count the pods that finished, durably (see the module's doc).
    let mut uncounted_ok: Vec<String> = string_list(&status["uncountedTerminatedPods"]["succeeded"]);
    let mut uncounted_failed: Vec<String> = string_list(&status["uncountedTerminatedPods"]["failed"]);
    let mut completed: BTreeSet<i64> = parse_indexes(status["completedIndexes"].as_str().unwrap_or(""));
    let mut failed_indexes: BTreeSet<i64> = parse_indexes(status["failedIndexes"].as_str().unwrap_or(""));
    let per_index = job["spec"]["backoffLimitPerIndex"].as_i64();
    let mut fail_job: Option<(String, String)> = None;
    let mut to_release: Vec<&Value> = Vec::new();
    let mut newly = false;
    for p in owned.iter().filter(|p| has_tracking(p)) {
        let uid = object::uid(p).to_string();
        let done =
            matches!(phase(p), "Succeeded" | "Failed") || (object::deletion_timestamp(p).is_some() && !is_running(p));
        if !done {
            continue;
        }
        to_release.push(p);
        if uncounted_ok.contains(&uid) || uncounted_failed.contains(&uid) {
            continue;
        }
        newly = true;
        if phase(p) == "Succeeded" {
            // Every success counts in `succeeded`; an index completes once.
            if let Some(i) = index_of(p).filter(|i| indexed && completions.is_some_and(|c| *i < c)) {
                completed.insert(i);
            }
            uncounted_ok.push(uid);
            continue;
        }
        match failure_policy(&job, p) {
            Some((action, _)) if action == "Ignore" => continue,
            Some((action, message)) if action == "FailJob" => {
                fail_job.get_or_insert(("PodFailurePolicy".into(), message));
            }
            Some((action, _)) if action == "FailIndex" => {
                failed_indexes.extend(index_of(p));
            }
            _ => {}
        }
        uncounted_failed.push(uid);
    }
    if newly {
        status["uncountedTerminatedPods"] = json!({"succeeded": uncounted_ok, "failed": uncounted_failed});
        if indexed {
            status["completedIndexes"] = json!(format_indexes(&completed));
        }
        write_status(cx, &job, &status).await?;
    }
    for p in &to_release {
        release(cx, p).await?;
    }
    let counted_ok = i64::try_from(uncounted_ok.len()).unwrap_or(0);
    let counted_failed = i64::try_from(uncounted_failed.len()).unwrap_or(0);
    if counted_ok + counted_failed > 0 {
        status["succeeded"] = json!(status["succeeded"].as_i64().unwrap_or(0) + counted_ok);
        status["failed"] = json!(status["failed"].as_i64().unwrap_or(0) + counted_failed);
    }
    if let Some(m) = status.as_object_mut() {
        m.remove("uncountedTerminatedPods");
    }
    let succeeded = status["succeeded"].as_i64().unwrap_or(0);
    let failed = status["failed"].as_i64().unwrap_or(0);
    let mut active: Vec<Value> = owned.iter().filter(|p| is_active(p)).cloned().collect();
    let now = chrono::Utc::now();
    let mut again: Option<Duration> = None;

    if finished(&job) {
        status["active"] = json!(0);
        let job = write_status(cx, &job, &status).await?;
        return ttl(cx, &job).await;
    }

    // 2. Per index failures (backoffLimitPerIndex).
    if let (true, Some(limit)) = (indexed, per_index) {
        for i in 0..completions.unwrap_or(0) {
            let fails = owned
                .iter()
                .filter(|p| index_of(p) == Some(i) && phase(p) == "Failed")
                .count() as i64;
            if fails > limit {
                failed_indexes.insert(i);
            }
        }
        if !failed_indexes.is_empty() {
            status["failedIndexes"] = json!(format_indexes(&failed_indexes));
        }
    }

    // 3. Has it failed?
    let restarts: i64 = if job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure" {
        active
            .iter()
            .flat_map(|p| p["status"]["containerStatuses"].as_array().into_iter().flatten())
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .sum()
    } else {
        0
    };
    let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let start = status["startTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc());
    let deadline = job["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .and_then(|d| start?.checked_add_signed(chrono::TimeDelta::try_seconds(d)?));
    let total = completions.unwrap_or(0);
    let max_failed = job["spec"]["maxFailedIndexes"].as_i64();
    let failure = fail_job
        .or_else(|| {
            (per_index.is_none() && failed + restarts > backoff_limit).then(|| {
                (
                    "BackoffLimitExceeded".to_string(),
                    "Job has reached the specified backoff limit".to_string(),
                )
            })
        })
        .or_else(|| {
            deadline.filter(|d| *d <= now).map(|_| {
                (
                    "DeadlineExceeded".to_string(),
                    "Job was active longer than specified deadline".to_string(),
                )
            })
        })
        .or_else(|| {
            max_failed.filter(|m| failed_indexes.len() as i64 > *m).map(|_| {
                (
                    "MaxFailedIndexesExceeded".to_string(),
                    "Job has exceeded the specified maximal number of failed indexes".to_string(),
                )
            })
        })
        .or_else(|| {
            (indexed
                && !failed_indexes.is_empty()
                && (completed.len() + failed_indexes.len()) as i64 >= total
                && active.is_empty())
            .then(|| ("FailedIndexes".to_string(), "Job has failed indexes".to_string()))
        });
    if let Some((reason, message)) = failure {
        for p in &active {
            delete_pod(cx, &job, p).await?;
        }
        set_condition(&mut status, "FailureTarget", "True", &reason, &message);
        set_condition(&mut status, "Failed", "True", &reason, &message);
        status["active"] = json!(0);
        if let Some(m) = status.as_object_mut() {
            m.remove("ready");
        }
        cx.events.object_event(&job, EventKind::Warning, &reason, message);
        let job = write_status(cx, &job, &status).await?;
        return ttl(cx, &job).await;
    }
    if let Some(d) = deadline {
        again = (d - now).to_std().ok().map(|w| w + Duration::from_millis(100));
    }

    // 4. Has it succeeded?
    let done = match completions {
        Some(c) if indexed => completed.len() as i64 >= c,
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    if done {
        for p in &active {
            delete_pod(cx, &job, p).await?;
        }
        let message = "Reached expected number of succeeded pods";
        set_condition(&mut status, "SuccessCriteriaMet", "True", "CompletionsReached", message);
        set_condition(&mut status, "Complete", "True", "CompletionsReached", message);
        status["completionTime"] = json!(object::now_rfc3339());
        status["active"] = json!(0);
        if let Some(m) = status.as_object_mut() {
            m.remove("ready");
        }
        cx.events
            .object_event(&job, EventKind::Normal, "Completed", "Job completed".into());
        let job = write_status(cx, &job, &status).await?;
        return ttl(cx, &job).await;
    }

    // 5. Suspended: nothing runs.
    if job["spec"]["suspend"] == true {
        for p in active.drain(..) {
            delete_pod(cx, &job, &p).await?;
        }
        if condition(&job, "Suspended").is_none() {
            set_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended");
            cx.events
                .object_event(&job, EventKind::Normal, "Suspended", "Job suspended".into());
        }
        status["active"] = json!(0);
        write_status(cx, &job, &status).await?;
        return Ok(again);
    }
    if condition(&job, "Suspended").is_some() {
        set_condition(&mut status, "Suspended", "False", "JobResumed", "Job resumed");
        status["startTime"] = json!(object::now_rfc3339());
        cx.events
            .object_event(&job, EventKind::Normal, "Resumed", "Job resumed".into());
    }
    if status["startTime"].is_null() {
        status["startTime"] = json!(object::now_rfc3339());
    }

    // 6. Start or stop pods toward what should run.
    let parallelism = job["spec"]["parallelism"].as_i64().unwrap_or(1).max(0);
    let running: HashSet<i64> = active.iter().filter_map(index_of).collect();
    let pending: Vec<i64> = if indexed {
        (0..total)
            .filter(|i| !completed.contains(i) && !failed_indexes.contains(i) && !running.contains(i))
            .collect()
    } else {
        Vec::new()
    };
    let want = if indexed {
        parallelism.min(active.len() as i64 + pending.len() as i64)
    } else {
        match completions {
            Some(c) => parallelism.min((c - succeeded).max(0)),
            None if succeeded > 0 => active.len() as i64,
            None => parallelism,
        }
    };
    let have = active.len() as i64;
    if want > have {
        // Back-off after failures: from the last failed pod's end.
        let recent_failures = owned.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let last_failure = owned
            .iter()
            .filter(|p| phase(p) == "Failed")
            .filter_map(finished_at)
            .max();
        let wait = last_failure
            .and_then(|t| t.checked_add_signed(chrono::TimeDelta::from_std(backoff(recent_failures)).ok()?))
            .and_then(|due| (due - now).to_std().ok())
            .filter(|w| !w.is_zero());
        match wait {
            Some(w) => again = Some(again.map_or(w, |a| a.min(w)) + Duration::from_millis(100)),
            None => {
                let mut next = pending.into_iter();
                for _ in 0..(want - have) {
                    let index = if indexed {
                        match next.next() {
                            Some(i) => Some(i),
                            None => break,
                        }
                    } else {
                        None
                    };
                    match writes::create(store, kinds::pod(), new_pod(&job, index)).await {
                        Ok(p) => {
                            cx.events.object_event(
                                &job,
                                EventKind::Normal,
                                "SuccessfulCreate",
                                format!("Created pod: {}", object::name(&p)),
                            );
                            active.push(p);
                        }
                        Err(e) => {
                            cx.events.object_event(
                                &job,
                                EventKind::Warning,
                                "FailedCreate",
                                format!("Error creating: {e}"),
                            );
                            return Err(StoreError::Invalid(e.to_string()));
                        }
                    }
                }
            }
        }
    } else if want < have {
        // The newest go first.
        active
            .sort_by_key(|p| std::cmp::Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string()));
        for p in active.drain(..(have - want) as usize) {
            delete_pod(cx, &job, &p).await?;
        }
    }
    status["active"] = json!(active.len());
    let ready = active.iter().filter(|p| ready_since(p).is_some()).count();
    status["ready"] = json!(ready);
    if indexed {
        status["completedIndexes"] = json!(format_indexes(&completed));
    }
    status["terminating"] = json!(owned
        .iter()
        .filter(|p| object::deletion_timestamp(p).is_some() && is_running(p))
        .count());
    write_status(cx, &job, &status).await?;
    Ok(again)
}

fn is_running(p: &Value) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed")
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Deletes a finished Job `ttlSecondsAfterFinished` after it finished; or says when to look again.
async fn ttl(cx: &SyncContext, job: &Value) -> Result<Option<Duration>, StoreError> {
    let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() else {
        return Ok(None);
    };
    let ended = job["status"]["completionTime"]
        .as_str()
        .or_else(|| condition(job, "Failed").and_then(|c| c["lastTransitionTime"].as_str()))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc());
    let Some(due) = ended.and_then(|e| e.checked_add_signed(chrono::TimeDelta::try_seconds(ttl)?)) else {
        return Ok(None);
    };
    let now = chrono::Utc::now();
    if due > now {
        return Ok((due - now).to_std().ok().map(|w| w + Duration::from_millis(100)));
    }
    writes::delete(&*cx.store, kinds::job(), job, deletion::Propagation::Background).await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_written_as_ranges() {
        let set: BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert!(parse_indexes("").is_empty());
    }

    #[test]
    fn back_off_doubles_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), Duration::from_secs(360));
        assert_eq!(backoff(i64::MAX), Duration::from_secs(360));
    }

    #[test]
    fn pod_failure_policy_rules_match_in_order() {
        let job = json!({"spec": {"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}}]}}});
        let pod = |code: i64, cond: Option<&str>| {
            let mut p = json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Failed",
                "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": code}}}]}});
            if let Some(c) = cond {
                p["status"]["conditions"] = json!([{"type": c, "status": "True"}]);
            }
            p
        };
        let (action, message) = failure_policy(&job, &pod(42, None)).unwrap();
        assert_eq!(action, "FailJob");
        assert_eq!(
            message,
            "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
        );
        assert_eq!(
            failure_policy(&job, &pod(42, Some("DisruptionTarget"))).unwrap().0,
            "Ignore"
        );
        assert_eq!(failure_policy(&job, &pod(3, None)).unwrap().0, "Count");
        assert!(failure_policy(&job, &pod(1, None)).is_none());
    }

    #[test]
    fn indexed_pods_know_their_index() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "work", "namespace": "d", "uid": "u"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b", "env": [{"name": "A", "value": "1"}]}]}}}});
        let p = new_pod(&job, Some(3));
        assert_eq!(p["metadata"]["generateName"], "work-3-");
        assert_eq!(p["spec"]["hostname"], "work-3");
        assert_eq!(p["metadata"]["annotations"][COMPLETION_INDEX], "3");
        assert_eq!(p["spec"]["containers"][0]["env"][0]["name"], "JOB_COMPLETION_INDEX");
        assert_eq!(p["spec"]["containers"][0]["env"][1]["name"], "A");
        assert_eq!(p["metadata"]["finalizers"], json!([TRACKING]));
    }
}
