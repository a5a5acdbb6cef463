//! The Calico selector language.
//!
//! A [`Selector`] picks label sets (of workload endpoints, host endpoints,
//! namespaces, network sets, ...) with the syntax and semantics of Calico's
//! `projectcalico.org/v3` selectors:
//!
//! | Expression                | Matches when                                            |
//! |---------------------------|---------------------------------------------------------|
//! | `a == "v"`                | label `a` is present and equals `v`                     |
//! | `a != "v"`                | label `a` is absent or differs from `v`                 |
//! | `a in {"v1", "v2"}`       | label `a` is present and one of the members             |
//! | `a not in {"v1", "v2"}`   | label `a` is absent or none of the members (also `notin`) |
//! | `has(a)` / `!has(a)`      | label `a` is present / absent                           |
//! | `a contains "s"`          | label `a` is present and contains `s`                   |
//! | `a starts with "s"`       | label `a` is present and starts with `s` (also `startswith`) |
//! | `a ends with "s"`         | label `a` is present and ends with `s` (also `endswith`) |
//! | `all()`                   | always                                                  |
//! | `global()`                | the label [`NAMESPACE_LABEL`] (`projectcalico.org/namespace`) is absent, i.e. the labels belong to a non-namespaced resource |
//! | `!x`, `x && y`, `x \|\| y`, `(x)` | negation, conjunction, disjunction, grouping  |
//!
//! `&&` binds tighter than `||`; `!` applies to the term that follows it, so
//! `!a == "b"` means `!(a == "b")`. An empty or all-whitespace selector is
//! `all()`.
//!
//! # Lexical rules
//!
//! * Strings are in single or double quotes and have no escapes: a string
//!   ends at the next matching quote.
//! * Label names are one or more ASCII letters, digits, `_`, `.`, `/` or
//!   `-` (`kubernetes.io/metadata.name`, `node-role.kubernetes.io/worker`).
//! * Keywords (`in`, `not`, `notin`, `has`, `all`, `global`, `contains`,
//!   `starts`, `with`, `startswith`, `ends`, `endswith`) are keywords only
//!   in their grammatical position: `in == "x"` compares the label `in`, and
//!   `has`, `all` and `global` are functions only when followed by `(`.
//! * Whitespace (spaces, tabs, newlines) between tokens is insignificant.
//!
//! # Errors and limits
//!
//! Text that does not parse is a [`SelectorError`] naming the byte offset of
//! the problem and what was expected there; it never silently matches
//! nothing. Selectors longer than [`MAX_SELECTOR_LEN`] bytes, or nesting
//! parentheses and `!` deeper than [`MAX_NESTING_DEPTH`], are rejected, which
//! also bounds the recursion depth of evaluating, printing and dropping a
//! parsed expression.
//!
//! # Canonical form
//!
//! Every selector has a canonical text, its identity: two spellings of one
//! selector compare equal (and so share one IP set). The canonical form
//! uses the spacing `a == "v"`, `a in {"v1", "v2"}`, `has(a)`,
//! `a starts with "s"`; double quotes unless the value contains `"`; sorted,
//! de-duplicated set members; every `&&`/`||` group in parentheses, nested
//! groups of the same operator flattened, operand order kept; and negations
//! folded where an operator has a complement (`!(a == "v")` is `a != "v"`,
//! `!(a in S)` is `a not in S`, `!!x` is `x`), otherwise printed
//! `!(<operand>)`. Re-parsing the canonical text gives the same canonical
//! text.
//!
//! ```
//! use manul_model::selector::Selector;
//! use std::collections::BTreeMap;
//!
//! let s = Selector::parse("app=='api' && !(tier notin {'db','backend','db'})").unwrap();
//! assert_eq!(s.canonical(), r#"(app == "api" && tier in {"backend", "db"})"#);
//! let labels = BTreeMap::from([
//!     ("app".to_owned(), "api".to_owned()),
//!     ("tier".to_owned(), "db".to_owned()),
//! ]);
//! assert!(s.matches(&labels));
//! ```

#[cfg(test)]
mod error_tests;
mod expr;
mod lexer;
mod parser;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use expr::Expr;

/// The longest selector text accepted, in bytes (16 KiB).
pub const MAX_SELECTOR_LEN: usize = 16 * 1024;

/// The deepest nesting of parentheses and `!` accepted.
pub const MAX_NESTING_DEPTH: usize = 128;

/// The label Calico puts on namespaced resources; `global()` matches label
/// sets without it.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";

/// A set of labels a selector can be evaluated against.
pub trait Labels {
    /// The value of label `key`, if present.
    fn get_label(&self, key: &str) -> Option<&str>;
}

impl<T: Labels + ?Sized> Labels for &T {
    fn get_label(&self, key: &str) -> Option<&str> {
        (**self).get_label(key)
    }
}

