//! Loading resources from bytes: YAML (multi-document) or JSON (one value,
//! a stream of values, or a `kind: List`), dispatched on `apiVersion` and
//! `kind`, decoded strictly, defaulted and validated.
//!
//! Loading never stops at the first problem: it reports every problem it can
//! find, each with its document and field path, so one run of
//! `manulctl validate` shows them all.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::error::{LoadError, Problem};
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

/// Everything loaded from one input: the good resources and every problem.
/// A caller that writes resources must write none when `errors` is not
/// empty.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub resources: Vec<Loaded>,
    pub errors: Vec<LoadError>,
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

/// Loads every resource in `bytes`; `origin` names the input in errors.
pub fn load(origin: &str, bytes: &[u8]) -> LoadOutcome {
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
    let documents = match split_documents(text) {
        Ok(docs) => docs,
        Err(problem) => {
            out.errors.push(whole(problem));
            return out;
        }
    };
    let mut seen = BTreeMap::new();
    for (index, doc) in documents {
        let mut report = |resource: Option<String>, path: Option<String>, problem| {
            out.errors.push(LoadError {
                origin: origin.to_string(),
                document: Some(index),
                resource,
                path,
                problem,
            })
        };
        let doc = match doc {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(problem) => {
                report(None, None, problem);
                continue;
            }
        };
        for item in list_items(doc) {
            match decode_value(item) {
                Ok(resource) => {
                    let name = describe(&resource);
                    let errors = crate::validate::validate(&resource);
                    let key = resource.key();
                    for e in &errors {
                        report(
                            Some(name.clone()),
                            Some(e.path.clone()),
                            Problem::Invalid {
                                message: e.reason.clone(),
                            },
                        );
                    }
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
                        out.resources.push(Loaded {
                            document: index,
                            resource,
                        });
                    }
                }
                Err(e) => report(e.resource, e.path, e.problem),
            }
        }
    }
    out
}

/// `KIND NAMESPACE/NAME` or `KIND NAME`, as the CLI prints it.
pub fn describe(resource: &Resource) -> String {
    let key = resource.key();
    format!("{} {}", key.kind, key.qualified_name())
}

type Documents = Vec<(usize, Result<Value, Problem>)>;

fn split_documents(text: &str) -> Result<Documents, Problem> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut docs = Vec::new();
        for v in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
            let v = v.map_err(|source| Problem::JsonSyntax { source })?;
            let items = match v {
                serde_json::Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                let value = serde_yaml_ng::to_value(item).map_err(|e| Problem::Decode {
                    message: e.to_string(),
                });
                docs.push((docs.len() + 1, value));
            }
        }
        return Ok(docs);
    }
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(v) => docs.push((i + 1, Ok(v))),
            Err(source) => {
                // The parser cannot resynchronise after a syntax error.
                docs.push((i + 1, Err(Problem::Syntax { source })));
                break;
            }
        }
    }
    Ok(docs)
}

/// A `kind: List` (as `kubectl get -o yaml` prints) yields its items.
fn list_items(doc: Value) -> Vec<Value> {
    if let Value::Mapping(map) = &doc
        && map.get("kind").and_then(Value::as_str) == Some("List")
        && let Some(Value::Sequence(items)) = map.get("items")
    {
        return items.clone();
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

/// Decodes one document into a typed, defaulted resource. It does not
/// validate: see [`crate::validate::validate`].
pub fn decode_value(doc: Value) -> Result<Resource, DecodeError> {
    let err = |resource: Option<String>, path: Option<String>, problem| DecodeError {
        resource,
        path,
        problem,
    };
    let Value::Mapping(mut map) = doc else {
        return Err(err(
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
    let api_version = text_field(&map, "apiVersion")?;
    let kind_name = text_field(&map, "kind")?;
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        let known = Kind::ALL
            .iter()
            .map(|k| format!("{}/{}", k.api_version(), k.name()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(err(
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
    let with = |r: Result<Resource, (Option<String>, Problem)>| {
        r.map(crate::defaults::apply)
            .map_err(|(path, problem)| err(Some(label.clone()), path, problem))
    };
    with(match kind {
        Kind::NetworkPolicy => typed::<Object<_>>(value).map(Resource::NetworkPolicy),
        Kind::GlobalNetworkPolicy => typed::<Object<_>>(value).map(Resource::GlobalNetworkPolicy),
        Kind::Tier => typed::<Object<_>>(value).map(Resource::Tier),
        Kind::HostEndpoint => typed::<Object<_>>(value).map(Resource::HostEndpoint),
        Kind::WorkloadEndpoint => typed::<Object<_>>(value).map(Resource::WorkloadEndpoint),
        Kind::NetworkSet => typed::<Object<_>>(value).map(Resource::NetworkSet),
        Kind::GlobalNetworkSet => typed::<Object<_>>(value).map(Resource::GlobalNetworkSet),
        Kind::Profile => typed::<Object<_>>(value).map(Resource::Profile),
        Kind::Node => typed::<Object<_>>(value).map(Resource::Node),
        Kind::IpPool => typed::<Object<_>>(value).map(Resource::IpPool),
        Kind::IpamBlock => typed::<Object<_>>(value).map(Resource::IpamBlock),
        Kind::FelixConfiguration => typed::<Object<_>>(value).map(Resource::FelixConfiguration),
        Kind::Installation => typed::<Object<_>>(value).map(Resource::Installation),
        Kind::K8sNetworkPolicy => typed(value).map(Resource::K8sNetworkPolicy),
        Kind::Namespace => typed(value).map(Resource::Namespace),
        Kind::Pod => typed(value).map(Resource::Pod),
        Kind::Service => typed(value).map(Resource::Service),
        Kind::EndpointSlice => typed(value).map(Resource::EndpointSlice),
    })
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

/// Strict typed decoding: a field the type does not know is an error that
/// names its path, whether the type rejects it itself or would have
/// silently ignored it (as the Kubernetes types do).
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, (Option<String>, Problem)> {
    let mut unknown: Vec<String> = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(format_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    match result {
        Err(e) => {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let path = (path != ".").then_some(path);
            Err((path, Problem::Decode { message }))
        }
        Ok(_) if !unknown.is_empty() => {
            let full = unknown.remove(0);
            let (parent, field) = match full.rsplit_once('.') {
                Some((p, f)) => (Some(p.to_string()), f.to_string()),
                None => (None, full),
            };
            Err((parent, Problem::UnknownField { field }))
        }
        Ok(v) => Ok(v),
    }
}

fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let p = format_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
