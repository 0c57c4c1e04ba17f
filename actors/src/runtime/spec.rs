//! The OCI runtime config (`config.json`) for one container of a pod, from
//! the pod spec and the image config, with Kubernetes' rules for command,
//! args, env and working directory.

use super::{projection, volpath};
use crate::image::ImageConfig;
use k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use peapod_volumes::Published;
use std::collections::BTreeMap;
use std::path::Path;

/// containerd's default capability set, which Kubernetes users expect.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Why a container's config cannot be built (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A spec type refusing what it was given: the runtime would refuse it too.
fn invalid(what: &str) -> impl Fn(oci_spec::OciSpecError) -> ConfigError + '_ {
    move |e| ConfigError(format!("{what}: {e}"))
}

/// A bind mount of `source` at `destination`.
fn bind_mount(destination: &str, source: &Path, options: &[&str]) -> Result<Mount, ConfigError> {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(invalid("mount"))
}

/// A mount of a kernel filesystem (`proc`, `sysfs`, …) at `destination`.
fn fs_mount(destination: &str, typ: &str, options: &[&str]) -> Result<Mount, ConfigError> {
    let mut b = MountBuilder::default().destination(destination).typ(typ).source(typ);
    if !options.is_empty() {
        b = b.options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>());
    }
    b.build().map_err(invalid("mount"))
}

/// The capability named `name` (`CAP_SYS_ADMIN` or `SYS_ADMIN`).
fn capability(name: &str) -> Result<Capability, ConfigError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| ConfigError(format!("securityContext.capabilities: unknown capability {name:?}")))
}

/// The names of `caps`, as `CAP_…` strings, sorted.
pub fn capability_names(caps: &Capabilities) -> Vec<String> {
    let mut names: Vec<String> = caps
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Host paths the spec refers to.
pub struct SpecPaths<'a> {
    /// The container's root filesystem (the overlay mount point).
    pub rootfs: &'a Path,
    /// The pod's namespace files (`net`, `ipc`, `uts`).
    pub sandbox: &'a Path,
    /// Pod-level `hosts`, `hostname`, `resolv.conf`.
    pub etc_dir: &'a Path,
    /// This start's termination-message file.
    pub termination_log: &'a Path,
    /// The cgroup path (`/peapod/pod<uid>/<id>`).
    pub cgroups_path: &'a str,
    /// The pod's published volumes.
    pub volumes: &'a [Published],
    /// Where this start's volume sources are staged (see `volume_mounts`).
    pub volume_stage: &'a Path,
    /// Checks a volume's source on the path it was opened at.
    pub volume_check: &'a dyn Fn(&Published, &Path) -> Result<(), String>,
}

