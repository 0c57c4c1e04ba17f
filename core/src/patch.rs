//! PATCH bodies as the API server reads them: JSON patch (RFC 6902), JSON
//! merge patch (RFC 7386) and strategic merge patch, Kubernetes' merge of
//! maps and of lists keyed by a field (containers by `name`, a container's
//! `ports` by `containerPort`, …) with its `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` and `$setElementOrder` directives.

use serde_json::{Map, Value};

/// The patch formats, by the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The type a Content-Type names; `None` for any other.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Why a patch does not apply; the message names the operation or field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct PatchError(pub String);

fn err(message: impl Into<String>) -> PatchError {
    PatchError(message.into())
}

// ---- JSON patch (RFC 6902) ----

/// Splits a JSON pointer into its unescaped tokens.
fn pointer_tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(err(format!("{pointer:?} is not a JSON pointer (it must start with /)")));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(token: &str, len: usize, appending: bool, pointer: &str) -> Result<usize, PatchError> {
    if appending && token == "-" {
        return Ok(len);
    }
    let valid =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    let i: usize = token
        .parse()
        .ok()
        .filter(|_| valid)
        .ok_or_else(|| err(format!("{pointer}: {token:?} is not an array index")))?;
    let limit = if appending { len } else { len.saturating_sub(1) };
    if i > limit || (!appending && len == 0) {
        return Err(err(format!("{pointer}: index {i} is out of range (length {len})")));
    }
    Ok(i)
}

/// The value the parent tokens lead to.
fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String], pointer: &str) -> Result<&'a mut Value, PatchError> {
    let mut at = doc;
    for t in tokens {
        at = match at {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| err(format!("{pointer}: {t:?} does not exist")))?,
            Value::Array(a) => {
                let i = array_index(t, a.len(), false, pointer)?;
                &mut a[i]
            }
            _ => {
                return Err(err(format!(
                    "{pointer}: {t:?} is below a value that is neither object nor array"
                )))
            }
        };
    }
    Ok(at)
}

fn get_at(doc: &Value, pointer: &str) -> Result<Value, PatchError> {
    pointer_tokens(pointer)?;
    doc.pointer(pointer)
        .cloned()
        .ok_or_else(|| err(format!("{pointer}: no value there")))
}

fn add_at(doc: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    let tokens = pointer_tokens(pointer)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents, pointer)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true, pointer)?;
            a.insert(i, value);
        }
        _ => return Err(err(format!("{pointer}: the parent is neither object nor array"))),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, pointer: &str) -> Result<Value, PatchError> {
    let tokens = pointer_tokens(pointer)?;
    let Some((last, parents)) = tokens.split_last() else {
        return Err(err("the whole document cannot be removed"));
    };
    match parent_mut(doc, parents, pointer)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| err(format!("{pointer}: no value there"))),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false, pointer)?;
            Ok(a.remove(i))
        }
        _ => Err(err(format!("{pointer}: the parent is neither object nor array"))),
    }
}

/// Applies a JSON patch: every operation in order, all or nothing.
///
/// # Errors
/// The first operation that fails, by index and path.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| err("a JSON patch is an array of operations"))?;
    let mut doc = target.clone();
    for (n, op) in ops.iter().enumerate() {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("operation {n}: {name:?} is missing or not a string")))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| err(format!("operation {n}: \"value\" is missing")))
        };
        let path = field("path")?;
        let at = |e: PatchError| err(format!("operation {n} ({}): {}", op["op"].as_str().unwrap_or("?"), e.0));
        match field("op")? {
            "add" => add_at(&mut doc, path, value()?).map_err(at)?,
            "remove" => {
                remove_at(&mut doc, path).map_err(at)?;
            }
            "replace" => {
                remove_at(&mut doc, path).map_err(at)?;
                add_at(&mut doc, path, value()?).map_err(at)?;
            }
            "move" => {
                let from = field("from")?;
                if path.starts_with(&format!("{from}/")) {
                    return Err(at(err(format!("{from} cannot be moved into itself"))));
                }
                let v = remove_at(&mut doc, from).map_err(at)?;
                add_at(&mut doc, path, v).map_err(at)?;
            }
            "copy" => {
                let v = get_at(&doc, field("from")?).map_err(at)?;
                add_at(&mut doc, path, v).map_err(at)?;
            }
            "test" => {
                if get_at(&doc, path).map_err(at)? != value()? {
                    return Err(at(err(format!("{path}: the value is not the one the test expects"))));
                }
            }
            other => return Err(err(format!("operation {n}: unknown op {other:?}"))),
        }
    }
    Ok(doc)
}

