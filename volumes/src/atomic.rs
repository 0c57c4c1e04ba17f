//! Writing a projected volume's files the way kubelet's `AtomicWriter`
//! does, so a reader never sees half an update: the files go into a new
//! timestamped directory, the `..data` symlink is swapped to it with one
//! `rename`, and each top-level name is a symlink through `..data`:
//!
//! ```text
//! <volume>/..2026_12_02_10_00_00.123456789/config/app.yaml
//! <volume>/..data -> ..2026_12_02_10_00_00.123456789
//! <volume>/config -> ..data/config
//! ```
//!
//! A `subPath` mount binds what a path resolves to at container start, so
//! it keeps the old file, as in Kubernetes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a volume: its bytes and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Checks a payload path as kubelet's `validatePath`: relative, no `..`
/// component, not starting with `..`, not empty.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path must not be empty".into());
    }
    if path.len() > 4096 {
        return Err(format!("{path:?}: longer than 4096 bytes"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!("{path:?}: must be relative"));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{path:?}: must not contain '..'"));
    }
    if path.starts_with("..") {
        return Err(format!("{path:?}: must not start with '..'"));
    }
    Ok(())
}

fn top(path: &str) -> &str {
    path.split('/').find(|c| !c.is_empty() && *c != ".").unwrap_or(path)
}

/// Whether the files under `dir` are exactly `payload` (contents and modes).
fn same(dir: &Path, payload: &BTreeMap<String, FileProjection>) -> bool {
    let mut seen = 0usize;
    for (path, f) in payload {
        let p = dir.join(path);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            return false;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o7777 != f.mode {
            return false;
        }
        if std::fs::read(&p).ok().as_deref() != Some(f.data.as_slice()) {
            return false;
        }
        seen += 1;
    }
    count_files(dir) == seen
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

fn stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!(
        "..{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}.{:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// kubelet's `SetVolumeOwnership` for a read-only volume: everything under
/// `root` belongs to group `gid`, files readable by it, directories
/// searchable and setgid.
fn give_to_group(root: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(root, None, Some(gid))?;
    let meta = std::fs::symlink_metadata(root)?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_dir() {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | 0o2550))?;
        for e in std::fs::read_dir(root)?.flatten() {
            give_to_group(&e.path(), gid)?;
        }
    } else if meta.is_file() {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | 0o440))?;
    }
    Ok(())
}

