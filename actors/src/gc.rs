//! `GarbageCollector`: what Kubernetes' garbage collector does with
//! `metadata.ownerReferences`, as a supervised child of the node.
//!
//! - A dependent all of whose owners are gone (checked against the store,
//!   by uid, not the informer's view) is deleted (background deletion); the
//!   references to owners that are gone are dropped from one that still has others.
//! - An owner deleted with `propagationPolicy: Orphan` (finalizer `orphan`)
//!   has its dependents' references to it removed, then the finalizer.
//! - An owner deleted with `propagationPolicy: Foreground` (finalizer
//!   `foregroundDeletion`) has its dependents deleted (in the foreground
//!   too), and loses the finalizer once no dependent with
//!   `blockOwnerDeletion` is left.
//!
//! An object whose last finalizer goes and whose deletion is over is removed
//! ([`deletion::update_or_remove`]). Passes are level-triggered: every change
//! of any kind starts one (changes coalesce), and one runs every 10 s anyway.

use crate::informer::{self, Informed};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use peapod_core::deletion::{self, Propagation, FOREGROUND, ORPHAN};
use peapod_core::kinds::{self, Kind, KINDS};
use peapod_core::object;
use peapod_core::store::{Store, StoreError, StoreResult};
use peapod_core::writes;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The garbage collector.
pub struct GarbageCollector {
    store: Arc<dyn Store>,
    node: TreeNode,
    /// The uids of every object of every kind, as the informers last said.
    uids: HashMap<String, &'static Kind>,
    /// The objects a pass looks at, by uid: those with owners, and owners
    /// being deleted with the orphan or foreground finalizer.
    objects: HashMap<String, (&'static Kind, Value)>,
    running: bool,
    again: bool,
}

impl GarbageCollector {
    /// A collector over `store`, registered in the tree as `node`.
    pub fn new(store: Arc<dyn Store>, node: TreeNode) -> Self {
        Self {
            store,
            node,
            uids: HashMap::new(),
            objects: HashMap::new(),
            running: false,
            again: false,
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        crate::faults::point("gc.pass", "");
        let snapshot: Vec<(&'static Kind, Value)> = self.objects.values().cloned().collect();
        let uids: HashSet<String> = self.uids.keys().cloned().collect();
        let store = self.store.clone();
        ctx.spawn(
            async move {
                if let Err(e) = collect(&*store, &snapshot, &uids).await {
                    tracing::warn!("garbage collection: {e}");
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.running = false;
                if std::mem::take(&mut act.again) {
                    act.pass(ctx);
                }
            }),
        );
    }
}

/// Whether a pass needs to look at an object.
fn relevant(obj: &Value) -> bool {
    !deletion::owner_refs(obj).is_empty()
        || (object::deletion_timestamp(obj).is_some()
            && deletion::finalizers(obj).iter().any(|f| f == ORPHAN || f == FOREGROUND))
}

/// One pass over the objects with owners or deleted with a propagation
/// finalizer; `uids` are those of every object.
async fn collect(store: &dyn Store, objects: &[(&'static Kind, Value)], uids: &HashSet<String>) -> StoreResult<()> {
    let mut dependents_of: HashMap<String, Vec<&(&'static Kind, Value)>> = HashMap::new();
    for entry in objects {
        for r in deletion::owner_refs(&entry.1) {
            dependents_of.entry(r.uid).or_default().push(entry);
        }
    }
    // Dependents whose owners are gone.
    for (kind, dep) in objects {
        let refs = deletion::owner_refs(dep);
        if refs.is_empty() || object::deletion_timestamp(dep).is_some() {
            continue;
        }
        let mut gone = Vec::new();
        for r in &refs {
            if uids.contains(&r.uid) {
                continue;
            }
            if owner_absent(store, r, object::namespace(dep)).await? {
                gone.push(r.uid.clone());
            }
        }
        if gone.is_empty() {
            continue;
        }
        if gone.len() == refs.len() {
            delete(store, kind, dep, Propagation::Background).await?;
        } else {
            modify(store, kind, dep, |d| {
                // Every reference to a gone owner, not just the first.
                let removed: Vec<bool> = gone.iter().map(|uid| deletion::remove_owner_ref(d, uid)).collect();
                removed.contains(&true)
            })
            .await?;
        }
    }
    // Owners being deleted in the foreground or with orphaning.
    for (kind, owner) in objects {
        if object::deletion_timestamp(owner).is_none() {
            continue;
        }
        let finalizers = deletion::finalizers(owner);
        let uid = object::uid(owner);
        let dependents = dependents_of.get(uid).map(Vec::as_slice).unwrap_or_default();
        if finalizers.iter().any(|f| f == ORPHAN) {
            for (dk, d) in dependents {
                modify(store, dk, d, |d| deletion::remove_owner_ref(d, uid)).await?;
            }
            modify(store, kind, owner, |o| deletion::remove_finalizer(o, ORPHAN)).await?;
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            for (dk, d) in dependents {
                if object::deletion_timestamp(d).is_none() {
                    delete(store, dk, d, Propagation::Foreground).await?;
                }
            }
            let blocking = dependents.iter().any(|(_, d)| {
                deletion::owner_refs(d)
                    .iter()
                    .any(|r| r.uid == uid && r.block_owner_deletion)
            });
            if !blocking {
                modify(store, kind, owner, |o| deletion::remove_finalizer(o, FOREGROUND)).await?;
            }
        }
    }
    Ok(())
}

/// Whether the owner a reference names is not in the store (or another
/// object of its name is). An owner of a kind this node does not serve is
/// left alone: it cannot be looked up.
async fn owner_absent(store: &dyn Store, r: &deletion::OwnerRef, dep_namespace: &str) -> StoreResult<bool> {
    let Some(kind) = kinds::by_type(&r.api_version, &r.kind) else {
        return Ok(false);
    };
    let ns = if kind.namespaced { dep_namespace } else { "" };
    match store.get(&kind.resource(), ns, &r.name).await {
        Ok(o) => Ok(object::uid(&o) != r.uid),
        Err(StoreError::NotFound { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

/// [`writes::delete`], for a pass that only needs to know it failed.
async fn delete(store: &dyn Store, kind: &'static Kind, obj: &Value, propagation: Propagation) -> StoreResult<()> {
    writes::delete(store, kind, obj, propagation).await.map(drop)
}

/// [`writes::modify`], for a pass that only needs to know it failed.
async fn modify(
    store: &dyn Store,
    kind: &'static Kind,
    obj: &Value,
    change: impl FnMut(&mut Value) -> bool,
) -> StoreResult<()> {
    writes::modify(store, kind, obj, change).await.map(drop)
}

impl Actor for GarbageCollector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Watching");
        // Events are left out, as kube-controller-manager's collector leaves
        // them out (its ignored resources): they own nothing, are owned by
        // nothing, and are by far the most numerous kind; they age out on
        // their own (--event-ttl).
        for kind in KINDS.iter().filter(|k| !std::ptr::eq(*k, kinds::event())) {
            let informer = informer::run(self.store.clone(), kind.resource(), None, ctx.address().recipient());
            ctx.spawn(informer.into_actor(self));
        }
        ctx.run_interval(Duration::from_secs(10), |act, ctx| act.pass(ctx));
    }
}

impl Handler<Informed> for GarbageCollector {
    type Result = ();

    fn handle(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        let Some(kind) = kinds::by_store_key(msg.resource()) else {
            return;
        };
        // Only a change that may matter starts a pass: an object with owners
        // or a propagation finalizer, or the removal of any object (it may own some).
        let matters;
        match msg {
            Informed::Synced { objects, .. } => {
                self.uids.retain(|_, k| !std::ptr::eq(*k, kind));
                self.objects.retain(|_, (k, _)| !std::ptr::eq(*k, kind));
                for o in objects {
                    let uid = object::uid(&o).to_string();
                    self.uids.insert(uid.clone(), kind);
                    if relevant(&o) {
                        self.objects.insert(uid, (kind, o));
                    }
                }
                matters = true;
            }
            Informed::Applied { object, .. } => {
                let uid = object::uid(&object).to_string();
                self.uids.insert(uid.clone(), kind);
                if relevant(&object) {
                    self.objects.insert(uid, (kind, object));
                    matters = true;
                } else {
                    matters = self.objects.remove(&uid).is_some();
                }
            }
            Informed::Deleted { object, .. } => {
                let uid = object::uid(&object);
                self.uids.remove(uid);
                self.objects.remove(uid);
                matters = !self.objects.is_empty();
            }
        }
        if matters {
            self.pass(ctx);
        }
    }
}
