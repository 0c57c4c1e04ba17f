//! The `rbd` volume plugin: Ceph RBD images as PersistentVolumes (`rbd:
//! {monitors, pool, image, user, keyring, fsType, readOnly}`) and an RBD
//! provisioner (`provisioner: rbd`, parameters `pool`, `fsType`).
//!
//! Staging makes the image a block device on this node and mounts its
//! filesystem (made on first use only): with krbd (`rbd device map`) where
//! the kernel has `/sys/bus/rbd`, with rbd-nbd where it has nbd, and
//! otherwise (this machine) through `rbd-fuse`, which shows the image as a
//! file, attached to a loop device with direct I/O. Publishing bind-mounts
//! the filesystem into pods; unstaging reverses every step. A volume staged
//! ReadWriteOnce takes an exclusive RBD advisory lock, so a second stage of
//! a busy image (another volume, another node) fails, naming the holder.
//!
//! Configuration (`<plugin-config-dir>/rbd.yaml`), used where a volume does
//! not say: `monitors` (`host:port,…`), `user` (default `admin`), `keyring`
//! (a keyring file; Secrets are not supported yet), `mapper` (`auto`,
//! `krbd`, `nbd`, `fuse`), `timeoutSeconds` for each Ceph tool (default 60).
#![forbid(unsafe_code)]

use peapod_plugin_sdk::host;
use peapod_plugin_sdk::*;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How images become block devices here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mapper {
    #[default]
    Auto,
    Krbd,
    Nbd,
    Fuse,
}

/// Operator configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub monitors: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    #[serde(default)]
    pub mapper: Mapper,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone)]
struct Setup {
    cfg: Config,
    mapper: Mapper,
    state: PathBuf,
    node: String,
    timeout: Duration,
}

/// An image and how to reach its cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub monitors: String,
    pub user: String,
    pub keyring: String,
    pub pool: String,
    pub name: String,
}

impl Image {
    fn spec(&self) -> String {
        format!("{}/{}", self.pool, self.name)
    }
}

/// What a staging did, to undo it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Staged {
    pub device: String,
    pub mapper: String,
    pub fuse_dir: Option<String>,
    pub fuse_pid: Option<u32>,
    pub lock_id: Option<String>,
    /// The image (unstage is told only the staging path).
    pub image: Image,
}

/// The name of the lock on an image's lock object.
const LOCK_NAME: &str = "peapod";

/// The plugin.
#[derive(Default)]
pub struct Rbd {
    setup: Mutex<Option<Setup>>,
}

