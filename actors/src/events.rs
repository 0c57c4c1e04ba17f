//! Events as kubelet records them: `involvedObject`, reason, message, and a
//! count that grows when the same event repeats instead of a new object.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::Store;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// (pod uid, reason, message): repeats of one event share one object.
type EventKey = (String, String, String);

/// How many recent events a recorder remembers to count repeats, as
/// client-go's event correlator (`maxLruCacheEntries`): a repeat of an
/// older one starts a new object, and memory stays bounded however many
/// objects a node has seen come and go.
const REMEMBERED: usize = 4096;

/// The events a recorder wrote, by key, oldest first out.
#[derive(Default)]
struct Seen {
    names: HashMap<EventKey, String>,
    order: VecDeque<EventKey>,
}

impl Seen {
    fn get(&self, key: &EventKey) -> Option<String> {
        self.names.get(key).cloned()
    }

    fn insert(&mut self, key: EventKey, name: String) {
        if self.names.insert(key.clone(), name).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.names.remove(&old);
            }
        }
    }

    fn forget(&mut self, uid: &str) {
        self.names.retain(|(u, _, _), _| u != uid);
        self.order.retain(|(u, _, _)| u != uid);
    }

    fn len(&self) -> usize {
        self.names.len()
    }
}

/// Writes Events to the store; cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    store: Arc<dyn Store>,
    host: String,
    /// `source.component`: `kubelet`, `default-scheduler`, `replicaset-controller` …
    component: &'static str,
    seen: Arc<Mutex<Seen>>,
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
        let previous = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(&key);
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
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).forget(uid);
    }

    /// How many events the recorder remembers (bounded by [`REMEMBERED`]).
    pub fn remembered(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peapod_core::store::SqliteStore;

    fn key(i: usize) -> EventKey {
        (format!("uid{i}"), "Scheduled".into(), format!("assigned pod {i}"))
    }

    #[test]
    fn the_repeat_cache_keeps_the_latest_and_stays_bounded() {
        let mut seen = Seen::default();
        for i in 0..REMEMBERED + 100 {
            seen.insert(key(i), format!("ev{i}"));
        }
        assert_eq!(seen.len(), REMEMBERED);
        assert_eq!(seen.get(&key(0)), None, "the oldest went first");
        assert_eq!(seen.get(&key(REMEMBERED + 99)), Some(format!("ev{}", REMEMBERED + 99)));
        seen.forget(&format!("uid{}", REMEMBERED + 99));
        assert_eq!(seen.len(), REMEMBERED - 1);
        assert_eq!(seen.order.len(), REMEMBERED - 1);
    }

    #[tokio::test]
    async fn a_repeated_event_is_counted_on_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
        let rec = EventRecorder::new(store.clone(), "n1".into()).with_component("default-scheduler");
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"}});
        rec.object_event(&obj, EventKind::Warning, "FailedScheduling", "no nodes".into());
        for _ in 0..100 {
            if rec.remembered() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        rec.object_event(&obj, EventKind::Warning, "FailedScheduling", "no nodes".into());
        let resource = kinds::event().resource();
        for _ in 0..100 {
            let (events, _) = store.list(&resource, Some("default")).await.unwrap();
            if events.len() == 1 && events[0]["count"] == 2 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the repeat was not counted on the first event");
    }
}
