//! Loading resources from bytes: YAML (multi-document) or JSON (one value,
//! a stream of values, or a `kind: List`), dispatched on `apiVersion` and
//! `kind`, decoded strictly, defaulted and validated.
//!
//! Loading never stops at the first problem: it reports every problem it can
//! find, each with its document and field path, so one run of
//! `manulctl validate` shows them all.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::error::{LoadError, LoadWarning, Problem};
use crate::resource::{Kind, Resource};
use crate::v3::Object;

/// Largest input accepted, in bytes. Kubernetes refuses objects over
/// 1.5 MiB; a file of many resources may be larger, but not without bound.
pub const MAX_INPUT_BYTES: u64 = 8 * 1024 * 1024;

/// A resource loaded from an input, with its 1-based document index.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub document: usize,
    pub resource: Resource,
}

/// Everything loaded from one input: the good resources, every problem and
/// every warning. A caller that writes resources must write none when
/// `errors` is not empty; warnings do not stop anything.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub resources: Vec<Loaded>,
    pub errors: Vec<LoadError>,
    /// Fields of loaded resources that are accepted but not acted on.
    pub warnings: Vec<LoadWarning>,
}

impl LoadOutcome {
    /// The resources, or every error.
    pub fn into_result(self) -> Result<Vec<Loaded>, Vec<LoadError>> {
        if self.errors.is_empty() {
            Ok(self.resources)
        } else {
            Err(self.errors)
        }
    }
}

/// Most problems listed for one input by [`load`]: past them loading stops
/// (the work and the report are bounded whatever the input holds).
pub const MAX_PROBLEMS: usize = crate::load_typed::MAX_ERRORS;

/// Longest origin, resource name or field path an error repeats, in bytes:
/// longer ones (never valid names) are cut, so that an input cannot make
/// each of its errors carry megabytes.
pub const MAX_LABEL_BYTES: usize = 256;

/// `text`, cut to at most `max` bytes at a character boundary, with `…`
/// when anything was cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Loads every resource in `bytes`; `origin` names the input in errors.
/// At most [`MAX_PROBLEMS`] problems are listed.
pub fn load(origin: &str, bytes: &[u8]) -> LoadOutcome {
    load_limited(origin, bytes, MAX_PROBLEMS)
}

/// [`load`], listing at most `max_problems` problems (at least one): once
/// that many are found, loading stops and a last problem says so.
pub fn load_limited(origin: &str, bytes: &[u8], max_problems: usize) -> LoadOutcome {
    let max_problems = max_problems.max(1);
    let origin = clip(origin, MAX_LABEL_BYTES);
    let origin = origin.as_str();
    let mut out = LoadOutcome::default();
    let whole = |problem| LoadError {
        origin: origin.to_string(),
        document: None,
        resource: None,
        path: None,
        problem,
    };
    let size = bytes.len() as u64;
    if size > MAX_INPUT_BYTES {
        out.errors.push(whole(Problem::TooLarge {
            size,
            limit: MAX_INPUT_BYTES,
        }));
        return out;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(source) => {
            out.errors.push(whole(Problem::NotUtf8 {
                offset: source.valid_up_to(),
                source,
            }));
            return out;
        }
    };
    let mut seen = BTreeMap::new();
    let split = each_document(text, &mut |index, doc| {
        load_document(origin, index, doc, &mut out, &mut seen);
        if out.errors.len() < max_problems {
            return ControlFlow::Continue(());
        }
        out.errors.truncate(max_problems);
        out.errors.push(LoadError {
            origin: origin.to_string(),
            document: None,
            resource: None,
            path: None,
            problem: Problem::TooManyProblems {
                listed: max_problems,
            },
        });
        ControlFlow::Break(())
    });
    if let Err(problem) = split {
        // A syntax error in a JSON input is its only problem, as before
        // anything of it was read.
        out = LoadOutcome::default();
        out.errors.push(whole(problem));
    }
    out
}

