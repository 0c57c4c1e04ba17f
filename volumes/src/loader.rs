//! Loading volume plugins (shared libraries) and calling them.
//!
//! A plugin's code runs inside the daemon, so loading is careful about what
//! it accepts (ABI major, a unique name, a file only root can change) and
//! every call runs on a thread of its own with a deadline: a plugin that
//! hangs costs that thread, never an actor, and the caller gets
//! `DeadlineExceeded` with the plugin's name.

use libloading::Library;
use peapod_plugin_sdk::{
    Buffer, CallFn, FreeFn, PluginTable, ABI_MAJOR, CAPABILITY_NAMES, ENTRY_SYMBOL, STATUS_DEADLINE_EXCEEDED, STATUS_OK,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a plugin's entry function may take to return its table.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest table this daemon accepts: everything up to `unpublish`.
const MIN_TABLE_SIZE: usize = std::mem::offset_of!(PluginTable, unpublish) + std::mem::size_of::<Option<CallFn>>();

/// Why a plugin file was not loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("volume plugin {path}: {reason}")]
pub struct LoadRefusal {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// A failed plugin call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("volume plugin {plugin:?} {operation}: {message}")]
pub struct CallError {
    /// The plugin's name.
    pub plugin: String,
    /// The operation (`publish`, …).
    pub operation: &'static str,
    /// The plugin's status code (`STATUS_*`).
    pub code: i32,
    /// The plugin's message, or what went wrong around the call.
    pub message: String,
}

/// The operations of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Init,
    Provision,
    Delete,
    Stage,
    Unstage,
    Publish,
    Unpublish,
    GetVolumeStats,
    Expand,
}

impl Operation {
    /// kubelet's `operation_name` of `storage_operation_duration_seconds`
    /// for a storage operation (none for `init` and stats).
    pub fn storage_operation(self) -> Option<&'static str> {
        match self {
            Operation::Init | Operation::GetVolumeStats => None,
            Operation::Provision => Some("volume_provision"),
            Operation::Delete => Some("volume_delete"),
            Operation::Stage => Some("mount_device"),
            Operation::Unstage => Some("unmount_device"),
            Operation::Publish => Some("volume_mount"),
            Operation::Unpublish => Some("volume_unmount"),
            Operation::Expand => Some("expand_volume"),
        }
    }

    /// The operation's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Init => "init",
            Operation::Provision => "provision",
            Operation::Delete => "delete",
            Operation::Stage => "stage",
            Operation::Unstage => "unstage",
            Operation::Publish => "publish",
            Operation::Unpublish => "unpublish",
            Operation::GetVolumeStats => "get_volume_stats",
            Operation::Expand => "expand",
        }
    }
}

/// A loaded plugin: its description and its table, kept valid by the library handle.
pub struct Plugin {
    /// Unique name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// ABI version it was built against.
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `CAP_*` bits.
    pub capabilities: u64,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The plugin's table, copied up to its `struct_size` (absent entries stay null).
    table: PluginTable,
    /// Volumes with a call in flight: a call that outlived its deadline may
    /// still be running, and a second one must not race it.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    // Dropped last: the table points into the library.
    _library: Library,
    // Kept open while loaded: the library was loaded as /proc/self/fd/N, and
    // the dynamic loader knows it by that name; a reused N would alias it.
    _file: std::fs::File,
}

// SAFETY: the table copy holds pointers to static data and functions of the
// loaded library, which stays loaded as long as this value lives; plugins must
// accept calls from any thread (documented in the SDK: `VolumePlugin: Send + Sync`).
unsafe impl Send for Plugin {}
// SAFETY: as above; nothing here is mutated after loading.
unsafe impl Sync for Plugin {}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish()
    }
}

