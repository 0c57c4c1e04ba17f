//! `peapod cp`: files into and out of a container, as kubectl copies them:
//! a tar stream through exec (`tar -xmf -` in the container to copy in,
//! `tar cf -` to copy out), so the image needs a `tar`.

use crate::client::Client;
use crate::exec::{run, Streams};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

#[derive(clap::Args)]
pub struct CpArgs {
    /// The source: a local path, or `[NAMESPACE/]POD:PATH`.
    src: String,
    /// The destination: a local path, or `[NAMESPACE/]POD:PATH`.
    dest: String,
    /// The container (default: the pod's only container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Do not keep owners and permissions in the container.
    #[arg(long)]
    no_preserve: bool,
}

/// One side of a copy.
#[derive(Debug, PartialEq)]
enum Spec {
    Local(PathBuf),
    Remote {
        namespace: Option<String>,
        pod: String,
        path: String,
    },
}

/// `[NAMESPACE/]POD:PATH` is a container's path; anything else (no colon,
/// or a path starting with `/` or `.`) is local.
fn parse_spec(arg: &str) -> Result<Spec> {
    let Some((pod, path)) = arg.split_once(':') else {
        return Ok(Spec::Local(arg.into()));
    };
    if pod.starts_with('/') || pod.starts_with('.') || pod.is_empty() || pod.matches('/').count() > 1 {
        return Ok(Spec::Local(arg.into()));
    }
    if path.is_empty() {
        bail!("{arg}: the path in the container cannot be empty");
    }
    let (namespace, pod) = match pod.split_once('/') {
        Some((ns, pod)) => (Some(ns.to_string()), pod.to_string()),
        None => (None, pod.to_string()),
    };
    Ok(Spec::Remote {
        namespace,
        pod,
        path: path.to_string(),
    })
}

/// The last component of a container path (`/a/b/` → `b`).
fn base(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or(path)
}

/// The directory of a container path (`/a/b` → `/a`, `b` → `.`).
fn dir(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => ".",
    }
}

pub fn cp(client: &Client, a: CpArgs) -> Result<()> {
    let default_ns = a.namespace.clone().unwrap_or_else(|| "default".into());
    match (parse_spec(&a.src)?, parse_spec(&a.dest)?) {
        (Spec::Local(src), Spec::Remote { namespace, pod, path }) => {
            let ns = namespace.unwrap_or(default_ns);
            copy_in(client, &ns, &pod, a.container.as_deref(), &src, &path, a.no_preserve)
        }
        (Spec::Remote { namespace, pod, path }, Spec::Local(dest)) => {
            let ns = namespace.unwrap_or(default_ns);
            copy_out(client, &ns, &pod, a.container.as_deref(), &path, &dest)
        }
        (Spec::Local(_), Spec::Local(_)) => bail!("one of src or dest must be a container path (POD:PATH)"),
        (Spec::Remote { .. }, Spec::Remote { .. }) => bail!("one of src or dest must be a local path"),
    }
}

fn copy_in(
    client: &Client,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    src: &Path,
    dest: &str,
    no_preserve: bool,
) -> Result<()> {
    let meta = std::fs::metadata(src).with_context(|| format!("{}", src.display()))?;
    // Into a directory that exists: under the source's own name.
    let is_dir = |p: &str| -> Result<bool> {
        let cmd = ["test".to_string(), "-d".into(), p.into()];
        let (mut out, mut err) = (std::io::sink(), std::io::sink());
        let streams = Streams {
            stdin: None,
            stdout: &mut out,
            stderr: &mut err,
        };
        Ok(run(client, ns, pod, container, &cmd, false, streams)? == 0)
    };
    let target = if dest.ends_with('/') || is_dir(dest)? {
        let name = src
            .file_name()
            .with_context(|| format!("{}: no file name to copy under", src.display()))?
            .to_string_lossy()
            .into_owned();
        format!("{}/{name}", dest.trim_end_matches('/'))
    } else {
        dest.to_string()
    };
    let name = base(&target).to_string();
    let (reader, writer) = std::io::pipe()?;
    let src = src.to_path_buf();
    let tar = std::thread::spawn(move || -> Result<()> {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        if meta.is_dir() {
            builder.append_dir_all(&name, &src)?;
        } else {
            builder.append_path_with_name(&src, &name)?;
        }
        builder.into_inner()?.flush()?;
        Ok(())
    });
    let mut cmd: Vec<String> = vec!["tar".into()];
    if no_preserve {
        cmd.extend(["--no-same-permissions".into(), "--no-same-owner".into()]);
    }
    cmd.extend(["-xmf".into(), "-".into(), "-C".into(), dir(&target).into()]);
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let streams = Streams {
        stdin: Some(Box::new(reader)),
        stdout: &mut out,
        stderr: &mut err,
    };
    let code = run(client, ns, pod, container, &cmd, false, streams)?;
    tar.join().map_err(|_| anyhow::anyhow!("the tar writer panicked"))??;
    if code != 0 {
        bail!("tar in the container exited with {code}");
    }
    Ok(())
}

