//! Helpers for plugins that work on the host (cargo feature `host`; the
//! built-in local, NFS and RBD plugins use them): their configuration from
//! `init`, whether a path is a mount point (by the mount table, so a bind
//! mount of the same filesystem counts), publishing a staged volume into a
//! pod by a bind mount (read-only when asked), unmounting, running a tool
//! (with a deadline) with its output in the error, growing filesystems,
//! waiting for a helper process to end, and usage from `statvfs`.

use crate::{PluginError, PublishRequest, PublishResponse, UnpublishRequest, UnpublishResponse, VolumeStats};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;
use std::process::Command;

/// The plugin's configuration from `init` (`null`: the defaults); the error
/// names what is wrong.
pub fn config<T: serde::de::DeserializeOwned + Default>(value: serde_json::Value) -> Result<T, PluginError> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value).map_err(|e| PluginError::invalid(format!("configuration: {e}")))
}

/// A file name standing for `path` (a pid, log or record file per mount point).
pub fn flat(path: &Path) -> String {
    path.display().to_string().trim_matches('/').replace('/', "_")
}

/// Waits up to `limit` for process `pid`, whose command line contains
/// `marker` (so a reused pid is not mistaken for it), to end; true if it did.
pub fn wait_gone(pid: i32, marker: &str, limit: std::time::Duration) -> bool {
    let alive =
        || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker));
    let deadline = std::time::Instant::now() + limit;
    while alive() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// The filesystem type on `device` (blkid's TYPE), if it has one.
pub fn filesystem_on(device: &str) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", device])
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !t.is_empty()).then_some(t)
}

/// Undoes the mount table's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points in `mountinfo` text, in order.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape))
        .collect()
}

/// Whether `p` is a mount point now.
pub fn is_mounted(p: &Path) -> bool {
    let Ok(real) = p.canonicalize() else { return false };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points(&info).iter().any(|m| Path::new(m) == real)
}

/// Runs `cmd`; the error carries its exit status and output.
pub fn run(cmd: &mut Command) -> Result<String, PluginError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| PluginError::internal(format!("run {shown}: {e}")))?;
    finished(&shown, out)
}

/// Runs `cmd`, killing it after `limit` (a tool talking to a server that
/// does not answer must not hang the plugin call).
pub fn run_within(cmd: &mut Command, limit: std::time::Duration) -> Result<String, PluginError> {
    use std::io::Read;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| PluginError::internal(format!("run {shown}: {e}")))?;
    // Drained on threads of their own so a chatty tool never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err_t = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PluginError::new(
                    crate::STATUS_DEADLINE_EXCEEDED,
                    format!("{shown} did not finish within {}s", limit.as_secs()),
                ));
            }
            Err(e) => return Err(PluginError::internal(format!("wait for {shown}: {e}"))),
        }
    };
    let out = std::process::Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    finished(&shown, out)
}

fn finished(shown: &str, out: std::process::Output) -> Result<String, PluginError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(PluginError::internal(format!(
        "{shown} failed ({}): {text}",
        out.status
    )))
}

/// Bind-mounts the staged `source` at `target` (read-only when asked);
/// nothing to do when `target` is mounted already.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), PluginError> {
    if is_mounted(target) {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|e| PluginError::internal(format!("create {}: {e}", target.display())))?;
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| PluginError::internal(format!("bind {} at {}: {e}", source.display(), target.display())))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(PluginError::internal(format!(
                "make {} read-only: {e}",
                target.display()
            )));
        }
    }
    Ok(())
}

/// Unmounts `target` if it is mounted; a busy mount is an error, never
/// detached lazily (the data must be written back before it goes).
pub fn unmount(target: &Path) -> Result<(), PluginError> {
    if !is_mounted(target) {
        return Ok(());
    }
    umount2(target, MntFlags::empty()).map_err(|e| PluginError::internal(format!("unmount {}: {e}", target.display())))
}

/// `publish` for a plugin that stages: bind the staged volume into the pod.
pub fn publish_staged(req: &PublishRequest) -> Result<PublishResponse, PluginError> {
    let staging = Path::new(&req.staging_path);
    if req.staging_path.is_empty() || !is_mounted(staging) {
        return Err(PluginError::precondition(format!(
            "volume {:?} is not staged at {:?}",
            req.volume_id, req.staging_path
        )));
    }
    bind(staging, Path::new(&req.target_path), req.read_only)?;
    Ok(PublishResponse::default())
}

/// `unpublish` for a plugin that staged: unmount the pod's bind mount.
pub fn unpublish_staged(req: &UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
    unmount(Path::new(&req.target_path))?;
    Ok(UnpublishResponse::default())
}

