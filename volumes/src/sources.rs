//! Which plugin serves a pod volume, and with what attributes: the built-in
//! kinds map to the built-in plugins (`emptyDir` -> `emptydir`, `hostPath` ->
//! `hostpath`), and an inline `csi` volume names its plugin as `driver`, so
//! out-of-tree plugins are used exactly like in-tree ones. A
//! `persistentVolumeClaim` resolves through its bound PersistentVolume,
//! whose source names the plugin the same way (`hostPath` and `local` ->
//! `hostpath`, `nfs` -> `nfs`, `rbd` -> `rbd`, `csi` -> its `driver`).

use k8s_openapi::api::core::v1::{Pod, Volume};
use peapod_plugin_sdk::Attributes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a volume from a PersistentVolume adds: it is staged once per node
/// (by plugins that stage) and published into each pod that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persistent {
    /// The PersistentVolume's name: one staging per node per volume.
    pub volume: String,
    /// The claim it is used through, as `namespace/name`.
    pub claim: String,
    pub access_modes: Vec<String>,
    pub fs_type: String,
    pub mount_options: Vec<String>,
}

/// The PersistentVolume bound to each claim a pod names, or why there is none
/// usable (kubelet's words), by claim name.
pub type Claims = BTreeMap<String, Result<Value, String>>;

/// A pod volume, resolved to a plugin call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// Set for a volume from a PersistentVolume.
    #[serde(default)]
    pub persistent: Option<Persistent>,
}

/// The built-in plugins' names.
pub const EMPTY_DIR: &str = "emptydir";
pub const HOST_PATH: &str = "hostpath";
pub const NFS: &str = "nfs";
pub const RBD: &str = "rbd";

/// The volumes projected from the API (kubelet's own kinds, built in: they
/// read ConfigMaps, Secrets and the pod itself, which no plugin sees). The
/// manager only makes and removes their directories; the node writes them.
pub const CONFIG_MAP: &str = "configmap";
pub const SECRET: &str = "secret";
pub const DOWNWARD_API: &str = "downward-api";
pub const PROJECTED: &str = "projected";

/// Whether `plugin` names one of the built-in projected kinds.
pub fn is_projection(plugin: &str) -> bool {
    [CONFIG_MAP, SECRET, DOWNWARD_API, PROJECTED].contains(&plugin)
}

/// The claims `pod` uses, by claim name.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A source field as text ("" when absent).
fn field(source: &serde_json::Map<String, Value>, key: &str) -> String {
    text(source.get(key).unwrap_or(&Value::Null))
}

/// The plugin call for PersistentVolume `pv` used as pod volume `name`.
pub fn from_volume(name: &str, claim: &str, pv: &Value, read_only: bool) -> Result<VolumeSource, String> {
    let spec = &pv["spec"];
    let pv_name = pv["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let strings = |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().map(text).collect() };
    let mut context = Attributes::new();
    let mut fs_type = String::new();
    let mut source_read_only = false;
    let (plugin, volume_id) = if let Some(h) = spec["hostPath"].as_object() {
        context.insert("path".into(), field(h, "path"));
        context.insert("type".into(), field(h, "type"));
        (HOST_PATH.to_string(), context["path"].clone())
    } else if let Some(l) = spec["local"].as_object() {
        // A local volume is a path that must exist (kubelet's local plugin).
        context.insert("path".into(), field(l, "path"));
        context.insert("type".into(), String::new());
        fs_type = field(l, "fsType");
        (HOST_PATH.to_string(), context["path"].clone())
    } else if let Some(n) = spec["nfs"].as_object() {
        for f in ["server", "path"] {
            context.insert(f.into(), field(n, f));
        }
        source_read_only = n.get("readOnly").and_then(Value::as_bool).unwrap_or(false);
        (NFS.to_string(), format!("{}:{}", context["server"], context["path"]))
    } else if let Some(r) = spec["rbd"].as_object() {
        context.insert(
            "monitors".into(),
            strings(r.get("monitors").unwrap_or(&Value::Null)).join(","),
        );
        for (f, default) in [("pool", "rbd"), ("image", ""), ("user", "admin"), ("keyring", "")] {
            let v = field(r, f);
            context.insert(f.into(), if v.is_empty() { default.into() } else { v });
        }
        fs_type = field(r, "fsType");
        source_read_only = r.get("readOnly").and_then(Value::as_bool).unwrap_or(false);
        (RBD.to_string(), format!("{}/{}", context["pool"], context["image"]))
    } else if let Some(c) = spec["csi"].as_object() {
        for (k, v) in c
            .get("volumeAttributes")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            context.insert(k.clone(), text(v));
        }
        fs_type = field(c, "fsType");
        source_read_only = c.get("readOnly").and_then(Value::as_bool).unwrap_or(false);
        (field(c, "driver"), field(c, "volumeHandle"))
    } else {
        return Err(format!(
            "volume {name:?}: PersistentVolume {pv_name:?} has no source this node supports (hostPath, local, nfs, rbd, csi)"
        ));
    };
    if !fs_type.is_empty() {
        context.insert("fsType".into(), fs_type.clone());
    }
    Ok(VolumeSource {
        name: name.to_string(),
        plugin,
        volume_id,
        context,
        read_only: read_only || source_read_only,
        persistent: Some(Persistent {
            volume: pv_name,
            claim: claim.to_string(),
            access_modes: strings(&spec["accessModes"]),
            fs_type,
            mount_options: strings(&spec["mountOptions"]),
        }),
    })
}

