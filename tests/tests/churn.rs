//! Churn with kill -9 (run as root): 100 pods (steady and probed,
//! crash-looping, run-once) are created and deleted while the daemon is
//! SIGKILLed at random moments. After each restart, once the node settled,
//! the invariants must hold:
//! - each running container status has exactly one live container (one shim
//!   for its start, its process alive), and steady containers never restart;
//! - no shim, container, veth, IP lease, mount, namespace file or cgroup
//!   without its pod;
//! - no pod lost or duplicated in the store;
//! - no start of a container ran twice (each start's log says "started" once).
//!
//! CI runs the short form (3 kills). The full run is
//! `PEAPOD_CHURN_KILLS=50 cargo test -p peapod-tests --test churn -- --nocapture`
//! (`PEAPOD_CHURN_SEED` replays a run; the seed is printed).

use peapod_tests::{container, Node};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64*: reproducible from its printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn manifest(name: &str) -> String {
    let head =
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n");
    match &name[..1] {
        // Steady, with a readiness probe.
        "s" => format!(
            "{head}  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'echo started; touch /tmp/ready; exec sleep 3600']\n    readinessProbe: {{exec: {{command: [cat, /tmp/ready]}}, periodSeconds: 1}}\n"
        ),
        // Crash-looping.
        "l" => format!("{head}  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'echo started; sleep 1; exit 1']\n"),
        // Runs once.
        _ => format!(
            "{head}  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'echo started; sleep 2']\n"
        ),
    }
}

