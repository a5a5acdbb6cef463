//! Strict typed decoding of one document that reports every error.
//!
//! A typed decoder stops at its first error. To find the next one, the
//! offending part is taken out of the document (an unknown field, or the
//! value that failed) and the document is decoded again, until it decodes
//! or nothing more can be taken out. Paths are reported in the document as
//! written, even after list items before them were taken out.

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::error::Problem;
use crate::value_de::{DeError, Friendly};

/// Most errors reported for one document.
pub const MAX_ERRORS: usize = 100;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The outcome of decoding one document.
#[derive(Debug)]
pub struct Typed<T> {
    /// The decoded value; after errors, the value of what was left, which
    /// is never a resource to keep but may still be validated.
    pub value: Option<T>,
    /// Every error, with its field path (`None` for the document).
    pub errors: Vec<(Option<String>, Problem)>,
    /// The paths (as written) of values taken out, so that validation
    /// errors they may have caused can be left out.
    pub removed: Vec<String>,
}

fn display(path: &[Seg]) -> Option<String> {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn segs_of_error(path: &serde_path_to_error::Path) -> Option<Vec<Seg>> {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

fn segs_of_ignored(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segs_of_ignored(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            segs_of_ignored(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segs_of_ignored(parent, out),
    }
}

/// The path as written, given the list items already taken out.
fn original(current: &[Seg], removed: &[Vec<Seg>]) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::with_capacity(current.len());
    for seg in current {
        match seg {
            Seg::Key(k) => out.push(Seg::Key(k.clone())),
            Seg::Index(i) => {
                let mut gone: Vec<usize> = removed
                    .iter()
                    .filter(|r| r.len() == out.len() + 1 && r[..out.len()] == out[..])
                    .filter_map(|r| match r[out.len()] {
                        Seg::Index(x) => Some(x),
                        Seg::Key(_) => None,
                    })
                    .collect();
                gone.sort_unstable();
                let mut index = *i;
                for g in gone {
                    if g <= index {
                        index += 1;
                    }
                }
                out.push(Seg::Index(index));
            }
        }
    }
    out
}

fn child<'v>(v: &'v mut Value, seg: &Seg) -> Option<&'v mut Value> {
    match (v, seg) {
        (Value::Mapping(m), Seg::Key(k)) => m.get_mut(k.as_str()),
        (Value::Sequence(s), Seg::Index(i)) => s.get_mut(*i),
        _ => None,
    }
}

/// Takes the value at `path` out of `root`; false when there is none.
fn remove(root: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut v = root;
    for seg in parent {
        let Some(next) = child(v, seg) else {
            return false;
        };
        v = next;
    }
    match (v, last) {
        (Value::Mapping(m), Seg::Key(k)) => m.remove(k.as_str()).is_some(),
        (Value::Sequence(s), Seg::Index(i)) if *i < s.len() => {
            s.remove(*i);
            true
        }
        _ => false,
    }
}

/// The field named in serde's "unknown field `NAME`" or "missing field
/// `NAME`" message.
fn field_in(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let (name, _) = rest.split_once('`')?;
    Some(name.to_string())
}

/// Most accepted fields listed after an unknown one; past that, only the
/// closest is suggested.
const MAX_LISTED_FIELDS: usize = 12;

/// serde's "unknown field `x`, expected one of ..." lists every field of
/// the type: for a long list, only the closest field is named.
fn shorten_unknown_field(field: &str, message: String) -> String {
    let Some((_, list)) = message.split_once(", expected one of ") else {
        return message;
    };
    let accepted: Vec<&str> = list.split(", ").map(|f| f.trim_matches('`')).collect();
    if accepted.len() <= MAX_LISTED_FIELDS {
        return message;
    }
    let closest = accepted
        .iter()
        .map(|a| {
            (
                edit_distance(&field.to_ascii_lowercase(), &a.to_ascii_lowercase()),
                *a,
            )
        })
        .min();
    match closest {
        Some((d, a)) if d <= 3 => format!("unknown field `{field}`; did you mean `{a}`?"),
        _ => format!(
            "unknown field `{field}` (none of the {} fields this type accepts is close)",
            accepted.len()
        ),
    }
}