/// The bind mounts of a container's `volumeMounts`: `subPath` (or
/// `subPathExpr`, expanded with the container's environment) is created if
/// missing and must stay inside its volume; `readOnly` and
/// `mountPropagation` map to mount options.
///
/// Each source is resolved to a descriptor once, checked with `check` on
/// what was opened, and bind-mounted from that descriptor onto
/// `<stage>/<n>`; the runtime mounts the staging point, never a path a
/// container could change in between (see `volpath`).
pub fn volume_mounts(
    c: &Container,
    volumes: &[Published],
    env: &[(String, String)],
    stage: &Path,
    check: &dyn Fn(&Published, &Path) -> Result<(), String>,
) -> Result<Vec<Mount>, ConfigError> {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let mut out = Vec::new();
    for (n, m) in c.volume_mounts.iter().flatten().enumerate() {
        let v = volumes
            .iter()
            .find(|p| p.source.name == m.name)
            .ok_or_else(|| ConfigError(format!("volume {:?} is not set up for this pod", m.name)))?;
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, &vars)),
            _ => None,
        };
        let in_volume = |e: String| ConfigError(format!("volume {:?}: {e}", m.name));
        let root = volpath::open_path(&v.host_path).map_err(in_volume)?;
        let fd = match &sub {
            Some(sub) => {
                // With the volume root's mode, as kubelet does (the daemon's umask is 077).
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(volpath::fd_path(&root).map_err(in_volume)?)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0o755);
                volpath::open_sub_path(&root, sub, mode).map_err(in_volume)?
            }
            None => root,
        };
        let real = volpath::fd_path(&fd).map_err(in_volume)?;
        check(v, &real).map_err(ConfigError)?;
        let target = stage.join(n.to_string());
        volpath::bind_fd(&fd, &target).map_err(in_volume)?;
        let ro = m.read_only.unwrap_or(false) || v.source.read_only;
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => "rslave",
            Some("Bidirectional") => "rshared",
            _ => "rprivate",
        };
        out.push(bind_mount(
            &m.mount_path,
            &target,
            &["rbind", if ro { "ro" } else { "rw" }, propagation],
        )?);
    }
    Ok(out)
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes, the rest stays.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'(' {
                if let Some(end) = input[i + 2..].find(')') {
                    let name = &input[i + 2..i + 2 + end];
                    if let Some(v) = vars.get(name) {
                        out.push_str(v);
                        i += end + 3;
                        continue;
                    }
                }
            }
        }
        let ch = input[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The container's environment, in order: image env, `HOSTNAME`, the
/// services' variables (kubelet's, see `peapod_core::service::environment`),
/// then the container's own (later wins; `$(VAR)` may name any earlier one),
/// with `fieldRef`s resolved.
pub fn environment(
    pod: &Pod,
    c: &Container,
    image: &ImageConfig,
    outer: &OuterEnv,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut order: Vec<String> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: String, v: String, vars: &mut BTreeMap<String, String>| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k.to_string(), v.to_string(), &mut vars);
    }
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or(pod.metadata.name.clone());
    set("HOSTNAME".into(), hostname.unwrap_or_default(), &mut vars);
    for (k, v) in &outer.services {
        set(k.clone(), v.clone(), &mut vars);
    }
    for (k, v) in &outer.config.from {
        set(k.clone(), v.clone(), &mut vars);
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        let value = if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                projection::pod_field(pod, &f.field_path, false)
                    .ok_or_else(|| ConfigError(format!("env {}: unsupported fieldRef {:?}", e.name, f.field_path)))?
            } else if let Some(r) = &src.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    None | Some("") => c,
                    Some(name) => pod
                        .spec
                        .iter()
                        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
                        .find(|x| x.name == name)
                        .ok_or_else(|| ConfigError(format!("env {}: no container {name:?} in the pod", e.name)))?,
                };
                let divisor = r.divisor.as_ref().map(|d| d.0.as_str());
                projection::resource_field(target, &r.resource, divisor, outer.allocatable)
                    .map_err(|m| ConfigError(format!("env {}: {m}", e.name)))?
            } else {
                match outer.config.values.get(&i) {
                    Some(Some(v)) => v.clone(),
                    // Optional, and absent: no variable.
                    Some(None) => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "env {}: its configMapKeyRef or secretKeyRef was not looked up",
                            e.name
                        )))
                    }
                }
            }
        } else {
            expand(e.value.as_deref().unwrap_or(""), &vars)
        };
        set(e.name.clone(), value, &mut vars);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.get(&k).cloned().unwrap_or_default();
            (k, v)
        })
        .collect())
}

/// The variables a container gets from outside its own spec.
#[derive(Debug, Clone, Default)]
pub struct OuterEnv {
    /// kubelet's service variables (see `peapod_core::service::environment`).
    pub services: Vec<(String, String)>,
    /// What `envFrom` and the key references read from ConfigMaps and Secrets.
    pub config: projection::ConfigEnv,
    /// The node's allocatable CPU and memory: `resourceFieldRef` of an unset limit.
    pub allocatable: peapod_core::resources::Amounts,
}

/// The process arguments by Kubernetes' rules: `command` replaces the image
/// Entrypoint (and drops its Cmd), `args` replaces the Cmd.
pub fn arguments(c: &Container, image: &ImageConfig, env: &[(String, String)]) -> Vec<String> {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let (entry, cmd) = match (&c.command, &c.args) {
        (Some(command), args) => (command.clone(), args.clone().unwrap_or_default()),
        (None, Some(args)) => (image.entrypoint.clone(), args.clone()),
        (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let expand_all = c.command.is_some() || c.args.is_some();
    entry
        .into_iter()
        .chain(cmd)
        .map(|a| if expand_all { expand(&a, &vars) } else { a })
        .collect()
}

/// uid, gid and extra groups for an image `User` (`1000`, `1000:1000`, `name`, `name:group`),
/// looked up in the container's own /etc/passwd and /etc/group.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), ConfigError> {
    let (u, g) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        file.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name)
                .then(|| (f[2].parse().ok(), f[3].parse().ok()))
                .and_then(|(a, b)| Some((a?, b?)))
        })
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(n) => (
            n,
            passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 3 && f[2] == n.to_string())
                        .then(|| f[3].parse().ok())
                        .flatten()
                })
                .unwrap_or(0),
        ),
        Err(_) if u.is_empty() => (0, 0),
        Err(_) => lookup(&passwd, u)
            .ok_or_else(|| ConfigError(format!("unable to find user {u}: no matching entries in passwd file")))?,
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(&group, g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| ConfigError(format!("unable to find group {g}: no matching entries in group file")))?,
        },
    };
    Ok((uid, gid))
}

