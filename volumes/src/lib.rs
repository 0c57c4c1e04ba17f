//! peapod's host side of storage: the loader of volume plugins (shared
//! libraries speaking `peapod-plugin-sdk`'s ABI) and the manager that
//! publishes a pod's volumes through them. In-tree and out-of-tree plugins
//! go through the same path; this crate knows no plugin by its code. It
//! also holds Kubernetes' rules for binding claims to volumes (`binding`).

pub mod atomic;
pub mod binding;
pub mod claims;
pub mod loader;
pub mod manager;
pub mod sources;

pub use loader::{CallError, LoadRefusal, Operation, Plugin, Registry};
pub use manager::{Expanded, Published, VolumeConfig, VolumeError, VolumeManager};