fn copy_out(client: &Client, ns: &str, pod: &str, container: Option<&str>, src: &str, dest: &Path) -> Result<()> {
    let cmd: Vec<String> = vec!["tar".into(), "cf".into(), "-".into(), src.into()];
    let (reader, mut writer) = std::io::pipe()?;
    let prefix = PathBuf::from(src.trim_start_matches('/').trim_end_matches('/'));
    let dest = dest.to_path_buf();
    let untar = std::thread::spawn(move || untar(reader, &prefix, &dest));
    let mut err = std::io::stderr();
    let streams = Streams {
        stdin: None,
        stdout: &mut writer,
        stderr: &mut err,
    };
    let code = run(client, ns, pod, container, &cmd, false, streams);
    drop(writer);
    let unpacked = untar.join().map_err(|_| anyhow::anyhow!("the tar reader panicked"))?;
    let code = code?;
    if code != 0 {
        bail!("tar in the container exited with {code}");
    }
    unpacked
}

/// Unpacks the entries under `prefix` to `dest`, refusing any that would
/// land outside it; links are skipped (as kubectl skips them).
fn untar(reader: impl Read, prefix: &Path, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let Ok(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            eprintln!(
                "warning: skipping {}: it would land outside {}",
                name.display(),
                dest.display()
            );
            continue;
        }
        // The source itself (a file, or the top of a directory) is the destination.
        let target = match rel.as_os_str().is_empty() {
            true => dest.to_path_buf(),
            false => dest.join(rel),
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            eprintln!("warning: skipping the link {}", name.display());
            continue;
        }
        if kind.is_dir() {
            std::fs::create_dir_all(&target).with_context(|| format!("{}", target.display()))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
        }
        entry
            .unpack(&target)
            .with_context(|| format!("unpack {}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_as_kubectl_splits_them() {
        assert_eq!(parse_spec("./a:b").unwrap(), Spec::Local("./a:b".into()));
        assert_eq!(parse_spec("/tmp/x").unwrap(), Spec::Local("/tmp/x".into()));
        assert_eq!(
            parse_spec("team/web:/etc/hosts").unwrap(),
            Spec::Remote {
                namespace: Some("team".into()),
                pod: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert!(parse_spec("web:").is_err());
        assert_eq!((base("/a/b/"), dir("/a/b"), dir("b"), dir("/b")), ("b", "/a", ".", "/"));
    }

    #[test]
    fn untar_keeps_to_the_destination() {
        let mut tarball = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            // `append_data` refuses `..`; write the raw name as a hostile tar would.
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            tarball.append(&h, data).unwrap();
        };
        add("tmp/dir/a", b"a");
        add("tmp/dir/sub/b", b"b");
        add("tmp/dir/../../escape", b"x");
        add("other/c", b"c");
        let bytes = tarball.into_inner().unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("copy");
        untar(&bytes[..], Path::new("tmp/dir"), &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"a");
        assert_eq!(std::fs::read(dest.join("sub/b")).unwrap(), b"b");
        assert!(!out.path().join("escape").exists());
        assert!(!dest.join("c").exists() && !out.path().join("other").exists());
    }
}