/// Builds `config.json` for container `c` of `pod`.
pub fn build(
    pod: &Pod,
    c: &Container,
    image: &ImageConfig,
    outer_env: &OuterEnv,
    paths: &SpecPaths<'_>,
) -> Result<Spec, ConfigError> {
    let env = environment(pod, c, image, outer_env)?;
    let args = arguments(c, image, &env);
    if args.is_empty() {
        return Err(ConfigError("no command specified".into()));
    }
    let sc = c.security_context.as_ref();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let (mut uid, mut gid) = resolve_user(image.user.as_deref().unwrap_or(""), paths.rootfs)?;
    // Validation keeps ids to 0..=2147483647; a stored pod from before that
    // check must fail here rather than wrap around to another id (4294967296
    // once ran as root).
    let id = |field: &str, v: i64| {
        u32::try_from(v)
            .ok()
            .filter(|v| *v <= i32::MAX as u32)
            .ok_or_else(|| ConfigError(format!("securityContext.{field} {v} is not between 0 and 2147483647")))
    };
    if let Some(u) = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user)) {
        uid = id("runAsUser", u)?;
    }
    if let Some(g) = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group)) {
        gid = id("runAsGroup", g)?;
    }
    // As kubelet: the pod's fsGroup and supplementalGroups join every container's groups.
    let mut extra_gids: Vec<u32> = Vec::new();
    for g in pod_sc
        .and_then(|s| s.fs_group)
        .into_iter()
        .chain(pod_sc.and_then(|s| s.supplemental_groups.clone()).into_iter().flatten())
    {
        let g = id("supplementalGroups", g)?;
        if g != gid && !extra_gids.contains(&g) {
            extra_gids.push(g);
        }
    }
    if sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root))
        == Some(true)
        && uid == 0
    {
        return Err(ConfigError(
            "container has runAsNonRoot and image will run as root".into(),
        ));
    }
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    if let Some(cs) = sc.and_then(|s| s.capabilities.as_ref()) {
        let norm = |c: &String| {
            if c.starts_with("CAP_") {
                c.clone()
            } else {
                format!("CAP_{c}")
            }
        };
        for add in cs.add.iter().flatten() {
            let a = norm(add);
            if !caps.contains(&a) {
                caps.push(a);
            }
        }
        let drop: Vec<String> = cs.drop.iter().flatten().map(norm).collect();
        if drop.iter().any(|d| d == "CAP_ALL") {
            caps.clear();
        }
        caps.retain(|c| !drop.contains(c));
    }
    if privileged {
        caps = privileged_caps(node_bounding_set());
    }
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or(image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let no_new_privs = sc.and_then(|s| s.allow_privilege_escalation) == Some(false);
    let sandbox = |ns: &str| paths.sandbox.join(ns);
    let namespace =
        |typ: LinuxNamespaceType, path: Option<std::path::PathBuf>| -> Result<LinuxNamespace, ConfigError> {
            let b = LinuxNamespaceBuilder::default().typ(typ);
            match path {
                Some(p) => b.path(p),
                None => b,
            }
            .build()
            .map_err(invalid("namespace"))
        };
    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid, None)?,
        namespace(LinuxNamespaceType::Mount, None)?,
        namespace(LinuxNamespaceType::Cgroup, None)?,
    ];
    // hostNetwork pods stay in the node's network and UTS namespaces.
    if !pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        namespaces.push(namespace(LinuxNamespaceType::Network, Some(sandbox("net")))?);
        namespaces.push(namespace(LinuxNamespaceType::Uts, Some(sandbox("uts")))?);
    }
    namespaces.push(namespace(LinuxNamespaceType::Ipc, Some(sandbox("ipc")))?);
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let capabilities: Capabilities = caps.iter().map(|c| capability(c)).collect::<Result<_, _>>()?;
    let process = ProcessBuilder::default()
        // `tty: true`: a terminal, made by libcontainer, its master the shim's.
        .terminal(c.tty.unwrap_or(false))
        // 0022 inside, as runc and Docker give, whatever the daemon's own umask.
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(extra_gids)
                .umask(0o022u32)
                .build()
                .map_err(invalid("process.user"))?,
        )
        .args(args)
        .env(env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities)
                // None inherited across exec, as runc gives since CVE-2022-29162.
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()
                .map_err(invalid("process.capabilities"))?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()
            .map_err(invalid("process.rlimits"))?])
        .oom_score_adj(oom_score_adj(pod, c))
        .build()
        .map_err(invalid("process"))?;
    // Kubernetes' default (allowPrivilegeEscalation unset) leaves it off, and
    // off must be absent: libcontainer loads the seccomp filter before it
    // drops capabilities only when the field is missing; `false` (or the
    // builder's default, `true`) makes it load the filter without
    // CAP_SYS_ADMIN, which fails.
    let mut process = process;
    process.set_no_new_privileges(no_new_privs.then_some(true));
    let mut mounts = vec![
        fs_mount("/proc", "proc", &[])?,
        MountBuilder::default()
            .destination("/dev")
            .typ("tmpfs")
            .source("tmpfs")
            .options(
                ["nosuid", "strictatime", "mode=755", "size=65536k"]
                    .map(String::from)
                    .to_vec(),
            )
            .build()
            .map_err(invalid("mount"))?,
        fs_mount(
            "/dev/pts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        bind_mount(
            "/dev/shm",
            &paths.sandbox.join("shm"),
            &["rbind", "rw", "nosuid", "nodev", "noexec"],
        )?,
        fs_mount("/dev/mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        fs_mount(
            "/sys",
            "sysfs",
            &["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }],
        )?,
        fs_mount(
            "/sys/fs/cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        bind_mount("/etc/hosts", &paths.etc_dir.join("hosts"), &["rbind", "rw"])?,
        bind_mount("/etc/hostname", &paths.etc_dir.join("hostname"), &["rbind", "rw"])?,
        bind_mount("/etc/resolv.conf", &paths.etc_dir.join("resolv.conf"), &["rbind", "rw"])?,
        bind_mount(&term_path, paths.termination_log, &["rbind", "rw"])?,
    ];
    let mut extra = volume_mounts(c, paths.volumes, &env, paths.volume_stage, paths.volume_check)?;
    // A device node made in a volume opens nothing (the rootfs is mounted
    // nodev by the runtime, /dev by the shim); privileged containers may.
    if !privileged {
        for m in &mut extra {
            if let Some(o) = m.options_mut() {
                o.push("nodev".into());
            }
        }
    }
    // libcontainer makes the container's root a recursive slave unless told
    // otherwise, which is what HostToContainer needs; Bidirectional needs it shared.
    let shared = extra
        .iter()
        .any(|m| m.options().as_ref().is_some_and(|o| o.iter().any(|x| x == "rshared")));
    mounts.extend(extra);
    let (masked, readonly): (&[&str], &[&str]) = if privileged {
        (&[], &[])
    } else {
        (
            &[
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        )
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(paths.cgroups_path)
        .resources(container_resources(c, privileged)?)
        .masked_paths(masked.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        .readonly_paths(readonly.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    if shared {
        linux = linux.rootfs_propagation("shared");
    }
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path(paths.rootfs)
                .readonly(sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false))
                .build()
                .map_err(invalid("root"))?,
        )
        .mounts(mounts)
        .linux(linux.build().map_err(invalid("linux"))?)
        .build()
        .map_err(invalid("spec"))?;
    // The builders start from runtime-spec defaults meant for a shell in a
    // sandbox; none of these is ours to set (the hostname is the pod's, in
    // its UTS namespace, and a hostNetwork pod must not rename the node).
    spec.set_hostname(None);
    spec.set_annotations(None);
    Ok(spec)
}

/// The container cgroup's limits, as kubelet sets them: shares from the cpu
/// request, quota from the cpu limit, the memory limit with no swap on top.
fn container_resources(c: &Container, privileged: bool) -> Result<LinuxResources, ConfigError> {
    use peapod_core::resources;
    let requests = resources::container_requests(c);
    let (cpu_limit, memory_limit) = resources::container_limits(c);
    let mut cpu = LinuxCpuBuilder::default().shares(resources::cpu_shares(requests.cpu_millis));
    if let Some(m) = cpu_limit {
        cpu = cpu
            .quota(resources::cpu_quota(m, super::cgroups::CPU_PERIOD_US))
            .period(super::cgroups::CPU_PERIOD_US);
    }
    let mut res = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(privileged)
            .access("rwm")
            .build()
            .map_err(invalid("linux.resources.devices"))?])
        .cpu(cpu.build().map_err(invalid("linux.resources.cpu"))?);
    if let Some(m) = memory_limit {
        let mut memory = LinuxMemoryBuilder::default().limit(m);
        // memory+swap equal to the limit: no swap, where the kernel accounts swap at all.
        if super::cgroups::is_unified() || Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
            memory = memory.swap(m);
        }
        res = res.memory(memory.build().map_err(invalid("linux.resources.memory"))?);
    }
    res.build().map_err(invalid("linux.resources"))
}

