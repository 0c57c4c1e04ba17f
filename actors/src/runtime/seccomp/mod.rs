//! Seccomp: which profile a container runs under, and that profile turned
//! into the OCI spec's `linux.seccomp` for libcontainer to load.
//!
//! Profiles are in Docker's format (which containerd and CRI-O read too):
//! OCI's `LinuxSeccomp` plus `archMap`, `name`, `comment`, and per-rule
//! `includes`/`excludes` on the container's capabilities, the node's
//! architecture and its kernel version. `RuntimeDefault` is such a profile,
//! kept as data in `default.json`; `Localhost` profiles are files under the
//! node's `<root>/seccomp`, as kubelet keeps them under `/var/lib/kubelet/seccomp`.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The RuntimeDefault profile (the containerd/Docker default).
pub const RUNTIME_DEFAULT: &str = include_str!("default.json");

/// Localhost profiles larger than this are refused rather than read.
const MAX_PROFILE: u64 = 1 << 20;

/// The profile a container runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Unconfined,
    RuntimeDefault,
    /// `localhostProfile`, relative to the node's profile directory.
    Localhost(String),
}

/// The container's `seccompProfile`, else the pod's, else the node's
/// default. Privileged containers run unconfined, as under containerd and CRI-O.
pub fn choose(pod: &Pod, c: &Container, runtime_default: bool) -> Choice {
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Choice::Unconfined;
    }
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let profile = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(pod_sc.and_then(|s| s.seccomp_profile.as_ref()));
    match profile {
        Some(p) if p.type_ == "Unconfined" => Choice::Unconfined,
        Some(p) if p.type_ == "Localhost" => Choice::Localhost(p.localhost_profile.clone().unwrap_or_default()),
        Some(_) => Choice::RuntimeDefault,
        None if runtime_default => Choice::RuntimeDefault,
        None => Choice::Unconfined,
    }
}

/// What the node is: its architecture and kernel, for `includes`/`excludes`.
#[derive(Debug, Clone)]
pub struct Host {
    /// Docker's name of the native architecture (`amd64`, `arm64`, ...).
    pub arch: &'static str,
    /// The kernel's major and minor version.
    pub kernel: (u32, u32),
}

impl Host {
    /// This machine.
    pub fn current() -> Self {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Host {
            arch: docker_arch(std::env::consts::ARCH),
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        }
    }
}

/// Docker's architecture names, which profiles use, from Rust's.
fn docker_arch(rust: &str) -> &'static str {
    match rust {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "mips64" => "mips64",
        "loongarch64" => "loong64",
        _ => "unknown",
    }
}

/// The seccomp architecture of Docker's architecture name.
fn seccomp_arch(docker: &str) -> Option<&'static str> {
    Some(match docker {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "s390x" => "SCMP_ARCH_S390X",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "mips64" => "SCMP_ARCH_MIPS64",
        "loong64" => "SCMP_ARCH_LOONGARCH64",
        _ => return None,
    })
}

/// `major.minor` of a kernel release (`6.1.0-28-amd64`).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The architectures libseccomp (and so libcontainer) knows.
const ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(clippy::enum_variant_names)] // the names are the profile format's
enum Action {
    ScmpActKill,
    ScmpActKillProcess,
    ScmpActKillThread,
    ScmpActTrap,
    ScmpActErrno,
    ScmpActTrace,
    ScmpActAllow,
    ScmpActLog,
    ScmpActNotify,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(clippy::enum_variant_names)] // the names are the profile format's
enum Op {
    ScmpCmpNe,
    ScmpCmpLt,
    ScmpCmpLe,
    ScmpCmpEq,
    ScmpCmpGe,
    ScmpCmpGt,
    ScmpCmpMaskedEq,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(clippy::enum_variant_names)] // the names are the profile format's
