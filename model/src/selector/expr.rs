//! The selector syntax tree: normalising constructors, evaluation and the
//! canonical printer.

use std::fmt;

use super::{Labels, NAMESPACE_LABEL};

/// A parsed, normalised selector expression.
///
/// Trees produced by [`Selector::parse`](super::Selector::parse) are in
/// normal form, so their [`Display`](fmt::Display) output is the canonical
/// selector text:
///
/// * `In`/`NotIn` members are sorted (byte order) and de-duplicated;
/// * `And`/`Or` have at least two operands, none of them a group of the same
///   operator (nested groups are flattened, operand order is kept);
/// * `Not` wraps only `Contains`, `StartsWith`, `EndsWith`, `All`, `Global`,
///   `And` or `Or`; every other negation is folded into the operator
///   (`!(a == "v")` is `a != "v"`, `!has(a)` is `NotHas`, `!!x` is `x`).
///
/// Trees built by hand should use [`Expr::negate`], [`Expr::and`] and
/// [`Expr::or`] to stay in normal form. Evaluation and printing recurse
/// over the tree; the parser bounds its depth (see
/// [`MAX_NESTING_DEPTH`](super::MAX_NESTING_DEPTH)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()`: matches everything.
    All,
    /// `global()`: matches label sets without the
    /// [`NAMESPACE_LABEL`](super::NAMESPACE_LABEL), i.e. non-namespaced resources.
    Global,
    /// `label == "value"`; false when the label is absent.
    Eq { label: String, value: String },
    /// `label != "value"`; true when the label is absent.
    Ne { label: String, value: String },
    /// `label in {"v1", "v2"}`; false when the label is absent.
    /// `values` is sorted and de-duplicated.
    In { label: String, values: Vec<String> },
    /// `label not in {"v1", "v2"}`; true when the label is absent.
    /// `values` is sorted and de-duplicated.
    NotIn { label: String, values: Vec<String> },
    /// `has(label)`.
    Has(String),
    /// `!has(label)`.
    NotHas(String),
    /// `label contains "value"`; false when the label is absent.
    Contains { label: String, value: String },
    /// `label starts with "value"`; false when the label is absent.
    StartsWith { label: String, value: String },
    /// `label ends with "value"`; false when the label is absent.
    EndsWith { label: String, value: String },
    /// `!(expr)`.
    Not(Box<Expr>),
    /// `(a && b && ...)`; an empty conjunction is true.
    And(Vec<Expr>),
    /// `(a || b || ...)`; an empty disjunction is false.
    Or(Vec<Expr>),
}

