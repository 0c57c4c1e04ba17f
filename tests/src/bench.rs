//! What the benches share: percentiles, process figures from `/proc`, pods
//! created and deleted by parallel clients, and the plugin call figures.

use crate::{binary, container, Node};
use peapod_volumes::{Operation, Registry};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Parallel CLI clients of a burst.
pub const CLIENTS: usize = 8;

/// How often a bench lists every pod while it waits. Each list of 500 pods is
/// a few MB of JSON built by the daemon on the same two cores, so polling
/// faster slows down what it measures; the figures are up to this late.
pub const POLL: Duration = Duration::from_secs(1);

/// The `p` quantile (0..=1) of `v`, nearest rank.
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The median of `v`.
pub fn median(v: &mut [Duration]) -> Duration {
    pct(v, 0.5)
}

fn status_kib(pid: u32, field: &str, file: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Resident memory of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:", "status") / 1024.0
}

/// Proportional set size of `pid` (its private pages plus its share of the
/// shared ones), in KiB.
pub fn pss_kib(pid: u32) -> f64 {
    status_kib(pid, "Pss:", "smaps_rollup")
}

/// User plus system CPU time `pid` (all its threads) used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// A one-container busybox pod that sleeps, stopped at once when deleted.
pub fn pod_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600']}}\n"
    )
}

/// Every pod of the default namespace.
pub fn all_pods(node: &Node) -> Vec<Value> {
    let v: Value = serde_json::from_str(&node.ok(&["get", "pods", "-o", "json"])).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn clients(node: &Node, jobs: Vec<Vec<String>>) {
    let sock = node.run_dir().join("peapod.sock");
    let running: Vec<_> = jobs
        .into_iter()
        .map(|args| {
            Command::new(binary())
                .args(args)
                .env("PEAPOD_SOCKET", &sock)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in running {
        c.wait().unwrap();
    }
}

/// Creates the pods `names` with [`CLIENTS`] parallel `apply` clients and
/// waits until every pod of the namespace runs; the time that took.
pub fn create_all(node: &Node, names: &[String]) -> Duration {
    let chunk = names.len().div_ceil(CLIENTS).max(1);
    let jobs = names
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let f = node.dir.path().join(format!("burst{i}.yaml"));
            std::fs::write(&f, c.iter().map(|n| pod_yaml(n)).collect::<Vec<_>>().join("---\n")).unwrap();
            vec!["apply".into(), "-f".into(), f.display().to_string()]
        })
        .collect();
    let t = Instant::now();
    clients(node, jobs);
    loop {
        let pods = all_pods(node);
        if pods.len() >= names.len() && pods.iter().all(|p| container(p, "c")["state"]["running"].is_object()) {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(900), "not all running");
        std::thread::sleep(POLL);
    }
}

/// Deletes the pods `names` with [`CLIENTS`] parallel clients and waits
/// until none is left; the time that took.
pub fn delete_all(node: &Node, names: &[String]) -> Duration {
    let chunk = names.len().div_ceil(CLIENTS).max(1);
    let jobs = names
        .chunks(chunk)
        .map(|c| {
            let mut a: Vec<String> = ["delete", "pod", "--grace-period", "0"].map(String::from).to_vec();
            a.extend(c.iter().cloned());
            a
        })
        .collect();
    let t = Instant::now();
    clients(node, jobs);
    loop {
        let left = all_pods(node);
        if !left
            .iter()
            .any(|p| names.iter().any(|n| p["metadata"]["name"] == n.as_str()))
        {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(900), "not all deleted");
        std::thread::sleep(POLL);
    }
}

/// The SDK's no-op example plugin, built on demand.
fn noop_plugin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let lib = profile_dir.join("examples/libnoop.so");
    if !lib.exists() {
        let release = profile_dir.ends_with("release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "peapod-plugin-sdk", "--example", "noop"]);
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building the noop example");
    }
    lib
}

/// Median cost of one no-op `get_volume_stats`: a raw call through the C ABI
/// table, the daemon's path (a thread, a deadline, JSON both ways), and the
/// exec of a FlexVolume-style driver for the same call.
pub struct PluginCalls {
    pub raw: Duration,
    pub daemon_path: Duration,
    pub exec: Duration,
}

/// Measures [`PluginCalls`] with the SDK's no-op example plugin.
pub fn plugin_calls() -> PluginCalls {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(noop_plugin(), dir.path().join("libnoop.so")).unwrap();
    let (reg, refused) = Registry::load(&[dir.path().to_path_buf()]);
    assert!(refused.is_empty(), "{refused:?}");
    let plugin = reg.get("noop").expect("noop loaded").clone();
    let req = br#"{"volumeId":"v","volumePath":"/tmp"}"#;
    // Raw calls, timed in batches of 1000 so the clock's cost disappears.
    let mut raw = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..1000 {
            let (code, _) = plugin.call_raw(Operation::GetVolumeStats, req);
            assert_eq!(code, 0);
        }
        raw.push(t.elapsed() / 1000);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut guarded = Vec::new();
    let stats_req = peapod_plugin_sdk::VolumeStatsRequest {
        volume_id: "v".into(),
        volume_path: "/tmp".into(),
        ..Default::default()
    };
    for _ in 0..2000 {
        let t = Instant::now();
        let r: Result<peapod_plugin_sdk::VolumeStats, _> =
            rt.block_on(plugin.call(Operation::GetVolumeStats, &stats_req, Duration::from_secs(5)));
        r.unwrap();
        guarded.push(t.elapsed());
    }
    let driver = dir.path().join("flex-driver");
    std::fs::write(&driver, "#!/bin/sh\necho '{\"status\":\"Success\"}'\n").unwrap();
    Command::new("chmod").arg("755").arg(&driver).status().unwrap();
    let mut exec = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let out = Command::new(&driver).arg("getvolumestats").output().unwrap();
        assert!(out.status.success());
        exec.push(t.elapsed());
    }
    PluginCalls {
        raw: median(&mut raw),
        daemon_path: median(&mut guarded),
        exec: median(&mut exec),
    }
}
