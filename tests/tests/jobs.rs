//! End-to-end: Jobs, on a real daemon with real containers.

use peapod_tests::{wait_for, Node};
use serde_json::Value;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn job(name: &str, spec: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: busybox:1.35\n        command: [sh, -c, {script:?}]\n"
    )
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn wait_condition(node: &Node, name: &str, type_: &str, limit: Duration) -> Value {
    wait_for(&format!("job {name} {type_}"), limit, || {
        node.get("job", name).filter(|j| condition(j, type_).is_some())
    })
}

fn pods_of(node: &Node, name: &str) -> Vec<Value> {
    node.list("pods", Some(&format!("batch.kubernetes.io/job-name={name}")))
}

#[test]
fn a_job_runs_its_completions_with_bounded_parallelism_and_keeps_its_count() {
    let node = Node::start();
    node.apply(&job(
        "three",
        "  completions: 3\n  parallelism: 2\n",
        "sleep 1; echo done",
    ));
    let mut most = 0;
    let done = wait_for("job three complete", 2 * MIN, || {
        let running = pods_of(&node, "three")
            .iter()
            .filter(|p| p["status"]["phase"] != "Succeeded" && p["status"]["phase"] != "Failed")
            .count();
        most = most.max(running);
        node.get("job", "three").filter(|j| condition(j, "Complete").is_some())
    });
    assert!(most <= 2, "at most parallelism pods at once: {most}");
    assert_eq!(done["status"]["succeeded"], 3);
    assert!(condition(&done, "SuccessCriteriaMet").is_some(), "{}", done["status"]);
    assert!(done["status"]["completionTime"].is_string());
    let pods = pods_of(&node, "three");
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Succeeded"));
    assert!(
        pods.iter().all(|p| p["metadata"]["finalizers"].is_null()),
        "tracking finalizers removed"
    );
    let described = node.ok(&["describe", "job", "three"]);
    assert!(
        described.contains("Pods Statuses:   0 Active (0 Ready) / 3 Succeeded / 0 Failed"),
        "{described}"
    );
    let table = node.ok(&["get", "jobs"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..3], ["three", "Complete", "3/3"], "{table}");
    // Its pods may go: the count stays.
    let first = pods[0]["metadata"]["name"].as_str().unwrap();
    node.ok(&["delete", "pod", first]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(node.get("job", "three").unwrap()["status"]["succeeded"], 3);

    // A work queue with a TTL: done when one succeeds, gone two seconds later with its pods.
    node.apply(&job(
        "queue",
        "  parallelism: 2\n  ttlSecondsAfterFinished: 2\n",
        "echo worked",
    ));
    wait_condition(&node, "queue", "Complete", MIN);
    wait_for("the finished job deleted", MIN, || {
        (node.get("job", "queue").is_none() && pods_of(&node, "queue").is_empty()).then_some(())
    });

    // Suspended, nothing runs; resumed, it does.
    node.apply(&job("later", "  suspend: true\n", "echo ran"));
    wait_condition(&node, "later", "Suspended", MIN);
    assert!(pods_of(&node, "later").is_empty());
    let resumed = job("later", "  suspend: false\n", "echo ran");
    node.apply(&resumed);
    let j = wait_condition(&node, "later", "Complete", MIN);
    let suspended = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .cloned()
        .unwrap();
    assert_eq!(
        (suspended["status"].as_str(), suspended["reason"].as_str()),
        (Some("False"), Some("JobResumed"))
    );
}

#[test]
fn an_indexed_job_gives_each_pod_its_index() {
    let node = Node::start();
    node.apply(&job(
        "idx",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
        "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
    ));
    let done = wait_condition(&node, "idx", "Complete", 2 * MIN);
    assert_eq!(done["status"]["completedIndexes"], "0-2");
    let mut seen = Vec::new();
    for p in pods_of(&node, "idx") {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(name.starts_with(&format!("idx-{index}-")), "{name}");
        let log = node.ok(&["logs", &name]);
        assert_eq!(log.trim(), format!("index={index} host=idx-{index}"));
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);
}

#[test]
fn failing_jobs_stop_at_their_backoff_limit_or_failure_policy() {
    let node = Node::start();
    node.apply(&job("flaky", "  backoffLimit: 1\n", "exit 3"));
    // A pod failure policy ends its Job at the first matching exit code.
    node.apply(&job(
        "fatal",
        "  backoffLimit: 5\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {containerName: main, operator: In, values: [42]}\n",
        "exit 42",
    ));
    let fatal = wait_condition(&node, "fatal", "Failed", MIN);
    let failed = condition(&fatal, "Failed").unwrap();
    assert_eq!(failed["reason"], "PodFailurePolicy");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("failed with exit code 42 matching FailJob rule at index 0"),
        "{failed}"
    );
    assert!(condition(&fatal, "FailureTarget").is_some());
    assert_eq!(pods_of(&node, "fatal").len(), 1, "no second pod");
    // Two failures (the second after a 10 s back-off) exceed backoffLimit 1.
    let flaky = wait_condition(&node, "flaky", "Failed", 2 * MIN);
    assert_eq!(condition(&flaky, "Failed").unwrap()["reason"], "BackoffLimitExceeded");
    assert_eq!(flaky["status"]["failed"], 2);
    let pods = pods_of(&node, "flaky");
    assert_eq!(pods.len(), 2, "{pods:?}");
    let ends: Vec<chrono::DateTime<chrono::Utc>> = pods
        .iter()
        .filter_map(|p| p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"].as_str())
        .filter_map(|t| t.parse().ok())
        .collect();
    let starts: Vec<chrono::DateTime<chrono::Utc>> = pods
        .iter()
        .filter_map(|p| p["metadata"]["creationTimestamp"].as_str())
        .filter_map(|t| t.parse().ok())
        .collect();
    let (first_end, last_start) = (ends.iter().min().unwrap(), starts.iter().max().unwrap());
    assert!(
        (*last_start - *first_end).num_seconds() >= 9,
        "the second pod waited out the back-off: {first_end} -> {last_start}"
    );
    let events = node.ok(&["get", "events"]);
    assert!(events.contains("BackoffLimitExceeded"), "{events}");
}

#[test]
fn a_cronjob_starts_jobs_on_its_schedule_and_forbid_keeps_one_at_a_time() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  timeZone: Europe/Berlin
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - {name: main, image: busybox:1.35, command: [sleep, "100"]}
"#,
    );
    let owned = |node: &Node| -> Vec<Value> {
        node.list("jobs", None)
            .into_iter()
            .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == "tick")
            .collect()
    };
    // The first start is at the next minute.
    let job = wait_for("the first job", 2 * MIN, || owned(&node).first().cloned());
    let scheduled: chrono::DateTime<chrono::Utc> = job["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(scheduled.timestamp() % 60, 0, "on a minute: {scheduled}");
    assert_eq!(job["metadata"]["name"], format!("tick-{}", scheduled.timestamp() / 60));
    let cj = wait_for("status", MIN, || {
        node.get("cronjob", "tick")
            .filter(|c| c["status"]["active"].as_array().is_some_and(|a| a.len() == 1))
    });
    assert!(cj["status"]["lastScheduleTime"].is_string());
    let table = node.ok(&["get", "cj"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(
        &row[..9],
        ["tick", "*", "*", "*", "*", "*", "Europe/Berlin", "False", "1"],
        "{table}"
    );
    // The next start finds the first Job running: Forbid starts no second one.
    wait_for("the next start skipped", 2 * MIN, || {
        node.ok(&["get", "events"]).contains("JobAlreadyActive").then_some(())
    });
    assert_eq!(owned(&node).len(), 1);
    // Deleting the CronJob deletes its Job and the Job's pod.
    node.ok(&["delete", "cronjob", "tick"]);
    wait_for("its job and pod gone", MIN, || {
        (owned(&node).is_empty() && pods_of(&node, job["metadata"]["name"].as_str().unwrap()).is_empty()).then_some(())
    });
}

fn cronjob(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: "* * * * *"
{extra}  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - {{name: main, image: busybox:1.35, command: ["true"]}}
"#
    )
}

#[test]
fn a_start_missed_while_the_daemon_was_down_runs_after_the_restart_within_its_deadline() {
    let mut node = Node::start();
    // Far enough from the next minute that both are stored before it.
    let now = chrono::Utc::now();
    if now.timestamp() % 60 > 40 {
        std::thread::sleep(Duration::from_secs((61 - now.timestamp() % 60) as u64));
    }
    node.apply(&cronjob("late", ""));
    node.apply(&cronjob("strict", "  startingDeadlineSeconds: 10\n"));
    node.kill_daemon();
    // Down over the next start, and for longer than `strict` may be late.
    let start = (chrono::Utc::now().timestamp() / 60 + 1) * 60;
    let back = start + 16 - chrono::Utc::now().timestamp();
    std::thread::sleep(Duration::from_secs(back.max(0) as u64));
    node.start_daemon();
    // `late` has no deadline: the missed start runs now, under its own name.
    let name = format!("late-{}", start / 60);
    let job = wait_for("the missed start's job", MIN, || node.get("job", &name));
    let scheduled: chrono::DateTime<chrono::Utc> = job["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(scheduled.timestamp(), start);
    // `strict` missed it by more than 10 s: no job for that start, and an event says so.
    wait_for("MissSchedule", MIN, || {
        node.ok(&["get", "events"])
            .contains("Missed scheduled time to start a job")
            .then_some(())
    });
    assert!(node.get("job", &format!("strict-{}", start / 60)).is_none());
    node.ok(&["delete", "cronjob", "late", "strict"]);
}
