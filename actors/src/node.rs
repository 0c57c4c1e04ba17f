//! `NodeActor`: the root of the supervision tree. It watches the store for
//! pods and keeps exactly one `PodActor` per pod (by uid), rebuilding the tree
//! from the store after a restart. It reacts to watch events only; a lost
//! watch is healed by relisting (level-triggered).

use crate::events::EventRecorder;
use crate::namespaces::NamespaceActor;
use crate::pod::{PodActor, PodChanged, Rejection};
use crate::runtime::Runtime;
use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::resources::Amounts;
use peapod_core::store::{EventType, Scope, Store, StoreError, WatchEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The node.
pub struct NodeActor {
    rt: Arc<Runtime>,
    store: Arc<dyn Store>,
    events: EventRecorder,
    pods: HashMap<String, Addr<PodActor>>,
    /// Requests of the pods admitted and not yet finished, by uid.
    admitted: HashMap<String, Amounts>,
    namespaces: Option<Addr<NamespaceActor>>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Resync;

#[derive(Message)]
#[rtype(result = "()")]
struct Watched(Result<WatchEvent, StoreError>);

impl NodeActor {
    /// A node running pods from `store` with `rt`.
    pub fn new(rt: Arc<Runtime>, store: Arc<dyn Store>, node_name: String) -> Self {
        let events = EventRecorder::new(store.clone(), node_name);
        Self {
            rt,
            store,
            events,
            pods: HashMap::new(),
            admitted: HashMap::new(),
            namespaces: None,
        }
    }

    fn upsert(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            self.admitted.remove(&uid);
        }
        match self.pods.get(&uid) {
            Some(addr) if addr.connected() => addr.do_send(PodChanged(pod)),
            _ => {
                let rejection = self.admit(&pod);
                let actor = PodActor::new(self.rt.clone(), self.store.clone(), self.events.clone(), pod, rejection);
                self.pods.insert(uid, actor.start());
            }
        }
    }

    /// kubelet's resource admission for a pod seen for the first time: its
    /// requests must fit in what the admitted pods leave of allocatable.
    /// Pods that already started (before a daemon restart) are admitted as they are.
    fn admit(&mut self, pod: &Pod) -> Option<Rejection> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        if matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
            return None;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let wants = peapod_core::resources::pod_requests(&spec);
        let started = status.and_then(|s| s.start_time.as_ref()).is_some();
        if !started && pod.metadata.deletion_timestamp.is_none() {
            let alloc = self.rt.config.allocatable();
            let used = self.admitted.values().fold(Amounts::default(), |a, b| Amounts {
                cpu_millis: a.cpu_millis + b.cpu_millis,
                memory_bytes: a.memory_bytes + b.memory_bytes,
            });
            for (name, want, used, cap) in [
                ("cpu", wants.cpu_millis, used.cpu_millis, alloc.cpu_millis),
                ("memory", wants.memory_bytes, used.memory_bytes, alloc.memory_bytes),
            ] {
                if want > 0 && want > cap - used {
                    return Some(Rejection {
                        reason: format!("OutOf{name}"),
                        message: format!(
                            "Pod was rejected: Node didn't have enough resource: {name}, requested: {want}, used: {used}, capacity: {cap}"
                        ),
                    });
                }
            }
        }
        self.admitted.insert(uid, wants);
        None
    }

    /// Lists every pod, reconciles the actor set, then watches from the list's revision.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        ctx.wait(
            async move { store.list(&kinds::pod().resource(), None).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    let (items, revision) = match res {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("listing pods: {e}; retrying");
                            ctx.run_later(Duration::from_secs(1), |act, ctx| act.resync(ctx));
                            return;
                        }
                    };
                    let mut live = std::collections::HashSet::new();
                    for v in items {
                        match serde_json::from_value::<Pod>(v) {
                            Ok(pod) => {
                                live.insert(pod.metadata.uid.clone().unwrap_or_default());
                                act.upsert(pod);
                            }
                            Err(e) => tracing::error!("undecodable pod in store: {e}"),
                        }
                    }
                    act.pods.retain(|uid, addr| live.contains(uid) || addr.connected());
                    act.admitted.retain(|uid, _| live.contains(uid));
                    act.watch(revision, ctx);
                }),
        );
    }

    fn watch(&mut self, revision: u64, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let scope = Scope {
            resource: Some(kinds::pod().resource()),
            namespace: None,
        };
        let me = ctx.address();
        ctx.spawn(
            async move {
                match store.watch(scope, revision).await {
                    Ok(mut rx) => {
                        while let Some(ev) = rx.recv().await {
                            let end = ev.is_err();
                            if me.send(Watched(ev)).await.is_err() || end {
                                return;
                            }
                        }
                        me.do_send(Resync);
                    }
                    Err(e) => me.do_send(Watched(Err(e))),
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.namespaces = Some(NamespaceActor::new(self.store.clone()).start());
        self.resync(ctx);
        let ttl = self.rt.config.event_ttl;
        let every = (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        ctx.run_interval(every, move |act, ctx| {
            let store = act.store.clone();
            ctx.spawn(async move { expire_events(&*store, ttl).await }.into_actor(act));
        });
    }
}

impl Handler<Resync> for NodeActor {
    type Result = ();
    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.resync(ctx);
    }
}

impl Handler<Watched> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: Watched, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(ev) => {
                if ev.event_type == EventType::Deleted {
                    // The pod actor removed it (or it was force-removed): nothing more to run.
                    self.admitted.remove(object::uid(&ev.object));
                    self.pods.retain(|_, a| a.connected());
                    return;
                }
                match serde_json::from_value::<Pod>(ev.object) {
                    Ok(pod) => self.upsert(pod),
                    Err(e) => tracing::error!("undecodable pod in watch: {e}"),
                }
            }
            Err(e) => {
                tracing::warn!("pod watch ended: {e}; relisting");
                ctx.run_later(Duration::from_millis(200), |act, ctx| act.resync(ctx));
            }
        }
    }
}

/// Deletes Events whose last occurrence is older than `ttl`.
async fn expire_events(store: &dyn Store, ttl: Duration) {
    let resource = kinds::event().resource();
    let Ok((items, _)) = store.list(&resource, None).await else {
        return;
    };
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(ttl).unwrap_or_default();
    for ev in items {
        let last = ev["lastTimestamp"]
            .as_str()
            .or(ev["eventTime"].as_str())
            .or(ev["metadata"]["creationTimestamp"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if last.is_some_and(|t| t < cutoff) {
            let ns = ev["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = ev["metadata"]["name"].as_str().unwrap_or_default();
            let pre = peapod_core::store::Preconditions {
                uid: Some(object::uid(&ev).to_string()),
                resource_version: None,
            };
            let _ = store.delete(&resource, ns, name, pre).await;
        }
    }
}

/// Ensures the namespaces every cluster has (`default`, `kube-system`, `kube-public`, `kube-node-lease`).
pub async fn ensure_default_namespaces(store: &dyn Store) -> Result<(), StoreError> {
    let kind = kinds::namespace();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        (kind.admit_create)(&mut ns).map_err(|e| StoreError::Invalid(e.to_string()))?;
        object::set_meta(&mut ns, "uid", object::new_uid());
        object::set_meta(&mut ns, "creationTimestamp", object::now_rfc3339());
        match store.create(&kind.resource(), ns).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
