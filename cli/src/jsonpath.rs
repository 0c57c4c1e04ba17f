//! kubectl's JSONPath templates (`-o jsonpath=…`, `-o custom-columns=…`):
//! text with `{…}` actions, where an action is a path (`.items[*].metadata.name`,
//! `['a.b']`, `[0]`, `[1:3]`, `..name`, `[?(@.type=="Ready")]`), a string
//! literal (`{"\n"}`), or `range PATH` … `end`. Several results of one path
//! print separated by spaces; a missing key prints nothing, as kubectl
//! does with its default `--allow-missing-template-keys`.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name` or `['name']`
    Key(String),
    /// `.*` or `[*]`
    All,
    /// `[n]` (negative from the end)
    Index(i64),
    /// `[a:b]`
    Slice(Option<i64>, Option<i64>),
    /// `..name`
    Descend(String),
    /// `[?(@.path op literal)]` or `[?(@.path)]`
    Filter(Vec<Step>, Option<(String, Value)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Node>);

impl Template {
    /// Parses kubectl's template syntax.
    ///
    /// # Errors
    /// Unbalanced braces, `range` without `end`, or a path it cannot read,
    /// quoting the part.
    pub fn parse(text: &str) -> Result<Self> {
        let mut actions = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                actions.push(Action::Text(rest[..open].to_string()));
            }
            let body = &rest[open + 1..];
            let close = closing_brace(body).ok_or_else(|| anyhow!("unclosed action in template {text:?}"))?;
            actions.push(Action::parse(body[..close].trim())?);
            rest = &body[close + 1..];
        }
        if !rest.is_empty() {
            actions.push(Action::Text(rest.to_string()));
        }
        let mut it = actions.into_iter();
        let nodes = nest(&mut it, false)?;
        Ok(Self(nodes))
    }

    /// A path given without braces (a custom column's).
    ///
    /// # Errors
    /// As [`Template::parse`].
    pub fn path(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.starts_with('{') {
            Self::parse(text)
        } else {
            Self::parse(&format!("{{{text}}}"))
        }
    }

    /// The template applied to `data`.
    pub fn render(&self, data: &Value) -> String {
        let mut out = String::new();
        render(&self.0, data, &mut out);
        out
    }

    /// The values the template's single path selects (for custom columns).
    pub fn values(&self, data: &Value) -> Vec<Value> {
        match self.0.as_slice() {
            [Node::Path(steps)] => select(data, steps),
            _ => vec![Value::String(self.render(data))],
        }
    }
}

enum Action {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>),
    End,
}

impl Action {
    fn parse(body: &str) -> Result<Self> {
        if body == "end" {
            return Ok(Self::End);
        }
        if let Some(path) = body.strip_prefix("range ") {
            return Ok(Self::Range(parse_path(path.trim())?));
        }
        if body.starts_with('"') {
            let text: String = serde_json::from_str(body).map_err(|e| anyhow!("string {body}: {e}"))?;
            return Ok(Self::Text(text));
        }
        Ok(Self::Path(parse_path(body)?))
    }
}

/// The index of the `}` that closes an action, skipping quoted text.
fn closing_brace(body: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => return Some(i),
            _ => {}
        }
        escaped = false;
    }
    None
}

fn nest(it: &mut impl Iterator<Item = Action>, in_range: bool) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    while let Some(a) = it.next() {
        match a {
            Action::Text(t) => nodes.push(Node::Text(t)),
            Action::Path(p) => nodes.push(Node::Path(p)),
            Action::Range(p) => {
                let body = nest(it, true)?;
                nodes.push(Node::Range(p, body));
            }
            Action::End if in_range => return Ok(nodes),
            Action::End => bail!("{{end}} without {{range}}"),
        }
    }
    if in_range {
        bail!("{{range}} without {{end}}");
    }
    Ok(nodes)
}