enum Flag {
    SeccompFilterFlagTsync,
    SeccompFilterFlagLog,
    SeccompFilterFlagSpecAllow,
    SeccompFilterFlagWaitKillableRecv,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Profile {
    default_action: Action,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<ArchMap>>,
    flags: Option<Vec<Flag>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<Syscall>,
    #[serde(rename = "comment")]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Syscall {
    name: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    action: Action,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
    #[serde(rename = "comment")]
    _comment: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: Op,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    min_kernel: Option<String>,
}

/// `linux.seccomp` for a container under `choice`, with the capabilities
/// it is given; `None` for Unconfined. The error names the profile (the
/// file, for Localhost) and what in it cannot be applied.
pub fn for_container(
    choice: &Choice,
    profile_root: &Path,
    caps: &[String],
    host: &Host,
) -> Result<Option<Value>, String> {
    match choice {
        Choice::Unconfined => Ok(None),
        Choice::RuntimeDefault => to_oci(RUNTIME_DEFAULT, caps, host)
            .map(Some)
            .map_err(|e| format!("the RuntimeDefault seccomp profile: {e}")),
        Choice::Localhost(rel) => {
            let path = localhost_path(profile_root, rel)?;
            let text = read_profile(&path)
                .map_err(|e| format!("cannot load seccomp profile {:?}: {e}", path.display().to_string()))?;
            to_oci(&text, caps, host)
                .map(Some)
                .map_err(|e| format!("seccomp profile {:?}: {e}", path.display().to_string()))
        }
    }
}

/// A Localhost profile's file: below the profile root, and only there.
fn localhost_path(root: &Path, rel: &str) -> Result<PathBuf, String> {
    // Validation refuses these already; a pod stored before it must not escape either.
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
        return Err(format!(
            "localhostProfile {rel:?} must be a relative path below {} without '..'",
            root.display()
        ));
    }
    Ok(root.join(rel))
}

