//! Controllers: each a supervised child of the node that keeps objects of
//! one kind (ReplicaSets …) true by writing their dependents (pods …) to
//! the store. A controller never starts a process: the node runs the pods.
//!
//! Every controller is a [`Controller`] actor around a [`Reconciler`]. The
//! actor follows the owner kind and the dependents' kinds through
//! informers and keeps a queue of owners to look at: an owner that changed,
//! the owner a changed dependent names as its controller, and, for a
//! dependent without one, every owner whose selector takes it. One owner is
//! reconciled at a time (a few owners at once), from the store's current
//! state, never the informer's: what the last pass wrote is always seen, so
//! nothing is created twice. A failed pass is tried again with a back-off;
//! a pass may ask to be run again later (minReadySeconds).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod history;
pub mod job;
pub mod nodelifecycle;
pub mod replicaset;
pub mod resourcequota;
pub mod statefulset;

use crate::events::EventRecorder;
use crate::informer::{self, Informed};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use peapod_core::deletion;
use peapod_core::kinds::Kind;
use peapod_core::object;
use peapod_core::selector::Selector;
use peapod_core::store::{Store, StoreError};
use peapod_core::validation::workloads::workload_selector;
use peapod_core::writes;
use replicaset::{controller_of, controller_ref};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How many owners are reconciled at once.
const WORKERS: usize = 4;

/// What a pass reports: `Ok(Some(d))` asks to be run again after `d`.
pub type SyncResult = Result<Option<Duration>, String>;

/// The store and the event recorder a pass works with.
#[derive(Clone)]
pub struct SyncContext {
    pub store: Arc<dyn Store>,
    pub events: EventRecorder,
}

/// One controller's logic.
pub trait Reconciler: Send + 'static {
    /// The key among the node's children and in the tree (`replicaset-controller`).
    fn name(&self) -> &'static str;
    /// The kind it keeps.
    fn owner(&self) -> &'static Kind;
    /// The kinds it writes, whose changes concern their owner.
    fn dependents(&self) -> Vec<&'static Kind>;
    /// Kinds whose every change concerns every owner (nodes, for DaemonSets).
    fn triggers(&self) -> Vec<&'static Kind> {
        Vec::new()
    }
    /// Kinds the owner is about without owning them (the pods a Service
    /// selects): a change to one concerns every owner of its namespace that
    /// [`relates`](Self::relates) to it, before the change or after.
    fn related(&self) -> Vec<&'static Kind> {
        Vec::new()
    }
    /// Whether `owner` is about `object`, of a [`related`](Self::related) kind.
    fn relates(&self, _owner: &Value, _object: &Value) -> bool {
        false
    }
    /// Whether `owner` would adopt `dependent` (which has no controller):
    /// by default, when the owner is not being deleted and its selector
    /// (`spec.selector`) is not empty and takes the dependent's labels.
    fn selects(&self, owner: &Value, dependent: &Value) -> bool {
        object::deletion_timestamp(owner).is_none()
            && workload_selector(owner).is_ok_and(|s| !s.is_empty() && s.matches(&object::labels(dependent)))
    }
    /// Brings the owner `namespace/name` to what it asks for.
    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>>;
}

type Key = (String, String);

/// The actor that runs one [`Reconciler`].
pub struct Controller {
    reconciler: Box<dyn Reconciler>,
    cx: SyncContext,
    node: TreeNode,
    /// The owners, as the informer last said (to map dependents to them).
    owners: HashMap<Key, Value>,
    queue: BTreeSet<Key>,
    running: HashSet<Key>,
    /// Consecutive failures per owner (the back-off).
    failures: HashMap<Key, u32>,
    /// Each object of a related kind as last seen, by (store key, namespace,
    /// name): a change is judged against the owners as they are now, for the
    /// object before the change and after it.
    related_seen: HashMap<(String, String, String), Value>,
}

impl Controller {
    /// A controller over `store`, registered in the tree as `node`.
    pub fn new(reconciler: Box<dyn Reconciler>, store: Arc<dyn Store>, events: EventRecorder, node: TreeNode) -> Self {
        let events = events.with_component(reconciler.name());
        Self {
            reconciler,
            cx: SyncContext { store, events },
            node,
            owners: HashMap::new(),
            queue: BTreeSet::new(),
            running: HashSet::new(),
            failures: HashMap::new(),
            related_seen: HashMap::new(),
        }
    }