fn parse_path(text: &str) -> Result<Vec<Step>> {
    let src = text;
    let rooted = text
        .strip_prefix('$')
        .or_else(|| text.strip_prefix('@'))
        .unwrap_or(text);
    // A path may start with a bare key (`metadata.name`).
    let dotted;
    let mut s = if rooted.is_empty() || rooted.starts_with(['.', '[']) {
        rooted
    } else {
        dotted = format!(".{rooted}");
        dotted.as_str()
    };
    let mut steps = Vec::new();
    let bad = |why: &str| anyhow!("unrecognized path {src:?}: {why}");
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix("..") {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Descend(rest[..end].to_string()));
            s = &rest[end..];
        } else if let Some(rest) = s.strip_prefix('.') {
            // A key runs to the next unescaped `.` or `[`; `\.` is a dot in it.
            let mut key = String::new();
            let mut chars = rest.char_indices().peekable();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' if chars.peek().is_some_and(|(_, n)| *n == '.') => {
                        key.push('.');
                        chars.next();
                    }
                    '.' | '[' => {
                        end = i;
                        break;
                    }
                    c => key.push(c),
                }
            }
            if key == "*" {
                steps.push(Step::All);
            } else if !key.is_empty() {
                steps.push(Step::Key(key));
            }
            s = &rest[end..];
        } else if let Some(rest) = s.strip_prefix('[') {
            let close = closing_bracket(rest).ok_or_else(|| bad("unclosed ["))?;
            let inner = rest[..close].trim();
            s = &rest[close + 1..];
            steps.push(parse_bracket(inner).map_err(|e| bad(&e.to_string()))?);
        } else {
            return Err(bad("expected . or ["));
        }
    }
    Ok(steps)
}

fn closing_bracket(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<Step> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Some(q) = inner.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(Step::Key(q.to_string()));
    }
    if let Some(q) = inner.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return Ok(Step::Key(q.to_string()));
    }
    if let Some(filter) = inner.strip_prefix('?') {
        let f = filter.trim();
        let f = f
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(f)
            .trim();
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if let Some((lhs, rhs)) = f.split_once(op) {
                let path = parse_path(lhs.trim())?;
                let rhs = rhs.trim();
                let literal = if let Some(q) = rhs.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
                    Value::String(q.to_string())
                } else {
                    serde_json::from_str(rhs).map_err(|_| anyhow!("filter value {rhs:?} is not a literal"))?
                };
                return Ok(Step::Filter(path, Some((op.to_string(), literal))));
            }
        }
        return Ok(Step::Filter(parse_path(f)?, None));
    }
    if let Some((a, b)) = inner.split_once(':') {
        let num = |t: &str| -> Result<Option<i64>> {
            let t = t.trim();
            if t.is_empty() {
                Ok(None)
            } else {
                Ok(Some(t.parse().map_err(|_| anyhow!("{t:?} is not a number"))?))
            }
        };
        let b = b.split(':').next().unwrap_or("");
        return Ok(Step::Slice(num(a)?, num(b)?));
    }
    inner
        .parse::<i64>()
        .map(Step::Index)
        .map_err(|_| anyhow!("[{inner}] is neither an index, a slice, a filter nor a quoted key"))
}

fn select(data: &Value, steps: &[Step]) -> Vec<Value> {
    let mut current = vec![data.clone()];
    for step in steps {
        let mut next = Vec::new();
        for v in &current {
            apply(v, step, &mut next);
        }
        current = next;
    }
    current
}

fn apply(v: &Value, step: &Step, out: &mut Vec<Value>) {
    match step {
        Step::Key(k) => {
            if let Some(x) = v.get(k) {
                out.push(x.clone());
            }
        }
        Step::All => match v {
            Value::Array(a) => out.extend(a.iter().cloned()),
            Value::Object(m) => out.extend(m.values().cloned()),
            _ => {}
        },
        Step::Index(i) => {
            if let Value::Array(a) = v {
                let len = a.len() as i64;
                let at = if *i < 0 { len + i } else { *i };
                if (0..len).contains(&at) {
                    out.push(a[at as usize].clone());
                }
            }
        }
        Step::Slice(a, b) => {
            if let Value::Array(arr) = v {
                let len = arr.len() as i64;
                let fix = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                let (from, to) = (fix(a.unwrap_or(0)), fix(b.unwrap_or(len)));
                if from < to {
                    out.extend(arr[from as usize..to as usize].iter().cloned());
                }
            }
        }
        Step::Descend(k) => descend(v, k, out),
        Step::Filter(path, test) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let found = select(item, path);
                let keep = match test {
                    None => found.iter().any(|f| !f.is_null() && *f != Value::Bool(false)),
                    Some((op, literal)) => found.iter().any(|f| compare(f, op, literal)),
                };
                if keep {
                    out.push(item.clone());
                }
            }
        }
    }
}

