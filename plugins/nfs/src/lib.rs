//! The `nfs` volume plugin: NFS exports as PersistentVolumes (`nfs:
//! {server, path, readOnly}` and the PV's `mountOptions`), and an NFS
//! provisioner (a StorageClass with `provisioner: nfs` and `server`/`share`
//! parameters gets a subdirectory per claim).
//!
//! An export is staged once per node and bind-mounted into each pod that
//! uses it. Staging mounts with the kernel's NFS client where the kernel
//! has one; where it has not, it starts `peapod-nfs-fuse`, a userspace
//! NFSv3 client over FUSE, as a helper process per mount, which ends when
//! its mount is unmounted at unstage. Configuration
//! (`<plugin-config-dir>/nfs.yaml`):
//!
//! - `client`: `auto` (default: the kernel's if `/proc/filesystems` lists
//!   nfs, else FUSE), `kernel` or `fuse`;
//! - `fuseHelper`: the helper's path (default `/usr/lib/peapod/peapod-nfs-fuse`);
//! - `timeoutMs`: the helper's NFS call timeout (default 30000).
//!
//! Provisioning parameters: `server`, `share` (required), `mountPermissions`
//! (octal, default `0777`), `onDelete`: `delete` (default), `retain` or
//! `archive` (renamed to `archived-<name>`).
#![forbid(unsafe_code)]

use peapod_plugin_sdk::host;
use peapod_plugin_sdk::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The helper's default place, where the set-up installs it.
pub const DEFAULT_HELPER: &str = "/usr/lib/peapod/peapod-nfs-fuse";
/// How long a helper may take to mount.
const MOUNT_WAIT: Duration = Duration::from_secs(30);

/// How exports are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    #[default]
    Auto,
    Kernel,
    Fuse,
}

/// Operator configuration.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub client: Client,
    #[serde(default)]
    pub fuse_helper: Option<PathBuf>,
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone)]
struct Setup {
    kernel: bool,
    helper: PathBuf,
    timeout_ms: u32,
    state: PathBuf,
}

/// The plugin.
#[derive(Default)]
pub struct Nfs {
    setup: Mutex<Option<Setup>>,
}

/// Whether this kernel mounts NFS itself.
pub fn kernel_has_nfs(filesystems: &str) -> bool {
    filesystems
        .lines()
        .any(|l| matches!(l.split_whitespace().last(), Some("nfs") | Some("nfs4")))
}

/// The export path a volume mounts: `path`, or `share` + `/` + `subDir`.
pub fn export_of(context: &Attributes) -> Result<(String, String), PluginError> {
    let server = context.get("server").filter(|s| !s.is_empty()).cloned();
    let server = server.ok_or_else(|| PluginError::invalid("nfs: server is required"))?;
    let path = match (context.get("path"), context.get("share")) {
        (Some(p), _) if !p.is_empty() => p.clone(),
        (_, Some(share)) if !share.is_empty() => match context.get("subDir").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{}/{sub}", share.trim_end_matches('/')),
            None => share.clone(),
        },
        _ => return Err(PluginError::invalid("nfs: path (or share) is required")),
    };
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(PluginError::invalid(format!(
            "nfs: path {path:?} must be absolute, without '..'"
        )));
    }
    Ok((server, path))
}

