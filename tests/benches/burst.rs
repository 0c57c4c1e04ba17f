//! Prints figures (run as root, after `scripts/setup.sh`; a release daemon
//! when one is built) for:
//! - 100 and 500 pods created at once by 8 clients: the time from the first
//!   create until all are Running, the time for 8 clients to delete them all,
//!   and the daemon's RSS idle, with all running, and after;
//! - apply-to-Running of single pods while a 1 GiB image is being imported
//!   into the same node, next to the same without an import.
//!
//! `PEAPOD_BENCH_BURST=100,500` picks the burst sizes; `PEAPOD_BENCH_IMPORT=0`
//! leaves out the import part. The 1 GiB image (an
//! uncompressed random layer) is built once under
//! `/var/lib/peapod/bench-image/big` and reused.

use peapod_tests::bench::{self, pct, pod_yaml, rss_mib};
use peapod_tests::{binary, container, Node};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn burst(n: usize) {
    let node = Node::start_with_args(&["--pod-cidr", "10.94.0.0/20", "--max-pods", "5000"], |_| {});
    std::thread::sleep(Duration::from_secs(2));
    let pid = node.daemon_pid().unwrap_or(0);
    let idle = rss_mib(pid);
    let names: Vec<String> = (0..n).map(|i| format!("b{i:04}")).collect();
    let up = bench::create_all(&node, &names);
    let running = rss_mib(pid);
    let gone = bench::delete_all(&node, &names);
    println!(
        "{n:>4} pods at once: all Running after {up:.2?}, all deleted after {gone:.2?}; daemon RSS {idle:.1} MiB idle, {running:.1} MiB with {n} running, {:.1} MiB after",
        rss_mib(pid)
    );
}

/// A 1 GiB single-layer OCI layout (uncompressed random data), built once.
fn big_image() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from("/var/lib/peapod/bench-image/big");
    if dir.join("index.json").exists() {
        return dir;
    }
    let script = r#"set -euo pipefail
d=$1; tmp=$d.tmp; rm -rf "$tmp"; mkdir -p "$tmp/root" "$tmp/layout/blobs/sha256"
head -c 1073741824 /dev/urandom > "$tmp/root/big"
tar -C "$tmp/root" -cf "$tmp/layer.tar" .
put() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$tmp/layout/blobs/sha256/$h"; echo "$h"; }
size() { stat -c%s "$tmp/layout/blobs/sha256/$1"; }
L=$(put "$tmp/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$L" > "$tmp/config.json"
C=$(put "$tmp/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$C" "$(size "$C")" "$L" "$(size "$L")" > "$tmp/manifest.json"
M=$(put "$tmp/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$M" "$(size "$M")" > "$tmp/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$tmp/layout/oci-layout"
mkdir -p "$(dirname "$d")"; mv "$tmp/layout" "$d"; rm -rf "$tmp"
"#;
    let ok = Command::new("bash")
        .args(["-c", script, "build-big-image"])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the 1 GiB bench image");
    dir
}

/// apply-to-Running of single pods, one after another, while `busy` says so.
fn starts_while(node: &Node, prefix: &str, mut busy: impl FnMut(usize) -> bool) -> Vec<Duration> {
    let mut times = Vec::new();
    let mut i = 0;
    while busy(i) {
        let name = format!("{prefix}{i}");
        let t = Instant::now();
        node.apply(&pod_yaml(&name));
        node.wait_pod(&name, "running", Duration::from_secs(300), |p| {
            container(p, "c")["state"]["running"].is_object()
        });
        times.push(t.elapsed());
        i += 1;
    }
    times
}

fn during_import() {
    let image = big_image();
    let node = Node::start();
    let mut quiet = starts_while(&node, "q", |i| i < 20);
    let root = node.root().display().to_string();
    let t = Instant::now();
    let mut import = Command::new(binary())
        .args(["image", "import", "--root-dir", &root])
        .arg(&image)
        .args(["--tag", "big"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut busy = starts_while(&node, "i", |_| import.try_wait().ok().flatten().is_none());
    let took = t.elapsed();
    assert!(import.wait().unwrap().success(), "import of the big image");
    println!(
        "apply-to-Running without an import: p50 {:?}, p99 {:?} (20 pods)",
        pct(&mut quiet, 0.5),
        pct(&mut quiet, 0.99)
    );
    if busy.is_empty() {
        println!("the 1 GiB import took {took:.2?}, less than one pod start");
    } else {
        println!(
            "apply-to-Running while a 1 GiB image imports ({took:.2?}): p50 {:?}, p99 {:?} ({} pods)",
            pct(&mut busy, 0.5),
            pct(&mut busy, 0.99),
            busy.len()
        );
    }
}

fn main() {
    println!("daemon binary: {}", binary().display());
    let sizes: Vec<usize> = std::env::var("PEAPOD_BENCH_BURST")
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|_| vec![100, 500]);
    for n in sizes {
        burst(n);
    }
    if std::env::var("PEAPOD_BENCH_IMPORT").as_deref() != Ok("0") {
        during_import();
    }
}
