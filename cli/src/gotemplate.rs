//! kubectl's `-o go-template=…` printer: Go's `text/template` (through the
//! gotmpl crate) over the object as generic JSON, with kubectl's two extra
//! functions, `exists` and `base64decode`. A missing key prints
//! `<no value>`, as kubectl does with its default
//! `--allow-missing-template-keys`.
//!
//! gotmpl 0.6.1 is more lenient than Go in one place: a block left open at
//! the end (`{{range .items}}` with no `{{end}}`) or a stray top-level
//! `{{end}}` parses instead of failing with "unexpected EOF" / "unexpected
//! {{end}}"; the block then closes at the end of the text.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use base64::Engine;
use gotmpl::{TemplateError, Value};

pub struct GoTemplate(gotmpl::Template);

impl GoTemplate {
    pub fn parse(src: &str) -> Result<Self> {
        gotmpl::Template::new("output")
            .func("exists", exists)
            .func("base64decode", base64decode)
            .parse(src)
            .map(GoTemplate)
            .map_err(|e| anyhow!("error: error parsing template {src}, {e}"))
    }

    /// The template applied to `object`; an execution error names the
    /// template, as kubectl's does.
    pub fn render(&self, object: &serde_json::Value) -> Result<String> {
        self.0
            .execute_to_string(&to_value(object))
            .map_err(|e| anyhow!("error: error executing template: {e}"))
    }
}

/// JSON as the template sees it: Go decodes into `interface{}`, so objects
/// are maps and numbers print without a trailing `.0` when whole.
fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_u64().map(Value::Uint))
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        serde_json::Value::String(s) => Value::String(Arc::from(s.as_str())),
        serde_json::Value::Array(items) => Value::List(items.iter().map(to_value).collect()),
        serde_json::Value::Object(map) => Value::Map(Arc::new(
            map.iter()
                .map(|(k, v)| (Arc::from(k.as_str()), to_value(v)))
                .collect::<BTreeMap<_, _>>(),
        )),
    }
}

/// `exists ITEM INDEX…`: whether indexing ITEM by each INDEX in turn
/// (list positions, map keys) reaches a value that is not nil.
fn exists(args: &[Value]) -> gotmpl::Result<Value> {
    let Some((first, indices)) = args.split_first() else {
        return Err(TemplateError::Exec(
            "wrong number of args for exists: want at least 1 got 0".into(),
        ));
    };
    let mut current = first.clone();
    for index in indices {
        current = match (&current, index) {
            (Value::List(items), _) => match index_of(index) {
                Some(i) if i < items.len() => items[i].clone(),
                _ => return Ok(Value::Bool(false)),
            },
            (Value::String(s), _) => match index_of(index) {
                Some(i) if i < s.len() => Value::Uint(u64::from(s.as_bytes()[i])),
                _ => return Ok(Value::Bool(false)),
            },
            (Value::Map(map), Value::String(key)) => match map.get(key) {
                Some(v) => v.clone(),
                None => return Ok(Value::Bool(false)),
            },
            _ => return Ok(Value::Bool(false)),
        };
    }
    Ok(Value::Bool(!matches!(current, Value::Nil)))
}

fn index_of(v: &Value) -> Option<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).ok(),
        Value::Uint(u) => usize::try_from(*u).ok(),
        _ => None,
    }
}

/// `base64decode STRING`: standard base64, as Secret data is written.
fn base64decode(args: &[Value]) -> gotmpl::Result<Value> {
    let [Value::String(s)] = args else {
        return Err(TemplateError::Exec("base64decode: want one string argument".into()));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(|e| TemplateError::Exec(format!("base64 decode failed: {e}")))?;
    Ok(Value::String(Arc::from(String::from_utf8_lossy(&bytes).as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, v: serde_json::Value) -> String {
        GoTemplate::parse(src).unwrap().render(&v).unwrap()
    }

    #[test]
    fn prints_fields_ranges_and_conditions_like_kubectl() {
        let list = json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app": "web"}}, "spec": {"replicas": 3}, "status": {"phase": "Running"}},
            {"metadata": {"name": "b"}, "spec": {"replicas": 0.5}, "status": {"phase": "Pending"}},
        ]});
        assert_eq!(
            render(
                r#"{{range .items}}{{.metadata.name}} {{.spec.replicas}}{{"\n"}}{{end}}"#,
                list.clone()
            ),
            "a 3\nb 0.5\n"
        );
        assert_eq!(
            render(
                r#"{{range .items}}{{if eq .status.phase "Running"}}{{.metadata.name}}{{end}}{{end}}"#,
                list.clone()
            ),
            "a"
        );
        // A missing key prints <no value>; index reaches keys with dots.
        assert_eq!(
            render(r#"{{range .items}}{{.metadata.labels.app}},{{end}}"#, list.clone()),
            "web,<no value>,"
        );
        assert_eq!(
            render(
                r#"{{index .metadata.annotations "a.b/c"}}"#,
                json!({"metadata": {"annotations": {"a.b/c": "x"}}})
            ),
            "x"
        );
        assert_eq!(render(r#"{{len .items}} {{printf "%05d" 42}}"#, list), "2 00042");
    }

    #[test]
    fn kubectl_functions_exists_and_base64decode() {
        let v = json!({"data": {"password": "c2VjcmV0"}, "items": [1, null]});
        assert_eq!(render(r#"{{base64decode .data.password}}"#, v.clone()), "secret");
        assert_eq!(
            render(
                r#"{{exists . "data" "password"}} {{exists . "data" "user"}} {{exists . "items" 0}} {{exists . "items" 1}} {{exists . "items" 2}}"#,
                v.clone()
            ),
            "true false true false false"
        );
        let err = GoTemplate::parse(r#"{{base64decode .data.password}}"#)
            .unwrap()
            .render(&json!({"data": {"password": "***"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("base64 decode failed"), "{err}");
    }

    #[test]
    fn a_broken_template_is_a_parse_error() {
        for src in ["{{.items", "{{if}}{{end}}", "{{.a | }}"] {
            let err = GoTemplate::parse(src)
                .err()
                .unwrap_or_else(|| panic!("{src} parsed"))
                .to_string();
            assert!(err.contains("error parsing template"), "{err}");
        }
        // An unknown function fails when the template runs, naming it.
        let err = GoTemplate::parse("{{nosuchfunc .a}}")
            .unwrap()
            .render(&serde_json::json!({}))
            .unwrap_err();
        assert!(err.to_string().contains("nosuchfunc"), "{err}");
    }
}
