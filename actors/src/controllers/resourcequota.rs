//! The ResourceQuota controller, as kube-controller-manager's: each
//! quota's `status.hard` is its `spec.hard`, and `status.used` what its
//! namespace holds now, counted as admission counts it
//! (`peapod_core::admission::usage`). Pods, services and claims changing
//! bring a quota up to date at once; every other count within
//! [`RESYNC`]. Admission never reads this status: it counts for itself.

use super::{Reconciler, SyncContext, SyncResult};
use peapod_core::admission;
use peapod_core::kinds::{self, Kind};
use peapod_core::store::StoreError;
use peapod_core::writes;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How often every quota is counted again.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The ResourceQuota controller.
pub struct ResourceQuotas;

impl Reconciler for ResourceQuotas {
    fn name(&self) -> &'static str {
        "resourcequota-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::by_store_key(admission::RESOURCE_QUOTAS).expect("resourcequotas are in the kind table")
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        Vec::new()
    }

    /// The kinds whose changes move compute and claim usage; ConfigMaps
    /// and Secrets are counted on the resync (they are not worth a copy
    /// of each in memory here).
    fn related(&self) -> Vec<&'static Kind> {
        vec![kinds::pod(), kinds::service(), kinds::claim()]
    }

    fn relates(&self, _quota: &Value, _object: &Value) -> bool {
        true
    }

    fn selects(&self, _owner: &Value, _dependent: &Value) -> bool {
        false
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        Box::pin(async move {
            sync(&cx, &namespace, &name)
                .await
                .map(|()| Some(RESYNC))
                .map_err(|e| e.to_string())
        })
    }
}

async fn sync(cx: &SyncContext, ns: &str, name: &str) -> Result<(), StoreError> {
    let store = &*cx.store;
    let kind = ResourceQuotas.owner();
    let quota = match store.get(&kind.resource(), ns, name).await {
        Ok(q) => q,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let hard = admission::hard_of(&quota);
    let counted = admission::usage(store, ns, &quota, &hard).await?;
    let used: Map<String, Value> = counted
        .into_iter()
        .map(|(r, n)| {
            let text = admission::show(&r, n);
            (r, json!(text))
        })
        .collect();
    let status = json!({"hard": quota["spec"]["hard"], "used": used});
    if quota["status"] == status {
        return Ok(());
    }
    writes::modify(store, kind, &quota, |q| {
        if q["status"] == status {
            return false;
        }
        q["status"] = status.clone();
        true
    })
    .await?;
    Ok(())
}