/// Levenshtein distance between two short ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<u8> = b.bytes().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (prev + cost).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Decodes `value` strictly, reporting every error: fields the type does
/// not know (whether it refuses them itself or would have silently dropped
/// them, as the Kubernetes types do) and values of the wrong type or form.
pub fn typed<T: DeserializeOwned>(mut value: Value) -> Typed<T> {
    // Each error with its path as steps, to sort them into the document's
    // order at the end (the decoder finds them in the type's field order).
    let mut errors: Vec<(Vec<Seg>, Vec<Seg>, Problem)> = Vec::new();
    let mut as_written: Option<Value> = None;
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    // Each pass decodes the whole document again: passes are bounded like
    // errors are, also those whose error is not reported.
    let mut passes = 0;
    loop {
        passes += 1;
        let mut unknown: Vec<Vec<Seg>> = Vec::new();
        let mut record = |p: serde_ignored::Path<'_>| {
            let mut segs = Vec::new();
            segs_of_ignored(&p, &mut segs);
            unknown.push(segs);
        };
        let de = serde_ignored::Deserializer::new(Friendly(&value), &mut record);
        let result: Result<T, serde_path_to_error::Error<DeError>> =
            serde_path_to_error::deserialize(de);
        let failure = match result {
            Ok(v) => {
                for u in &unknown {
                    let full = original(u, &removed);
                    let mut path = full.clone();
                    let Some(Seg::Key(field)) = path.pop() else {
                        continue;
                    };
                    errors.push((full, path, Problem::UnknownField { field }));
                }
                return Typed {
                    value: Some(v),
                    errors: in_document_order(errors, as_written.as_ref().unwrap_or(&value)),
                    removed: removed.iter().filter_map(|r| display(r)).collect(),
                };
            }
            Err(e) => e,
        };
        let current = segs_of_error(failure.path());
        let message = failure.into_inner().0;
        if errors.len() >= MAX_ERRORS || passes > 2 * MAX_ERRORS {
            errors.push((
                Vec::new(),
                Vec::new(),
                Problem::Decode {
                    message: format!("more errors; only the first {MAX_ERRORS} are reported"),
                },
            ));
            break;
        }
        let Some(current) = current else {
            errors.push((Vec::new(), Vec::new(), Problem::Decode { message }));
            break;
        };
        if let Some(field) = field_in(&message, "unknown field `") {
            let message = shorten_unknown_field(&field, message);
            // Reported at the mapping that holds the field, as the fields
            // that serde_ignored finds are.
            let mut at = current;
            if at.last() == Some(&Seg::Key(field.clone())) {
                at.pop();
            }
            if as_written.is_none() {
                as_written = Some(value.clone());
            }
            let shown = original(&at, &removed);
            at.push(Seg::Key(field));
            errors.push((original(&at, &removed), shown, Problem::Decode { message }));
            if !remove(&mut value, &at) {
                break;
            }
            continue;
        }
        let path = original(&current, &removed);
        let caused_by_us = field_in(&message, "missing field `").is_some_and(|field| {
            let mut at = path.clone();
            at.push(Seg::Key(field));
            removed.contains(&at)
        });
        if !caused_by_us {
            errors.push((path.clone(), path.clone(), Problem::Decode { message }));
        }
        if as_written.is_none() {
            as_written = Some(value.clone());
        }
        if !remove(&mut value, &current) {
            break;
        }
        removed.push(path);
    }
    Typed {
        value: None,
        errors: in_document_order(errors, as_written.as_ref().unwrap_or(&value)),
        removed: removed.iter().filter_map(|r| display(r)).collect(),
    }
}

/// Where a path leads in the document: the index of each step in its
/// mapping or list, as far as it can be followed.
fn position(root: &Value, path: &[Seg]) -> Vec<usize> {
    let mut at = Vec::with_capacity(path.len());
    let mut v = root;
    for seg in path {
        let next = match (v, seg) {
            (Value::Mapping(m), Seg::Key(k)) => m
                .iter()
                .enumerate()
                .find(|(_, (key, _))| key.as_str() == Some(k.as_str()))
                .map(|(i, (_, value))| (i, value)),
            (Value::Sequence(items), Seg::Index(i)) => items.get(*i).map(|value| (*i, value)),
            _ => None,
        };
        let Some((index, value)) = next else {
            break;
        };
        at.push(index);
        v = value;
    }
    at
}

/// The errors (each with the path it is ordered by and the path it is
/// shown at) in the order of the document.
fn in_document_order(
    errors: Vec<(Vec<Seg>, Vec<Seg>, Problem)>,
    document: &Value,
) -> Vec<(Option<String>, Problem)> {
    let mut keyed: Vec<(Vec<usize>, Option<String>, Problem)> = errors
        .into_iter()
        .map(|(at, shown, problem)| (position(document, &at), display(&shown), problem))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed
        .into_iter()
        .map(|(_, path, problem)| (path, problem))
        .collect()
}

/// Whether a validation error at `path` may be a consequence of taking out
/// the value at `removed`: it is in the same object, or contains it.
pub fn related(path: &str, removed: &str) -> bool {
    let under = |p: &str, prefix: &str| {
        prefix.is_empty()
            || p == prefix
            || p.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    let parent = match removed.rfind(['.', '[']) {
        Some(i) => &removed[..i],
        None => "",
    };
    under(path, parent) || under(removed, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_reported_as_written_after_removals() {
        let removed = vec![
            vec![Seg::Key("a".into()), Seg::Index(1)],
            vec![Seg::Key("a".into()), Seg::Index(3)],
        ];
        let at = |i| original(&[Seg::Key("a".into()), Seg::Index(i)], &removed);
        assert_eq!(display(&at(0)).as_deref(), Some("a[0]"));
        assert_eq!(display(&at(1)).as_deref(), Some("a[2]"));
        assert_eq!(display(&at(2)).as_deref(), Some("a[4]"));
    }

    #[test]
    fn related_paths() {
        assert!(related(
            "spec.ingress[0].destination.ports",
            "spec.ingress[0].protocol"
        ));
        assert!(related("spec", "spec.cidr"));
        assert!(!related("spec.egress[0]", "spec.ingress[0].protocol"));
        assert!(!related("spec.ingress[10].x", "spec.ingress[1].protocol"));
    }
}
