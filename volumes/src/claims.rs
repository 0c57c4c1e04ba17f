//! The PersistentVolumes a pod's claims are bound to, looked up in the store
//! as kubelet's volume manager does before it mounts, with its messages for
//! a claim it cannot use yet.

use crate::sources::{claim_names, Claims};
use k8s_openapi::api::core::v1::Pod;
use peapod_core::kinds;
use peapod_core::store::{Store, StoreError};
use serde_json::Value;

/// Why `claim` (bound to `pv`) cannot be used by the pod, if it cannot.
pub fn unusable(claim: &Value, pv: Option<&Value>) -> Option<String> {
    let ns = claim["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = claim["metadata"]["name"].as_str().unwrap_or_default();
    let prefix = format!("error processing PVC {ns}/{name}");
    if !claim["metadata"]["deletionTimestamp"].is_null() {
        return Some(format!("{prefix}: can't start pod because PVC is being deleted"));
    }
    let volume = claim["spec"]["volumeName"].as_str().unwrap_or_default();
    if claim["status"]["phase"] != "Bound" || volume.is_empty() {
        return Some(format!(
            "{prefix}: PVC has non-bound phase ({:?}) or empty pvc.Spec.VolumeName ({volume:?})",
            claim["status"]["phase"].as_str().unwrap_or("")
        ));
    }
    let pv = pv?;
    let r = &pv["spec"]["claimRef"];
    if r["uid"] != claim["metadata"]["uid"] || r["name"] != name || r["namespace"] != ns {
        return Some(format!(
            "{prefix}: PersistentVolume {volume:?} is bound to another claim ({}/{})",
            r["namespace"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or("")
        ));
    }
    None
}

/// Every claim `pod` names, each with its bound volume or the reason it has none.
pub async fn lookup(store: &dyn Store, pod: &Pod) -> Claims {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Claims::new();
    for name in claim_names(pod) {
        let prefix = format!("error processing PVC {ns}/{name}");
        let found = match store.get(&kinds::claim().resource(), &ns, &name).await {
            Ok(claim) => match unusable(&claim, None) {
                Some(why) => Err(why),
                None => {
                    let volume = claim["spec"]["volumeName"].as_str().unwrap_or_default().to_string();
                    match store.get(&kinds::volume().resource(), "", &volume).await {
                        Ok(pv) => unusable(&claim, Some(&pv)).map_or(Ok(pv), Err),
                        Err(StoreError::NotFound { .. }) => Err(format!(
                            "{prefix}: failed to fetch PV {volume:?} from API server: persistentvolumes {volume:?} not found"
                        )),
                        Err(e) => Err(format!("{prefix}: failed to fetch PV {volume:?}: {e}")),
                    }
                }
            },
            Err(StoreError::NotFound { .. }) => Err(format!(
                "{prefix}: failed to fetch PVC from API server: persistentvolumeclaims {name:?} not found"
            )),
            Err(e) => Err(format!("{prefix}: failed to fetch PVC: {e}")),
        };
        out.insert(name, found);
    }
    out
}

/// The condition of a claim whose volume grew but whose filesystem waits
/// for the volume to be staged again.
pub const RESIZE_PENDING: &str = "FileSystemResizePending";

/// Whether `claim` waits for its filesystem to grow.
pub fn resize_pending(claim: &Value) -> bool {
    claim["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == RESIZE_PENDING && c["status"] == "True"))
}

/// After a publish: a claim waiting for its filesystem to grow whose volume
/// was staged just now (which grows it) has its capacity and no condition.
pub async fn finish_resizes(store: &dyn Store, pod: &Pod, published: &[crate::Published], claims: &Claims) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    for p in published.iter().filter(|p| p.staged_now) {
        let Some(persistent) = &p.source.persistent else {
            continue;
        };
        let name = persistent.claim.rsplit('/').next().unwrap_or_default();
        let Some(Ok(pv)) = claims.get(name) else { continue };
        let size = pv["spec"]["capacity"]["storage"].clone();
        let Ok(claim) = store.get(&kinds::claim().resource(), &ns, name).await else {
            continue;
        };
        if !resize_pending(&claim) {
            continue;
        }
        let written = peapod_core::writes::modify(store, kinds::claim(), &claim, |c| {
            if !resize_pending(c) {
                return false;
            }
            c["status"]["capacity"]["storage"] = size.clone();
            if let Some(cs) = c["status"]["conditions"].as_array_mut() {
                cs.retain(|x| x["type"] != RESIZE_PENDING);
            }
            true
        })
        .await;
        if let Err(e) = written {
            tracing::warn!("claim {ns}/{name}: recording its grown filesystem: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(phase: &str) -> Value {
        json!({"metadata": {"namespace": "ns", "name": "c", "uid": "u1"},
            "spec": {"volumeName": "pv1"}, "status": {"phase": phase}})
    }

    #[test]
    fn only_a_bound_claim_with_its_volume_is_usable() {
        let pv = json!({"spec": {"claimRef": {"namespace": "ns", "name": "c", "uid": "u1"}}});
        assert_eq!(unusable(&claim("Bound"), Some(&pv)), None);
        let e = unusable(&claim("Pending"), Some(&pv)).unwrap();
        assert!(
            e.contains("error processing PVC ns/c: PVC has non-bound phase (\"Pending\")"),
            "{e}"
        );
        let mut deleting = claim("Bound");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(unusable(&deleting, Some(&pv)).unwrap().contains("being deleted"));
        let other = json!({"spec": {"claimRef": {"namespace": "ns", "name": "c", "uid": "u0"}}});
        let e = unusable(&claim("Bound"), Some(&other)).unwrap();
        assert!(
            e.contains("PersistentVolume \"pv1\" is bound to another claim (ns/c)"),
            "{e}"
        );
    }
}