    /// The owners of the object's namespace that are about it.
    fn relating(&self, o: &Value) -> Vec<Key> {
        let ns = object::namespace(o);
        self.owners
            .iter()
            .filter(|((n, _), owner)| n == ns && self.reconciler.relates(owner, o))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A related object changed: the owners it is about now, and those it
    /// was about before, look again.
    fn related_changed(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        let resource = msg.resource().to_string();
        let id = |o: &Value| {
            (
                resource.clone(),
                object::namespace(o).to_string(),
                object::name(o).to_string(),
            )
        };
        let mut touched: BTreeSet<Key> = BTreeSet::new();
        let mut before: Vec<Value> = Vec::new();
        let mut after: Vec<Value> = Vec::new();
        match msg {
            Informed::Synced { objects, .. } => {
                let ids: HashSet<_> = objects.iter().map(id).collect();
                let gone: Vec<_> = self
                    .related_seen
                    .keys()
                    .filter(|k| k.0 == resource && !ids.contains(*k))
                    .cloned()
                    .collect();
                before.extend(gone.iter().filter_map(|k| self.related_seen.remove(k)));
                for o in objects {
                    before.extend(self.related_seen.insert(id(&o), o.clone()));
                    after.push(o);
                }
            }
            Informed::Applied { object, .. } => {
                before.extend(self.related_seen.insert(id(&object), object.clone()));
                after.push(object);
            }
            Informed::Deleted { object, .. } => {
                before.extend(self.related_seen.remove(&id(&object)));
                after.push(object);
            }
        }
        for o in before.iter().chain(&after) {
            touched.extend(self.relating(o));
        }
        for k in touched {
            self.enqueue(k, ctx);
        }
    }

    fn enqueue(&mut self, key: Key, ctx: &mut Context<Self>) {
        self.queue.insert(key);
        self.work(ctx);
    }

    /// Starts passes for queued owners not already in one, up to [`WORKERS`].
    fn work(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < WORKERS {
            let Some(key) = self.queue.iter().find(|k| !self.running.contains(*k)).cloned() else {
                return;
            };
            self.queue.remove(&key);
            self.running.insert(key.clone());
            crate::faults::point("controller.sync", &key.1);
            let pass = self.reconciler.sync(self.cx.clone(), key.0.clone(), key.1.clone());
            let name = self.reconciler.name();
            let timed = async move {
                let timer = peapod_metrics::Timer::start();
                let res = pass.await;
                let m = peapod_metrics::metrics();
                m.controller_reconcile_duration
                    .with_label_values(&[name])
                    .observe(timer.seconds());
                let result = if res.is_ok() { "ok" } else { "error" };
                m.controller_reconciles.with_label_values(&[name, result]).inc();
                res
            };
            ctx.spawn(timed.into_actor(self).map(move |res, act, ctx| {
                act.running.remove(&key);
                match res {
                    Ok(again) => {
                        act.failures.remove(&key);
                        if let Some(after) = again {
                            let k = key.clone();
                            ctx.run_later(after, move |act, ctx| act.enqueue(k, ctx));
                        }
                    }
                    Err(e) => {
                        let n = act.failures.entry(key.clone()).or_default();
                        *n = n.saturating_add(1);
                        let delay = Duration::from_millis(200u64.saturating_mul(1 << (*n).min(8)));
                        tracing::warn!(
                            "{} {}/{}: {e}; trying again in {delay:?}",
                            act.reconciler.name(),
                            key.0,
                            key.1
                        );
                        let k = key.clone();
                        ctx.run_later(delay, move |act, ctx| act.enqueue(k, ctx));
                    }
                }
                act.work(ctx);
            }));
        }
    }

    /// The owners a dependent's change concerns: its controller, or, if it
    /// has none, every owner in its namespace whose selector takes it.
    fn owners_of(&self, dep: &Value) -> Vec<Key> {
        let owner = self.reconciler.owner();
        let ns = object::namespace(dep).to_string();
        let refs = deletion::owner_refs(dep);
        if let Some(c) = refs.iter().find(|r| r.controller) {
            if c.kind == owner.kind && c.api_version == owner.api_version() {
                return vec![(ns, c.name.clone())];
            }
            return Vec::new();
        }
        if object::deletion_timestamp(dep).is_some() {
            return Vec::new();
        }
        self.owners
            .iter()
            .filter(|((n, _), o)| *n == ns && self.reconciler.selects(o, dep))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn key_of(o: &Value) -> Key {
    (object::namespace(o).to_string(), object::name(o).to_string())
}

impl Actor for Controller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Watching");
        let owner = self.reconciler.owner();
        let mut kinds = vec![owner];
        kinds.extend(self.reconciler.dependents());
        kinds.extend(self.reconciler.triggers());
        kinds.extend(self.reconciler.related());
        for kind in kinds {
            let informer = informer::run(self.cx.store.clone(), kind.resource(), None, ctx.address().recipient());
            ctx.spawn(informer.into_actor(self));
        }
    }
}

impl Handler<Informed> for Controller {
    type Result = ();

