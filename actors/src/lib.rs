//! peapod's live node: actix actors that reconcile the store into running
//! containers, in one supervision tree ([`supervisor`]): `NodeActor` →
//! `NamespaceActor` and a `PodActor` per pod → a `ContainerActor` per
//! container → a `ProbeActor` per probe. Containers are run by `peapod shim`
//! processes through [`runtime`].

pub mod backoff;
pub mod binder;
pub mod clock;
pub mod config;
pub mod container;
pub mod controllers;
pub mod dns;
pub mod events;
pub mod faults;
pub mod gc;
pub mod hooks;
pub mod image;
pub mod image_gc;
pub mod informer;
pub mod leader;
pub mod metered_store;
pub mod namespaces;
pub mod node;
pub mod nodeipam;
pub mod pod;
pub mod probe;
pub mod proxy;
pub mod registration;
pub mod routes;
pub mod runtime;
pub mod scheduler;
pub mod supervisor;
