//! Kubernetes label selectors.
//!
//! Parsing follows the grammar and error texts of
//! `k8s.io/apimachinery/pkg/labels/selector.go`, and construction from a
//! `LabelSelector` follows `metav1.LabelSelectorAsSelector`, so a selector
//! accepted (or rejected) by an API server behaves the same here. The
//! set-based numeric operators `>` and `<` (node-affinity only) are not
//! supported.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::names::{is_qualified_name, is_valid_label_value};

/// Why a selector could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text does not follow the selector grammar. `found` is the
    /// offending token, quoted, or `end of string`; `position` is its byte
    /// offset in the input.
    #[error("unable to parse requirement: found {found}, expected: {expected} (at position {position})")]
    Syntax {
        /// Byte offset of the offending token.
        position: usize,
        /// The offending token as shown to the user.
        found: String,
        /// What the grammar allows at that point.
        expected: &'static str,
    },
    /// A key is not a qualified name; `reason` holds Kubernetes' texts.
    #[error("invalid label key \"{key}\": {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Kubernetes' validation messages, joined by "; ".
        reason: String,
    },
    /// A value is not a valid label value; `reason` holds Kubernetes' texts.
    #[error("invalid label value \"{value}\" for key \"{key}\": {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The rejected value.
        value: String,
        /// Kubernetes' validation messages, joined by "; ".
        reason: String,
    },
    /// The operator was given the wrong number of values.
    #[error("invalid values for key \"{key}\" with operator '{operator}': {reason}")]
    ValueCount {
        /// The key of the offending requirement.
        key: String,
        /// The operator whose arity was violated.
        operator: Operator,
        /// Kubernetes' explanation of the arity rule.
        reason: &'static str,
    },
    /// A match expression named an operator other than In, NotIn, Exists or
    /// DoesNotExist.
    #[error("\"{0}\" is not a valid label selector operator (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator(String),
}

/// How a requirement relates a label's value to its value list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `k=v`: the label is present and equals the single value.
    Equals,
    /// `k==v`: same meaning as [`Operator::Equals`], kept so text round-trips.
    DoubleEquals,
    /// `k!=v`: the label is absent or differs from the single value.
    NotEquals,
    /// `k in (a,b)`: the label is present and equals one of the values.
    In,
    /// `k notin (a,b)`: the label is absent or equals none of the values.
    NotIn,
    /// `k`: the label is present, whatever its value.
    Exists,
    /// `!k`: the label is absent.
    DoesNotExist,
}

impl Operator {
    /// The operator as Kubernetes' `selection.Operator` spells it
    /// (`=`, `==`, `!=`, `in`, `notin`, `exists`, `!`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
        }
    }
}

impl fmt::Display for Operator {
    /// Writes [`Operator::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One condition on one label key. Requirements held by a [`Selector`] have
/// been validated and their values sorted and de-duplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key; a qualified name.
    pub key: String,
    /// How the label's value is compared with `values`.
    pub operator: Operator,
    /// The values compared against; empty for Exists and DoesNotExist.
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement, with Kubernetes semantics:
    /// `!=` and `notin` also match when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => value.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    /// Applies Kubernetes' `NewRequirement` rules and normalises the values
    /// (sorted, de-duplicated) so equal requirements print identically.
    fn validated(mut self) -> Result<Requirement, SelectorError> {
        validate_key(&self.key)?;
        let arity_error = match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if self.values.len() != 1 => {
                Some("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            _ => None,
        };
        if let Some(reason) = arity_error {
            return Err(SelectorError::ValueCount {
                key: self.key,
                operator: self.operator,
                reason,
            });
        }
        for value in &self.values {
            let errs = is_valid_label_value(value);
            if !errs.is_empty() {
                return Err(SelectorError::InvalidValue {
                    key: self.key.clone(),
                    value: value.clone(),
                    reason: errs.join("; "),
                });
            }
        }
        self.values.sort();
        self.values.dedup();
        Ok(self)
    }
}

impl fmt::Display for Requirement {
    /// Writes the requirement in selector syntax, e.g. `a in (x,y)` or `!b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                write!(f, "{}{}{}", self.key, self.operator, values)
            }
            Operator::In | Operator::NotIn => {
                write!(f, "{} {} ({})", self.key, self.operator, values)
            }
        }
    }
}

