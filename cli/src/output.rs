//! kubectl-like tables.

use serde_json::Value;

/// Human age like kubectl (`5s`, `3m`, `2h`, `4d`).
pub fn age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Prints rows with columns padded like kubectl's tabwriter.
pub fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// READY, STATUS and RESTARTS of a pod, as kubectl's `printPod` computes them.
pub struct PodSummary {
    pub ready: usize,
    pub total: usize,
    pub status: String,
    pub restarts: u64,
}

/// kubectl's `printPod`: init progress (`Init:1/2`, `Init:CrashLoopBackOff`),
/// then the first app container's waiting or terminated reason.
pub fn pod_summary(p: &Value) -> PodSummary {
    let spec_inits = p["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
    let sidecar = |name: &str| {
        spec_inits
            .iter()
            .any(|c| c["name"] == name && c["restartPolicy"] == "Always")
    };
    let mut total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    total += spec_inits.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut reason = p["status"]["reason"]
        .as_str()
        .or(p["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    let mut initializing = false;
    let inits = p["status"]["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, c) in inits.iter().enumerate() {
        restarts += c["restartCount"].as_u64().unwrap_or(0);
        let name = c["name"].as_str().unwrap_or("");
        let term = &c["state"]["terminated"];
        let waiting = c["state"]["waiting"]["reason"].as_str().unwrap_or("");
        if sidecar(name) && c["started"] == true {
            if c["ready"] == true {
                ready += 1;
            }
            continue;
        }
        if term.is_object() && term["exitCode"] == 0 {
            continue;
        }
        if term.is_object() {
            reason = match term["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if term["signal"].as_i64().unwrap_or(0) != 0 => format!("Init:Signal:{}", term["signal"]),
                None => format!("Init:ExitCode:{}", term["exitCode"]),
            };
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            reason = format!("Init:{waiting}");
        } else {
            reason = format!("Init:{i}/{}", spec_inits.len());
        }
        initializing = true;
        break;
    }
    let initialized = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = 0;
        let mut has_running = false;
        let cs = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        for c in cs.iter().rev() {
            restarts += c["restartCount"].as_u64().unwrap_or(0);
            let term = &c["state"]["terminated"];
            if let Some(r) = c["state"]["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if let Some(r) = term["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if term.is_object() {
                reason = if term["signal"].as_i64().unwrap_or(0) != 0 {
                    format!("Signal:{}", term["signal"])
                } else {
                    format!("ExitCode:{}", term["exitCode"])
                };
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    let terminal = matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !p["metadata"]["deletionTimestamp"].is_null() && !terminal {
        reason = "Terminating".into();
    }
    PodSummary {
        ready,
        total,
        status: reason,
        restarts,
    }
}

/// The STATUS column kubectl shows for a pod.
pub fn pod_status(p: &Value) -> String {
    pod_summary(p).status
}

/// One `get pods` row.
pub fn pod_row(p: &Value, wide: bool, with_ns: bool, labels: bool) -> Vec<String> {
    let sum = pod_summary(p);
    let mut row = vec![];
    if with_ns {
        row.push(p["metadata"]["namespace"].as_str().unwrap_or("").to_string());
    }
    row.extend([
        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
        format!("{}/{}", sum.ready, sum.total),
        sum.status,
        sum.restarts.to_string(),
        age(p["metadata"]["creationTimestamp"].as_str().unwrap_or("")),
    ]);
    if wide {
        row.push(p["status"]["podIP"].as_str().unwrap_or("<none>").to_string());
        row.push(p["spec"]["nodeName"].as_str().unwrap_or("<none>").to_string());
    }
    if labels {
        row.push(label_string(p));
    }
    row
}

/// `k=v,k2=v2` or `<none>`.
pub fn label_string(o: &Value) -> String {
    let l: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if l.is_empty() {
        "<none>".into()
    } else {
        l.join(",")
    }
}
