//! Which plugin serves a pod volume, and with what attributes: the built-in
//! kinds map to the built-in plugins (`emptyDir` -> `emptydir`, `hostPath` ->
//! `hostpath`), and an inline `csi` volume names its plugin as `driver`, so
//! out-of-tree plugins are used exactly like in-tree ones.

use k8s_openapi::api::core::v1::{Pod, Volume};
use peapod_plugin_sdk::Attributes;

/// A pod volume, resolved to a plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    /// The volume's name in the pod.
    pub name: String,
    /// The plugin that serves it.
    pub plugin: String,
    /// The plugin's id for it.
    pub volume_id: String,
    /// Passed as `volumeContext`.
    pub context: Attributes,
    /// Published read-only for every container.
    pub read_only: bool,
}

/// The built-in plugins' names.
pub const EMPTY_DIR: &str = "emptydir";
pub const HOST_PATH: &str = "hostpath";

/// Resolves `vol` of `pod`; the error names what this node does not support.
pub fn resolve(pod: &Pod, vol: &Volume) -> Result<VolumeSource, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut context = Attributes::new();
    if let Some(e) = &vol.empty_dir {
        context.insert("medium".into(), e.medium.clone().unwrap_or_default());
        let mut limit = None;
        if let Some(q) = &e.size_limit {
            let bytes = peapod_core::quantity::Quantity::parse(&q.0)
                .map_err(|err| format!("emptyDir.sizeLimit {:?}: {err}", q.0))?
                .value();
            limit = Some(bytes);
            context.insert("sizeLimitText".into(), q.0.clone());
        }
        if e.medium.as_deref() == Some("Memory") {
            // A memory-backed volume is never larger than the pod's memory
            // limit (kubelet's SizeMemoryBackedVolumes).
            if let (_, Some(pod_limit)) = peapod_core::resources::pod_limits(&pod.spec.clone().unwrap_or_default()) {
                limit = Some(limit.map_or(pod_limit, |l| l.min(pod_limit)));
            }
        }
        if let Some(bytes) = limit {
            context.insert("sizeLimit".into(), bytes.to_string());
        }
        return Ok(VolumeSource {
            name: vol.name.clone(),
            plugin: EMPTY_DIR.into(),
            volume_id: format!("{uid}/{}", vol.name),
            context,
            read_only: false,
        });
    }
    if let Some(h) = &vol.host_path {
        context.insert("path".into(), h.path.clone());
        context.insert("type".into(), h.type_.clone().unwrap_or_default());
        return Ok(VolumeSource {
            name: vol.name.clone(),
            plugin: HOST_PATH.into(),
            volume_id: h.path.clone(),
            context,
            read_only: false,
        });
    }
    if let Some(c) = &vol.csi {
        return Ok(VolumeSource {
            name: vol.name.clone(),
            plugin: c.driver.clone(),
            volume_id: format!("{uid}/{}", vol.name),
            context: c.volume_attributes.clone().unwrap_or_default(),
            read_only: c.read_only.unwrap_or(false),
        });
    }
    let kind = serde_json::to_value(vol)
        .ok()
        .and_then(|v| v.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()))
        .unwrap_or_else(|| "(none)".into());
    Err(format!(
        "volume {:?}: volume type {kind:?} is not supported on this node (emptyDir, hostPath and csi are)",
        vol.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"uid": "u1"}})).unwrap()
    }

    fn vol(v: serde_json::Value) -> Volume {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn kinds_map_to_plugins() {
        let e = resolve(
            &pod(),
            &vol(json!({"name": "d", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})),
        )
        .unwrap();
        assert_eq!(e.plugin, "emptydir");
        assert_eq!(e.volume_id, "u1/d");
        assert_eq!(e.context["sizeLimit"], "1048576");
        assert_eq!(e.context["medium"], "Memory");
        let h = resolve(
            &pod(),
            &vol(json!({"name": "h", "hostPath": {"path": "/srv", "type": "Directory"}})),
        )
        .unwrap();
        assert_eq!(
            (h.plugin.as_str(), h.context["type"].as_str()),
            ("hostpath", "Directory")
        );
        let c = resolve(
            &pod(),
            &vol(json!({"name": "c", "csi": {"driver": "vendor.example", "readOnly": true, "volumeAttributes": {"k": "v"}}})),
        )
        .unwrap();
        assert_eq!((c.plugin.as_str(), c.read_only), ("vendor.example", true));
        let limited: Pod = serde_json::from_value(json!({"metadata": {"uid": "u1"}, "spec": {"containers": [
            {"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}}))
        .unwrap();
        let m = resolve(&limited, &vol(json!({"name": "m", "emptyDir": {"medium": "Memory"}}))).unwrap();
        assert_eq!(m.context["sizeLimit"], (64 << 20).to_string(), "the pod's memory limit");
        let err = resolve(&pod(), &vol(json!({"name": "s", "secret": {"secretName": "x"}}))).unwrap_err();
        assert!(err.contains("volume type \"secret\" is not supported"), "{err}");
    }
}