/// Makes `dir`'s visible files exactly `payload`; returns whether anything
/// changed. Safe to repeat; a crash midway leaves the previous version
/// visible. With `fs_group` (the pod's `fsGroup`) the files belong to that
/// group and it may read them, as kubelet sets a volume's ownership.
pub fn write(dir: &Path, payload: &BTreeMap<String, FileProjection>, fs_group: Option<u32>) -> io::Result<bool> {
    for path in payload.keys() {
        check_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let old_dir = old.as_ref().map(|o| dir.join(o));
    let wanted_tops: BTreeSet<&str> = payload.keys().map(|p| top(p)).collect();
    let mut changed = false;
    // With a group, modes are widened for it: compare what would be written.
    let widened;
    let expected = match fs_group {
        None => payload,
        Some(_) => {
            widened = payload
                .iter()
                .map(|(k, f)| {
                    (
                        k.clone(),
                        FileProjection {
                            data: f.data.clone(),
                            mode: f.mode | 0o440,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>();
            &widened
        }
    };
    let owned = |d: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs_group.is_none_or(|g| std::fs::metadata(d).is_ok_and(|m| m.gid() == g))
    };
    if !old_dir.as_ref().is_some_and(|d| same(d, expected) && owned(d)) {
        let name = stamp();
        let new_dir = dir.join(&name);
        std::fs::create_dir(&new_dir)?;
        std::fs::set_permissions(&new_dir, std::fs::Permissions::from_mode(0o755))?;
        for (path, f) in payload {
            let p = new_dir.join(path);
            // Directories of nested paths as the volume's own: 0755, whatever the umask.
            let mut dir_path = new_dir.clone();
            for c in Path::new(path).parent().into_iter().flat_map(Path::components) {
                dir_path.push(c);
                if !dir_path.is_dir() {
                    std::fs::create_dir(&dir_path)?;
                    std::fs::set_permissions(&dir_path, std::fs::Permissions::from_mode(0o755))?;
                }
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(f.mode)
                .open(&p)?;
            io::Write::write_all(&mut file, &f.data)?;
            // The umask must not narrow the mode asked for.
            file.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
        }
        if let Some(gid) = fs_group {
            give_to_group(&new_dir, gid)?;
        }
        let tmp = dir.join(DATA_TMP);
        let _ = std::fs::remove_file(&tmp);
        symlink(&name, &tmp)?;
        std::fs::rename(&tmp, dir.join(DATA))?;
        changed = true;
    }
    for t in &wanted_tops {
        let link = dir.join(t);
        let target = Path::new(DATA).join(t);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            symlink(&target, &link)?;
            changed = true;
        }
    }
    // What is neither wanted nor ours goes: old top-level links, old versions.
    let current = std::fs::read_link(dir.join(DATA)).ok();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == DATA || wanted_tops.contains(name.as_str()) {
            continue;
        }
        if name.starts_with("..") {
            if current.as_deref() != Some(Path::new(&name)) {
                let _ = std::fs::remove_dir_all(e.path());
                let _ = std::fs::remove_file(e.path());
            }
        } else if e.file_type().is_ok_and(|t| t.is_symlink()) {
            let _ = std::fs::remove_file(e.path());
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> BTreeMap<String, FileProjection> {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn updates_swap_data_and_leave_no_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path();
        assert!(write(v, &payload(&[("a", "1", 0o644), ("conf/b.yaml", "x: 1", 0o400)]), None).unwrap());
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(v.join("conf/b.yaml")).unwrap(), "x: 1");
        assert_eq!(std::fs::read_link(v.join("conf")).unwrap(), Path::new("..data/conf"));
        let mode = std::fs::metadata(v.join("conf/b.yaml")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        let dir_mode = std::fs::metadata(v.join("conf")).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o755, "nested directories are searchable by anyone");
        let first = std::fs::read_link(v.join(DATA)).unwrap();
        assert!(first.to_string_lossy().starts_with("..20"), "{first:?}");

        // Nothing changed: nothing written.
        assert!(!write(v, &payload(&[("a", "1", 0o644), ("conf/b.yaml", "x: 1", 0o400)]), None).unwrap());
        assert_eq!(std::fs::read_link(v.join(DATA)).unwrap(), first);

        // A change: new content behind the same names, a dropped key goes.
        assert!(write(v, &payload(&[("a", "2", 0o644)]), None).unwrap());
        assert_eq!(std::fs::read_to_string(v.join("a")).unwrap(), "2");
        assert!(!v.join("conf").exists());
        let names: BTreeSet<String> = std::fs::read_dir(v)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let second = std::fs::read_link(v.join(DATA)).unwrap();
        assert_ne!(second, first);
        assert_eq!(
            names,
            BTreeSet::from(["a".to_string(), DATA.to_string(), second.to_string_lossy().into_owned()])
        );
        // A mode change alone is a change.
        assert!(write(v, &payload(&[("a", "2", 0o600)]), None).unwrap());
    }

    #[test]
    fn an_fs_group_owns_and_may_read_the_files() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path();
        assert!(write(v, &payload(&[("s/key", "x", 0o400)]), Some(4242)).unwrap());
        let m = std::fs::metadata(v.join("s/key")).unwrap();
        assert_eq!((m.gid(), m.mode() & 0o7777), (4242, 0o440));
        let d = std::fs::metadata(v.join("..data/s")).unwrap();
        assert_eq!(d.gid(), 4242);
        assert_eq!(d.mode() & 0o2000, 0o2000, "setgid directories");
        // Written again unchanged: nothing to do.
        assert!(!write(v, &payload(&[("s/key", "x", 0o400)]), Some(4242)).unwrap());
    }

    #[test]
    fn paths_that_leave_the_volume_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["/etc/passwd", "../x", "a/../../x", "..data", ""] {
            assert!(
                write(dir.path(), &payload(&[(bad, "x", 0o644)]), None).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn stamps_are_calendar_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_788), (2026, 12, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
    }
}
