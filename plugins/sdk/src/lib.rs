//! # peapod volume plugins
//!
//! A volume plugin is a shared library that peapod's daemon loads at run time
//! from its plugin directories. It exports one C-ABI symbol,
//! [`ENTRY_SYMBOL`] (`peapod_volume_plugin`), a function returning a pointer
//! to a static [`PluginTable`]: the plugin's name, version, ABI version,
//! capabilities, and one function per operation, modelled on CSI's node and
//! controller calls.
//!
//! Requests and replies cross the boundary as JSON bytes: the daemon passes a
//! request it owns; the plugin allocates its reply and exports the function
//! that frees it ([`PluginTable::free_buffer`]). No Rust type, panic or
//! allocator crosses the boundary, so a plugin may be built by another
//! compiler, or written in C (see `include/peapod_plugin.h` and
//! `examples/c/noop.c`).
//!
//! Every operation must be idempotent: after a crash the daemon repeats calls
//! whose outcome it did not record (publishing an already published volume
//! succeeds, unpublishing one that is gone succeeds), as CSI requires.
//!
//! Rust authors implement [`VolumePlugin`] and call [`export_volume_plugin!`]:
//!
//! ```
//! use peapod_plugin_sdk::*;
//!
//! #[derive(Default)]
//! struct Scratch;
//!
//! impl VolumePlugin for Scratch {
//!     fn capabilities(&self) -> u64 {
//!         CAP_STATS
//!     }
//!     fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
//!         std::fs::create_dir_all(&req.target_path)
//!             .map_err(|e| PluginError::internal(format!("create {}: {e}", req.target_path)))?;
//!         Ok(PublishResponse::default())
//!     }
//!     fn unpublish(&self, req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
//!         match std::fs::remove_dir_all(&req.target_path) {
//!             Ok(()) => Ok(UnpublishResponse::default()),
//!             Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UnpublishResponse::default()),
//!             Err(e) => Err(PluginError::internal(e.to_string())),
//!         }
//!     }
//! }
//!
//! export_volume_plugin!(Scratch, name = "scratch", version = "0.1.0");
//! ```

mod export;
#[cfg(feature = "host")]
pub mod host;
mod types;

pub use types::*;

#[doc(hidden)]
pub mod __private {
    pub use crate::export::{dispatch, free_buffer, StaticTable};
}

use std::os::raw::c_char;

/// The symbol every plugin exports: `const PluginTable *peapod_volume_plugin(void)`.
pub const ENTRY_SYMBOL: &str = "peapod_volume_plugin";

/// The ABI's major version: the daemon refuses a plugin with another major.
pub const ABI_MAJOR: u32 = 1;
/// The ABI's minor version: new optional entries are added at the end of the
/// table; [`PluginTable::struct_size`] tells the daemon which ones exist.
pub const ABI_MINOR: u32 = 0;

/// The plugin provisions and deletes volumes ([`PluginTable::provision`], [`PluginTable::delete_volume`]).
pub const CAP_PROVISION: u64 = 1 << 0;
/// The plugin stages volumes once per node before publishing them ([`PluginTable::stage`], [`PluginTable::unstage`]).
pub const CAP_STAGE: u64 = 1 << 1;
/// The plugin reports usage ([`PluginTable::get_volume_stats`]).
pub const CAP_STATS: u64 = 1 << 2;
/// The plugin grows volumes ([`PluginTable::expand`]).
pub const CAP_EXPAND: u64 = 1 << 3;

/// Names of the capability bits, for messages and `peapod plugins`.
pub const CAPABILITY_NAMES: &[(u64, &str)] = &[
    (CAP_PROVISION, "provision"),
    (CAP_STAGE, "stage"),
    (CAP_STATS, "stats"),
    (CAP_EXPAND, "expand"),
];

/// Call succeeded; the reply holds the operation's response.
pub const STATUS_OK: i32 = 0;
// Failures use gRPC's codes, as CSI does; the reply holds `{"message": "..."}`.
/// The request is malformed (code 3).
pub const STATUS_INVALID_ARGUMENT: i32 = 3;
/// The call did not finish in time (code 4); set by the daemon, not by plugins.
pub const STATUS_DEADLINE_EXCEEDED: i32 = 4;
/// The volume does not exist (code 5).
pub const STATUS_NOT_FOUND: i32 = 5;
/// The volume exists with incompatible parameters (code 6).
pub const STATUS_ALREADY_EXISTS: i32 = 6;
/// Out of capacity (code 8).
pub const STATUS_RESOURCE_EXHAUSTED: i32 = 8;
/// The node is not in a state where the call can succeed (code 9).
pub const STATUS_FAILED_PRECONDITION: i32 = 9;
/// The plugin does not implement the call (code 12).
pub const STATUS_UNIMPLEMENTED: i32 = 12;
/// Anything else, including a panic caught at the boundary (code 13).
pub const STATUS_INTERNAL: i32 = 13;