/// Loads document `index` of an input into `out`.
fn load_document(
    origin: &str,
    index: usize,
    doc: Result<Value, Problem>,
    out: &mut LoadOutcome,
    seen: &mut BTreeMap<crate::resource::ResourceKey, usize>,
) {
    let mut report = |resource: Option<String>, path: Option<String>, problem| {
        out.errors.push(LoadError {
            origin: origin.to_string(),
            document: Some(index),
            resource: resource.map(|r| clip(&r, MAX_LABEL_BYTES)),
            path: path.map(|p| clip(&p, MAX_LABEL_BYTES)),
            problem,
        })
    };
    let doc = match doc {
        Ok(Value::Null) => return,
        Ok(v) => v,
        Err(problem) => {
            report(None, None, problem);
            return;
        }
    };
    for item in list_items(doc) {
        let decoded = decode_document(item);
        for e in decoded.errors {
            report(e.resource, e.path, e.problem);
        }
        let Some(resource) = decoded.resource else {
            continue;
        };
        let name = describe(&resource);
        let errors: Vec<_> = crate::validate::validate(&resource)
            .into_iter()
            .filter(|e| {
                !decoded
                    .removed
                    .iter()
                    .any(|r| crate::load_typed::related(&e.path, r))
            })
            .collect();
        for e in &errors {
            report(
                Some(name.clone()),
                Some(e.path.clone()),
                Problem::Invalid {
                    message: e.reason.clone(),
                },
            );
        }
        if !decoded.complete {
            continue;
        }
        let key = resource.key();
        if let Some(first) = seen.get(&key) {
            report(
                Some(name),
                None,
                Problem::Duplicate {
                    key: key.to_string(),
                    first: *first,
                },
            );
        } else if errors.is_empty() {
            seen.insert(key, index);
            for w in decoded.warnings {
                out.warnings.push(LoadWarning {
                    origin: origin.to_string(),
                    document: index,
                    resource: name.clone(),
                    field: w.path,
                    reason: w.reason,
                });
            }
            out.resources.push(Loaded {
                document: index,
                resource,
            });
        }
    }
}

/// `KIND NAMESPACE/NAME` or `KIND NAME`, as the CLI prints it.
pub fn describe(resource: &Resource) -> String {
    let key = resource.key();
    format!("{} {}", key.kind, key.qualified_name())
}

/// What to do with each document: go on or stop.
type EachDocument<'f> = dyn FnMut(usize, Result<Value, Problem>) -> ControlFlow<()> + 'f;

/// Hands each document of `text` (1-based index) to `f` as it is read,
/// until `f` stops; a JSON input's items one by one, so that stopping also
/// stops the parsing. A JSON syntax error is the whole input's problem.
fn each_document(text: &str, f: &mut EachDocument<'_>) -> Result<(), Problem> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return json::each_document(text, f);
    }
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match crate::value_de::parse_document(de) {
            Ok(v) => {
                if f(i + 1, Ok(v)).is_break() {
                    break;
                }
            }
            Err(source) => {
                // The parser cannot resynchronise after a syntax error.
                let _ = f(i + 1, Err(Problem::Syntax { error: source }));
                break;
            }
        }
    }
    Ok(())
}

/// A `kind: List` (as `kubectl get -o yaml` prints) yields its items.
fn list_items(doc: Value) -> Vec<Value> {
    if let Value::Mapping(mut map) = doc {
        if map.get("kind").and_then(Value::as_str) == Some("List")
            && let Some(Value::Sequence(_)) = map.get("items")
            && let Some(Value::Sequence(items)) = map.remove("items")
        {
            return items;
        }
        return vec![Value::Mapping(map)];
    }
    vec![doc]
}

