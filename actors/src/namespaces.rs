//! `NamespaceActor`: finishes namespace deletion as Kubernetes' namespace
//! controller does: once a namespace is marked for deletion, every object in
//! it is deleted (pods gracefully), and the namespace goes when it is empty.

use crate::informer::{self, Informed};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use peapod_core::deletion;
use peapod_core::kinds::{self, KINDS};
use peapod_core::object;
use peapod_core::store::{Preconditions, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// The namespace controller.
pub struct NamespaceActor {
    store: Arc<dyn Store>,
    node: TreeNode,
    /// A pass is queued behind the running one (changes coalesce).
    again: bool,
    running: bool,
}

impl NamespaceActor {
    /// A controller over `store`, registered in the tree as `node`.
    pub fn new(store: Arc<dyn Store>, node: TreeNode) -> Self {
        Self {
            store,
            node,
            again: false,
            running: false,
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        crate::faults::point("namespace.pass", "");
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        let store = self.store.clone();
        ctx.spawn(
            async move {
                let ns_res = kinds::namespace().resource();
                let Ok((all, _)) = store.list(&ns_res, None).await else {
                    return;
                };
                for ns in all.iter().filter(|n| object::deletion_timestamp(n).is_some()) {
                    let name = object::name(ns).to_string();
                    if let Err(e) = drain(&*store, &name).await {
                        tracing::warn!("deleting namespace {name}: {e}");
                    }
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

/// Deletes what is in namespace `name`; removes the namespace once nothing is left.
async fn drain(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    let mut left = 0;
    for kind in KINDS.iter().filter(|k| k.namespaced) {
        let (items, _) = store.list(&kind.resource(), Some(name)).await?;
        for item in items {
            left += 1;
            let item_name = object::name(&item).to_string();
            if kind.graceful_deletion {
                if object::deletion_timestamp(&item).is_none() {
                    let mut marked = item.clone();
                    object::mark_deleted(&mut marked, None);
                    match store.update(&kind.resource(), marked).await {
                        Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            } else {
                match deletion::remove(store, &kind.resource(), name, &item_name, Preconditions::default()).await {
                    Ok(Some(_)) | Err(StoreError::NotFound { .. }) => left -= 1,
                    // Held by finalizers: the namespace waits for it.
                    Ok(None) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if left == 0 {
        match deletion::remove(
            store,
            &kinds::namespace().resource(),
            "",
            name,
            Preconditions::default(),
        )
        .await
        {
            Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Actor for NamespaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Watching");
        // A namespace marked for deletion and pods leaving it both matter.
        for kind in [kinds::namespace(), kinds::pod()] {
            let informer = informer::run(self.store.clone(), kind.resource(), None, ctx.address().recipient());
            ctx.spawn(informer.into_actor(self));
        }
        // Level-triggered safety net.
        ctx.run_interval(Duration::from_secs(10), |act, ctx| act.pass(ctx));
    }
}

impl Handler<Informed> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, _: Informed, ctx: &mut Context<Self>) {
        self.pass(ctx);
    }
}