impl Labels for BTreeMap<String, String> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for BTreeMap<&str, &str> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).copied()
    }
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: BuildHasher> Labels for HashMap<&str, &str, S> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).copied()
    }
}

/// A list of pairs; the first pair with the key wins.
impl Labels for [(String, String)] {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A list of pairs; the first pair with the key wins.
impl Labels for [(&str, &str)] {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl<const N: usize> Labels for [(&str, &str); N] {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.as_slice().get_label(key)
    }
}

impl Labels for Vec<(String, String)> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.as_slice().get_label(key)
    }
}

impl Labels for Vec<(&str, &str)> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.as_slice().get_label(key)
    }
}

/// A parsed selector.
///
/// Equality, ordering and hashing use the [canonical](Selector::canonical)
/// text, so differently written but equivalent spellings are one selector.
/// [`Display`](fmt::Display) prints the canonical text; serde serializes the
/// [source](Selector::source) text (so documents round-trip exactly) and
/// deserializes a string through [`Selector::parse`].
#[derive(Clone, Debug)]
pub struct Selector {
    source: String,
    expr: Expr,
    canonical: String,
}

impl Selector {
    /// Parses selector text. Empty or all-whitespace text is `all()`.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let expr = parser::parse(s).map_err(|e| SelectorError {
            selector: s.to_owned(),
            position: e.position,
            reason: e.reason,
        })?;
        let canonical = expr.to_string();
        Ok(Selector {
            source: s.to_owned(),
            expr,
            canonical,
        })
    }

    /// The `all()` selector, which matches every label set.
    pub fn all() -> Selector {
        Selector {
            source: "all()".to_owned(),
            expr: Expr::All,
            canonical: "all()".to_owned(),
        }
    }

    /// The selector of an expression built in code (a translation of
    /// other selectors): its source text is its canonical text.
    pub fn from_expr(expr: Expr) -> Selector {
        let canonical = expr.to_string();
        Selector {
            source: canonical.clone(),
            expr,
            canonical,
        }
    }

    /// A selector that matches no label set (`!(all())`).
    pub fn none() -> Selector {
        Selector::from_expr(Expr::Not(Box::new(Expr::All)))
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The canonical text: the selector's identity.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The normalised expression tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether this is `all()` (including the empty selector).
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }

    /// Whether the selector matches `labels`. Does not allocate (see
    /// [`Expr::matches`]).
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.matches(labels)
    }

    /// The label names the selector reads, sorted and de-duplicated;
    /// `global()` reads [`NAMESPACE_LABEL`]. A label set that changes none
    /// of these labels cannot change the result.
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        let mut names = Vec::new();
        self.expr.visit_labels(&mut |l| names.push(l));
        names.sort_unstable();
        names.dedup();
        names.into_iter()
    }
}

impl Default for Selector {
    /// `all()`.
    fn default() -> Self {
        Selector::all()
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Selector {}

impl Hash for Selector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Selector {
    fn cmp(&self, other: &Self) -> Ordering {
        self.canonical.cmp(&other.canonical)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A selector that does not parse.
///
/// Displays as e.g.
/// ``invalid selector "app == api": at position 7: expected a quoted string after `==`, found `api` ``.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid selector {}: at position {position}: {reason}",
    QuotedExcerpt::new(.selector, .position)
)]
pub struct SelectorError {
    /// The selector text.
    pub selector: String,
    /// Byte offset of the problem in `selector`.
    pub position: usize,
    /// What was expected and what was found.
    pub reason: String,
}

/// The selector text in double quotes (escaped like a Rust string), or for
/// long text an excerpt around the error position and the length.
struct QuotedExcerpt<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> QuotedExcerpt<'a> {
    fn new(text: &'a str, position: &usize) -> Self {
        QuotedExcerpt {
            text,
            position: *position,
        }
    }
}

impl fmt::Display for QuotedExcerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FULL: usize = 200;
        const CONTEXT: usize = 60;
        let text = self.text;
        if text.len() <= FULL {
            return write!(f, "\"{}\"", Escaped(text));
        }
        let mut start = self.position.saturating_sub(CONTEXT).min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = self.position.saturating_add(CONTEXT).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let (pre, post) = (
            if start > 0 { "…" } else { "" },
            if end < text.len() { "…" } else { "" },
        );
        write!(
            f,
            "\"{pre}{}{post}\" ({} bytes)",
            Escaped(&text[start..end]),
            text.len()
        )
    }
}

/// Text escaped for a double-quoted string: `"`, `\\` and control
/// characters are escaped, single quotes are not.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '\'' {
                f.write_str("'")?;
            } else {
                write!(f, "{}", c.escape_debug())?;
            }
        }
        Ok(())
    }
}