impl Plugin {
    /// Capability names, for listings.
    pub fn capability_names(&self) -> Vec<&'static str> {
        CAPABILITY_NAMES
            .iter()
            .filter(|(bit, _)| self.capabilities & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    fn entry(&self, op: Operation) -> Option<CallFn> {
        let t = &self.table;
        match op {
            Operation::Init => t.init,
            Operation::Provision => t.provision,
            Operation::Delete => t.delete_volume,
            Operation::Stage => t.stage,
            Operation::Unstage => t.unstage,
            Operation::Publish => t.publish,
            Operation::Unpublish => t.unpublish,
            Operation::GetVolumeStats => t.get_volume_stats,
            Operation::Expand => t.expand,
        }
    }

    fn free_fn(&self) -> Option<FreeFn> {
        self.table.free_buffer
    }

    /// Calls `op` with raw request bytes on the current thread; returns the
    /// status and the reply bytes (freed through the plugin already).
    pub fn call_raw(&self, op: Operation, request: &[u8]) -> (i32, Vec<u8>) {
        let Some(f) = self.entry(op) else {
            let msg = format!("{{\"message\":\"{} is not provided by this plugin\"}}", op.name());
            return (peapod_plugin_sdk::STATUS_UNIMPLEMENTED, msg.into_bytes());
        };
        let mut reply = Buffer {
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        // SAFETY: the plugin's function follows the ABI: it reads `request.len()`
        // bytes at `request.as_ptr()` and writes one Buffer into `reply`.
        let code = unsafe { f(request.as_ptr(), request.len(), &mut reply) };
        let bytes = if reply.ptr.is_null() || reply.len == 0 {
            Vec::new()
        } else {
            // SAFETY: the plugin allocated `reply.len` bytes at `reply.ptr` for us to read until freed.
            unsafe { std::slice::from_raw_parts(reply.ptr, reply.len) }.to_vec()
        };
        if let Some(free) = self.free_fn() {
            if !reply.ptr.is_null() {
                // SAFETY: the reply came from this plugin and is freed exactly once, by its own function.
                unsafe { free(reply) };
            }
        }
        (code, bytes)
    }

    /// Calls `op` on a thread of its own and waits at most `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        self: &Arc<Self>,
        op: Operation,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        self.call_for(None, op, req, timeout).await
    }

    /// Like [`Plugin::call`] for one volume: while a call for `volume` is in
    /// flight (even past its deadline) another one is refused, as kubelet's
    /// pending-operations tracker does, so a hung call never gains company.
    pub async fn call_for<Req: Serialize, Resp: DeserializeOwned>(
        self: &Arc<Self>,
        volume: Option<&str>,
        op: Operation,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let timer = peapod_metrics::Timer::start();
        let res = self.call_once(volume, op, req, timeout).await;
        self.record(op, timer.seconds(), res.as_ref().err());
        res
    }

    /// Counts and times a call: `peapod_plugin_*` for every call, and
    /// kubelet's `storage_operation_duration_seconds` for storage operations.
    fn record(&self, op: Operation, seconds: f64, failure: Option<&CallError>) {
        let m = peapod_metrics::metrics();
        let result = match failure {
            None => "ok",
            Some(e) if e.code == STATUS_DEADLINE_EXCEEDED => "timeout",
            Some(_) => "error",
        };
        m.plugin_calls
            .with_label_values(&[self.name.as_str(), op.name(), result])
            .inc();
        m.plugin_call_duration
            .with_label_values(&[self.name.as_str(), op.name()])
            .observe(seconds);
        if let Some(name) = op.storage_operation() {
            let status = if failure.is_none() { "success" } else { "fail-unknown" };
            m.storage_operation_duration
                .with_label_values(&[self.name.as_str(), name, status, "false"])
                .observe(seconds);
        }
    }

    async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
        self: &Arc<Self>,
        volume: Option<&str>,
        op: Operation,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let err = |code: i32, message: String| CallError {
            plugin: self.name.clone(),
            operation: op.name(),
            code,
            message,
        };
        let key = volume.map(str::to_string);
        if let Some(k) = &key {
            let mut busy = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !busy.insert(k.clone()) {
                return Err(err(
                    peapod_plugin_sdk::STATUS_FAILED_PRECONDITION,
                    format!("an operation for volume {k:?} is already in progress"),
                ));
            }
        }
        let bytes = serde_json::to_vec(req).map_err(|e| err(peapod_plugin_sdk::STATUS_INTERNAL, e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let thread_key = key.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-{}", op.name()))
            .spawn(move || {
                let reply = me.call_raw(op, &bytes);
                if let Some(k) = thread_key {
                    me.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
                }
                let _ = tx.send(reply);
            });
        if let Err(e) = spawned {
            if let Some(k) = &key {
                self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(k);
            }
            return Err(err(
                peapod_plugin_sdk::STATUS_INTERNAL,
                format!("start call thread: {e}"),
            ));
        }
        let (code, reply) = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(err(peapod_plugin_sdk::STATUS_INTERNAL, "call thread died".into())),
            Err(_) => {
                return Err(err(
                    STATUS_DEADLINE_EXCEEDED,
                    format!("no reply within {}s", timeout.as_secs_f32()),
                ))
            }
        };
        if code != STATUS_OK {
            let message = serde_json::from_slice::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&reply).into_owned());
            return Err(err(code, message));
        }
        let reply = if reply.is_empty() { b"{}".to_vec() } else { reply };
        serde_json::from_slice(&reply)
            .map_err(|e| err(peapod_plugin_sdk::STATUS_INTERNAL, format!("invalid reply: {e}")))
    }
}

