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

/// The STATUS column kubectl shows for a pod.
pub fn pod_status(p: &Value) -> String {
    if !p["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    let mut reason = p["status"]["reason"]
        .as_str()
        .or(p["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    for c in p["status"]["containerStatuses"].as_array().into_iter().flatten() {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.to_string();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            reason = r.to_string();
        } else if c["state"]["terminated"].is_object() {
            reason = format!("ExitCode:{}", c["state"]["terminated"]["exitCode"]);
        }
    }
    if reason == "Completed" && p["status"]["phase"] == "Running" {
        reason = "Running".into();
    }
    reason
}

/// One `get pods` row.
pub fn pod_row(p: &Value, wide: bool, with_ns: bool, labels: bool) -> Vec<String> {
    let cs = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = cs.iter().filter(|c| c["ready"] == true).count();
    let restarts: u64 = cs.iter().map(|c| c["restartCount"].as_u64().unwrap_or(0)).sum();
    let mut row = vec![];
    if with_ns {
        row.push(p["metadata"]["namespace"].as_str().unwrap_or("").to_string());
    }
    row.extend([
        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
        format!("{ready}/{total}"),
        pod_status(p),
        restarts.to_string(),
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
