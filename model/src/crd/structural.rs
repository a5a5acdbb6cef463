//! A schemars schema to a Kubernetes structural schema: every node says its
//! type, no `$ref`, no `anyOf` but the int-or-string one, no `null`
//! (absent fields are omitted, never null), no defaults (the model applies
//! its own when it loads a resource), no `additionalProperties: false`
//! beside `properties` (the API server prunes and, with strict field
//! validation, reports unknown fields itself), only formats Kubernetes
//! knows.

use serde_json::{Map, Value};

/// Why a generated schema cannot be made structural: a type the model
/// should not have (a free-form value, a union of types).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructuralError {
    #[error("{path}: a $ref was not inlined")]
    Ref { path: String },
    #[error("{path}: a union of types ({what}) has no structural form")]
    Union { path: String, what: String },
    #[error("{path}: no type")]
    NoType { path: String },
    #[error(
        "{path}: an object with no properties is free-form; mark it x-kubernetes-preserve-unknown-fields"
    )]
    FreeForm { path: String },
    #[error("{path}: not a schema object")]
    NotAnObject { path: String },
}

/// Keys a CRD schema does not carry (or Kubernetes refuses).
const DROPPED: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "definitions",
    "title",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
    "uniqueItems",
];

/// Formats the API server knows; the model's others are dropped (their
/// range is in `minimum`/`maximum` already).
const KEPT_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "ipv4",
    "ipv6",
    "date-time",
];

const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
}

/// `schema` made structural, or the first node that cannot be.
pub fn structural(schema: &Value) -> Result<Value, StructuralError> {
    let mut v = schema.clone();
    convert(&mut v, "")?;
    Ok(v)
}

fn convert(v: &mut Value, path: &str) -> Result<(), StructuralError> {
    let Some(node) = v.as_object_mut() else {
        return Err(StructuralError::NotAnObject { path: path.into() });
    };
    if node.contains_key("$ref") {
        return Err(StructuralError::Ref { path: path.into() });
    }
    for k in DROPPED {
        node.remove(*k);
    }
    if let Some(c) = node.remove("const") {
        node.insert("enum".into(), Value::Array(vec![c]));
    }
    drop_null_type(node, path)?;
    drop_null_branch(node, path)?;
    collapse_enum_union(node);
    if let Some(Value::Array(values)) = node.get_mut("enum") {
        values.retain(|x| !x.is_null());
    }
    if !node.contains_key(INT_OR_STRING) {
        for union in ["anyOf", "oneOf", "allOf"] {
            if node.contains_key(union) {
                return Err(StructuralError::Union {
                    path: path.into(),
                    what: union.into(),
                });
            }
        }
    }
    map_format(node);
    if let Some(Value::Object(props)) = node.get_mut("properties") {
        for (name, p) in props.iter_mut() {
            convert(p, &format!("{path}.{name}"))?;
        }
    }
    match node.get("additionalProperties") {
        Some(Value::Bool(open)) => {
            // A closed object without properties is `{}` (a format
            // without options): structural, with nothing to keep.
            if !*open && !node.contains_key("properties") {
                node.insert("properties".into(), Value::Object(Map::new()));
            }
            node.remove("additionalProperties");
        }
        Some(Value::Object(_)) => {
            if let Some(a) = node.get_mut("additionalProperties") {
                convert(a, &format!("{path}.*"))?;
            }
        }
        _ => {}
    }
    if let Some(items) = node.get_mut("items") {
        convert(items, &format!("{path}[]"))?;
    }
    let typ = node.get("type").and_then(Value::as_str);
    if typ.is_none() && !node.contains_key(INT_OR_STRING) && !node.contains_key(PRESERVE) {
        return Err(StructuralError::NoType { path: path.into() });
    }
    if typ == Some("object")
        && !node.contains_key("properties")
        && !node.contains_key("additionalProperties")
        && !node.contains_key(PRESERVE)
    {
        return Err(StructuralError::FreeForm { path: path.into() });
    }
    Ok(())
}

/// `type: [T, "null"]` becomes `type: T`.
fn drop_null_type(node: &mut Map<String, Value>, path: &str) -> Result<(), StructuralError> {
    if let Some(Value::Array(types)) = node.get("type") {
        let rest: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        match rest.as_slice() {
            [one] => {
                node.insert("type".into(), one.clone());
            }
            _ => {
                return Err(StructuralError::Union {
                    path: path.into(),
                    what: Value::Array(rest).to_string(),
                });
            }
        }
    }
    Ok(())
}

/// `anyOf: [S, {type: null}]` becomes S, merged into the node.
fn drop_null_branch(node: &mut Map<String, Value>, path: &str) -> Result<(), StructuralError> {
    for union in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = node.get(union) else {
            continue;
        };
        if !branches.iter().any(is_null_schema) {
            continue;
        }
        let rest: Vec<Value> = branches
            .iter()
            .filter(|b| !is_null_schema(b))
            .cloned()
            .collect();
        node.remove(union);
        match rest.as_slice() {
            [Value::Object(one)] => {
                for (k, x) in one {
                    node.entry(k.clone()).or_insert_with(|| x.clone());
                }
            }
            _ => {
                return Err(StructuralError::Union {
                    path: path.into(),
                    what: union.into(),
                });
            }
        }
    }
    Ok(())
}

/// `oneOf: [{const: A, description}, {const: B}]` (an enum whose variants
/// carry docs) becomes `enum: [A, B]` of their one type.
fn collapse_enum_union(node: &mut Map<String, Value>) {
    for union in ["oneOf", "anyOf"] {
        let Some(Value::Array(branches)) = node.get(union) else {
            continue;
        };
        let mut values = Vec::new();
        let mut types = Vec::new();
        for b in branches {
            let one = match (b.get("const"), b.get("enum")) {
                (Some(c), None) => vec![c.clone()],
                (None, Some(Value::Array(e))) => e.clone(),
                _ => return,
            };
            if let Some(t) = b.get("type") {
                types.push(t.clone());
            }
            values.extend(one);
        }
        types.dedup();
        let typ = match types.as_slice() {
            [t] => t.clone(),
            [] if values.iter().all(Value::is_string) => Value::from("string"),
            _ => return,
        };
        node.remove(union);
        node.insert("type".into(), typ);
        node.insert("enum".into(), Value::Array(values));
    }
}

fn map_format(node: &mut Map<String, Value>) {
    let Some(format) = node.get("format").and_then(Value::as_str) else {
        return;
    };
    if format == "ip" {
        node.remove("format");
        node.insert("pattern".into(), super::primitives::ip_pattern().into());
    } else if !KEPT_FORMATS.contains(&format) {
        node.remove("format");
    }
}
