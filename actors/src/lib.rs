//! peapod's live node: actix actors that reconcile the store into running
//! containers. The supervision tree is `NodeActor` → `PodActor` per pod (and
//! the `NamespaceActor` controller); containers are run by `peapod shim`
//! processes through [`runtime`].

pub mod backoff;
pub mod config;
pub mod events;
pub mod image;
pub mod namespaces;
pub mod node;
pub mod pod;
pub mod runtime;
