//! Reading manifests: multi-document YAML (or JSON) into objects, with errors
//! that name the file, the document and the line.

use crate::kinds::{self, Kind};
use serde_json::Value;
use std::fmt;

/// One object read from a manifest.
#[derive(Debug, Clone)]
pub struct Document {
    /// The object in the store's JSON form.
    pub object: Value,
    /// Its kind from the kind table.
    pub kind: &'static Kind,
    /// 1-based line of the document's first line in the file.
    pub line: usize,
}

/// A manifest that cannot be read; `Display` says where (`file:line:`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file (or `-` for stdin).
    pub source_name: String,
    /// 1-based line where the problem is, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.source_name, l, self.message),
            None => write!(f, "{}: {}", self.source_name, self.message),
        }
    }
}

impl std::error::Error for ManifestError {}

/// Splits a YAML stream at `---` lines, keeping each document's first line number.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() || line.trim_end() == "..." {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((start, cur));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Pulls the 1-based line number out of a YAML parser message, if it has one.
fn line_in(message: &str) -> Option<usize> {
    let idx = message.find("line ")?;
    let digits: String = message[idx + 5..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads every object in `text`. Each document must be a mapping with a known
/// `apiVersion`/`kind`, and must decode into that kind's Kubernetes type.
///
/// # Errors
/// The first document that cannot be read, or none at all.
pub fn parse(source_name: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    parse_each(source_name, text).into_iter().collect()
}

/// How manifests are read: as kubectl reads them (YAML 1.1's integers), so
/// `defaultMode: 0400` is the octal mode 256 it means, not 400.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { legacy_octal_numbers: true }
}

/// Reads each document of `text` on its own, as `kubectl apply` does: a
/// document that cannot be read is an error in its place, and the others
/// are still read. A stream without objects is one error.
pub fn parse_each(source_name: &str, text: &str) -> Vec<Result<Document, ManifestError>> {
    let err = |line: Option<usize>, message: String| ManifestError {
        source_name: source_name.to_string(),
        line,
        message,
    };
    let mut out = Vec::new();
    for (start, doc) in split_documents(text) {
        let value: Value = match serde_saphyr::from_str_with_options(&doc, yaml_options()) {
            Ok(v) => v,
            Err(e) => {
                let msg = e.to_string();
                let line = line_in(&msg).map(|l| l + start - 1).or(Some(start));
                out.push(Err(err(line, first_line(&msg))));
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        if let Some(items) = value
            .get("items")
            .filter(|_| value["kind"].as_str().is_some_and(|k| k.ends_with("List")))
        {
            for item in items.as_array().into_iter().flatten() {
                out.push(document(item.clone(), start).map_err(|m| err(Some(start), m)));
            }
            continue;
        }
        out.push(document(value, start).map_err(|m| err(Some(start), m)).and_then(|d| {
            check_typed(d.kind, &doc)
                .map_err(|(line, m)| err(Some(line.map_or(start, |l| l + start - 1)), m))
                .map(|()| d)
        }));
    }
    if out.is_empty() {
        out.push(Err(err(None, "no objects passed to apply".into())));
    }
    out
}

/// Reads one YAML (or JSON) document that is not an object of a kind (an
/// operator's configuration file); an empty file is `null`.
pub fn parse_config(source_name: &str, text: &str) -> Result<Value, ManifestError> {
    serde_saphyr::from_str_with_options::<Value>(text, yaml_options()).map_err(|e| {
        let msg = e.to_string();
        ManifestError {
            source_name: source_name.to_string(),
            line: line_in(&msg),
            message: first_line(&msg),
        }
    })
}

fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or(msg).trim().to_string()
}

fn document(value: Value, line: usize) -> Result<Document, String> {
    if !value.is_object() {
        return Err("a manifest document must be a mapping with apiVersion and kind".into());
    }
    let api_version = value["apiVersion"].as_str().unwrap_or("");
    let kind_name = value["kind"].as_str().unwrap_or("");
    if api_version.is_empty() {
        return Err("apiVersion: Required value".into());
    }
    if kind_name.is_empty() {
        return Err("kind: Required value".into());
    }
    let kind = kinds::by_type(api_version, kind_name)
        .ok_or_else(|| format!("no matches for kind \"{kind_name}\" in version \"{api_version}\""))?;
    Ok(Document {
        object: value,
        kind,
        line,
    })
}

/// Decodes the document into its Kubernetes type, so a wrong type reports the YAML line.
fn check_typed(kind: &Kind, doc: &str) -> Result<(), (Option<usize>, String)> {
    (kind.typed_check)(doc).map_err(|msg| (line_in(&msg), first_line(&msg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_are_octal_as_kubectl_reads_them() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox}]\n  volumes:\n  - name: s\n    secret: {secretName: x, defaultMode: 0400, items: [{key: k, path: k, mode: 0o644}]}\n";
        let docs = parse("f.yaml", text).unwrap();
        let secret = &docs[0].object["spec"]["volumes"][0]["secret"];
        assert_eq!(secret["defaultMode"], 0o400);
        assert_eq!(secret["items"][0]["mode"], 0o644);
    }

    #[test]
    fn reads_multiple_documents_with_lines() {
        let text = "# comment\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
        let docs = parse("f.yaml", text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].kind.kind, "Namespace");
        assert_eq!(docs[1].kind.kind, "Pod");
        assert_eq!(docs[1].line, 7);
        assert_eq!(docs[1].object["spec"]["containers"][0]["image"], "busybox");
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - containerPort: eighty\n";
        let e = parse("f.yaml", text).unwrap_err();
        assert_eq!(e.source_name, "f.yaml");
        assert_eq!(e.line, Some(15), "{e}");
        let e = parse("g.yaml", "apiVersion: v1\nkind: Widget\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("no matches for kind \"Widget\" in version \"v1\""),
            "{e}"
        );
        let e = parse("h.yaml", "a: [1\n").unwrap_err();
        assert!(e.to_string().starts_with("h.yaml:"), "{e}");
    }

    #[test]
    fn each_document_is_read_on_its_own() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
        let each = parse_each("f.yaml", text);
        assert_eq!(each.len(), 3);
        assert_eq!(each[0].as_ref().unwrap().object["metadata"]["name"], "a");
        let e = each[1].as_ref().unwrap_err();
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("Widget"), "{e}");
        assert_eq!(each[2].as_ref().unwrap().object["metadata"]["name"], "b");
        assert!(parse("f.yaml", text).is_err());
    }
}