fn pods(node: &Node) -> Vec<Value> {
    let out = node.peapod(&["get", "pods", "-o", "json"]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn dirs(p: &Path) -> BTreeSet<String> {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Seconds since the epoch, for matching the daemon's log.
fn chrono_like(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06} unix", d.as_secs(), d.subsec_micros())
}

/// What is wrong with the node now; empty once it settled into a consistent state.
fn violations(node: &Node, expected: &BTreeSet<String>, seen: &mut BTreeSet<String>) -> Vec<String> {
    let mut bad = Vec::new();
    let all = pods(node);
    let mut names = BTreeMap::new();
    for p in &all {
        *names
            .entry(p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    for (n, count) in &names {
        if *count > 1 {
            bad.push(format!("pod {n} stored {count} times"));
        }
    }
    let stored: BTreeSet<String> = names.keys().cloned().collect();
    if &stored != expected {
        bad.push(format!(
            "store holds {:?} more and misses {:?}",
            stored.difference(expected).collect::<Vec<_>>(),
            expected.difference(&stored).collect::<Vec<_>>()
        ));
    }
    let uids: BTreeSet<String> = all
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_string())
        .collect();
    seen.extend(uids.iter().cloned());
    let mut live_sandboxes = 0;
    for p in &all {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let uid = p["metadata"]["uid"].as_str().unwrap_or("");
        let phase = p["status"]["phase"].as_str().unwrap_or("");
        if !p["metadata"]["deletionTimestamp"].is_null() {
            bad.push(format!("{name} still terminating"));
        }
        let c = container(p, "c");
        if name.starts_with('s') && c["restartCount"].as_u64().unwrap_or(0) > 0 {
            bad.push(format!("steady {name} restarted: {c}"));
        }
        if phase != "Succeeded" && phase != "Failed" {
            live_sandboxes += 1;
        }
        if name.starts_with('s') && c["ready"] != true {
            bad.push(format!("steady {name} not ready yet"));
        }
        if c["state"]["running"].is_object() {
            let id = c["containerID"].as_str().unwrap_or("");
            let attempt = id.rsplit('-').next().unwrap_or("");
            let shims = node.shims(&format!("/pods/{uid}/containers/c/{attempt}/"));
            if shims.len() != 1 {
                bad.push(format!("{name}: {} shims for running start {attempt}", shims.len()));
            }
            let started: Option<Value> = std::fs::read(
                node.root()
                    .join("pods")
                    .join(uid)
                    .join("containers/c")
                    .join(attempt)
                    .join("started.json"),
            )
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
            let pid = started.as_ref().and_then(|s| s["pid"].as_u64()).unwrap_or(0);
            if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
                bad.push(format!("{name}: running start {attempt} has no live process"));
            }
        }
        // Each start's log says "started" once: no start ran twice.
        let logs = node.root().join("logs").join(format!("default_{name}_{uid}")).join("c");
        for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let n = text.matches("started").count();
            if n > 1 {
                bad.push(format!("{name}: start {:?} ran {n} times", e.file_name()));
            }
        }
    }
    // Nothing without its pod.
    for pid in node.shims("") {
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !uids.iter().any(|u| cmd.contains(u.as_str())) {
            bad.push(format!("shim {pid} without a pod: {cmd:?}"));
        }
    }
    for d in dirs(&node.root().join("pods")) {
        if !uids.contains(&d) {
            bad.push(format!("pod directory {d} without a pod"));
        }
    }
    for d in dirs(&node.run_dir().join("pods")) {
        if !uids.contains(&d) {
            bad.push(format!("namespace files {d} without a pod"));
        }
    }
    // Cgroups of other nodes on this machine are told apart by the uids this node ever had.
    for d in dirs(Path::new("/sys/fs/cgroup/pids/peapod")) {
        let uid = d.trim_start_matches("pod");
        if seen.contains(uid) && !uids.contains(uid) {
            let mut what = Vec::new();
            for h in dirs(Path::new("/sys/fs/cgroup")) {
                let dir = Path::new("/sys/fs/cgroup").join(&h).join("peapod").join(&d);
                if dir.exists() {
                    let kids: Vec<String> = dirs(&dir)
                        .into_iter()
                        .map(|k| {
                            let born = std::fs::metadata(dir.join(&k))
                                .and_then(|m| m.modified())
                                .ok()
                                .map(chrono_like)
                                .unwrap_or_default();
                            format!("{k} (created {born})")
                        })
                        .collect();
                    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    what.push(format!("{h}: children {kids:?} procs {:?}", procs.trim()));
                }
            }
            let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
            let text = node.daemon_log();
            let helpers: Vec<String> = text
                .lines()
                .filter(|l| l.contains("helper") && l.contains(&short))
                .filter_map(|l| {
                    l.split("helper ")
                        .nth(1)?
                        .split(' ')
                        .next()
                        .map(|p| format!("helper {p} "))
                })
                .collect();
            let log: Vec<String> = text
                .lines()
                .filter(|l| l.contains(uid) || l.contains(&short) || helpers.iter().any(|h| l.contains(h.as_str())))
                .map(str::to_string)
                .collect();
            bad.push(format!("cgroup {d} without a pod: {what:?}; daemon log: {log:#?}"));
        }
    }
    let root = node.dir.path().display().to_string();
    for m in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let Some(point) = m.split(' ').nth(4) else { continue };
        if !point.starts_with(&root) {
            continue;
        }
        if let Some(uid) = point.split("/pods/").nth(1).map(|r| r.split('/').next().unwrap_or("")) {
            if !uid.is_empty() && !uids.contains(uid) {
                bad.push(format!("mount {point} without a pod"));
            }
        }
    }
    let veths = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &node.bridge()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    if veths != live_sandboxes {
        bad.push(format!("{veths} veths for {live_sandboxes} pods with a sandbox"));
    }
    let leases: usize = std::fs::read_dir(node.root().join("cni/ipam"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|net| std::fs::read_dir(net.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .count();
    if leases != live_sandboxes {
        bad.push(format!("{leases} IP leases for {live_sandboxes} pods with a sandbox"));
    }
    bad
}

#[test]
fn pods_survive_random_kill_9_of_the_daemon_with_nothing_leaked_or_doubled() {
    let kills = env_num("PEAPOD_CHURN_KILLS", 3);
    let initial = env_num("PEAPOD_CHURN_PODS", 100);
    let seed = env_num(
        "PEAPOD_CHURN_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("churn: seed {seed}, {kills} kills, {initial} pods");
    let mut rng = Rng(seed);
    let mut node = Node::start_with_args(&["--pod-cidr", "10.97.0.0/22"], |_| {});
    node.set_env(&[("PEAPOD_LOG", "info,peapod_actors::runtime::shim::helper=debug")]);
    let mut expected = BTreeSet::new();
    let mut serial = 0;
    let mut fresh = |rng: &mut Rng| {
        serial += 1;
        let kind = ["s", "l", "o"][rng.below(3) as usize];
        format!("{kind}{serial:04}")
    };
    let mut docs = Vec::new();
    for _ in 0..initial {
        let n = fresh(&mut rng);
        docs.push(manifest(&n));
        expected.insert(n);
    }
    node.apply(&docs.join("---\n"));
    let mut settle_times = Vec::new();
    let mut seen = BTreeSet::new();
    for round in 1..=kills {
        // Churn: delete a few (in the background), create a few.
        let victims: Vec<String> = expected
            .iter()
            .filter(|_| rng.below(20) == 0)
            .take(8)
            .cloned()
            .collect();
        let mut args = vec!["delete", "pod", "--grace-period", "0", "--wait=false"];
        args.extend(victims.iter().map(String::as_str));
        if !victims.is_empty() {
            let out = node.peapod(&args);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        for v in &victims {
            expected.remove(v);
        }
        let mut docs = Vec::new();
        for _ in 0..(1 + rng.below(8)) {
            let n = fresh(&mut rng);
            docs.push(manifest(&n));
            expected.insert(n);
        }
        node.apply(&docs.join("---\n"));
        std::thread::sleep(Duration::from_millis(rng.below(3000)));
        node.kill_daemon();
        std::thread::sleep(Duration::from_millis(rng.below(1000)));
        node.start_daemon();
        let t = Instant::now();
        let mut last = Vec::new();
        let settled = wait_for_settled(&node, &expected, &mut seen, &mut last);
        assert!(
            settled,
            "round {round} (seed {seed}): not consistent after {:?}: {last:#?}",
            t.elapsed()
        );
        settle_times.push(t.elapsed());
        eprintln!(
            "churn: round {round}: consistent {:?} after the restart ({} pods)",
            t.elapsed(),
            expected.len()
        );
    }
    settle_times.sort();
    if let (Some(median), Some(max)) = (settle_times.get(settle_times.len() / 2), settle_times.last()) {
        eprintln!("churn: {kills} kills, settled after each restart: median {median:?}, max {max:?}");
    }
}

/// Waits (up to 3 minutes) until the node is consistent; `last` keeps the
/// latest violations for the failure message.
fn wait_for_settled(
    node: &Node,
    expected: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    last: &mut Vec<String>,
) -> bool {
    let end = Instant::now() + Duration::from_secs(180);
    while Instant::now() < end {
        *last = violations(node, expected, seen);
        if last.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}