impl Expr {
    /// The negation of `self`, in normal form: operators with a complement
    /// (`==`/`!=`, `in`/`not in`, `has`/`!has`) are swapped, a double
    /// negation cancels, anything else is wrapped in [`Expr::Not`].
    ///
    /// This is semantics-preserving because an absent label makes `==` and
    /// `in` false and `!=` and `not in` true.
    #[must_use]
    pub fn negate(self) -> Expr {
        match self {
            Expr::Eq { label, value } => Expr::Ne { label, value },
            Expr::Ne { label, value } => Expr::Eq { label, value },
            Expr::In { label, values } => Expr::NotIn { label, values },
            Expr::NotIn { label, values } => Expr::In { label, values },
            Expr::Has(label) => Expr::NotHas(label),
            Expr::NotHas(label) => Expr::Has(label),
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }

    /// The conjunction of `items`, flattening nested conjunctions. One
    /// operand is returned as is; no operands give [`Expr::All`].
    #[must_use]
    pub fn and(items: Vec<Expr>) -> Expr {
        Self::group(items, true)
    }

    /// The disjunction of `items`, flattening nested disjunctions. One
    /// operand is returned as is; no operands give `!(all())`.
    #[must_use]
    pub fn or(items: Vec<Expr>) -> Expr {
        Self::group(items, false)
    }

    fn group(items: Vec<Expr>, is_and: bool) -> Expr {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Expr::And(inner) if is_and => out.extend(inner),
                Expr::Or(inner) if !is_and => out.extend(inner),
                item => out.push(item),
            }
        }
        if out.len() <= 1 {
            match out.pop() {
                Some(only) => return only,
                None if is_and => return Expr::All,
                None => return Expr::Not(Box::new(Expr::All)),
            }
        }
        if is_and {
            Expr::And(out)
        } else {
            Expr::Or(out)
        }
    }

    /// Evaluates the expression against a label set.
    ///
    /// This does not allocate: it compares borrowed `&str`s, finds set
    /// members by binary search over the sorted `values`, and uses
    /// `str::contains`/`starts_with`/`ends_with`, none of which allocate.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All => true,
            Expr::Global => labels.get_label(NAMESPACE_LABEL).is_none(),
            Expr::Eq { label, value } => labels.get_label(label) == Some(value.as_str()),
            Expr::Ne { label, value } => labels.get_label(label) != Some(value.as_str()),
            Expr::In { label, values } => labels
                .get_label(label)
                .is_some_and(|v| sorted_contains(values, v)),
            Expr::NotIn { label, values } => !labels
                .get_label(label)
                .is_some_and(|v| sorted_contains(values, v)),
            Expr::Has(label) => labels.get_label(label).is_some(),
            Expr::NotHas(label) => labels.get_label(label).is_none(),
            Expr::Contains { label, value } => labels
                .get_label(label)
                .is_some_and(|v| v.contains(value.as_str())),
            Expr::StartsWith { label, value } => labels
                .get_label(label)
                .is_some_and(|v| v.starts_with(value.as_str())),
            Expr::EndsWith { label, value } => labels
                .get_label(label)
                .is_some_and(|v| v.ends_with(value.as_str())),
            Expr::Not(inner) => !inner.matches(labels),
            Expr::And(items) => items.iter().all(|e| e.matches(labels)),
            Expr::Or(items) => items.iter().any(|e| e.matches(labels)),
        }
    }

    /// Calls `f` with every label name the expression reads, in tree order,
    /// possibly more than once. `global()` reads [`NAMESPACE_LABEL`].
    pub(super) fn visit_labels<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            Expr::All => {}
            Expr::Global => f(NAMESPACE_LABEL),
            Expr::Eq { label, .. }
            | Expr::Ne { label, .. }
            | Expr::In { label, .. }
            | Expr::NotIn { label, .. }
            | Expr::Has(label)
            | Expr::NotHas(label)
            | Expr::Contains { label, .. }
            | Expr::StartsWith { label, .. }
            | Expr::EndsWith { label, .. } => f(label),
            Expr::Not(inner) => inner.visit_labels(f),
            Expr::And(items) | Expr::Or(items) => {
                for item in items {
                    item.visit_labels(f);
                }
            }
        }
    }
}

/// Binary search over sorted members, comparing `&str` (no allocation).
fn sorted_contains(values: &[String], v: &str) -> bool {
    values.binary_search_by(|m| m.as_str().cmp(v)).is_ok()
}

/// A string literal: double quotes unless the value contains `"`.
struct Lit<'a>(&'a str);

impl fmt::Display for Lit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = if self.0.contains('"') { '\'' } else { '"' };
        write!(f, "{q}{}{q}", self.0)
    }
}

/// Prints the canonical form (for trees in normal form, see [`Expr`]).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Eq { label, value } => write!(f, "{label} == {}", Lit(value)),
            Expr::Ne { label, value } => write!(f, "{label} != {}", Lit(value)),
            Expr::In { label, values } => write_set(f, label, "in", values),
            Expr::NotIn { label, values } => write_set(f, label, "not in", values),
            Expr::Has(label) => write!(f, "has({label})"),
            Expr::NotHas(label) => write!(f, "!has({label})"),
            Expr::Contains { label, value } => write!(f, "{label} contains {}", Lit(value)),
            Expr::StartsWith { label, value } => write!(f, "{label} starts with {}", Lit(value)),
            Expr::EndsWith { label, value } => write!(f, "{label} ends with {}", Lit(value)),
            Expr::Not(inner) => write!(f, "!({inner})"),
            Expr::And(items) => write_group(f, items, " && ", "all()"),
            Expr::Or(items) => write_group(f, items, " || ", "!(all())"),
        }
    }
}

fn write_set(f: &mut fmt::Formatter<'_>, label: &str, op: &str, values: &[String]) -> fmt::Result {
    write!(f, "{label} {op} {{")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}", Lit(v))?;
    }
    f.write_str("}")
}

fn write_group(f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str, empty: &str) -> fmt::Result {
    match items {
        [] => f.write_str(empty),
        [only] => write!(f, "{only}"),
        _ => {
            f.write_str("(")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{item}")?;
            }
            f.write_str(")")
        }
    }
}