/// A decode failure, before the resource's identity may be known.
#[derive(Debug)]
pub struct DecodeError {
    pub resource: Option<String>,
    pub path: Option<String>,
    pub problem: Problem,
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// One document decoded: the typed, defaulted resource (not validated:
/// see [`crate::validate::validate`]) and every decoding error.
#[derive(Debug)]
pub struct Decoded {
    /// The resource; after errors, what was left of it once the faulty
    /// parts were taken out (validated only to find more errors).
    pub resource: Option<Resource>,
    /// Whether the document decoded without any error.
    pub complete: bool,
    pub errors: Vec<DecodeError>,
    /// Paths of values taken out to find further errors.
    pub removed: Vec<String>,
    /// Fields that are accepted but not acted on.
    pub warnings: Vec<crate::not_acted::Warning>,
}

impl Decoded {
    fn failed(error: DecodeError) -> Decoded {
        Decoded {
            resource: None,
            complete: false,
            errors: vec![error],
            removed: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Decodes one document into a typed, defaulted resource, collecting every
/// error. It does not validate: see [`crate::validate::validate`].
pub fn decode_document(doc: Value) -> Decoded {
    let err = |resource: Option<String>, path: Option<String>, problem| DecodeError {
        resource,
        path,
        problem,
    };
    let Value::Mapping(mut map) = doc else {
        return Decoded::failed(err(
            None,
            None,
            Problem::NotAMapping {
                found: value_type(&doc),
            },
        ));
    };
    let text_field = |map: &serde_yaml_ng::Mapping, field: &'static str| {
        map.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| err(None, Some(field.into()), Problem::MissingType { field }))
    };
    let api_version = match text_field(&map, "apiVersion") {
        Ok(v) => v,
        Err(e) => return Decoded::failed(e),
    };
    let kind_name = match text_field(&map, "kind") {
        Ok(v) => v,
        Err(e) => return Decoded::failed(e),
    };
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        let known = Kind::ALL
            .iter()
            .map(|k| format!("{}/{}", k.api_version(), k.name()))
            .collect::<Vec<_>>()
            .join(", ");
        return Decoded::failed(err(
            None,
            Some("kind".into()),
            Problem::UnknownKind {
                api_version,
                kind: kind_name,
                known,
            },
        ));
    };
    let label = describe_raw(kind, &map);
    let is_calico = !matches!(
        kind,
        Kind::K8sNetworkPolicy | Kind::Namespace | Kind::Pod | Kind::Service | Kind::EndpointSlice
    );
    if is_calico {
        map.remove("apiVersion");
        map.remove("kind");
    }
    let value = Value::Mapping(map);
    let warnings = crate::not_acted::warnings(kind, &value);
    let typed = match kind {
        Kind::NetworkPolicy => decode::<Object<_>>(value, Resource::NetworkPolicy),
        Kind::GlobalNetworkPolicy => decode::<Object<_>>(value, Resource::GlobalNetworkPolicy),
        Kind::StagedNetworkPolicy => decode::<Object<_>>(value, Resource::StagedNetworkPolicy),
        Kind::StagedGlobalNetworkPolicy => {
            decode::<Object<_>>(value, Resource::StagedGlobalNetworkPolicy)
        }
        Kind::StagedKubernetesNetworkPolicy => {
            decode::<Object<_>>(value, Resource::StagedKubernetesNetworkPolicy)
        }
        Kind::Tier => decode::<Object<_>>(value, Resource::Tier),
        Kind::HostEndpoint => decode::<Object<_>>(value, Resource::HostEndpoint),
        Kind::WorkloadEndpoint => decode::<Object<_>>(value, Resource::WorkloadEndpoint),
        Kind::NetworkSet => decode::<Object<_>>(value, Resource::NetworkSet),
        Kind::GlobalNetworkSet => decode::<Object<_>>(value, Resource::GlobalNetworkSet),
        Kind::GlobalThreatFeed => decode::<Object<_>>(value, Resource::GlobalThreatFeed),
        Kind::Profile => decode::<Object<_>>(value, Resource::Profile),
        Kind::Node => decode::<Object<_>>(value, Resource::Node),
        Kind::IpPool => decode::<Object<_>>(value, Resource::IpPool),
        Kind::IpamBlock => decode::<Object<_>>(value, Resource::IpamBlock),
        Kind::ClusterInformation => decode::<Object<_>>(value, Resource::ClusterInformation),
        Kind::FelixConfiguration => decode::<Box<Object<_>>>(value, Resource::FelixConfiguration),
        Kind::Installation => decode::<Box<Object<_>>>(value, Resource::Installation),
        Kind::K8sNetworkPolicy => decode(value, Resource::K8sNetworkPolicy),
        Kind::Namespace => decode(value, Resource::Namespace),
        Kind::Pod => decode(value, Resource::Pod),
        Kind::Service => decode(value, Resource::Service),
        Kind::EndpointSlice => decode(value, Resource::EndpointSlice),
    };
    let complete = typed.errors.is_empty();
    Decoded {
        resource: typed.value.map(crate::defaults::apply),
        complete,
        errors: typed
            .errors
            .into_iter()
            .map(|(path, problem)| err(Some(label.clone()), path, problem))
            .collect(),
        removed: typed.removed,
        warnings: if complete { warnings } else { Vec::new() },
    }
}

fn decode<T: DeserializeOwned>(
    value: Value,
    wrap: impl FnOnce(T) -> Resource,
) -> crate::load_typed::Typed<Resource> {
    let t = crate::load_typed::typed::<T>(value);
    crate::load_typed::Typed {
        value: t.value.map(wrap),
        errors: t.errors,
        removed: t.removed,
    }
}

fn describe_raw(kind: Kind, map: &serde_yaml_ng::Mapping) -> String {
    let meta = map.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
    match (field("namespace"), field("name")) {
        (Some(ns), Some(name)) if kind.namespaced() => format!("{kind} {ns}/{name}"),
        (_, Some(name)) => format!("{kind} {name}"),
        (_, None) => format!("{kind} without a name"),
    }
}

mod json;

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
