//! `peapod explain TYPE[.FIELD…]`: a kind's or field's documentation, from
//! the built-in Kubernetes 1.34 schemas (the same ones `/openapi/v3`
//! serves to `kubectl explain`), printed as kubectl prints it.

use anyhow::{anyhow, Result};
use peapod_core::kinds;
use peapod_core::openapi::{self, field, object_of, schema_name, type_name};
use serde_json::Value;
use std::fmt::Write;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// `TYPE` or `TYPE.FIELD.FIELD…` (`pods`, `deploy.spec.template.spec`).
    resource: String,
    /// Every field below, by name and type, indented.
    #[arg(long)]
    recursive: bool,
}

/// `text` wrapped to 80 columns, each line indented by `indent` spaces.
fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
            if !line.is_empty() && indent + line.len() + 1 + word.len() > 80 {
                let _ = writeln!(out, "{:indent$}{line}", "");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        let _ = writeln!(out, "{:indent$}{line}", "");
    }
    out
}

fn required(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The fields below `schema`, `depth` levels in, names and types only.
fn recursive(schema: &'static Value, depth: usize, seen: &mut Vec<*const Value>, out: &mut String) {
    let object = object_of(schema);
    // A type that contains itself (JSONSchemaProps) is shown once.
    if seen.contains(&(object as *const Value)) {
        return;
    }
    seen.push(object);
    let required = required(object);
    if let Some(props) = object["properties"].as_object() {
        for (name, field) in props {
            let mark = if required.contains(&name.as_str()) {
                " -required-"
            } else {
                ""
            };
            let _ = writeln!(out, "{:w$}{name}\t<{}>{mark}", "", type_name(field), w = 2 * depth + 2);
            recursive(field, depth + 1, seen, out);
        }
    }
    seen.pop();
}

/// What `peapod explain` prints.
pub fn render(a: &ExplainArgs) -> Result<String> {
    let mut parts = a.resource.split('.');
    let word = parts.next().unwrap_or("");
    let kind = kinds::by_name(word).ok_or_else(|| anyhow!("the server doesn't have a resource type \"{word}\""))?;
    let name = schema_name(kind.group, kind.version, kind.kind)
        .ok_or_else(|| anyhow!("no schema for {} in Kubernetes 1.34", kind.kind))?;
    let root = &openapi::schemas()[name];
    let path: Vec<&str> = parts.collect();
    let (schema, description) = field(root, &path).map_err(|e| anyhow!("{e}"))?;
    let mut out = String::new();
    let _ = writeln!(out, "GROUP:      {}", kind.group);
    let _ = writeln!(out, "KIND:       {}", kind.kind);
    let _ = writeln!(out, "VERSION:    {}\n", kind.version);
    if let Some(last) = path.last() {
        let _ = writeln!(out, "FIELD: {last} <{}>\n", type_name(schema));
    }
    let object = object_of(schema);
    let description = description.or(object["description"].as_str()).unwrap_or("<empty>");
    let _ = writeln!(out, "DESCRIPTION:");
    out.push_str(&wrap(description, 4));
    if object["properties"].as_object().is_some_and(|p| !p.is_empty()) {
        let _ = writeln!(out, "\nFIELDS:");
        if a.recursive {
            recursive(schema, 0, &mut Vec::new(), &mut out);
        } else {
            let required = required(object);
            for (name, f) in object["properties"].as_object().into_iter().flatten() {
                let mark = if required.contains(&name.as_str()) {
                    " -required-"
                } else {
                    ""
                };
                let _ = writeln!(out, "  {name}\t<{}>{mark}", type_name(f));
                let text = f["description"]
                    .as_str()
                    .or_else(|| object_of(f)["description"].as_str())
                    .unwrap_or("<no description>");
                out.push_str(&wrap(text, 4));
                out.push('\n');
            }
        }
    }
    Ok(out)
}

pub fn explain(a: ExplainArgs) -> Result<()> {
    print!("{}", render(&a)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain(what: &str, recursive: bool) -> Result<String> {
        render(&ExplainArgs {
            resource: what.into(),
            recursive,
        })
    }

    #[test]
    fn kinds_and_fields_are_explained_as_kubectl_does() {
        let pod = explain("pods", false).unwrap();
        assert!(pod.contains("KIND:       Pod\nVERSION:    v1\n"), "{pod}");
        assert!(pod.contains("  spec\t<PodSpec>\n"), "{pod}");
        let image = explain("po.spec.containers.image", false).unwrap();
        assert!(image.contains("FIELD: image <string>"), "{image}");
        assert!(image.contains("Container image name"), "{image}");
        let containers = explain("deploy.spec.template.spec.containers", false).unwrap();
        assert!(containers.contains("  name\t<string> -required-"), "{containers}");
        let tree = explain("deployment.spec", true).unwrap();
        assert!(
            tree.contains("\n    spec\t<PodSpec>\n      activeDeadlineSeconds\t<integer>"),
            "{tree}"
        );
        let e = explain("pods.spec.nothing", false).unwrap_err().to_string();
        assert!(e.contains("\"nothing\""), "{e}");
        assert!(explain("widgets", false).unwrap_err().to_string().contains("widgets"));
        // Lines stay within 80 columns.
        assert!(pod.lines().all(|l| l.len() <= 80 || !l.trim().contains(' ')), "{pod}");
    }
}