/// Bytes owned by whoever allocated them; replies are freed with [`PluginTable::free_buffer`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Buffer {
    /// Start of the bytes (null when `len` is 0).
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

/// One operation: reads `request_len` bytes of JSON at `request`, writes the
/// reply (JSON, allocated by the plugin) into `*reply`, returns a status code.
pub type CallFn = unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32;

/// Frees a reply the plugin allocated.
pub type FreeFn = unsafe extern "C" fn(buffer: Buffer);

/// What a plugin's entry symbol returns. It must stay valid while the library
/// is loaded (a `static`). Optional operations are null when not provided.
#[repr(C)]
pub struct PluginTable {
    /// `sizeof(PluginTable)` as the plugin was built: entries beyond it are absent.
    pub struct_size: u32,
    /// Must equal the daemon's [`ABI_MAJOR`].
    pub abi_major: u32,
    /// The minor version the plugin was built against.
    pub abi_minor: u32,
    /// Unique plugin name (NUL-terminated), e.g. `emptydir`; volumes name their plugin by it.
    pub name: *const c_char,
    /// The plugin's own version (NUL-terminated).
    pub version: *const c_char,
    /// `CAP_*` bits.
    pub capabilities: u64,
    /// Frees replies. Required.
    pub free_buffer: Option<unsafe extern "C" fn(buffer: Buffer)>,
    /// Called once after loading with [`InitRequest`]. Optional.
    pub init: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`ProvisionRequest`] -> [`ProvisionResponse`]; with [`CAP_PROVISION`].
    pub provision: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`DeleteRequest`] -> [`DeleteResponse`]; with [`CAP_PROVISION`].
    pub delete_volume: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`StageRequest`] -> [`StageResponse`]; with [`CAP_STAGE`].
    pub stage: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`UnstageRequest`] -> [`UnstageResponse`]; with [`CAP_STAGE`].
    pub unstage: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`PublishRequest`] -> [`PublishResponse`]. Required.
    pub publish: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`UnpublishRequest`] -> [`UnpublishResponse`]. Required.
    pub unpublish: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`VolumeStatsRequest`] -> [`VolumeStats`]; with [`CAP_STATS`].
    pub get_volume_stats:
        Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
    /// [`ExpandRequest`] -> [`ExpandResponse`]; with [`CAP_EXPAND`].
    pub expand: Option<unsafe extern "C" fn(request: *const u8, request_len: usize, reply: *mut Buffer) -> i32>,
}

/// A plugin written in Rust. Every method must be idempotent; a panic is
/// caught at the boundary and reported as [`STATUS_INTERNAL`].
pub trait VolumePlugin: Send + Sync + 'static {
    /// `CAP_*` bits this plugin implements.
    fn capabilities(&self) -> u64 {
        0
    }
    /// Called once after loading.
    fn init(&self, _req: InitRequest) -> Result<InitResponse, PluginError> {
        Ok(InitResponse::default())
    }
    /// Creates a volume (dynamic provisioning).
    fn provision(&self, _req: ProvisionRequest) -> Result<ProvisionResponse, PluginError> {
        Err(PluginError::unimplemented("provision"))
    }
    /// Deletes a provisioned volume; deleting one that is gone succeeds.
    fn delete(&self, _req: DeleteRequest) -> Result<DeleteResponse, PluginError> {
        Err(PluginError::unimplemented("delete"))
    }
    /// Makes a volume available on this node once (map a device, mount it at the staging path).
    fn stage(&self, _req: StageRequest) -> Result<StageResponse, PluginError> {
        Err(PluginError::unimplemented("stage"))
    }
    /// Undoes [`VolumePlugin::stage`].
    fn unstage(&self, _req: UnstageRequest) -> Result<UnstageResponse, PluginError> {
        Err(PluginError::unimplemented("unstage"))
    }
    /// Makes the volume appear at `target_path` for one pod.
    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError>;
    /// Undoes [`VolumePlugin::publish`]; unpublishing what is not published succeeds.
    fn unpublish(&self, req: UnpublishRequest) -> Result<UnpublishResponse, PluginError>;
    /// Capacity and usage of a published volume.
    fn get_volume_stats(&self, _req: VolumeStatsRequest) -> Result<VolumeStats, PluginError> {
        Err(PluginError::unimplemented("get_volume_stats"))
    }
    /// Grows a volume.
    fn expand(&self, _req: ExpandRequest) -> Result<ExpandResponse, PluginError> {
        Err(PluginError::unimplemented("expand"))
    }
}
