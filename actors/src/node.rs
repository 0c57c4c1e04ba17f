//! `NodeActor`: the root of the supervision tree. It watches the store for
//! pods and keeps exactly one `PodActor` per pod (by uid), rebuilding the tree
//! from the store after a restart. It reacts to watch events only; a lost
//! watch is healed by relisting (level-triggered).

use crate::events::EventRecorder;
use crate::namespaces::NamespaceActor;
use crate::pod::{PodActor, PodChanged};
use crate::runtime::Runtime;
use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use peapod_core::kinds;
use peapod_core::object;
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
            namespaces: None,
        }
    }

    fn upsert(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match self.pods.get(&uid) {
            Some(addr) if addr.connected() => addr.do_send(PodChanged(pod)),
            _ => {
                let actor = PodActor::new(self.rt.clone(), self.store.clone(), self.events.clone(), pod);
                self.pods.insert(uid, actor.start());
            }
        }
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
