//! peapod's object model and store.
//!
//! Everything here describes state; nothing here runs a process. Objects are
//! Kubernetes objects (the `k8s-openapi` types for one pinned Kubernetes
//! version), kept generically as JSON in the store and typed where a kind's
//! validation or an actor needs the fields.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cron;
pub mod deletion;
pub mod field;
pub mod fields;
pub mod kinds;
pub mod manifest;
pub mod names;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod podaffinity;
pub mod printers;
pub mod protobuf;
pub mod quantity;
pub mod resources;
pub mod scale;
pub mod scheduling;
pub mod selector;
pub mod service;
pub mod store;
pub mod validation;
pub mod writes;

pub use k8s_openapi;
