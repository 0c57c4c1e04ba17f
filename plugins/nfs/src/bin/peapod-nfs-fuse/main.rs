//! `peapod-nfs-fuse`: the NFS plugin's userspace client, for kernels
//! without NFS. One process per mounted export (started by the plugin at
//! stage, ended by unmounting at unstage), plus one-shot commands the
//! provisioner uses on an export.
//!
//! ```text
//! peapod-nfs-fuse mount  --server S --export /e --mountpoint DIR [--read-only] [--timeout-ms N]
//! peapod-nfs-fuse mkdir  --server S --export /e --path /sub [--mode 0777]
//! peapod-nfs-fuse remove --server S --export /e --path /sub
//! peapod-nfs-fuse rename --server S --export /e --path /sub --to /archived-sub
//! ```
//!
//! libnfs 4.0 speaks NFSv3 here (its NFSv4 writes fail past ~4000 bytes).

mod fs;
mod libnfs;

use std::collections::HashMap;
use std::process::ExitCode;

fn usage() -> String {
    "usage: peapod-nfs-fuse mount|mkdir|remove|rename --server S --export /e [--mountpoint DIR] [--path P] [--to P] [--mode M] [--read-only] [--timeout-ms N]".into()
}

/// `--flag value` pairs and bare `--flag`s after the command.
fn parse(args: &[String]) -> Result<(String, HashMap<String, String>), String> {
    let (cmd, rest) = args.split_first().ok_or_else(usage)?;
    let mut opts = HashMap::new();
    let mut it = rest.iter().peekable();
    while let Some(a) = it.next() {
        let key = a
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {a:?}; {}", usage()))?;
        let value = match it.peek() {
            Some(v) if !v.starts_with("--") => it.next().cloned().unwrap_or_default(),
            _ => String::new(),
        };
        opts.insert(key.to_string(), value);
    }
    Ok((cmd.clone(), opts))
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, o) = parse(args)?;
    let need = |k: &str| {
        o.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("{cmd}: --{k} is required"))
    };
    let timeout = o.get("timeout-ms").and_then(|t| t.parse().ok()).unwrap_or(30_000);
    let (server, export) = (need("server")?, need("export")?);
    let connect = || {
        libnfs::Context::mount(&server, &export, timeout)
            .map_err(|e| format!("mount {server}:{export} over NFSv3: {e}"))
    };
    match cmd.as_str() {
        "mount" => {
            let mountpoint = need("mountpoint")?;
            let read_only = o.contains_key("read-only");
            let nfs = connect()?;
            let mut options = vec![
                fuser::MountOption::FSName(format!("{server}:{export}")),
                fuser::MountOption::Subtype("peapod-nfs".into()),
                fuser::MountOption::AllowOther,
                fuser::MountOption::DefaultPermissions,
                fuser::MountOption::NoDev,
                fuser::MountOption::NoSuid,
            ];
            if read_only {
                options.push(fuser::MountOption::RO);
            }
            // Returns once the mount point is unmounted.
            fuser::mount2(fs::NfsFs::new(nfs, read_only), &mountpoint, &options)
                .map_err(|e| format!("FUSE mount at {mountpoint}: {e}"))
        }
        "mkdir" => {
            let nfs = connect()?;
            let path = need("path")?;
            let mode = o
                .get("mode")
                .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
                .unwrap_or(0o777);
            match nfs.mkdir(&path, mode) {
                Err(e) if e.errno != libc::EEXIST => return Err(format!("mkdir {path}: {e}")),
                _ => {}
            }
            // The server applies its umask: set the mode as asked.
            nfs.chmod(&path, mode).map_err(|e| format!("chmod {path}: {e}"))
        }
        "remove" => {
            let path = need("path")?;
            connect()?.remove_all(&path).map_err(|e| format!("remove {path}: {e}"))
        }
        "rename" => {
            let (path, to) = (need("path")?, need("to")?);
            connect()?
                .rename(&path, &to)
                .map_err(|e| format!("rename {path} to {to}: {e}"))
        }
        other => Err(format!("unknown command {other:?}; {}", usage())),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peapod-nfs-fuse: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_values_or_stand_alone() {
        let args: Vec<String> = ["mount", "--server", "h", "--read-only", "--export", "/e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (cmd, o) = parse(&args).unwrap();
        assert_eq!(cmd, "mount");
        assert_eq!(o["server"], "h");
        assert_eq!(o["read-only"], "");
        assert_eq!(o["export"], "/e");
        assert!(parse(&["mount".into(), "stray".into()]).is_err());
        let e = run(&["mkdir".into(), "--server".into(), "h".into()]).unwrap_err();
        assert!(e.contains("--export is required"), "{e}");
    }
}
