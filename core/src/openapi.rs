//! The API's OpenAPI schemas: Kubernetes 1.34's own (descriptions, types,
//! `x-kubernetes-*` extensions: patch merge keys and strategies, list
//! types, group-version-kinds), kept as data in `core/openapi/` (made by
//! `scripts/openapi-data.py`). They answer `/openapi/v3` (one document per
//! served group/version, as the API server splits them), which gives
//! `kubectl explain`, and `peapod explain`.

use crate::kinds::{self, Kind};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::{Mutex, OnceLock};

const DATA: &[u8] = include_bytes!("../openapi/kubernetes-1.34.json.gz");

/// Every schema, by name (`io.k8s.api.core.v1.Pod`).
pub fn schemas() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut text = Vec::new();
        // The data is built in: a failure here is a build that shipped it broken.
        flate2::read::GzDecoder::new(DATA)
            .read_to_end(&mut text)
            .expect("core/openapi data: gzip");
        serde_json::from_slice(&text).expect("core/openapi data: JSON")
    })
}

/// The name of the schema of a kind, by its `x-kubernetes-group-version-kind`
/// (an index built once: every write's field validation asks).
pub fn schema_name(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    type Index = BTreeMap<(String, String, String), &'static str>;
    static INDEX: OnceLock<Index> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut index = Index::new();
        for (name, s) in schemas() {
            for g in s["x-kubernetes-group-version-kind"].as_array().into_iter().flatten() {
                let part = |k: &str| g[k].as_str().unwrap_or("").to_string();
                index
                    .entry((part("group"), part("version"), part("kind")))
                    .or_insert(name.as_str());
            }
        }
        index
    });
    index
        .get(&(group.to_string(), version.to_string(), kind.to_string()))
        .copied()
}

/// The schema a `$ref` names.
pub fn resolve(reference: &str) -> Option<&'static Value> {
    schemas().get(reference.strip_prefix("#/components/schemas/")?)
}

/// The names `roots` refer to, transitively, themselves included.
fn closure(roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    if let Some(name) = r.strip_prefix("#/components/schemas/") {
                        out.push(name.to_string());
                    }
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = schemas().get(&name) {
            refs(s, &mut todo);
        }
    }
    seen
}

/// The group/versions served, as `/openapi/v3` names them (`api/v1`, `apis/apps/v1`).
pub fn group_versions() -> Vec<(String, &'static str, &'static str)> {
    let mut out = Vec::new();
    for (group, versions) in kinds::groups() {
        for version in versions {
            let path = match group {
                "" => format!("api/{version}"),
                g => format!("apis/{g}/{version}"),
            };
            out.push((path, group, version));
        }
    }
    out
}

/// The OpenAPI v3 document of one group/version: the schemas of its kinds
/// and their lists, and every schema those refer to. `None` for a
/// group/version not served.
pub fn document(group: &str, version: &str) -> Option<&'static [u8]> {
    type Cache = Mutex<BTreeMap<(String, String), &'static [u8]>>;
    static DOCS: OnceLock<Cache> = OnceLock::new();
    let docs = DOCS.get_or_init(Default::default);
    let key = (group.to_string(), version.to_string());
    if let Some(d) = docs.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Some(d);
    }
    let served: Vec<&'static Kind> = kinds::in_group_version(group, version);
    if served.is_empty() {
        return None;
    }
    let roots = served
        .iter()
        .flat_map(|k| [k.kind.to_string(), format!("{}List", k.kind)])
        .filter_map(|kind| schema_name(group, version, &kind))
        .map(str::to_string);
    let all = schemas();
    let components: Map<String, Value> = closure(roots)
        .into_iter()
        .filter_map(|name| all.get(&name).map(|s| (name, s.clone())))
        .collect();
    let mut paths = Map::new();
    for kind in &served {
        if let Some(name) = schema_name(group, version, kind.kind) {
            paths.extend(kind_paths(kind, name));
        }
    }
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0"},
        "paths": paths,
        "components": {"schemas": components},
    });
    let bytes: &'static [u8] = Vec::leak(serde_json::to_vec(&doc).unwrap_or_default());
    docs.lock().unwrap_or_else(|p| p.into_inner()).insert(key, bytes);
    Some(bytes)
}