/// Resolves `vol` of `pod`, claims through `claims`; the error names what
/// this node does not support or why a claim cannot be used yet.
pub fn resolve(pod: &Pod, vol: &Volume, claims: &Claims) -> Result<VolumeSource, String> {
    if let Some(c) = &vol.persistent_volume_claim {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        return match claims.get(&c.claim_name) {
            Some(Ok(pv)) => from_volume(
                &vol.name,
                &format!("{ns}/{}", c.claim_name),
                pv,
                c.read_only.unwrap_or(false),
            ),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("error processing PVC {ns}/{}: not looked up", c.claim_name)),
        };
    }
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
            persistent: None,
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
            persistent: None,
        });
    }
    let projection = if vol.config_map.is_some() {
        Some(CONFIG_MAP)
    } else if vol.secret.is_some() {
        Some(SECRET)
    } else if vol.downward_api.is_some() {
        Some(DOWNWARD_API)
    } else if vol.projected.is_some() {
        Some(PROJECTED)
    } else {
        None
    };
    if let Some(plugin) = projection {
        // Secrets never touch the disk: they (and anything that may hold one) live on a tmpfs.
        if plugin != CONFIG_MAP {
            context.insert("medium".into(), "Memory".into());
        }
        return Ok(VolumeSource {
            name: vol.name.clone(),
            plugin: plugin.into(),
            volume_id: format!("{uid}/{}", vol.name),
            context,
            // kubelet mounts these read-only into containers.
            read_only: true,
            persistent: None,
        });
    }
    if let Some(c) = &vol.csi {
        return Ok(VolumeSource {
            name: vol.name.clone(),
            plugin: c.driver.clone(),
            volume_id: format!("{uid}/{}", vol.name),
            context: c.volume_attributes.clone().unwrap_or_default(),
            read_only: c.read_only.unwrap_or(false),
            persistent: None,
        });
    }
    let kind = serde_json::to_value(vol)
        .ok()
        .and_then(|v| v.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()))
        .unwrap_or_else(|| "(none)".into());
    Err(format!(
        "volume {:?}: volume type {kind:?} is not supported on this node (emptyDir, hostPath, configMap, secret, downwardAPI, projected, csi and persistentVolumeClaim are)",
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

    fn resolve_(pod: &Pod, vol: &Volume) -> Result<VolumeSource, String> {
        resolve(pod, vol, &Claims::new())
    }

    #[test]
    fn kinds_map_to_plugins() {
        let e = resolve_(
            &pod(),
            &vol(json!({"name": "d", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})),
        )
        .unwrap();
        assert_eq!(e.plugin, "emptydir");
        assert_eq!(e.volume_id, "u1/d");
        assert_eq!(e.context["sizeLimit"], "1048576");
        assert_eq!(e.context["medium"], "Memory");
        let h = resolve_(
            &pod(),
            &vol(json!({"name": "h", "hostPath": {"path": "/srv", "type": "Directory"}})),
        )
        .unwrap();
        assert_eq!(
            (h.plugin.as_str(), h.context["type"].as_str()),
            ("hostpath", "Directory")
        );
        let c = resolve_(
            &pod(),
            &vol(json!({"name": "c", "csi": {"driver": "vendor.example", "readOnly": true, "volumeAttributes": {"k": "v"}}})),
        )
        .unwrap();
        assert_eq!((c.plugin.as_str(), c.read_only), ("vendor.example", true));
        let limited: Pod = serde_json::from_value(json!({"metadata": {"uid": "u1"}, "spec": {"containers": [
            {"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}}))
        .unwrap();
        let m = resolve_(&limited, &vol(json!({"name": "m", "emptyDir": {"medium": "Memory"}}))).unwrap();
        assert_eq!(m.context["sizeLimit"], (64 << 20).to_string(), "the pod's memory limit");
        let s = resolve_(&pod(), &vol(json!({"name": "s", "secret": {"secretName": "x"}}))).unwrap();
        assert_eq!(
            (s.plugin.as_str(), s.read_only, s.context["medium"].as_str()),
            ("secret", true, "Memory")
        );
        let cm = resolve_(&pod(), &vol(json!({"name": "c", "configMap": {"name": "x"}}))).unwrap();
        assert_eq!(cm.plugin, "configmap");
        assert!(
            !cm.context.contains_key("medium"),
            "configMap volumes are on disk, as kubelet's"
        );
        let err = resolve_(&pod(), &vol(json!({"name": "g", "gitRepo": {"repository": "x"}}))).unwrap_err();
        assert!(err.contains("volume type \"gitRepo\" is not supported"), "{err}");
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(
            json!({"metadata": {"uid": "u1", "namespace": "ns"}, "spec": {"containers": [],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}}]}}),
        )
        .unwrap()
    }

    fn pv(source: Value) -> Value {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "mountOptions": ["noatime"]});
        spec.as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        json!({"metadata": {"name": "pv1"}, "spec": spec})
    }

    fn resolve_with(claims: Claims) -> Result<VolumeSource, String> {
        let p = pod();
        let v = p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0].clone();
        resolve(&p, &v, &claims)
    }

    #[test]
    fn a_claim_resolves_through_its_volume_source() {
        assert_eq!(claim_names(&pod()), vec!["c1".to_string()]);
        let cases = [
            (
                json!({"hostPath": {"path": "/srv/a", "type": "Directory"}}),
                "hostpath",
                "/srv/a",
            ),
            (json!({"local": {"path": "/mnt/disk1"}}), "hostpath", "/mnt/disk1"),
            (
                json!({"nfs": {"server": "10.0.0.1", "path": "/export"}}),
                "nfs",
                "10.0.0.1:/export",
            ),
            (
                json!({"rbd": {"monitors": ["127.0.0.1:6789"], "image": "img"}}),
                "rbd",
                "rbd/img",
            ),
            (
                json!({"csi": {"driver": "vendor.example", "volumeHandle": "h-1", "fsType": "xfs",
                "volumeAttributes": {"k": "v"}}}),
                "vendor.example",
                "h-1",
            ),
        ];
        for (source, plugin, id) in cases {
            let s = resolve_with([("c1".to_string(), Ok(pv(source.clone())))].into()).unwrap();
            assert_eq!((s.plugin.as_str(), s.volume_id.as_str()), (plugin, id), "{source}");
            assert!(s.read_only, "the pod's readOnly carries over");
            let p = s.persistent.unwrap();
            assert_eq!((p.volume.as_str(), p.claim.as_str()), ("pv1", "ns/c1"));
            assert_eq!(p.mount_options, vec!["noatime".to_string()]);
        }
        let rbd = resolve_with(
            [(
                "c1".to_string(),
                Ok(pv(json!({"rbd": {"monitors": ["m1", "m2"], "image": "i"}}))),
            )]
            .into(),
        )
        .unwrap();
        assert_eq!(rbd.context["monitors"], "m1,m2");
        assert_eq!(
            (rbd.context["pool"].as_str(), rbd.context["user"].as_str()),
            ("rbd", "admin")
        );
        let csi = resolve_with(
            [(
                "c1".to_string(),
                Ok(pv(json!({"csi": {"driver": "d", "volumeHandle": "h", "fsType": "xfs",
            "volumeAttributes": {"k": "v"}}}))),
            )]
            .into(),
        )
        .unwrap();
        assert_eq!(
            (csi.context["k"].as_str(), csi.persistent.unwrap().fs_type.as_str()),
            ("v", "xfs")
        );
    }

    #[test]
    fn a_claim_that_cannot_be_used_says_why() {
        let err = resolve_with(
            [(
                "c1".to_string(),
                Err("error processing PVC ns/c1: PVC is not bound".into()),
            )]
            .into(),
        )
        .unwrap_err();
        assert!(err.contains("PVC is not bound"), "{err}");
        let err = resolve_with([("c1".to_string(), Ok(json!({"metadata": {"name": "pv1"}, "spec": {}})))].into())
            .unwrap_err();
        assert!(
            err.contains("PersistentVolume \"pv1\" has no source this node supports"),
            "{err}"
        );
    }
}