impl Nfs {
    fn setup(&self) -> Result<Setup, PluginError> {
        self.setup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PluginError::precondition("the plugin is not initialised"))
    }

    fn helper(&self, s: &Setup, args: &[&str]) -> Result<(), PluginError> {
        let mut cmd = Command::new(&s.helper);
        cmd.args(args).args(["--timeout-ms", &s.timeout_ms.to_string()]);
        host::run(&mut cmd).map(drop)
    }

    /// Mounts through the FUSE helper and waits until the mount is there.
    fn fuse_mount(&self, s: &Setup, server: &str, export: &str, at: &Path, ro: bool) -> Result<(), PluginError> {
        let dir = s.state.join("mounts");
        std::fs::create_dir_all(&dir).map_err(|e| PluginError::internal(format!("create {}: {e}", dir.display())))?;
        let log_path = dir.join(format!("{}.log", host::flat(at)));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| PluginError::internal(format!("create {}: {e}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| PluginError::internal(format!("log: {e}")))?;
        let mut cmd = Command::new(&s.helper);
        cmd.args(["mount", "--server", server, "--export", export, "--mountpoint"])
            .arg(at)
            .args(["--timeout-ms", &s.timeout_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: a signal to the daemon's group is not its business.
            .process_group(0);
        if ro {
            cmd.arg("--read-only");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| PluginError::internal(format!("start {}: {e}", s.helper.display())))?;
        let pid = child.id();
        let deadline = Instant::now() + MOUNT_WAIT;
        loop {
            if host::is_mounted(at) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(PluginError::internal(format!(
                    "mount {server}:{export} through {} failed ({status}): {}",
                    s.helper.display(),
                    text.trim()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PluginError::new(
                    STATUS_DEADLINE_EXCEEDED,
                    format!("mount {server}:{export}: not mounted after {}s", MOUNT_WAIT.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::write(dir.join(format!("{}.pid", host::flat(at))), pid.to_string())
            .map_err(|e| PluginError::internal(format!("record helper pid: {e}")))?;
        // Reaped when it ends (at unstage), so it never lingers as a zombie.
        std::thread::spawn(move || child.wait());
        Ok(())
    }

    /// Waits for the helper of a mount point that was just unmounted to end.
    fn helper_gone(&self, s: &Setup, at: &Path) {
        let pid_file = s.state.join("mounts").join(format!("{}.pid", host::flat(at)));
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            return;
        };
        if !host::wait_gone(pid, "peapod-nfs-fuse", Duration::from_secs(5)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(pid_file.with_extension("log"));
    }
}

fn mode_param(p: &Attributes) -> Result<String, PluginError> {
    let m = p.get("mountPermissions").cloned().unwrap_or_else(|| "0777".into());
    u32::from_str_radix(m.trim_start_matches("0o"), 8)
        .map(|v| format!("{v:o}"))
        .map_err(|_| PluginError::invalid(format!("mountPermissions {m:?} is not an octal mode")))
}

impl VolumePlugin for Nfs {
    fn capabilities(&self) -> u64 {
        CAP_PROVISION | CAP_STAGE | CAP_STATS
    }

    fn init(&self, req: InitRequest) -> Result<InitResponse, PluginError> {
        let cfg: Config = host::config(req.config)?;
        let kernel = match cfg.client {
            Client::Kernel => true,
            Client::Fuse => false,
            Client::Auto => kernel_has_nfs(&std::fs::read_to_string("/proc/filesystems").unwrap_or_default()),
        };
        let helper = cfg.fuse_helper.unwrap_or_else(|| DEFAULT_HELPER.into());
        *self.setup.lock().unwrap_or_else(|p| p.into_inner()) = Some(Setup {
            kernel,
            helper,
            timeout_ms: cfg.timeout_ms.unwrap_or(30_000),
            state: PathBuf::from(req.state_dir),
        });
        Ok(InitResponse::default())
    }

    fn provision(&self, req: ProvisionRequest) -> Result<ProvisionResponse, PluginError> {
        let s = self.setup()?;
        let p = &req.parameters;
        let (server, share) = (p.get("server"), p.get("share"));
        let (Some(server), Some(share)) = (server.filter(|v| !v.is_empty()), share.filter(|v| !v.is_empty())) else {
            return Err(PluginError::invalid(
                "StorageClass parameters server and share are required",
            ));
        };
        if req.name.is_empty() || req.name.contains('/') || req.name.starts_with('.') {
            return Err(PluginError::invalid(format!("invalid volume name {:?}", req.name)));
        }
        let on_delete = p.get("onDelete").cloned().unwrap_or_else(|| "delete".into());
        if !matches!(on_delete.as_str(), "delete" | "retain" | "archive") {
            return Err(PluginError::invalid(format!(
                "onDelete {on_delete:?}: must be delete, retain or archive"
            )));
        }
        let mode = mode_param(p)?;
        self.helper(
            &s,
            &[
                "mkdir",
                "--server",
                server,
                "--export",
                share,
                "--path",
                &format!("/{}", req.name),
                "--mode",
                &mode,
            ],
        )?;
        let context: Attributes = [
            ("server".to_string(), server.clone()),
            ("share".to_string(), share.clone()),
            ("subDir".to_string(), req.name.clone()),
            ("onDelete".to_string(), on_delete),
        ]
        .into();
        Ok(ProvisionResponse {
            volume_id: format!("{server}#{share}#{}", req.name),
            capacity_bytes: req.capacity_bytes,
            volume_context: context,
            local_to_node: false,
        })
    }

    fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, PluginError> {
        let s = self.setup()?;
        let c = &req.volume_context;
        let (Some(server), Some(share), Some(sub)) = (c.get("server"), c.get("share"), c.get("subDir")) else {
            return Err(PluginError::invalid(format!(
                "volume {:?} was not provisioned by this plugin (no server/share/subDir)",
                req.volume_id
            )));
        };
        if sub.is_empty() || sub.contains('/') {
            return Err(PluginError::invalid(format!("invalid subDir {sub:?}")));
        }
        match c.get("onDelete").map(String::as_str).unwrap_or("delete") {
            "retain" => {}
            "archive" => self.helper(
                &s,
                &[
                    "rename",
                    "--server",
                    server,
                    "--export",
                    share,
                    "--path",
                    &format!("/{sub}"),
                    "--to",
                    &format!("/archived-{sub}"),
                ],
            )?,
            _ => self.helper(
                &s,
                &[
                    "remove",
                    "--server",
                    server,
                    "--export",
                    share,
                    "--path",
                    &format!("/{sub}"),
                ],
            )?,
        }
        Ok(DeleteResponse::default())
    }

    fn stage(&self, req: StageRequest) -> Result<StageResponse, PluginError> {
        let s = self.setup()?;
        let (server, export) = export_of(&req.volume_context)?;
        let at = Path::new(&req.staging_path);
        if host::is_mounted(at) {
            return Ok(StageResponse::default());
        }
        std::fs::create_dir_all(at).map_err(|e| PluginError::internal(format!("create {}: {e}", at.display())))?;
        if s.kernel {
            let mut opts = vec!["vers=3".to_string()];
            if req.read_only {
                opts.push("ro".into());
            }
            opts.extend(req.mount_options.iter().cloned());
            let mut cmd = Command::new("mount");
            cmd.args(["-t", "nfs", "-o", &opts.join(",")])
                .arg(format!("{server}:{export}"))
                .arg(at);
            host::run(&mut cmd)?;
            return Ok(StageResponse::default());
        }
        self.fuse_mount(&s, &server, &export, at, req.read_only)?;
        Ok(StageResponse::default())
    }

    fn unstage(&self, req: UnstageRequest) -> Result<UnstageResponse, PluginError> {
        let s = self.setup()?;
        let at = Path::new(&req.staging_path);
        host::unmount(at)?;
        if !s.kernel {
            self.helper_gone(&s, at);
        }
        Ok(UnstageResponse::default())
    }

    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
        host::publish_staged(&req)
    }

    fn unpublish(&self, req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
        host::unpublish_staged(&req)
    }

    fn get_volume_stats(&self, req: VolumeStatsRequest) -> Result<VolumeStats, PluginError> {
        host::stats(Path::new(&req.volume_path))
    }
}

export_volume_plugin!(Nfs, name = "nfs", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_kernel_route_is_taken_only_where_the_kernel_has_nfs() {
        assert!(!kernel_has_nfs("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tfuse\n"));
        assert!(kernel_has_nfs("nodev\tsysfs\nnodev\tnfs\nnodev\tnfs4\n"));
    }

    #[test]
    fn exports_come_from_a_path_or_a_share_and_subdirectory() {
        assert_eq!(
            export_of(&ctx(&[("server", "s"), ("path", "/e")])).unwrap(),
            ("s".into(), "/e".into())
        );
        assert_eq!(
            export_of(&ctx(&[("server", "s"), ("share", "/e/"), ("subDir", "pvc-1")])).unwrap(),
            ("s".into(), "/e/pvc-1".into())
        );
        assert!(export_of(&ctx(&[("path", "/e")]))
            .unwrap_err()
            .message
            .contains("server is required"));
        assert!(export_of(&ctx(&[("server", "s"), ("path", "/e/../x")])).is_err());
        assert!(export_of(&ctx(&[("server", "s")])).is_err());
    }

    #[test]
    fn configuration_and_parameters_are_checked() {
        let p = Nfs::default();
        let e = p
            .init(InitRequest {
                config: serde_json::json!({"client": "carrier-pigeon"}),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("unknown variant `carrier-pigeon`"), "{}", e.message);
        p.init(InitRequest {
            config: serde_json::json!({"client": "fuse", "fuseHelper": "/bin/false"}),
            ..Default::default()
        })
        .unwrap();
        let e = p
            .provision(ProvisionRequest {
                name: "pvc-1".into(),
                parameters: ctx(&[("server", "s")]),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("server and share are required"), "{}", e.message);
        let e = p
            .provision(ProvisionRequest {
                name: "pvc-1".into(),
                parameters: ctx(&[("server", "s"), ("share", "/e"), ("onDelete", "shred")]),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("onDelete \"shred\""), "{}", e.message);
        assert_eq!(mode_param(&ctx(&[("mountPermissions", "0750")])).unwrap(), "750");
        assert!(mode_param(&ctx(&[("mountPermissions", "rwx")])).is_err());
    }
}