/// A conjunction of label requirements. The empty selector matches
/// everything. Requirements are kept sorted by key (stable), as Kubernetes
/// does, so the string form is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses Kubernetes selector syntax: comma-separated `k=v`, `k==v`,
    /// `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k`, with free
    /// whitespace. The empty (or all-blank) string selects everything. As in
    /// Kubernetes, `k=` means "equals the empty value" and `k in ()` means
    /// `k in ("")`. Keys and values are validated; errors name the offending
    /// token and its byte position, or the invalid key or value.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let tokens = lex(input);
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
        };
        let requirements = parser.parse()?;
        Ok(Selector::sorted(requirements))
    }

    /// Builds a selector from requirements, validating each by Kubernetes'
    /// `NewRequirement` rules (valid key and values; `in`/`notin` need at
    /// least one value, `=`/`==`/`!=` exactly one, exists/does-not-exist
    /// none).
    pub fn from_requirements(requirements: Vec<Requirement>) -> Result<Selector, SelectorError> {
        let requirements = requirements
            .into_iter()
            .map(Requirement::validated)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Selector::sorted(requirements))
    }

    /// Builds a selector from a `metav1.LabelSelector`'s `matchLabels` and
    /// `matchExpressions` (`(key, operator, values)` with operator one of
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`), following
    /// `LabelSelectorAsSelector`. Both empty gives the match-everything
    /// selector; an unknown operator is an error naming it.
    pub fn from_match(
        match_labels: &BTreeMap<String, String>,
        match_expressions: &[(String, String, Vec<String>)],
    ) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::with_capacity(match_labels.len() + match_expressions.len());
        for (key, value) in match_labels {
            requirements.push(Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: vec![value.clone()],
            });
        }
        for (key, operator, values) in match_expressions {
            let operator = match operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::UnknownOperator(other.to_string())),
            };
            requirements.push(Requirement {
                key: key.clone(),
                operator,
                values: values.clone(),
            });
        }
        Selector::from_requirements(requirements)
    }

    /// Whether `labels` satisfy every requirement. The empty selector
    /// matches any label set.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no requirements and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The validated requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    fn sorted(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }
}

impl fmt::Display for Selector {
    /// Writes the canonical form, e.g. `a=b,c!=d,e in (x,y),f,!g`, which
    /// parses back to an equal selector. The empty selector writes "".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    /// Same as [`Selector::parse`].
    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        Selector::parse(s)
    }
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let errs = is_qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidKey {
            key: key.to_string(),
            reason: errs.join("; "),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    // Words, including `in`/`notin`: whether they are keywords depends on
    // where they appear, so the parser decides.
    Ident(&'a str),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    OpenPar,
    ClosePar,
    Comma,
    // Lexed only so `a>1` fails as an unsupported operator, as in Kubernetes.
    Greater,
    Less,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok<'a>,
    pos: usize,
}

impl Token<'_> {
    fn describe(&self) -> String {
        let text = match self.tok {
            Tok::Ident(s) => s,
            Tok::Not => "!",
            Tok::Equals => "=",
            Tok::DoubleEquals => "==",
            Tok::NotEquals => "!=",
            Tok::OpenPar => "(",
            Tok::ClosePar => ")",
            Tok::Comma => ",",
            Tok::Greater => ">",
            Tok::Less => "<",
            Tok::End => return "end of string".to_string(),
        };
        format!("'{text}'")
    }

    fn error(&self, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            position: self.pos,
            found: self.describe(),
            expected,
        }
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the input into tokens; always ends with `Tok::End`. Every boundary
/// is next to an ASCII byte, so slicing the `&str` cannot split a character.
fn lex(input: &str) -> Vec<Token<'_>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_whitespace(b) {
            i += 1;
            continue;
        }
        let start = i;
        let tok = if is_special(b) {
            // Longest match, as Kubernetes' scanner does: only `==` and `!=`
            // are two bytes long.
            match (b, bytes.get(i + 1)) {
                (b'=', Some(b'=')) | (b'!', Some(b'=')) => {
                    i += 2;
                    if b == b'=' {
                        Tok::DoubleEquals
                    } else {
                        Tok::NotEquals
                    }
                }
                _ => {
                    i += 1;
                    match b {
                        b'=' => Tok::Equals,
                        b'!' => Tok::Not,
                        b'(' => Tok::OpenPar,
                        b')' => Tok::ClosePar,
                        b',' => Tok::Comma,
                        b'>' => Tok::Greater,
                        _ => Tok::Less,
                    }
                }
            }
        } else {
            while i < bytes.len() && !is_special(bytes[i]) && !is_whitespace(bytes[i]) {
                i += 1;
            }
            Tok::Ident(&input[start..i])
        };
        tokens.push(Token { tok, pos: start });
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: input.len(),
    });
    tokens
}

/// Recursive-descent parser mirroring the functions of Kubernetes' `Parser`
/// one for one, so the accepted language and error points match.
struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    pos: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Token<'a> {
        self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        if token.tok != Tok::End {
            self.pos += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let token = self.peek();
            match token.tok {
                Tok::Ident(_) | Tok::Not => {
                    requirements.push(self.parse_requirement()?);
                    let after = self.next();
                    match after.tok {
                        Tok::End => return Ok(requirements),
                        Tok::Comma => {
                            let following = self.peek();
                            if !matches!(following.tok, Tok::Ident(_) | Tok::Not) {
                                return Err(following.error("identifier after ','"));
                            }
                        }
                        _ => return Err(after.error("',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(requirements),
                _ => return Err(token.error("!, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut operator = None;
        let mut token = self.next();
        if token.tok == Tok::Not {
            operator = Some(Operator::DoesNotExist);
            token = self.next();
        }
        let Tok::Ident(key) = token.tok else {
            return Err(token.error("identifier"));
        };
        validate_key(key)?;
        if matches!(self.peek().tok, Tok::End | Tok::Comma) {
            operator.get_or_insert(Operator::Exists);
        }
        // `!k` ends here even if an operator follows; the caller then
        // rejects that operator, as Kubernetes does.
        if let Some(operator) = operator {
            return Requirement {
                key: key.to_string(),
                operator,
                values: Vec::new(),
            }
            .validated();
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => vec![self.parse_exact_value()?],
        };
        Requirement {
            key: key.to_string(),
            operator,
            values,
        }
        .validated()
    }

    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        let token = self.next();
        Ok(match token.tok {
            Tok::Ident("in") => Operator::In,
            Tok::Ident("notin") => Operator::NotIn,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::NotEquals => Operator::NotEquals,
            _ => return Err(token.error("in, notin, =, ==, !=")),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let token = self.next();
        if token.tok != Tok::OpenPar {
            return Err(token.error("'('"));
        }
        let token = self.peek();
        match token.tok {
            Tok::Ident(_) | Tok::Comma => {
                let values = self.parse_identifiers_list()?;
                // The list only returns when it sees ')'.
                self.next();
                Ok(values)
            }
            Tok::ClosePar => {
                self.next();
                Ok(vec![String::new()])
            }
            _ => Err(token.error("',', ')' or identifier")),
        }
    }

    /// Empty slots (`(a,,b)`, `(,a)`, `(a,)`) stand for the empty value, as
    /// in Kubernetes.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values = Vec::new();
        loop {
            let token = self.next();
            match token.tok {
                Tok::Ident(value) => {
                    values.push(value.to_string());
                    let following = self.peek();
                    match following.tok {
                        Tok::Comma => {}
                        Tok::ClosePar => return Ok(values),
                        _ => return Err(following.error("',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek().tok {
                        Tok::ClosePar => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Tok::Comma => values.push(String::new()),
                        _ => {}
                    }
                }
                _ => return Err(token.error("',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek().tok, Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        let token = self.next();
        match token.tok {
            Tok::Ident(value) => Ok(value.to_string()),
            _ => Err(token.error("identifier")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parse_and_match() {
        // (selector, labels, expected match)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("", &[], true),
            ("", &[("a", "b")], true),
            ("  \t ", &[("a", "b")], true),
            ("a=b", &[("a", "b")], true),
            ("a=b", &[("a", "c")], false),
            ("a=b", &[], false),
            ("a==b", &[("a", "b")], true),
            ("a==b", &[("a", "c")], false),
            ("a!=b", &[("a", "c")], true),
            ("a!=b", &[("a", "b")], false),
            ("a!=b", &[], true),
            ("a in (x,y)", &[("a", "y")], true),
            ("a in (x,y)", &[("a", "z")], false),
            ("a in (x,y)", &[], false),
            ("a notin (x,y)", &[("a", "z")], true),
            ("a notin (x,y)", &[("a", "x")], false),
            ("a notin (x,y)", &[], true),
            ("a", &[("a", "")], true),
            ("a", &[("b", "x")], false),
            ("!a", &[("b", "x")], true),
            ("!a", &[("a", "x")], false),
            ("a=", &[("a", "")], true),
            ("a=", &[("a", "x")], false),
            ("a in ()", &[("a", "")], true),
            ("a in (,x)", &[("a", "")], true),
            ("a in (x,,y)", &[("a", "")], true),
            ("a in (x,y,)", &[("a", "")], true),
            ("a in (x,y)", &[("a", "")], false),
            ("a=b,c=d", &[("a", "b"), ("c", "d")], true),
            ("a=b,c=d", &[("a", "b"), ("c", "e")], false),
            ("a=b,c=d", &[("a", "b")], false),
            ("a=b,!c,d in (1,2),e", &[("a", "b"), ("d", "2"), ("e", "")], true),
            ("a=b,!c,d in (1,2),e", &[("a", "b"), ("d", "2")], false),
            (
                "  a  =  b ,\n c != d\t, e in(x , y),!  f ",
                &[("a", "b"), ("e", "x")],
                true,
            ),
            ("a notin(x)", &[("a", "y")], true),
            ("example.com/app=web", &[("example.com/app", "web")], true),
            ("in in (in,notin)", &[("in", "notin")], true),
            ("notin=in", &[("notin", "in")], true),
        ];
        for (text, set, expected) in cases {
            let selector = Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"));
            assert_eq!(selector.matches(&labels(set)), *expected, "{text:?} against {set:?}");
            // The canonical form must parse back to the same selector.
            let reparsed = Selector::parse(&selector.to_string()).unwrap();
            assert_eq!(reparsed, selector, "{text:?} round-trip via {selector}");
        }
    }

    #[test]
    fn canonical_string() {
        let cases = [
            ("", ""),
            ("g,!f, e in (y,x,y) ,c!=d,a=b", "a=b,c!=d,e in (x,y),!f,g"),
            ("a==b", "a==b"),
            ("a notin ( z , y )", "a notin (y,z)"),
            ("a in ()", "a in ()"),
            ("a=", "a="),
        ];
        for (input, expected) in cases {
            assert_eq!(Selector::parse(input).unwrap().to_string(), expected);
        }
        assert!(Selector::parse("").unwrap().is_empty());
        assert!(!Selector::parse("a").unwrap().is_empty());
        assert_eq!("a=b".parse::<Selector>().unwrap().requirements().len(), 1);
    }

    #[test]
    fn parse_errors() {
        // (selector, fragments the error message must contain)
        let cases: &[(&str, &[&str])] = &[
            ("(", &["found '('", "expected: !, identifier", "position 0"]),
            ("a=b,", &["found end of string", "identifier after ','", "position 4"]),
            (",a", &["found ','", "position 0"]),
            ("a=b,,c", &["found ','", "identifier after ','", "position 4"]),
            ("a b", &["found 'b'", "in, notin, =, ==, !=", "position 2"]),
            ("a>1", &["found '>'", "in, notin", "position 1"]),
            ("a=b c", &["found 'c'", "',' or 'end of string'", "position 4"]),
            ("a=b)", &["found ')'", "',' or 'end of string'", "position 3"]),
            ("!a=b", &["found '='", "',' or 'end of string'", "position 2"]),
            ("!", &["found end of string", "expected: identifier", "position 1"]),
            ("!=a", &["found '!='", "position 0"]),
            ("a in x", &["found 'x'", "expected: '('", "position 5"]),
            ("a in", &["found end of string", "expected: '('"]),
            ("a in (x", &["found end of string", "',' or ')'", "position 7"]),
            ("a in (x y)", &["found 'y'", "',' or ')'", "position 8"]),
            ("a in (x,=)", &["found '='", "',', or identifier", "position 8"]),
            ("a in (=)", &["found '='", "',', ')' or identifier", "position 6"]),
            ("a=(b)", &["found '('", "expected: identifier", "position 2"]),
            ("a===b", &["found '='", "expected: identifier", "position 3"]),
            ("a/b/c=d", &["invalid label key \"a/b/c\"", "a qualified name"]),
            ("-a=b", &["invalid label key \"-a\"", "name part must consist of"]),
            ("Bad_Prefix.com/a", &["invalid label key", "prefix part"]),
            (
                "a=-b",
                &["invalid label value \"-b\" for key \"a\"", "a valid label must"],
            ),
            ("a in (x,-y)", &["invalid label value \"-y\"", "key \"a\""]),
            ("é=b", &["invalid label key \"é\""]),
        ];
        for (text, fragments) in cases {
            let err = match Selector::parse(text) {
                Ok(s) => panic!("{text:?} parsed unexpectedly as {s}"),
                Err(e) => e.to_string(),
            };
            for fragment in *fragments {
                assert!(err.contains(fragment), "{text:?}: {err:?} lacks {fragment:?}");
            }
        }
        let long_value = format!("a={}", "v".repeat(64));
        let err = Selector::parse(&long_value).unwrap_err().to_string();
        assert!(err.contains("must be no more than 63 characters"), "{err}");
    }

    #[test]
    fn from_requirements_validates_arity() {
        let req = |operator, values: &[&str]| Requirement {
            key: "a".to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let ok =
            Selector::from_requirements(vec![req(Operator::In, &["y", "x", "y"]), req(Operator::Exists, &[])]).unwrap();
        assert_eq!(ok.requirements()[0].values, vec!["x", "y"]);
        let cases = [
            (req(Operator::In, &[]), "values set can't be empty"),
            (req(Operator::NotIn, &[]), "values set can't be empty"),
            (req(Operator::Equals, &[]), "requires one single value"),
            (req(Operator::NotEquals, &["x", "y"]), "requires one single value"),
            (req(Operator::Exists, &["x"]), "must be empty for exists"),
            (req(Operator::DoesNotExist, &["x"]), "must be empty for exists"),
        ];
        for (requirement, fragment) in cases {
            let operator = requirement.operator;
            let err = Selector::from_requirements(vec![requirement]).unwrap_err().to_string();
            assert!(err.contains(fragment), "{operator:?}: {err}");
            assert!(err.contains(&format!("'{operator}'")), "{err}");
        }
    }

    #[test]
    fn from_match() {
        let expr = |key: &str, op: &str, values: &[&str]| {
            (
                key.to_string(),
                op.to_string(),
                values.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            )
        };

        let everything = Selector::from_match(&BTreeMap::new(), &[]).unwrap();
        assert!(everything.is_empty());
        assert!(everything.matches(&labels(&[("x", "y")])));

        let selector = Selector::from_match(
            &labels(&[("app", "web"), ("tier", "front")]),
            &[
                expr("env", "In", &["prod", "staging"]),
                expr("track", "NotIn", &["canary"]),
                expr("team", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ],
        )
        .unwrap();
        assert_eq!(
            selector.to_string(),
            "app=web,env in (prod,staging),!legacy,team,tier=front,track notin (canary)"
        );
        let good = [("app", "web"), ("tier", "front"), ("env", "prod"), ("team", "a")];
        assert!(selector.matches(&labels(&good)));
        let mut bad = labels(&good);
        bad.insert("track".into(), "canary".into());
        assert!(!selector.matches(&bad));
        let mut bad = labels(&good);
        bad.insert("legacy".into(), "".into());
        assert!(!selector.matches(&bad));
        let mut bad = labels(&good);
        bad.insert("env".into(), "dev".into());
        assert!(!selector.matches(&bad));

        let err = |labels_in: &[(&str, &str)], exprs: &[(String, String, Vec<String>)]| {
            Selector::from_match(&labels(labels_in), exprs).unwrap_err().to_string()
        };
        let msg = err(&[], &[expr("a", "Equals", &["x"])]);
        assert!(
            msg.contains("\"Equals\" is not a valid label selector operator"),
            "{msg}"
        );
        let msg = err(&[], &[expr("a", "in", &["x"])]);
        assert!(msg.contains("\"in\""), "{msg}");
        let msg = err(&[], &[expr("a", "In", &[])]);
        assert!(msg.contains("values set can't be empty"), "{msg}");
        let msg = err(&[], &[expr("a", "NotIn", &[])]);
        assert!(msg.contains("values set can't be empty"), "{msg}");
        let msg = err(&[], &[expr("a", "Exists", &["x"])]);
        assert!(msg.contains("must be empty for exists"), "{msg}");
        let msg = err(&[], &[expr("a", "DoesNotExist", &["x"])]);
        assert!(msg.contains("must be empty for exists"), "{msg}");
        let msg = err(&[("bad key", "v")], &[]);
        assert!(msg.contains("invalid label key \"bad key\""), "{msg}");
        let msg = err(&[("k", "bad value")], &[]);
        assert!(msg.contains("invalid label value \"bad value\""), "{msg}");
    }
}