fn descend(v: &Value, key: &str, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(key) {
                out.push(x.clone());
            }
            for x in m.values() {
                descend(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| descend(x, key, out)),
        _ => {}
    }
}

fn compare(a: &Value, op: &str, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return match op {
            "==" => x == y,
            "!=" => x != y,
            "<" => x < y,
            ">" => x > y,
            "<=" => x <= y,
            ">=" => x >= y,
            _ => false,
        };
    }
    match op {
        "==" => a == b,
        "!=" => a != b,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => match op {
                "<" => x < y,
                ">" => x > y,
                "<=" => x <= y,
                ">=" => x >= y,
                _ => false,
            },
            _ => false,
        },
    }
}

/// A value as kubectl prints it: strings bare, the rest as compact JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render(nodes: &[Node], data: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Path(steps) => {
                let found: Vec<String> = select(data, steps).iter().map(text).collect();
                out.push_str(&found.join(" "));
            }
            Node::Range(steps, body) => {
                for item in select(data, steps) {
                    render(body, &item, out);
                }
            }
        }
    }
}

/// `-o custom-columns=NAME:.metadata.name,…`: the header and a row per
/// object (several values joined by `,`, none as `<none>`).
///
/// # Errors
/// A column without `HEADER:PATH`, or a path that does not parse.
pub fn custom_columns(spec: &str, items: &[Value]) -> Result<Vec<Vec<String>>> {
    let mut columns = Vec::new();
    for col in spec.split(',').filter(|c| !c.is_empty()) {
        let (name, path) = col
            .split_once(':')
            .ok_or_else(|| anyhow!("custom-columns format: expected HEADER:PATH, got {col:?}"))?;
        columns.push((name.to_string(), Template::path(path)?));
    }
    let mut rows = vec![columns.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()];
    for item in items {
        rows.push(
            columns
                .iter()
                .map(|(_, t)| {
                    let values: Vec<String> = t.values(item).iter().map(text).collect();
                    if values.is_empty() {
                        "<none>".to_string()
                    } else {
                        values.join(",")
                    }
                })
                .collect(),
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "restarts": 2}},
            {"metadata": {"name": "b"}, "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}], "restarts": 0}}
        ]})
    }

    fn render(t: &str) -> String {
        Template::parse(t).unwrap().render(&list())
    }

    #[test]
    fn kubectl_templates() {
        assert_eq!(render("{.items[*].metadata.name}"), "a b");
        assert_eq!(render("{.items[0].metadata.name}"), "a");
        assert_eq!(render("{.items[-1].metadata.name}"), "b");
        assert_eq!(render("{.items[0:1].metadata.name}"), "a");
        assert_eq!(
            render("{range .items[*]}{.metadata.name}{\"\\t\"}{.status.phase}{\"\\n\"}{end}"),
            "a\tRunning\nb\tPending\n"
        );
        assert_eq!(render("{.items[?(@.status.phase==\"Pending\")].metadata.name}"), "b");
        assert_eq!(render("{.items[?(@.status.restarts>1)].metadata.name}"), "a");
        assert_eq!(
            render("{.items[*].status.conditions[?(@.type=='Ready')].status}"),
            "True False"
        );
        assert_eq!(render("{..phase}"), "Running Pending");
        assert_eq!(render("{.items[0].metadata.labels.app\\.kubernetes\\.io/name}"), "x");
        assert_eq!(render("{.items[0].metadata.labels['app.kubernetes.io/name']}"), "x");
        assert_eq!(render("names: {.items[*].metadata.name}!"), "names: a b!");
        assert_eq!(render("{.items[0].missing}"), "", "a missing key prints nothing");
        assert_eq!(
            render("{.items[0].status.conditions[0]}"),
            r#"{"status":"True","type":"Ready"}"#
        );
        assert!(Template::parse("{.items[*]").is_err());
        assert!(Template::parse("{range .items[*]}{.x}").is_err());
        assert!(Template::parse("{end}").is_err());
    }

    #[test]
    fn custom_columns_as_kubectl_prints_them() {
        let items = list()["items"].as_array().unwrap().clone();
        let rows = custom_columns("NAME:.metadata.name,READY:.status.conditions[*].status,X:.nope", &items).unwrap();
        assert_eq!(rows[0], ["NAME", "READY", "X"]);
        assert_eq!(rows[1], ["a", "True", "<none>"]);
        assert!(custom_columns("NAME", &items).is_err());
    }
}