/// Every plugin the daemon loaded, by name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    plugins: Vec<Arc<Plugin>>,
}

impl Registry {
    /// Loads every `*.so` in `dirs` (in order, files sorted by name); returns
    /// the registry and what was refused. Missing directories are skipped.
    pub fn load(dirs: &[PathBuf]) -> (Registry, Vec<LoadRefusal>) {
        let mut reg = Registry::default();
        let mut refused = Vec::new();
        for dir in dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "so"))
                .collect();
            files.sort();
            for path in files {
                match load_one(&path) {
                    Ok(p) => {
                        if let Some(first) = reg.get(&p.name) {
                            refused.push(LoadRefusal {
                                path: path.clone(),
                                reason: format!(
                                    "a plugin named {:?} is already loaded from {}",
                                    p.name,
                                    first.path.display()
                                ),
                            });
                        } else {
                            reg.plugins.push(Arc::new(p));
                        }
                    }
                    Err(reason) => refused.push(LoadRefusal { path, reason }),
                }
            }
        }
        (reg, refused)
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// All plugins, in load order.
    pub fn all(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }
}

/// Only root may be able to change code the daemon runs: the file and its directory.
fn check_owner(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    if meta.uid() != 0 {
        return Err(format!(
            "refusing a {what} owned by uid {} (must be owned by root)",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing a {what} writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

fn load_one(path: &Path) -> Result<Plugin, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        check_owner(
            &std::fs::metadata(dir).map_err(|e| format!("stat directory: {e}"))?,
            "plugin directory",
        )?;
    }
    // The checked file is the loaded file: open it without following a
    // symlink, check the open file, then load it through its descriptor.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    check_owner(&meta, "file")?;
    let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
    // SAFETY: loading runs the library's initialisers; the open file passed
    // the ownership checks, so only root could have placed this code.
    let library = unsafe { Library::new(&by_fd) }.map_err(|e| format!("load: {e}"))?;
    match inspect(&library) {
        Ok(Inspected {
            table,
            name,
            version,
            major,
            minor,
        }) => Ok(Plugin {
            name,
            version,
            abi_major: major,
            abi_minor: minor,
            capabilities: table.capabilities,
            path: path.to_path_buf(),
            table,
            in_flight: Default::default(),
            _library: library,
            _file: file,
        }),
        Err((reason, still_running)) => {
            // The dynamic loader knows the library by "/proc/self/fd/N" and may
            // keep it loaded after dlclose: N must never name another file, so a
            // refused library's descriptor stays open for good.
            std::mem::forget(file);
            if still_running {
                std::mem::forget(library);
            }
            Err(reason)
        }
    }
}

/// What a library's table says, checked.
struct Inspected {
    table: PluginTable,
    name: String,
    version: String,
    major: u32,
    minor: u32,
}

/// Calls the entry function (with a deadline) and checks the table. The error
/// says why, and whether the entry function is still running in the library.
fn inspect(library: &Library) -> Result<Inspected, (String, bool)> {
    let entry: unsafe extern "C" fn() -> *const PluginTable = {
        // SAFETY: the entry symbol's documented type is `const PluginTable *(void)`.
        let sym: libloading::Symbol<unsafe extern "C" fn() -> *const PluginTable> =
            unsafe { library.get(ENTRY_SYMBOL.as_bytes()) }
                .map_err(|_| (format!("no {ENTRY_SYMBOL} symbol: not a peapod volume plugin"), false))?;
        *sym
    };
    // The entry runs plugin code (a Rust plugin builds its state there): on a
    // thread of its own with a deadline, so a plugin that hangs while loading
    // cannot stop the daemon from starting.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: calling the entry function as documented; it returns a static table or null.
        let t = unsafe { entry() };
        let _ = tx.send(t as usize);
    });
    let table = match rx.recv_timeout(LOAD_TIMEOUT) {
        Ok(addr) => addr as *const PluginTable,
        Err(_) => {
            // A thread is still inside the library: it must never be unloaded.
            return Err((
                format!(
                    "{ENTRY_SYMBOL} did not return its table within {}s",
                    LOAD_TIMEOUT.as_secs()
                ),
                true,
            ));
        }
    };
    if table.is_null() {
        return Err((format!("{ENTRY_SYMBOL} returned no table"), false));
    }
    // SAFETY: non-null; the first three fields exist in every ABI version.
    let (size, major, minor) = unsafe { ((*table).struct_size as usize, (*table).abi_major, (*table).abi_minor) };
    if major != ABI_MAJOR {
        return Err((
            format!("ABI {major}.{minor} is not supported (this daemon speaks ABI {ABI_MAJOR}.x)"),
            false,
        ));
    }
    if size < MIN_TABLE_SIZE {
        return Err((
            format!("table of {size} bytes is too small for ABI {ABI_MAJOR} (needs {MIN_TABLE_SIZE})"),
            false,
        ));
    }
    // Copy what the plugin has into a zeroed table: entries past its
    // struct_size (a plugin built for an older minor) stay null.
    let mut copy = std::mem::MaybeUninit::<PluginTable>::zeroed();
    let n = size.min(std::mem::size_of::<PluginTable>());
    // SAFETY: the plugin promises `struct_size` readable bytes at `table`; we
    // copy at most that many into our own zeroed table of the full size.
    unsafe { std::ptr::copy_nonoverlapping(table as *const u8, copy.as_mut_ptr() as *mut u8, n) };
    // SAFETY: all-zero bytes are a valid PluginTable (integers, null pointers,
    // `None` function pointers), and the copied prefix holds the plugin's values.
    let t = unsafe { copy.assume_init() };
    let text = |p: *const std::os::raw::c_char, what: &str| -> Result<String, String> {
        if p.is_null() {
            return Err(format!("the table has no {what}"));
        }
        // SAFETY: the ABI requires NUL-terminated static strings.
        Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let name = text(t.name, "name").map_err(|e| (e, false))?;
    let version = text(t.version, "version").map_err(|e| (e, false))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err((format!("invalid plugin name {name:?}"), false));
    }
    for (present, what) in [
        (t.free_buffer.is_some(), "free_buffer"),
        (t.publish.is_some(), "publish"),
        (t.unpublish.is_some(), "unpublish"),
    ] {
        if !present {
            return Err((
                format!("plugin {name:?} does not provide {what}, which is required"),
                false,
            ));
        }
    }
    Ok(Inspected {
        table: t,
        name,
        version,
        major,
        minor,
    })
}