/// The image a volume's context names, the configuration filling in the rest.
pub fn image_of(context: &Attributes, cfg: &Config) -> Result<Image, PluginError> {
    let get = |k: &str| context.get(k).filter(|v| !v.is_empty()).cloned();
    let monitors = get("monitors").or_else(|| cfg.monitors.clone()).ok_or_else(|| {
        PluginError::invalid("rbd: monitors are required (in the volume or the plugin configuration)")
    })?;
    let name = get("image").ok_or_else(|| PluginError::invalid("rbd: image is required"))?;
    let pool = get("pool").unwrap_or_else(|| "rbd".into());
    for (what, v) in [("pool", &pool), ("image", &name)] {
        if v.contains('/') || v.contains('@') || v.starts_with('-') {
            return Err(PluginError::invalid(format!("rbd: invalid {what} {v:?}")));
        }
    }
    let user = get("user")
        .filter(|u| u != "admin" || cfg.user.is_none())
        .or_else(|| cfg.user.clone())
        .unwrap_or_else(|| "admin".into());
    let keyring = get("keyring")
        .or_else(|| cfg.keyring.as_ref().map(|k| k.display().to_string()))
        .unwrap_or_default();
    Ok(Image {
        monitors,
        user,
        keyring,
        pool,
        name,
    })
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> PluginError {
    move |e| PluginError::internal(format!("{what}: {e}"))
}

impl Rbd {
    fn setup(&self) -> Result<Setup, PluginError> {
        self.setup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PluginError::precondition("the plugin is not initialised"))
    }

    /// A ceph.conf for `img`'s cluster (per-process admin sockets, so the
    /// CLI and rbd-fuse never collide).
    fn conf(&self, s: &Setup, img: &Image) -> Result<PathBuf, PluginError> {
        let dir = s.state.join("conf");
        std::fs::create_dir_all(dir.join("run")).map_err(io(format!("create {}", dir.display())))?;
        let mut text = format!("[global]\nmon host = {}\n", img.monitors.replace(',', " "));
        if !img.keyring.is_empty() {
            text.push_str(&format!("keyring = {}\n", img.keyring));
        }
        text.push_str(&format!(
            "log file = {}/run/$cluster-$name.$pid.log\n[client]\nadmin socket = {}/run/$cluster-$name.$pid.asok\n",
            dir.display(),
            dir.display()
        ));
        let key: String = img
            .monitors
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!("{key}.conf"));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))?;
        }
        Ok(path)
    }

    fn rbd(&self, s: &Setup, img: &Image, args: &[&str]) -> Result<String, PluginError> {
        let conf = self.conf(s, img)?;
        let mut cmd = Command::new("rbd");
        cmd.arg("-c").arg(&conf).args(["--id", &img.user]).args(args);
        host::run_within(&mut cmd, s.timeout)
    }

    fn rados(&self, s: &Setup, img: &Image, args: &[&str]) -> Result<String, PluginError> {
        let conf = self.conf(s, img)?;
        let mut cmd = Command::new("rados");
        cmd.arg("-c")
            .arg(&conf)
            .args(["--id", &img.user, "-p", &img.pool])
            .args(args);
        host::run_within(&mut cmd, s.timeout)
    }

    /// The RADOS object whose lock says who stages `img` ReadWriteOnce. Not
    /// `rbd lock`: that is the lock librbd's exclusive-lock feature takes
    /// itself, and holding it makes every writer wait.
    fn lock_object(img: &Image) -> String {
        format!("peapod.lock.{}", img.name)
    }

    /// Takes the exclusive lock as `id` (holding it already is fine).
    fn lock(&self, s: &Setup, img: &Image, id: &str) -> Result<(), PluginError> {
        let obj = Self::lock_object(img);
        let taken = self.rados(
            s,
            img,
            &[
                "lock",
                "get",
                &obj,
                LOCK_NAME,
                "--lock-type",
                "exclusive",
                "--lock-cookie",
                id,
            ],
        );
        if taken.is_ok() {
            return Ok(());
        }
        let holders = self.lockers(s, img)?;
        if holders.iter().any(|(cookie, _)| cookie == id) {
            return Ok(());
        }
        if holders.is_empty() {
            // Not held, yet not taken: the cluster's error is the reason.
            return taken.map(drop);
        }
        Err(PluginError::precondition(format!(
            "rbd image {} is in use elsewhere (locked as {}); a ReadWriteOnce volume is staged on one node at a time",
            img.spec(),
            holders
                .iter()
                .map(|(c, l)| format!("{c:?} by {l}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// (cookie, locker) of each holder of the lock.
    fn lockers(&self, s: &Setup, img: &Image) -> Result<Vec<(String, String)>, PluginError> {
        let out = match self.rados(s, img, &["lock", "info", &Self::lock_object(img), LOCK_NAME]) {
            Ok(o) => o,
            Err(e) if e.message.contains("No such file") || e.message.contains("(2)") => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
        Ok(v["lockers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l["cookie"].as_str().unwrap_or_default().to_string(),
                    l["name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    fn unlock(&self, s: &Setup, img: &Image, id: &str) -> Result<(), PluginError> {
        let obj = Self::lock_object(img);
        for (cookie, locker) in self.lockers(s, img)? {
            if cookie == id {
                self.rados(
                    s,
                    img,
                    &["lock", "break", &obj, LOCK_NAME, &locker, "--lock-cookie", &cookie],
                )?;
            }
        }
        Ok(())
    }

    fn record(s: &Setup, staging: &Path) -> PathBuf {
        s.state.join("staged").join(format!("{}.json", host::flat(staging)))
    }

    /// Makes the image a block device; returns what to undo.
    fn attach(&self, s: &Setup, img: &Image, staging: &Path) -> Result<Staged, PluginError> {
        match s.mapper {
            Mapper::Krbd | Mapper::Nbd => {
                let kind = if s.mapper == Mapper::Krbd { "krbd" } else { "nbd" };
                let dev = self.rbd(s, img, &["device", "map", "-t", kind, &img.spec()])?;
                Ok(Staged {
                    device: dev.trim().to_string(),
                    mapper: kind.into(),
                    ..Default::default()
                })
            }
            Mapper::Fuse | Mapper::Auto => self.attach_fuse(s, img, staging),
        }
    }

    /// rbd-fuse shows the image as a file; a loop device (direct I/O, so
    /// nothing is cached twice) makes it a block device.
    fn attach_fuse(&self, s: &Setup, img: &Image, staging: &Path) -> Result<Staged, PluginError> {
        let dir = s.state.join("fuse").join(host::flat(staging));
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        if host::is_mounted(&dir) {
            // A half-done stage before: start over.
            host::unmount(&dir)?;
        }
        let conf = self.conf(s, img)?;
        let log = PathBuf::from(format!("{}.log", dir.display()));
        let out = std::fs::File::create(&log).map_err(io(format!("create {}", log.display())))?;
        let err = out.try_clone().map_err(io("log".into()))?;
        let mut child = Command::new("rbd-fuse")
            .arg("-c")
            .arg(&conf)
            .args(["-p", &img.pool, "-r", &img.name, "-f"])
            .arg(&dir)
            .env("CEPH_ARGS", format!("--id {}", img.user))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io("start rbd-fuse".into()))?;
        let pid = child.id();
        let file = dir.join(&img.name);
        let deadline = Instant::now() + s.timeout;
        while !(host::is_mounted(&dir) && file.exists()) {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(PluginError::internal(format!(
                    "rbd-fuse for {} ended ({status}): {}",
                    img.spec(),
                    text.trim()
                )));
            }
            if Instant::now() > deadline {
                let _ = host::unmount(&dir);
                let _ = child.kill();
                let _ = child.wait();
                return Err(PluginError::new(
                    STATUS_DEADLINE_EXCEEDED,
                    format!("rbd-fuse did not show {} within {}s", img.spec(), s.timeout.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::spawn(move || child.wait());
        let mut staged = Staged {
            device: String::new(),
            mapper: "fuse".into(),
            fuse_dir: Some(dir.display().to_string()),
            fuse_pid: Some(pid),
            lock_id: None,
            image: img.clone(),
        };
        match host::run(
            Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(&file),
        ) {
            Ok(dev) => staged.device = dev.trim().to_string(),
            Err(e) => {
                let _ = self.detach(&staged);
                return Err(e);
            }
        }
        Ok(staged)
    }

    /// Undoes [`Rbd::attach`].
    fn detach(&self, st: &Staged) -> Result<(), PluginError> {
        match st.mapper.as_str() {
            "krbd" | "nbd" => {
                let s = self.setup()?;
                host::run_within(
                    Command::new("rbd").args(["device", "unmap", "-t", &st.mapper, &st.device]),
                    s.timeout,
                )?;
            }
            _ => {
                // The loop device first, then rbd-fuse's mount; then wait for it to end.
                if !st.device.is_empty() && Path::new(&st.device).exists() {
                    let backing = format!("/sys/block/{}/loop/backing_file", st.device.trim_start_matches("/dev/"));
                    if Path::new(&backing).exists() {
                        host::run(Command::new("losetup").args(["-d", &st.device]))?;
                    }
                }
                if let Some(dir) = &st.fuse_dir {
                    host::unmount(Path::new(dir))?;
                    let _ = std::fs::remove_dir(dir);
                    let _ = std::fs::remove_file(format!("{dir}.log"));
                }
                if let Some(pid) = st.fuse_pid {
                    host::wait_gone(pid as i32, "rbd-fuse", Duration::from_secs(10));
                }
            }
        }
        Ok(())
    }

    fn mount_fs(device: &str, fs_type: &str, staging: &Path, ro: bool, options: &[String]) -> Result<(), PluginError> {
        if host::filesystem_on(device).is_none() {
            if ro {
                return Err(PluginError::precondition(format!(
                    "{device} has no filesystem and the volume is read-only"
                )));
            }
            let mut mkfs = Command::new(format!("mkfs.{fs_type}"));
            match fs_type {
                "xfs" => mkfs.arg("-q"),
                _ => mkfs.args(["-q", "-F", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"]),
            };
            host::run(mkfs.arg(device))?;
        }
        let mut opts: Vec<String> = Vec::new();
        if ro {
            opts.push("ro".into());
        }
        opts.extend(options.iter().cloned());
        let mut cmd = Command::new("mount");
        cmd.args(["-t", fs_type]);
        if !opts.is_empty() {
            cmd.args(["-o", &opts.join(",")]);
        }
        host::run(cmd.arg(device).arg(staging)).map(drop)
    }
}

fn exclusive(modes: &[String]) -> bool {
    modes.iter().any(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod")
}

impl VolumePlugin for Rbd {
    fn capabilities(&self) -> u64 {
        CAP_PROVISION | CAP_STAGE | CAP_STATS | CAP_EXPAND
    }

    fn init(&self, req: InitRequest) -> Result<InitResponse, PluginError> {
        let cfg: Config = host::config(req.config)?;
        let mapper = match cfg.mapper {
            Mapper::Auto if Path::new("/sys/bus/rbd").exists() => Mapper::Krbd,
            Mapper::Auto if Path::new("/sys/block/nbd0").exists() && Path::new("/usr/bin/rbd-nbd").exists() => {
                Mapper::Nbd
            }
            Mapper::Auto => Mapper::Fuse,
            m => m,
        };
        let timeout = Duration::from_secs(cfg.timeout_seconds.unwrap_or(60).clamp(1, 3600));
        *self.setup.lock().unwrap_or_else(|p| p.into_inner()) = Some(Setup {
            cfg,
            mapper,
            state: PathBuf::from(req.state_dir),
            node: req.node_id,
            timeout,
        });
        Ok(InitResponse::default())
    }

    fn provision(&self, req: ProvisionRequest) -> Result<ProvisionResponse, PluginError> {
        let s = self.setup()?;
        if req.access_modes.iter().any(|m| m == "ReadWriteMany") {
            return Err(PluginError::invalid(
                "ReadWriteMany is not supported for an RBD filesystem volume",
            ));
        }
        let mut context = req.parameters.clone();
        context.retain(|k, _| matches!(k.as_str(), "monitors" | "pool" | "user" | "keyring"));
        context.insert("image".into(), req.name.clone());
        let img = image_of(&context, &s.cfg)?;
        let mib = ((req.capacity_bytes.max(1) as u64).div_ceil(1 << 20)).max(4);
        match self.rbd(&s, &img, &["create", "--size", &mib.to_string(), &img.spec()]) {
            Ok(_) => {}
            // Provisioned before (a retry): the same volume.
            Err(e) if e.message.contains("File exists") || e.message.contains("(17)") => {}
            Err(e) => return Err(e),
        }
        Ok(ProvisionResponse {
            volume_id: img.spec(),
            capacity_bytes: (mib << 20) as i64,
            volume_context: context,
            local_to_node: false,
        })
    }

    fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, PluginError> {
        let s = self.setup()?;
        let img = image_of(&req.volume_context, &s.cfg)?;
        match self.rbd(&s, &img, &["rm", "--no-progress", &img.spec()]) {
            Ok(_) => {}
            Err(e) if e.message.contains("No such file") || e.message.contains("(2)") => {}
            Err(e) => return Err(e),
        }
        // Its lock object, if it was ever staged ReadWriteOnce.
        let _ = self.rados(&s, &img, &["rm", &Self::lock_object(&img)]);
        Ok(DeleteResponse::default())
    }

    fn stage(&self, req: StageRequest) -> Result<StageResponse, PluginError> {
        let s = self.setup()?;
        let img = image_of(&req.volume_context, &s.cfg)?;
        let staging = Path::new(&req.staging_path);
        if host::is_mounted(staging) {
            return Ok(StageResponse::default());
        }
        let fs_type = match req.fs_type.as_str() {
            "" => "ext4",
            t @ ("ext4" | "ext3" | "xfs") => t,
            other => {
                return Err(PluginError::invalid(format!(
                    "fsType {other:?} is not supported (ext4, ext3, xfs)"
                )))
            }
        };
        let record = Self::record(&s, staging);
        // What an interrupted stage left is undone first.
        if let Some(old) = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<Staged>(&b).ok())
        {
            self.detach(&old)?;
        }
        let lock_id = exclusive(&req.access_modes).then(|| format!("peapod:{}:{}", s.node, host::flat(staging)));
        if let Some(id) = &lock_id {
            self.lock(&s, &img, id)?;
        }
        let undo_lock = |this: &Self| {
            if let Some(id) = &lock_id {
                let _ = this.unlock(&s, &img, id);
            }
        };
        let mut staged = match self.attach(&s, &img, staging) {
            Ok(st) => st,
            Err(e) => {
                undo_lock(self);
                return Err(e);
            }
        };
        staged.lock_id = lock_id.clone();
        staged.image = img.clone();
        let write = std::fs::create_dir_all(record.parent().unwrap_or(Path::new("/")))
            .and_then(|_| std::fs::write(&record, serde_json::to_vec(&staged).unwrap_or_default()));
        let mounted = write
            .map_err(io(format!("record {}", record.display())))
            .and_then(|_| std::fs::create_dir_all(staging).map_err(io(format!("create {}", staging.display()))))
            // An image grown while it was in use: its filesystem grows now, unmounted.
            .and_then(|_| match req.read_only {
                true => Ok(()),
                false => host::grow_unmounted(Path::new(&staged.device)),
            })
            .and_then(|_| Self::mount_fs(&staged.device, fs_type, staging, req.read_only, &req.mount_options));
        if let Err(e) = mounted {
            let _ = host::unmount(staging);
            let _ = self.detach(&staged);
            let _ = std::fs::remove_file(&record);
            undo_lock(self);
            return Err(e);
        }
        Ok(StageResponse::default())
    }

    fn unstage(&self, req: UnstageRequest) -> Result<UnstageResponse, PluginError> {
        let s = self.setup()?;
        let staging = Path::new(&req.staging_path);
        host::unmount(staging)?;
        let record = Self::record(&s, staging);
        let Some(st) = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<Staged>(&b).ok())
        else {
            return Ok(UnstageResponse::default());
        };
        self.detach(&st)?;
        if let Some(id) = &st.lock_id {
            self.unlock(&s, &st.image, id)?;
        }
        let _ = std::fs::remove_file(&record);
        Ok(UnstageResponse::default())
    }

    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
        host::publish_staged(&req)
    }

    fn unpublish(&self, req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
        host::unpublish_staged(&req)
    }

    fn expand(&self, req: ExpandRequest) -> Result<ExpandResponse, PluginError> {
        let s = self.setup()?;
        let mib = ((req.capacity_bytes.max(1) as u64).div_ceil(1 << 20)).max(4);
        if req.volume_path.is_empty() {
            let img = image_of(&req.volume_context, &s.cfg)?;
            // rbd refuses to shrink without --allow-shrink: a smaller request fails.
            self.rbd(
                &s,
                &img,
                &["resize", "--no-progress", "--size", &mib.to_string(), &img.spec()],
            )?;
            return Ok(ExpandResponse {
                capacity_bytes: (mib << 20) as i64,
            });
        }
        let staging = Path::new(&req.volume_path);
        let st: Staged = std::fs::read(Self::record(&s, staging))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| PluginError::precondition(format!("{} is not staged by this plugin", staging.display())))?;
        if st.mapper == "fuse" {
            // rbd-fuse shows the new size; the loop device learns it.
            host::run(Command::new("losetup").args(["-c", &st.device]))?;
        }
        host::grow_filesystem(&st.device, staging)?;
        Ok(ExpandResponse {
            capacity_bytes: (mib << 20) as i64,
        })
    }

    fn get_volume_stats(&self, req: VolumeStatsRequest) -> Result<VolumeStats, PluginError> {
        host::stats(Path::new(&req.volume_path))
    }
}

export_volume_plugin!(Rbd, name = "rbd", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_volume_names_the_image_and_the_configuration_fills_in() {
        let cfg = Config {
            monitors: Some("10.0.0.1:6789".into()),
            user: Some("kube".into()),
            keyring: Some("/etc/ceph/kube.keyring".into()),
            ..Default::default()
        };
        let img = image_of(&ctx(&[("image", "db"), ("user", "admin")]), &cfg).unwrap();
        assert_eq!(
            img,
            Image {
                monitors: "10.0.0.1:6789".into(),
                user: "kube".into(),
                keyring: "/etc/ceph/kube.keyring".into(),
                pool: "rbd".into(),
                name: "db".into(),
            },
            "a volume's defaulted user gives way to the configured one"
        );
        let own = image_of(
            &ctx(&[("image", "db"), ("monitors", "m:1"), ("pool", "fast"), ("user", "u")]),
            &cfg,
        )
        .unwrap();
        assert_eq!(
            (own.monitors.as_str(), own.pool.as_str(), own.user.as_str()),
            ("m:1", "fast", "u")
        );
        let e = image_of(&ctx(&[("image", "db")]), &Config::default()).unwrap_err();
        assert!(e.message.contains("monitors are required"), "{}", e.message);
        assert!(image_of(&ctx(&[("image", "a/b"), ("monitors", "m")]), &cfg).is_err());
        assert!(image_of(&ctx(&[("image", "-x"), ("monitors", "m")]), &cfg).is_err());
    }

    #[test]
    fn only_writable_once_volumes_are_locked() {
        assert!(exclusive(&["ReadWriteOnce".into()]));
        assert!(exclusive(&["ReadWriteOncePod".into()]));
        assert!(!exclusive(&["ReadOnlyMany".into()]));
    }

    #[test]
    fn configuration_is_checked() {
        let p = Rbd::default();
        let e = p
            .init(InitRequest {
                config: serde_json::json!({"mapper": "tape"}),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("unknown variant `tape`"), "{}", e.message);
        p.init(InitRequest {
            config: serde_json::json!({"mapper": "fuse", "monitors": "m:1"}),
            ..Default::default()
        })
        .unwrap();
        let e = p
            .provision(ProvisionRequest {
                name: "pvc-1".into(),
                access_modes: vec!["ReadWriteMany".into()],
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("ReadWriteMany is not supported"), "{}", e.message);
    }
}