// ---- strategic merge patch ----

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMerge {
    /// Replaced whole (a list without a patch strategy).
    Replace,
    /// Elements are maps matched by this key.
    ByKey(&'static str),
    /// A list of scalars merged as a set.
    Primitives,
}

/// Kubernetes' `patchStrategy`/`patchMergeKey` for the lists of the kinds
/// peapod serves, by the field's path of map keys from the object's root.
fn list_merge(kind: &str, path: &[&str]) -> ListMerge {
    let Some((field, parents)) = path.split_last() else {
        return ListMerge::Replace;
    };
    let parent = parents.last().copied().unwrap_or("");
    let in_container = matches!(parent, "containers" | "initContainers" | "ephemeralContainers");
    match *field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListMerge::ByKey("name"),
        "env" if in_container => ListMerge::ByKey("name"),
        "ports" if in_container => ListMerge::ByKey("containerPort"),
        "ports" if kind == "Service" && parent == "spec" => ListMerge::ByKey("port"),
        "volumeMounts" if in_container => ListMerge::ByKey("mountPath"),
        "volumeDevices" if in_container => ListMerge::ByKey("devicePath"),
        "hostAliases" => ListMerge::ByKey("ip"),
        "topologySpreadConstraints" => ListMerge::ByKey("topologyKey"),
        "ownerReferences" if parent == "metadata" => ListMerge::ByKey("uid"),
        "finalizers" if parent == "metadata" => ListMerge::Primitives,
        "conditions" | "addresses" if parent == "status" => ListMerge::ByKey("type"),
        _ => ListMerge::Replace,
    }
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to an object of `kind`.
///
/// # Errors
/// A directive that is not understood or a list element without its merge
/// key, by field path.
pub fn strategic_merge(kind: &str, target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let patch = patch
        .as_object()
        .ok_or_else(|| err("a strategic merge patch is a JSON object"))?;
    let mut out = target.as_object().cloned().unwrap_or_default();
    merge_map(kind, &mut out, patch, &mut Vec::new())?;
    Ok(Value::Object(out))
}

fn path_text(path: &[&str]) -> String {
    if path.is_empty() {
        "(the object)".to_string()
    } else {
        path.join(".")
    }
}

fn merge_map<'a>(
    kind: &str,
    target: &mut Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
) -> Result<(), PatchError> {
    match patch.get(PATCH).and_then(Value::as_str) {
        None => {}
        Some("replace") => {
            *target = patch
                .iter()
                .filter(|(k, _)| k.as_str() != PATCH)
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect();
            return Ok(());
        }
        Some(other) => {
            return Err(err(format!(
                "{}: $patch {other:?} is not allowed on a map here",
                path_text(path)
            )))
        }
    }
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            let gone = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        path.push(key.as_str());
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(p) if p.get(PATCH).and_then(Value::as_str) == Some("delete") => {
                target.remove(key);
            }
            Value::Object(p) => {
                let entry = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_map(kind, t, p, path)?;
                }
            }
            Value::Array(items) => {
                let current = target.remove(key);
                let merged = merge_list(kind, current, items, path)?;
                target.insert(key.clone(), merged);
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    // $setElementOrder/<list>: the order of the merged list's elements.
    for (key, order) in patch.iter().filter_map(|(k, v)| k.strip_prefix(ORDER).map(|f| (f, v))) {
        let (Some(order), Some(Value::Array(list))) = (order.as_array(), target.get_mut(key)) else {
            continue;
        };
        let mut field_path = path.clone();
        field_path.push(key);
        let position = |v: &Value| match list_merge(kind, &field_path) {
            ListMerge::ByKey(k) => order.iter().position(|o| o.get(k).is_some() && o.get(k) == v.get(k)),
            _ => order.iter().position(|o| o == v),
        };
        list.sort_by_key(|v| position(v).unwrap_or(usize::MAX));
    }
    if let Some(keep) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or_else(|| err(format!("{}: $retainKeys must be a list", path_text(path))))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list<'a>(
    kind: &str,
    current: Option<Value>,
    items: &'a [Value],
    path: &mut Vec<&'a str>,
) -> Result<Value, PatchError> {
    let replace_directive = items
        .iter()
        .any(|i| i.get(PATCH).and_then(Value::as_str) == Some("replace"));
    let current = match current {
        Some(Value::Array(c)) => c,
        _ => Vec::new(),
    };
    match list_merge(kind, path) {
        _ if replace_directive => Ok(Value::Array(
            items
                .iter()
                .filter(|i| i.get(PATCH).is_none())
                .map(without_directives)
                .collect(),
        )),
        ListMerge::Replace => Ok(Value::Array(items.iter().map(without_directives).collect())),
        ListMerge::Primitives => {
            let mut out = current;
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListMerge::ByKey(key) => {
            let mut out = current;
            for item in items {
                let Some(p) = item.as_object() else {
                    return Err(err(format!(
                        "{}: an element must be an object with {key:?}",
                        path_text(path)
                    )));
                };
                let Some(id) = p.get(key) else {
                    return Err(err(format!("{}: an element has no {key:?}", path_text(path))));
                };
                let found = out.iter().position(|c| c.get(key) == Some(id));
                match (p.get(PATCH).and_then(Value::as_str), found) {
                    (Some("delete"), Some(i)) => {
                        out.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (Some(other), _) if other != "merge" => {
                        return Err(err(format!(
                            "{}: $patch {other:?} is not allowed on a list element",
                            path_text(path)
                        )))
                    }
                    (_, Some(i)) => {
                        if let Value::Object(t) = &mut out[i] {
                            merge_map(kind, t, p, path)?;
                        }
                    }
                    (_, None) => out.push(without_directives(item)),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

/// A patch value with its directives removed, for where it is taken whole.
fn without_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patches_apply_every_operation_or_none() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let p = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e~1f"},
            {"op": "test", "path": "/e~1f", "value": "y"},
            {"op": "remove", "path": "/a/b/1"},
        ]);
        assert_eq!(
            json_patch(&doc, &p).unwrap(),
            json!({"a": {"b": [0, 2, 3]}, "c": "y", "e/f": "y"})
        );
        let e = json_patch(&doc, &json!([{"op": "test", "path": "/c", "value": "z"}])).unwrap_err();
        assert!(e.0.contains("operation 0 (test)"), "{e}");
        let e = json_patch(&doc, &json!([{"op": "remove", "path": "/a/b/7"}])).unwrap_err();
        assert!(e.0.contains("out of range"), "{e}");
        let e = json_patch(&doc, &json!([{"op": "replace", "path": "/nope", "value": 1}])).unwrap_err();
        assert!(e.0.contains("/nope"), "{e}");
        assert!(json_patch(&doc, &json!({"op": "add"})).is_err());
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"containers": [
                {"name": "c", "image": "busybox:1.35", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80, "name": "http"}]},
                {"name": "d", "image": "busybox:1.35"}
            ], "tolerations": [{"key": "k"}]}
        })
    }

    #[test]
    fn strategic_merge_keys_lists_as_kubernetes_does() {
        let p = json!({
            "metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"]},
            "spec": {
                "containers": [
                    {"name": "c", "image": "busybox:1.36", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                     "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                    {"name": "e", "image": "x"}
                ],
                "tolerations": [{"key": "other"}]
            }
        });
        let out = strategic_merge("Pod", &pod(), &p).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let c = &out["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 3, "{c}");
        assert_eq!(c[0]["image"], "busybox:1.36");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            c[0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(c[1]["name"], "d");
        assert_eq!(c[2], json!({"name": "e", "image": "x"}));
        // A list without a strategy is replaced.
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "other"}]));
    }

    #[test]
    fn strategic_merge_directives() {
        // What kubectl apply sends to drop an env var and keep the order.
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "d"}, {"name": "c"}],
            "containers": [{"name": "c", "$setElementOrder/env": [{"name": "A"}], "env": [{"name": "B", "$patch": "delete"}]}]
        }});
        let out = strategic_merge("Pod", &pod(), &p).unwrap();
        let c = &out["spec"]["containers"];
        assert_eq!(c[0]["name"], "d");
        assert_eq!(c[1]["env"], json!([{"name": "A", "value": "1"}]));

        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"containers": [{"name": "x", "$patch": "replace"}]}});
        let out = strategic_merge("Pod", &pod(), &p).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        assert_eq!(out["spec"]["containers"], json!([]));

        let p = json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}});
        let out = strategic_merge("Pod", &pod(), &p).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"z": "9"}));

        let strategy = json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = strategic_merge("Deployment", &strategy, &p).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        let e = strategic_merge("Pod", &pod(), &json!({"spec": {"containers": [{"image": "x"}]}})).unwrap_err();
        assert!(e.0.contains("spec.containers") && e.0.contains("\"name\""), "{e}");
        // Service ports merge by port, a container's by containerPort.
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let out = strategic_merge("Service", &svc, &json!({"spec": {"ports": [{"port": 443}]}})).unwrap();
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
    }
}