fn read_profile(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_PROFILE {
        return Err(format!(
            "{} bytes, more than the {MAX_PROFILE} a profile may have",
            meta.len()
        ));
    }
    let mut text = String::new();
    f.take(MAX_PROFILE)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// A Docker-format profile, resolved for this container and host, as OCI's `LinuxSeccomp`.
fn to_oci(text: &str, caps: &[String], host: &Host) -> Result<Value, String> {
    let p: Profile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if p.default_action == Action::ScmpActNotify {
        return Err("defaultAction SCMP_ACT_NOTIFY is not supported".into());
    }
    if p.listener_path.is_some() || p.listener_metadata.is_some() {
        return Err("listenerPath: seccomp agents (SCMP_ACT_NOTIFY) are not supported".into());
    }
    let architectures: Vec<String> = match (&p.architectures, &p.arch_map) {
        (Some(_), Some(_)) => return Err("both 'architectures' and 'archMap' are set; use one".into()),
        (Some(a), None) => a.clone(),
        (None, Some(map)) => {
            let native = seccomp_arch(host.arch);
            map.iter()
                .filter(|m| Some(m.architecture.as_str()) == native)
                .flat_map(|m| std::iter::once(m.architecture.clone()).chain(m.sub_architectures.iter().cloned()))
                .collect()
        }
        (None, None) => Vec::new(),
    };
    if let Some(bad) = architectures.iter().find(|a| !ARCHES.contains(&a.as_str())) {
        return Err(format!("unknown architecture {bad:?}; known: {}", ARCHES.join(", ")));
    }
    let mut syscalls = Vec::new();
    for (i, s) in p.syscalls.iter().enumerate() {
        let at = |what: &str| format!("syscalls[{i}]: {what}");
        let names: Vec<String> = match (&s.name, s.names.is_empty()) {
            (Some(_), false) => return Err(at("use either 'name' or 'names', not both")),
            (Some(n), true) => vec![n.clone()],
            (None, false) => s.names.clone(),
            (None, true) => return Err(at("no syscall named ('name' or 'names')")),
        };
        if s.action == Action::ScmpActNotify {
            return Err(at("action SCMP_ACT_NOTIFY is not supported"));
        }
        if !applies(&s.includes, &s.excludes, caps, host).map_err(|e| at(&e))? {
            continue;
        }
        let mut rule = json!({"names": names, "action": s.action});
        if let Some(e) = s.errno_ret {
            rule["errnoRet"] = json!(e);
        }
        if !s.args.is_empty() {
            rule["args"] = json!(s.args);
        }
        syscalls.push(rule);
    }
    let mut out = json!({"defaultAction": p.default_action, "architectures": architectures, "syscalls": syscalls});
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    if let Some(f) = &p.flags {
        out["flags"] = json!(f);
    }
    Ok(out)
}

/// Whether a rule applies, as Docker decides it: every `includes` condition
/// holds (the native architecture listed, every capability held, the kernel
/// new enough) and no `excludes` one does.
fn applies(inc: &Filter, exc: &Filter, caps: &[String], host: &Host) -> Result<bool, String> {
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == host.arch) {
        return Ok(false);
    }
    if !inc.caps.iter().all(|c| caps.contains(c)) {
        return Ok(false);
    }
    if let Some(min) = &inc.min_kernel {
        let want = parse_kernel(min)
            .filter(|_| min.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("includes.minKernel {min:?} is not a kernel version such as \"4.8\""))?;
        if host.kernel < want {
            return Ok(false);
        }
    }
    if exc.arches.iter().any(|a| a == host.arch) || exc.caps.iter().any(|c| caps.contains(c)) {
        return Ok(false);
    }
    if exc.min_kernel.is_some() {
        return Err("excludes.minKernel is not supported".into());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> Host {
        Host {
            arch: "amd64",
            kernel: (6, 1),
        }
    }

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The rules that allow `name`, with their arguments.
    fn rules<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    const DEFAULT_CAPS: &[&str] = &["CAP_CHOWN", "CAP_NET_RAW", "CAP_SETUID", "CAP_SYS_CHROOT"];

    #[test]
    fn runtime_default_denies_namespaces_to_a_container_without_sys_admin() {
        let p = to_oci(RUNTIME_DEFAULT, &caps(DEFAULT_CAPS), &amd64()).unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        for denied in [
            "unshare",
            "setns",
            "mount",
            "bpf",
            "kexec_load",
            "open_by_handle_at",
            "reboot",
        ] {
            assert!(rules(&p, denied).is_empty(), "{denied} is allowed");
        }
        // clone only without CLONE_NEW* flags; clone3 (whose flags seccomp cannot see) is ENOSYS.
        let clone = rules(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["value"], 0x7E02_0000u64);
        let clone3 = rules(&p, "clone3");
        assert_eq!(
            (clone3[0]["action"].as_str(), clone3[0]["errnoRet"].as_u64()),
            (Some("SCMP_ACT_ERRNO"), Some(38))
        );
        // What comes with capabilities the container has, and the architecture.
        assert_eq!(rules(&p, "chroot").len(), 1);
        assert_eq!(rules(&p, "arch_prctl").len(), 1);
        assert!(rules(&p, "set_tls").is_empty(), "an arm rule on amd64");
        assert_eq!(rules(&p, "ptrace").len(), 1, "kernels from 4.8 on");
        assert!(!rules(&p, "execve").is_empty() && !rules(&p, "read").is_empty());
    }

    #[test]
    fn runtime_default_gives_sys_admin_its_syscalls() {
        let p = to_oci(RUNTIME_DEFAULT, &caps(&["CAP_SYS_ADMIN"]), &amd64()).unwrap();
        assert_eq!(rules(&p, "unshare").len(), 1);
        assert!(rules(&p, "clone").iter().all(|r| r["args"].is_null()));
        assert!(rules(&p, "clone3").iter().all(|r| r["action"] == "SCMP_ACT_ALLOW"));
        let old = Host {
            arch: "arm64",
            kernel: (4, 4),
        };
        let p = to_oci(RUNTIME_DEFAULT, &caps(&[]), &old).unwrap();
        assert_eq!(p["architectures"], json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]));
        assert!(rules(&p, "ptrace").is_empty(), "before 4.8 ptrace could bypass seccomp");
        assert_eq!(rules(&p, "set_tls").len(), 1);
        assert!(rules(&p, "arch_prctl").is_empty());
    }

    #[test]
    fn kubernetes_documentation_profiles_load() {
        // From the seccomp tutorial: audit.json and fine-grained.json (shortened).
        let audit = to_oci(r#"{"defaultAction": "SCMP_ACT_LOG"}"#, &[], &amd64()).unwrap();
        assert_eq!(
            audit,
            json!({"defaultAction": "SCMP_ACT_LOG", "architectures": [], "syscalls": []})
        );
        let fine = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["accept4", "epoll_wait", "pselect6", "futex"], "action": "SCMP_ACT_ALLOW"}]
        }"#;
        let p = to_oci(fine, &[], &amd64()).unwrap();
        assert_eq!(p["syscalls"][0]["names"][3], "futex");
    }

    #[test]
    fn a_bad_profile_says_what_and_where() {
        let err = |t: &str| to_oci(t, &[], &amd64()).unwrap_err();
        let e = err("{\n  \"defaultAction\": \"SCMP_ACT_ALLOW\",\n  \"syscalls\": [{\"names\": [\"mkdir\"], \"action\": \"SCMP_ACT_DENY\"}]\n}");
        assert!(
            e.contains("unknown variant `SCMP_ACT_DENY`") && e.contains("line 3"),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "sycalls": []}"#);
        assert!(e.contains("unknown field `sycalls`"), "{e}");
        let e = err(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#);
        assert!(e.contains("SCMP_ACT_NOTIFY is not supported"), "{e}");
        let e = err(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(e.starts_with("syscalls[0]: use either"), "{e}");
        let e = err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}"#);
        assert!(e.contains("unknown architecture \"SCMP_ARCH_Z80\""), "{e}");
        let e = err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": [], "archMap": []}"#);
        assert!(e.contains("both 'architectures' and 'archMap'"), "{e}");
    }

    #[test]
    fn localhost_profiles_stay_below_the_root_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let c = |rel: &str| for_container(&Choice::Localhost(rel.into()), dir.path(), &[], &amd64());
        let e = c("../etc/x.json").unwrap_err();
        assert!(e.contains("without '..'"), "{e}");
        let e = c("profiles/missing.json").unwrap_err();
        let missing = dir.path().join("profiles/missing.json");
        assert!(
            e.contains(&format!("cannot load seccomp profile \"{}\"", missing.display())) && e.contains("No such file"),
            "{e}"
        );
        std::fs::create_dir(dir.path().join("profiles")).unwrap();
        std::fs::write(
            dir.path().join("profiles/ok.json"),
            r#"{"defaultAction": "SCMP_ACT_LOG"}"#,
        )
        .unwrap();
        assert_eq!(c("profiles/ok.json").unwrap().unwrap()["defaultAction"], "SCMP_ACT_LOG");
        std::fs::create_dir(dir.path().join("profiles/dir.json")).unwrap();
        assert!(c("profiles/dir.json").unwrap_err().contains("not a regular file"));
        assert_eq!(for_container(&Choice::Unconfined, dir.path(), &[], &amd64()), Ok(None));
    }

    #[test]
    fn the_container_then_the_pod_then_the_node_decide() {
        let pod = |v: Value| -> (Pod, Container) {
            let p: Pod = serde_json::from_value(v).unwrap();
            let c = p.spec.as_ref().unwrap().containers[0].clone();
            (p, c)
        };
        let (p, c) = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(choose(&p, &c, true), Choice::RuntimeDefault);
        assert_eq!(choose(&p, &c, false), Choice::Unconfined);
        let (p, c) = pod(json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "a.json"}},
            "containers": [{"name": "c"}]}}));
        assert_eq!(choose(&p, &c, false), Choice::Localhost("a.json".into()));
        let (p, c) = pod(json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "a.json"}},
            "containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}}));
        assert_eq!(choose(&p, &c, true), Choice::Unconfined);
        let (p, c) = pod(json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"privileged": true}}]}}));
        assert_eq!(choose(&p, &c, true), Choice::Unconfined, "privileged runs unconfined");
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
        assert!((4, 8) < (4, 10) && (4, 10) < (5, 0));
    }
}