/// The paths of one kind, as the API server's documents give them: each
/// operation names the kind (`x-kubernetes-group-version-kind`, which
/// `kubectl explain` finds a resource's schema by), and writes take
/// `fieldValidation` (which tells kubectl 1.27+ the server validates fields).
fn kind_paths(kind: &Kind, schema: &str) -> Map<String, Value> {
    let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
    let reference = json!({"$ref": format!("#/components/schemas/{schema}")});
    let query = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect()
    };
    let op = |action: &str, params: &[&str]| {
        json!({
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": action,
            "parameters": query(params),
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
        })
    };
    // No dryRun: the server does not do dry runs, so kubectl must not be told it does.
    let writes = ["fieldManager", "fieldValidation"];
    let base = match kind.group {
        "" => format!("/api/{}", kind.version),
        g => format!("/apis/{g}/{}", kind.version),
    };
    let collection = match kind.namespaced {
        true => format!("{base}/namespaces/{{namespace}}/{}", kind.plural),
        false => format!("{base}/{}", kind.plural),
    };
    let mut paths = Map::new();
    paths.insert(
        collection.clone(),
        json!({"get": op("list", &["labelSelector", "fieldSelector", "limit", "continue", "watch"]), "post": op("post", &writes)}),
    );
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({"get": op("get", &[]), "put": op("put", &writes), "patch": op("patch", &["fieldManager", "fieldValidation", "force"]), "delete": op("delete", &["gracePeriodSeconds", "propagationPolicy"])}),
    );
    if kind.namespaced {
        paths.insert(
            format!("{base}/{}", kind.plural),
            json!({"get": op("list", &["labelSelector", "fieldSelector"])}),
        );
    }
    paths
}

/// A short stable hash of a document (the `hash` query kubectl caches by).
pub fn hash(bytes: &[u8]) -> String {
    // FNV-1a 64: a cache key, not a security check.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `/openapi/v3`: where each group/version's document is.
pub fn discovery() -> Value {
    let paths: Map<String, Value> = group_versions()
        .into_iter()
        .filter_map(|(path, g, v)| {
            let doc = document(g, v)?;
            let url = format!("/openapi/v3/{path}?hash={}", hash(doc));
            Some((path, json!({"serverRelativeURL": url})))
        })
        .collect();
    json!({"paths": paths})
}

/// What `explain` prints of a field's type: `<string>`, `<[]Object>`,
/// `<map[string]string>`, `<Object>`, `<IntOrString>`…
pub fn type_name(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        // A named type: its Go name, as kubectl prints it (`<PodSpec>`).
        return r.rsplit('.').next().unwrap_or(r).to_string();
    }
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_name(&schema["items"])),
        Some("object") if schema.get("additionalProperties").is_some() && schema.get("properties").is_none() => {
            format!("map[string]{}", type_name(&schema["additionalProperties"]))
        }
        Some("object") | None if schema.get("properties").is_some() => "Object".into(),
        Some(t) => t.to_string(),
        None => "Object".into(),
    }
}

/// The schema at `path` (field names) below `root`, following `$ref`s and
/// array items, with the description of the field itself when it has one.
pub fn field(root: &'static Value, path: &[&str]) -> Result<(&'static Value, Option<&'static str>), String> {
    let mut here = root;
    let mut described = root["description"].as_str();
    for (i, name) in path.iter().enumerate() {
        match object_of(here)["properties"].get(*name) {
            Some(next) => {
                described = next["description"].as_str();
                here = next;
            }
            None => return Err(format!("field \"{name}\" does not exist in {}", path[..i].join("."))),
        }
    }
    Ok((here, described))
}