/// kubelet's `oom_score_adj` for the container (see
/// `peapod_core::resources::oom_score_adj`). Lowering a score below the
/// daemon's own needs CAP_SYS_RESOURCE; on a node whose bounding set lacks
/// it, the container gets no lower than the daemon (Guaranteed then gets the
/// daemon's score instead of -997) rather than failing to start.
fn oom_score_adj(pod: &Pod, c: &Container) -> i32 {
    let spec = pod.spec.clone().unwrap_or_default();
    let want = peapod_core::resources::oom_score_adj(&spec, c, crate::config::capacity().memory_bytes);
    const CAP_SYS_RESOURCE: u32 = 24;
    if node_bounding_set() & (1 << CAP_SYS_RESOURCE) != 0 {
        return want;
    }
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    want.max(own)
}

/// Every capability this runtime knows, by its number in the kernel.
const CAPS_BY_NUMBER: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities of a privileged container: all that the node itself may
/// hold (its bounding set), as containerd gives them. Asking for one outside
/// that set makes `capset` fail and the container never starts (a node
/// without CAP_SYS_RESOURCE, as some sandboxes run, did exactly that).
fn privileged_caps(bounding: u64) -> Vec<String> {
    CAPS_BY_NUMBER
        .iter()
        .enumerate()
        .filter(|(n, _)| bounding & (1u64 << n) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// This process's capability bounding set (`CapBnd` in /proc/self/status),
/// read once; every capability when it cannot be read.
fn node_bounding_set() -> u64 {
    static SET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn privileged_gets_what_the_node_may_hold() {
        let all = privileged_caps(u64::MAX);
        assert_eq!(all.len(), 41);
        assert_eq!(all[0], "CAP_CHOWN");
        assert_eq!(all[24], "CAP_SYS_RESOURCE");
        assert_eq!(all[40], "CAP_CHECKPOINT_RESTORE");
        // This machine's bounding set: everything up to 40 but CAP_SYS_RESOURCE.
        let some = privileged_caps(0x1fffeffffff);
        assert_eq!(some.len(), 40);
        assert!(!some.iter().any(|c| c == "CAP_SYS_RESOURCE"));
        assert!(some.iter().any(|c| c == "CAP_SYS_ADMIN"));
    }

    /// On cgroup v2 (Debian 12's default) libcontainer enforces these rules
    /// with an eBPF program, which it only has when built with its
    /// `cgroupsv2_devices` feature (now on); without it the deny-all rule was
    /// silently dropped. This machine mounts the devices controller on cgroup
    /// v1, where tests/tests/security.rs shows the rules enforced, so for v2
    /// what is checked here is the rule the runtime is handed.
    #[test]
    fn every_device_is_denied_but_to_privileged_containers() {
        let devices = |privileged: bool| {
            let res = container_resources(&container(json!({"name": "c"})), privileged).unwrap();
            serde_json::to_value(res).unwrap()["devices"].clone()
        };
        assert_eq!(devices(false), json!([{"allow": false, "access": "rwm"}]));
        assert_eq!(devices(true), json!([{"allow": true, "access": "rwm"}]));
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: Some("/work".into()),
            user: None,
            stop_signal: None,
        }
    }

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image();
        let env = vec![("X".to_string(), "1".to_string())];
        let c = container(json!({"name": "c"}));
        assert_eq!(arguments(&c, &img, &env), ["/entry", "default"]);
        let c = container(json!({"name": "c", "args": ["a", "$(X)"]}));
        assert_eq!(arguments(&c, &img, &env), ["/entry", "a", "1"]);
        let c = container(json!({"name": "c", "command": ["sh"]}));
        assert_eq!(arguments(&c, &img, &env), ["sh"]);
        let c = container(json!({"name": "c", "command": ["sh"], "args": ["-c", "$$(X) $(Y)"]}));
        assert_eq!(arguments(&c, &img, &env), ["sh", "-c", "$(X) $(Y)"]);
    }

    #[test]
    fn env_overrides_image_and_expands() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns",
            "labels": {"app": "web"}, "annotations": {"batch.kubernetes.io/job-completion-index": "2"}}}))
        .unwrap();
        let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
        let c = container(json!({"name": "c", "env": [
            {"name": "A", "value": "pod"},
            {"name": "B", "value": "$(A)-x"},
            {"name": "S", "value": "http://$(WEB_SERVICE_HOST)"},
            field("N", "metadata.namespace"),
            field("L", "metadata.labels['app']"),
            field("I", "metadata.annotations['batch.kubernetes.io/job-completion-index']"),
            field("MISSING", "metadata.annotations['none']")]}));
        let outer = OuterEnv {
            services: vec![("WEB_SERVICE_HOST".into(), "10.96.0.7".into())],
            ..OuterEnv::default()
        };
        let env = environment(&pod, &c, &image(), &outer).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("pod"));
        assert_eq!(get("B"), Some("pod-x"));
        assert_eq!(
            get("S"),
            Some("http://10.96.0.7"),
            "a service variable is there to expand"
        );
        assert_eq!(get("N"), Some("ns"));
        assert_eq!(get("L"), Some("web"));
        assert_eq!(
            get("I"),
            Some("2"),
            "annotations are read (a labels-only lookup once stopped there)"
        );
        assert_eq!(get("MISSING"), Some(""));
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("HOSTNAME"), Some("p"));
    }

    /// The runtime-spec builders start from defaults meant for a shell
    /// (hostname "youki", noNewPrivileges, inheritable capabilities); none of
    /// them may reach a container.
    #[test]
    fn the_spec_holds_only_what_peapod_sets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}]}}))
        .unwrap();
        let c = container(json!({"name": "c", "command": ["sh"],
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"], "drop": ["KILL"]}}}));
        let term = d.join("term");
        let check = |_: &Published, _: &Path| Ok(());
        let paths = SpecPaths {
            rootfs: d,
            sandbox: d,
            etc_dir: d,
            termination_log: &term,
            cgroups_path: "/peapod/podx/c",
            volumes: &[],
            volume_stage: d,
            volume_check: &check,
        };
        let spec = serde_json::to_value(build(&pod, &c, &image(), &OuterEnv::default(), &paths).unwrap()).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&spec), ["linux", "mounts", "ociVersion", "process", "root"]);
        assert_eq!(
            keys(&spec["process"]),
            [
                "args",
                "capabilities",
                "cwd",
                "env",
                "oomScoreAdj",
                "rlimits",
                "terminal",
                "user"
            ],
            "noNewPrivileges absent: libcontainer reads false as set"
        );
        assert_eq!(spec["process"]["user"]["umask"], 0o022);
        let caps = &spec["process"]["capabilities"];
        assert_eq!(caps["inheritable"], json!([]));
        assert_eq!(caps["ambient"], json!([]));
        let bounding: Vec<&str> = caps["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert_eq!(bounding.len(), DEFAULT_CAPS.len(), "{bounding:?}");
        assert!(
            bounding.contains(&"CAP_SYS_ADMIN") && !bounding.contains(&"CAP_KILL"),
            "{bounding:?}"
        );
        assert_eq!(
            keys(&spec["linux"]),
            ["cgroupsPath", "maskedPaths", "namespaces", "readonlyPaths", "resources"]
        );
        assert_eq!(spec["root"], json!({"path": d, "readonly": false}));
        assert_eq!(
            spec["mounts"][0],
            json!({"destination": "/proc", "type": "proc", "source": "proc"})
        );

        let nnp = container(json!({"name": "c", "command": ["sh"],
            "securityContext": {"allowPrivilegeEscalation": false}}));
        let spec = serde_json::to_value(build(&pod, &nnp, &image(), &OuterEnv::default(), &paths).unwrap()).unwrap();
        assert_eq!(spec["process"]["noNewPrivileges"], true);

        let nnp = container(json!({"name": "c", "command": ["sh"],
            "securityContext": {"allowPrivilegeEscalation": false}}));
        let spec = serde_json::to_value(build(&pod, &nnp, &image(), &OuterEnv::default(), &paths).unwrap()).unwrap();
        assert_eq!(spec["process"]["noNewPrivileges"], true);

        let bad = container(json!({"name": "c", "command": ["sh"],
            "securityContext": {"capabilities": {"add": ["FLY"]}}}));
        let e = build(&pod, &bad, &image(), &OuterEnv::default(), &paths).unwrap_err();
        assert!(e.0.contains("unknown capability \"CAP_FLY\""), "{e}");
    }
}