/// The loop device `file` is attached to (`/dev/loopN`), if any.
pub fn loop_device_of(file: &Path) -> Option<String> {
    let real = file.canonicalize().ok()?;
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .find(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file")).is_ok_and(|b| Path::new(b.trim()) == real)
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
}

/// Grows the filesystem on `device`, mounted at `mountpoint`, to the
/// device's size (online: ext2/3/4 with resize2fs, xfs with xfs_growfs);
/// a filesystem already as large is left alone.
pub fn grow_filesystem(device: &str, mountpoint: &Path) -> Result<(), PluginError> {
    let fs = filesystem_on(device).unwrap_or_default();
    match fs.as_str() {
        "ext2" | "ext3" | "ext4" => run(Command::new("resize2fs").arg(device)).map(drop),
        "xfs" => run(Command::new("xfs_growfs").arg(mountpoint)).map(drop),
        other => Err(PluginError::new(
            crate::STATUS_UNIMPLEMENTED,
            format!("growing a {other:?} filesystem is not supported"),
        )),
    }
}

/// The bytes an ext2/3/4 filesystem spans, from `dumpe2fs -h` output.
pub fn ext_size(dumpe2fs: &str) -> Option<u64> {
    let field = |name: &str| {
        dumpe2fs
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(field("Block count:")? * field("Block size:")?)
}

/// Grows the ext2/3/4 filesystem on an unmounted device or image file to
/// its size (e2fsck first, as resize2fs requires offline); other
/// filesystems, and one already as large, are left alone. Growing offline
/// needs no CAP_SYS_RESOURCE, which online growth does.
pub fn grow_unmounted(target: &Path) -> Result<(), PluginError> {
    let Ok(info) = run(Command::new("dumpe2fs").arg("-h").arg(target)) else {
        return Ok(());
    };
    let Some(fs) = ext_size(&info) else { return Ok(()) };
    let meta = std::fs::metadata(target).map_err(|e| PluginError::internal(format!("{}: {e}", target.display())))?;
    let size = if meta.is_file() {
        meta.len()
    } else {
        run(Command::new("blockdev").arg("--getsize64").arg(target))?
            .trim()
            .parse()
            .unwrap_or(0)
    };
    if size <= fs {
        return Ok(());
    }
    // 0: clean, 1: errors fixed; anything else stops here.
    let check = Command::new("e2fsck")
        .args(["-f", "-p"])
        .arg(target)
        .output()
        .map_err(|e| PluginError::internal(format!("run e2fsck: {e}")))?;
    if !matches!(check.status.code(), Some(0 | 1)) {
        return Err(PluginError::internal(format!(
            "e2fsck -f -p {} before growing it: {}",
            target.display(),
            String::from_utf8_lossy(&check.stdout).trim()
        )));
    }
    run(Command::new("resize2fs").arg(target)).map(drop)
}

/// Capacity and usage of the filesystem at `p`.
pub fn stats(p: &Path) -> Result<VolumeStats, PluginError> {
    let fs =
        nix::sys::statvfs::statvfs(p).map_err(|e| PluginError::not_found(format!("statvfs {}: {e}", p.display())))?;
    let frag = fs.fragment_size() as i64;
    let blocks = fs.blocks() as i64;
    Ok(VolumeStats {
        capacity_bytes: blocks * frag,
        used_bytes: (blocks - fs.blocks_free() as i64) * frag,
        available_bytes: fs.blocks_available() as i64 * frag,
        inodes: fs.files() as i64,
        inodes_used: fs.files() as i64 - fs.files_free() as i64,
        inodes_free: fs.files_free() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        let info = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(mount_points(info), vec!["/mnt/a b".to_string(), "/proc".to_string()]);
    }

    #[test]
    fn a_plain_directory_is_not_mounted() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_mounted(d.path()));
        assert!(is_mounted(Path::new("/proc")));
    }

    #[test]
    fn ext_sizes_come_from_the_superblock() {
        let text =
            "Filesystem features:      has_journal\nBlock count:              8192\nBlock size:               1024\n";
        assert_eq!(ext_size(text), Some(8 << 20));
        assert_eq!(ext_size("nothing"), None);
    }

    #[test]
    fn an_image_grown_while_unmounted_gets_its_filesystem_grown() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::File::create(&img).unwrap().set_len(4 << 20).unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)).unwrap();
        grow_unmounted(&img).unwrap();
        let before = ext_size(&run(Command::new("dumpe2fs").arg("-h").arg(&img)).unwrap()).unwrap();
        assert_eq!(before, 4 << 20, "already its size: left alone");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(12 << 20)
            .unwrap();
        grow_unmounted(&img).unwrap();
        let after = ext_size(&run(Command::new("dumpe2fs").arg("-h").arg(&img)).unwrap()).unwrap();
        assert_eq!(after, 12 << 20);
    }

    #[test]
    fn configuration_defaults_when_absent_and_names_what_is_wrong() {
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct C {
            #[serde(default)]
            a: u32,
        }
        assert_eq!(config::<C>(serde_json::Value::Null).unwrap(), C::default());
        assert_eq!(config::<C>(serde_json::json!({"a": 2})).unwrap(), C { a: 2 });
        let e = config::<C>(serde_json::json!({"b": 1})).unwrap_err();
        assert!(e.message.contains("configuration: unknown field `b`"), "{}", e.message);
        assert_eq!(flat(Path::new("/a/b/")), "a_b");
    }

    #[test]
    fn a_process_that_ends_is_seen_gone() {
        let mut c = Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = c.id() as i32;
        std::thread::spawn(move || c.wait());
        assert!(wait_gone(pid, "sleep", std::time::Duration::from_secs(5)));
        assert!(!wait_gone(
            std::process::id() as i32,
            "",
            std::time::Duration::from_millis(100)
        ));
    }

    #[test]
    fn a_tool_that_hangs_is_stopped() {
        let e = run_within(Command::new("sleep").arg("10"), std::time::Duration::from_millis(200)).unwrap_err();
        assert!(e.message.contains("did not finish within"), "{}", e.message);
        let out = run_within(Command::new("echo").arg("hi"), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(out, "hi\n");
    }

    #[test]
    fn a_failing_tool_says_what_it_printed() {
        let e = run(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(
            e.message.contains("nope") && e.message.contains("exit status: 3"),
            "{}",
            e.message
        );
    }
}