/// The object schema under `schema` (through `$ref`s and array items).
pub fn object_of(schema: &'static Value) -> &'static Value {
    let mut s = schema;
    loop {
        if let Some(r) = s.get("$ref").and_then(Value::as_str).and_then(resolve) {
            s = r;
        } else if s["type"] == "array" {
            s = &s["items"];
        } else {
            return s;
        }
    }
}

/// The fields of `object` that the schema of its kind (`group`/`version`
/// `kind`) does not declare, named as the API server's strict decoding names
/// them (`spec.containers[0].imagee`). `status` is the server's and is not
/// looked at, nor are a patch's `$` directives; a schema that keeps unknown
/// fields (`x-kubernetes-preserve-unknown-fields`) takes anything. Empty
/// for a kind without a schema.
pub fn unknown_fields(group: &str, version: &str, kind: &str, object: &Value) -> Vec<String> {
    fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str).and_then(resolve) {
            s = r;
        }
        if s["x-kubernetes-preserve-unknown-fields"] == true {
            return;
        }
        match value {
            Value::Object(fields) => {
                let props = s["properties"].as_object();
                let extra = s.get("additionalProperties").filter(|a| a.is_object());
                if props.is_none() && extra.is_none() {
                    return;
                }
                for (name, v) in fields {
                    if name.starts_with('$') || (path.is_empty() && name == "status") {
                        continue;
                    }
                    let here = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    match (props.and_then(|p| p.get(name)), extra) {
                        (Some(p), _) => walk(p, v, &here, out),
                        (None, Some(a)) => walk(a, v, &here, out),
                        (None, None) => out.push(here),
                    }
                }
            }
            Value::Array(items) if s["type"] == "array" => {
                for (i, v) in items.iter().enumerate() {
                    walk(&s["items"], v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let Some(name) = schema_name(group, version, kind) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&schemas()[name], object, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schemas_carry_what_kubectl_reads() {
        let pod = schema_name("", "v1", "Pod").unwrap();
        assert_eq!(pod, "io.k8s.api.core.v1.Pod");
        assert_eq!(
            schema_name("apps", "v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        let containers = &schemas()["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(type_name(containers), "[]Container");
        let labels = &schemas()["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["labels"];
        assert_eq!(type_name(labels), "map[string]string");
        // No nullable type lists left over from the JSON Schema form.
        let text = serde_json::to_string(schemas()).unwrap();
        assert!(!text.contains("\"null\"") && !text.contains("#/$defs/"));
    }

    #[test]
    fn a_group_versions_document_holds_its_kinds_and_what_they_use() {
        let doc: Value = serde_json::from_slice(document("apps", "v1").unwrap()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.core.v1.PodTemplateSpec",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        assert!(
            !schemas.contains_key("io.k8s.api.core.v1.Pod"),
            "core's kinds stay in api/v1"
        );
        assert!(document("policy", "v1").is_none());
        let d = discovery();
        let url = d["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    }

    #[test]
    fn unknown_fields_are_named_as_strict_decoding_names_them() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"any": "x"}, "colour": 1},
            "spec": {"containers": [{"name": "c", "image": "i"}, {"name": "d", "imagee": "i", "ports": [{"containerPort": 1, "hostPortt": 2}]}],
                "$setElementOrder/containers": [{"name": "c"}]},
            "status": {"whatever": true}});
        assert_eq!(
            unknown_fields("", "v1", "Pod", &pod),
            [
                "metadata.colour",
                "spec.containers[1].imagee",
                "spec.containers[1].ports[0].hostPortt"
            ]
        );
        let deploy = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}}}});
        assert!(unknown_fields("apps", "v1", "Deployment", &deploy).is_empty());
        assert!(unknown_fields("example.com", "v1", "Widget", &json!({"x": 1})).is_empty());
    }

    #[test]
    fn fields_are_found_through_references_and_lists() {
        let root = &schemas()["io.k8s.api.core.v1.Pod"];
        let (spec, _) = field(root, &["spec"]).unwrap();
        assert_eq!(type_name(spec), "PodSpec");
        let (image, description) = field(root, &["spec", "containers", "image"]).unwrap();
        assert_eq!(type_name(image), "string");
        assert!(description.unwrap().contains("Container image name"));
        let err = field(root, &["spec", "nope"]).unwrap_err();
        assert!(err.contains("\"nope\"") && err.contains("spec"), "{err}");
    }
}
