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
    table: *const PluginTable,
    table_size: usize,
    // Dropped last: the table points into the library.
    _library: Library,
}

// SAFETY: the table is immutable static data of the loaded library, which
// stays loaded as long as this value lives; plugins must accept calls from
// any thread (documented in the SDK: `VolumePlugin: Send + Sync`).
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
        // SAFETY: `table` is valid while the library is loaded (it is, `self` owns it).
        let t = unsafe { &*self.table };
        let present = |offset: usize| offset + std::mem::size_of::<Option<CallFn>>() <= self.table_size;
        macro_rules! field {
            ($f:ident) => {
                if present(std::mem::offset_of!(PluginTable, $f)) {
                    t.$f
                } else {
                    None
                }
            };
        }
        match op {
            Operation::Init => field!(init),
            Operation::Provision => field!(provision),
            Operation::Delete => field!(delete_volume),
            Operation::Stage => field!(stage),
            Operation::Unstage => field!(unstage),
            Operation::Publish => field!(publish),
            Operation::Unpublish => field!(unpublish),
            Operation::GetVolumeStats => field!(get_volume_stats),
            Operation::Expand => field!(expand),
        }
    }

    fn free_fn(&self) -> Option<FreeFn> {
        // SAFETY: as in `entry`; `free_buffer` is within MIN_TABLE_SIZE.
        unsafe { (*self.table).free_buffer }
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
        let err = |code: i32, message: String| CallError {
            plugin: self.name.clone(),
            operation: op.name(),
            code,
            message,
        };
        let bytes = serde_json::to_vec(req).map_err(|e| err(peapod_plugin_sdk::STATUS_INTERNAL, e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("plugin-{}", op.name()))
            .spawn(move || {
                let _ = tx.send(me.call_raw(op, &bytes));
            })
            .map_err(|e| err(peapod_plugin_sdk::STATUS_INTERNAL, format!("start call thread: {e}")))?;
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

/// Only root may be able to change code the daemon runs.
fn check_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("stat: {e}"))?;
    if meta.uid() != 0 {
        return Err(format!(
            "refusing a file owned by uid {} (must be owned by root)",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing a file writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

fn load_one(path: &Path) -> Result<Plugin, String> {
    check_file(path)?;
    // SAFETY: loading runs the library's initialisers; the file passed the
    // ownership check, so only root could have placed this code.
    let library = unsafe { Library::new(path) }.map_err(|e| format!("load: {e}"))?;
    let table = {
        // SAFETY: the entry symbol's documented type is `const PluginTable *(void)`.
        let entry: libloading::Symbol<unsafe extern "C" fn() -> *const PluginTable> =
            unsafe { library.get(ENTRY_SYMBOL.as_bytes()) }
                .map_err(|_| format!("no {ENTRY_SYMBOL} symbol: not a peapod volume plugin"))?;
        // SAFETY: calling the entry function as documented; it returns a static table or null.
        unsafe { entry() }
    };
    if table.is_null() {
        return Err(format!("{ENTRY_SYMBOL} returned no table"));
    }
    // SAFETY: non-null; the first three fields exist in every ABI version.
    let (size, major, minor) = unsafe { ((*table).struct_size as usize, (*table).abi_major, (*table).abi_minor) };
    if major != ABI_MAJOR {
        return Err(format!(
            "ABI {major}.{minor} is not supported (this daemon speaks ABI {ABI_MAJOR}.x)"
        ));
    }
    if size < MIN_TABLE_SIZE {
        return Err(format!(
            "table of {size} bytes is too small for ABI {ABI_MAJOR} (needs {MIN_TABLE_SIZE})"
        ));
    }
    // SAFETY: the table is at least MIN_TABLE_SIZE bytes, which covers every field read here.
    let t = unsafe { &*table };
    let text = |p: *const std::os::raw::c_char, what: &str| -> Result<String, String> {
        if p.is_null() {
            return Err(format!("the table has no {what}"));
        }
        // SAFETY: the ABI requires NUL-terminated static strings.
        Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let name = text(t.name, "name")?;
    let version = text(t.version, "version")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("invalid plugin name {name:?}"));
    }
    for (present, what) in [
        (t.free_buffer.is_some(), "free_buffer"),
        (t.publish.is_some(), "publish"),
        (t.unpublish.is_some(), "unpublish"),
    ] {
        if !present {
            return Err(format!("plugin {name:?} does not provide {what}, which is required"));
        }
    }
    Ok(Plugin {
        name,
        version,
        abi_major: major,
        abi_minor: minor,
        capabilities: t.capabilities,
        path: path.to_path_buf(),
        table,
        table_size: size,
        _library: library,
    })
}
