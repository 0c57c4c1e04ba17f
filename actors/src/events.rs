//! Events as kubelet records them: `involvedObject`, reason, message, and a
//! count that grows when the same event repeats instead of a new object.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// (pod uid, reason, message): repeats of one event share one object.
type EventKey = (String, String, String);

/// Writes Events to the store; cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    store: Arc<dyn Store>,
    host: String,
    /// `source.component`: `kubelet`, `default-scheduler`, `replicaset-controller` …
    component: &'static str,
    seen: Arc<Mutex<HashMap<EventKey, String>>>,
}

/// Normal or Warning, as Kubernetes' event `type`.
#[derive(Debug, Clone, Copy)]
pub enum EventKind {
    /// Routine.
    Normal,
    /// Something failed.
    Warning,
}

impl EventRecorder {
    /// A recorder writing as component `kubelet` on `host`.
    pub fn new(store: Arc<dyn Store>, host: String) -> Self {
        Self {
            store,
            host,
            component: "kubelet",
            seen: Arc::default(),
        }
    }

    /// The same recorder, reporting as `component` (its events' `source.component`).
    pub fn with_component(mut self, component: &'static str) -> Self {
        self.component = component;
        self.seen = Arc::default();
        self
    }

    /// An event about any object (a ReplicaSet, a Deployment …), from its stored form.
    pub fn object_event(&self, obj: &serde_json::Value, kind: EventKind, reason: &str, message: String) {
        let ns = object::namespace(obj).to_string();
        let name = object::name(obj).to_string();
        let uid = object::uid(obj).to_string();
        let involved = ObjectReference {
            api_version: obj["apiVersion"].as_str().map(str::to_string),
            kind: obj["kind"].as_str().map(str::to_string),
            name: Some(name.clone()),
            namespace: Some(ns.clone()).filter(|n| !n.is_empty()),
            uid: Some(uid.clone()),
            resource_version: obj["metadata"]["resourceVersion"].as_str().map(str::to_string),
            field_path: None,
        };
        let ns = if ns.is_empty() { "default".to_string() } else { ns };
        self.record(involved, ns, name, uid, kind, reason, message);
    }

    /// Records an event about `pod` (optionally one of its containers, as `fieldPath`).
    /// Runs in the background: recording never delays or fails the caller.
    pub fn pod_event(&self, pod: &Pod, container: Option<&str>, kind: EventKind, reason: &str, message: String) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let field_path = container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|ics| ics.iter().any(|ic| ic.name == c));
            format!("spec.{}{{{c}}}", if init { "initContainers" } else { "containers" })
        });
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: Some(uid.clone()),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        };
        self.record(involved, ns, name, uid, kind, reason, message);
    }

    /// Records an event about this node (kind `Node`, in `default`, as kubelet does).
    pub fn node_event(&self, kind: EventKind, reason: &str, message: String) {
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.host.clone()),
            uid: Some(self.host.clone()),
            ..Default::default()
        };
        let host = self.host.clone();
        self.record(involved, "default".into(), host.clone(), host, kind, reason, message);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        involved: ObjectReference,
        ns: String,
        name: String,
        uid: String,
        kind: EventKind,
        reason: &str,
        message: String,
    ) {
        let key = (uid, reason.to_string(), message.clone());
        let previous = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let store = self.store.clone();
        let host = self.host.clone();
        let component = self.component;
        let seen = self.seen.clone();
        let reason = reason.to_string();
        let kind_text = match kind {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        };
        tokio::spawn(async move {
            let resource = kinds::event().resource();
            let now = crate::runtime::protocol::now_time().0;
            if let Some(ev_name) = previous {
                if let Ok(existing) = store.get(&resource, &ns, &ev_name).await {
                    if let Ok(mut ev) = serde_json::from_value::<Event>(existing) {
                        ev.count = Some(ev.count.unwrap_or(1) + 1);
                        ev.last_timestamp = Some(Time(now));
                        if store.update(&resource, object::to_value(&ev)).await.is_ok() {
                            return;
                        }
                    }
                }
            }
            let ev_name = format!("{name}.{:x}", now.as_nanosecond());
            let ev = Event {
                metadata: ObjectMeta {
                    name: Some(ev_name.clone()),
                    namespace: Some(ns.clone()),
                    uid: Some(object::new_uid()),
                    creation_timestamp: Some(Time(now)),
                    ..Default::default()
                },
                involved_object: involved,
                reason: Some(reason),
                message: Some(message),
                type_: Some(kind_text.into()),
                count: Some(1),
                first_timestamp: Some(Time(now)),
                last_timestamp: Some(Time(now)),
                source: Some(EventSource {
                    component: Some(component.into()),
                    host: Some(host.clone()),
                }),
                reporting_component: Some(component.into()),
                reporting_instance: Some(host),
                ..Default::default()
            };
            match store.create(&resource, object::to_value(&ev)).await {
                Ok(_) => {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key, ev_name);
                }
                Err(e) => tracing::warn!("recording event about {ns}/{name}: {e}"),
            }
        });
    }

    /// Forgets a pod's events (it is gone; its event objects age out on their own).
    pub fn forget(&self, uid: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(u, _, _), _| u != uid);
    }
}