    fn handle(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        if self.reconciler.related().iter().any(|k| k.resource() == msg.resource()) {
            self.related_changed(msg, ctx);
            return;
        }
        let is_owner = msg.resource() == self.reconciler.owner().resource();
        if self
            .reconciler
            .triggers()
            .iter()
            .any(|k| k.resource() == msg.resource())
        {
            let keys: Vec<Key> = self.owners.keys().cloned().collect();
            for k in keys {
                self.enqueue(k, ctx);
            }
            return;
        }
        match msg {
            Informed::Synced { objects, .. } if is_owner => {
                self.owners = objects.into_iter().map(|o| (key_of(&o), o)).collect();
                let keys: Vec<Key> = self.owners.keys().cloned().collect();
                for k in keys {
                    self.enqueue(k, ctx);
                }
            }
            Informed::Applied { object, .. } if is_owner => {
                let k = key_of(&object);
                self.owners.insert(k.clone(), object);
                self.enqueue(k, ctx);
            }
            Informed::Deleted { object, .. } if is_owner => {
                let k = key_of(&object);
                self.owners.remove(&k);
                self.failures.remove(&k);
            }
            Informed::Synced { objects, .. } => {
                let keys: HashSet<Key> = objects.iter().flat_map(|d| self.owners_of(d)).collect();
                for k in keys {
                    self.enqueue(k, ctx);
                }
            }
            Informed::Applied { object, .. } | Informed::Deleted { object, .. } => {
                for k in self.owners_of(&object) {
                    self.enqueue(k, ctx);
                }
            }
        }
    }
}

/// Adopts the orphans of `kind` the owner's selector takes and releases the
/// owned ones it no longer takes, as Kubernetes' ControllerRefManager;
/// returns the owned ones (as written).
pub async fn claim(
    store: &dyn Store,
    kind: &'static Kind,
    owner: &Value,
    selector: &Selector,
    objects: Vec<Value>,
) -> Result<Vec<Value>, StoreError> {
    let uid = object::uid(owner);
    let deleting = object::deletion_timestamp(owner).is_some();
    let mut owned = Vec::new();
    for obj in objects {
        let matches = selector.matches(&object::labels(&obj));
        match controller_of(&obj) {
            Some(c) if c.uid == uid => {
                // An owner being deleted keeps what it has: the garbage collector decides.
                if matches || deleting {
                    owned.push(obj);
                } else {
                    writes::modify(store, kind, &obj, |o| {
                        !selector.matches(&object::labels(o)) && deletion::remove_owner_ref(o, uid)
                    })
                    .await?;
                }
            }
            Some(_) => {}
            None if matches && !deleting && object::deletion_timestamp(&obj).is_none() => {
                let adopted = writes::modify(store, kind, &obj, |o| {
                    if controller_of(o).is_some()
                        || object::deletion_timestamp(o).is_some()
                        || !selector.matches(&object::labels(o))
                    {
                        return false;
                    }
                    let mut refs = o["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
                    refs.push(controller_ref(owner));
                    o["metadata"]["ownerReferences"] = Value::Array(refs);
                    true
                })
                .await?;
                owned.extend(adopted);
            }
            None => {}
        }
    }
    Ok(owned)
}

/// Every controller the node runs.
pub fn all(config: &crate::config::NodeConfig) -> Vec<Box<dyn Reconciler>> {
    vec![
        Box::new(replicaset::ReplicaSets::for_replicasets()),
        Box::new(replicaset::ReplicaSets::for_replication_controllers()),
        Box::new(deployment::Deployments),
        Box::new(daemonset::DaemonSets),
        Box::new(job::Jobs),
        Box::new(cronjob::CronJobs),
        Box::new(statefulset::StatefulSets),
        Box::new(endpointslice::EndpointSlices),
        Box::new(resourcequota::ResourceQuotas),
        Box::new(nodelifecycle::NodeLifecycle::new(config.node_monitor_grace_period)),
    ]
}
