//! Field errors in Kubernetes' shape: a path into the object plus what is
//! wrong there (`spec.containers[0].image: Required value`).

use std::fmt;

/// What is wrong with one field, named as Kubernetes' `field.ErrorType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// The field must be set.
    Required,
    /// The value is not acceptable; the detail says why.
    Invalid,
    /// The value is not one of an enumerated set; the detail lists the set.
    NotSupported,
    /// The value may not be set or changed here.
    Forbidden,
    /// The value repeats one that must be unique.
    Duplicate,
    /// The value refers to something that does not exist.
    NotFound,
    /// The value is longer than allowed (the value itself is not shown).
    TooLong,
}

/// One problem at one field path; `Display` matches `kubectl`'s wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem.
    pub kind: FieldErrorKind,
    /// Dotted path with indices, e.g. `spec.containers[0].image`.
    pub path: String,
    /// The offending value, when there is one to show.
    pub value: Option<String>,
    /// Why the value is wrong.
    pub detail: String,
}

impl FieldError {
    /// A `Required value` error at `path`.
    pub fn required(path: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Required,
            path: path.into(),
            value: None,
            detail: String::new(),
        }
    }
    /// A `Required value` error with a detail (`at least 1 access mode is required`).
    pub fn required_detail(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            ..Self::required(path)
        }
    }
    /// An `Invalid value` error at `path` for `value`, with the reason.
    pub fn invalid(path: impl Into<String>, value: impl fmt::Display, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Invalid,
            path: path.into(),
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }
    /// An `Unsupported value` error listing the supported values.
    pub fn not_supported(path: impl Into<String>, value: impl fmt::Display, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            kind: FieldErrorKind::NotSupported,
            path: path.into(),
            value: Some(value.to_string()),
            detail: format!("supported values: {list}"),
        }
    }
    /// A `Forbidden` error with its reason.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Forbidden,
            path: path.into(),
            value: None,
            detail: detail.into(),
        }
    }
    /// A `Duplicate value` error.
    pub fn duplicate(path: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            kind: FieldErrorKind::Duplicate,
            path: path.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }
    /// A `Not found` error: the value names something that does not exist.
    pub fn not_found(path: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            kind: FieldErrorKind::NotFound,
            path: path.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }
    /// A `Too long` error: at most `max` bytes are allowed.
    pub fn too_long(path: impl Into<String>, max: usize) -> Self {
        Self {
            kind: FieldErrorKind::TooLong,
            path: path.into(),
            value: None,
            detail: format!("may not be more than {max} bytes"),
        }
    }
    /// The Kubernetes `reason` string of this kind of error (`FieldValueRequired` …).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::TooLong => "Too long",
        };
        write!(f, "{}: {head}", self.path)?;
        if let Some(v) = &self.value {
            write!(f, ": \"{v}\"")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// All problems found in one object; empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Records one problem.
    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok(())` when empty, the errors otherwise.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for FieldErrors {
    /// One error plain, several in brackets, as Kubernetes' aggregate prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        if parts.len() == 1 {
            f.write_str(&parts[0])
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

impl std::error::Error for FieldErrors {}
