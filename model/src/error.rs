//! Errors from loading resources: each names the input, the document, the
//! field path and the problem.

use std::fmt;

/// What is wrong with a document or a field.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("input is not UTF-8: invalid byte at offset {offset}")]
    NotUtf8 {
        offset: usize,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error(
        "input is {size} bytes; the limit is {limit} bytes (Kubernetes itself refuses objects over 1.5 MiB)"
    )]
    TooLarge { size: u64, limit: u64 },
    // The parser's message is this problem's text, so the parser's error
    // is not also its source: a printed chain says it once.
    #[error("YAML syntax error: {error}")]
    Syntax { error: serde_yaml_ng::Error },
    #[error("JSON syntax error: {error}")]
    JsonSyntax { error: serde_json::Error },
    #[error("a resource must be a mapping with apiVersion, kind and metadata, found {found}")]
    NotAMapping { found: &'static str },
    #[error("missing `{field}`")]
    MissingType { field: &'static str },
    #[error("unknown kind {kind:?} for apiVersion {api_version:?}; Manul accepts: {known}")]
    UnknownKind {
        api_version: String,
        kind: String,
        known: String,
    },
    #[error(
        "unknown field `{field}` (a misspelt field could change what a policy allows, so it is an error)"
    )]
    UnknownField { field: String },
    #[error("{message}")]
    Decode { message: String },
    #[error("{message}")]
    Invalid { message: String },
    #[error(
        "{listed} problems listed; loading stopped there and any further problems are not listed"
    )]
    TooManyProblems { listed: usize },
    #[error("duplicate resource {key}: document {first} of this input already defines it")]
    Duplicate { key: String, first: usize },
}

/// One problem found while loading, with where it was found.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// The file name, or `-` for standard input.
    pub origin: String,
    /// 1-based index of the document in the input, when known.
    pub document: Option<usize>,
    /// `KIND NAMESPACE/NAME` of the resource, when known.
    pub resource: Option<String>,
    /// Path of the field inside the document, such as
    /// `spec.ingress[0].source.selector`.
    pub path: Option<String>,
    /// What is wrong; the message includes it, so it is not a source.
    pub problem: Problem,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(doc) = self.document {
            write!(f, ": document {doc}")?;
            if let Some(res) = &self.resource {
                write!(f, " ({res})")?;
            }
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// A problem with one field, found by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// A field of a loaded resource that Manul accepts (so that Calico's
/// documents load unchanged) but does not act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    /// The file name, or `-` for standard input.
    pub origin: String,
    /// 1-based index of the document in the input.
    pub document: usize,
    /// `KIND NAMESPACE/NAME` of the resource.
    pub resource: String,
    /// Path of the field, such as `spec.ipipMTU`.
    pub field: String,
    /// Why Manul does not act on it.
    pub reason: &'static str,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} ({}): {} is accepted but not acted on by Manul ({})",
            self.origin, self.document, self.resource, self.field, self.reason
        )
    }
}

/// `error` and its sources, joined with `: ` (a source whose text the
/// message already holds is not repeated): the one way Manul prints an
/// error with its causes (its home is `manul-error`, which every crate can
/// reach).
pub use manul_error::chain;
