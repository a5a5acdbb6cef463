use serde_json::{Value, json};

use super::*;

#[test]
fn option_null_type_and_null_branch_are_dropped() {
    let got = structural(&json!({
        "type": "object",
        "properties": {
            "a": {"type": ["string", "null"], "default": null},
            "b": {
                "description": "kept",
                "anyOf": [{"type": "object", "properties": {"x": {"type": "integer"}}}, {"type": "null"}]
            }
        },
        "additionalProperties": false
    }));
    assert_eq!(
        got,
        Ok(json!({
            "type": "object",
            "properties": {
                "a": {"type": "string"},
                "b": {"description": "kept", "type": "object", "properties": {"x": {"type": "integer"}}}
            }
        }))
    );
}

#[test]
fn refs_unions_and_free_form_objects_are_refused() {
    let r = structural(&json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}));
    assert_eq!(r, Err(StructuralError::Ref { path: ".a".into() }));
    let u = structural(&json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}));
    assert!(matches!(u, Err(StructuralError::Union { .. })), "{u:?}");
    let t = structural(&json!({"type": ["string", "integer"]}));
    assert!(matches!(t, Err(StructuralError::Union { .. })), "{t:?}");
    let f = structural(&json!({"type": "object", "properties": {"m": {"type": "object"}}}));
    assert_eq!(f, Err(StructuralError::FreeForm { path: ".m".into() }));
    let n = structural(&json!({"type": "object", "properties": {"m": {"description": "?"}}}));
    assert_eq!(n, Err(StructuralError::NoType { path: ".m".into() }));
}

#[test]
fn an_enum_with_documented_variants_becomes_one_enum() {
    let got = structural(&json!({
        "description": "An action.",
        "oneOf": [
            {"type": "string", "const": "Allow", "description": "Accept."},
            {"type": "string", "enum": ["Deny", "Log"]}
        ]
    }));
    assert_eq!(
        got,
        Ok(
            json!({"description": "An action.", "type": "string", "enum": ["Allow", "Deny", "Log"]})
        )
    );
}

#[test]
fn formats_kubernetes_does_not_know_are_dropped_and_ip_becomes_a_pattern() {
    let got = structural(&json!({
        "type": "object",
        "properties": {
            "port": {"type": "integer", "format": "uint16", "minimum": 0, "maximum": 65535},
            "order": {"type": "number", "format": "double"},
            "ip": {"type": "string", "format": "ip"},
            "v4": {"type": "string", "format": "ipv4"},
            "only": {"const": "x", "type": "string"}
        }
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &got["properties"];
    assert_eq!(
        p["port"],
        json!({"type": "integer", "minimum": 0, "maximum": 65535})
    );
    assert_eq!(p["order"], json!({"type": "number", "format": "double"}));
    assert_eq!(
        p["ip"],
        json!({"type": "string", "pattern": primitives::ip_pattern()})
    );
    assert_eq!(p["v4"], json!({"type": "string", "format": "ipv4"}));
    assert_eq!(p["only"], json!({"type": "string", "enum": ["x"]}));
}

#[test]
fn int_or_string_keeps_its_any_of() {
    let port = structural(
        &serde_json::to_value(generator().subschema_for::<crate::v3::Port>()).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(port["x-kubernetes-int-or-string"], json!(true));
    assert_eq!(
        port["anyOf"],
        json!([{"type": "integer"}, {"type": "string"}])
    );
}

/// Walks a schema and checks Kubernetes' structural rules on each node.
fn check_structural(v: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(node) = v.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if int_or_string {
        if node.get("anyOf") != Some(&json!([{"type": "integer"}, {"type": "string"}])) {
            problems.push(format!("{path}: int-or-string without its anyOf"));
        }
    } else if !node.get("type").is_some_and(Value::is_string) {
        problems.push(format!("{path}: no single type"));
    }
    for bad in [
        "$ref",
        "oneOf",
        "allOf",
        "nullable",
        "default",
        "uniqueItems",
        "$defs",
    ] {
        if node.contains_key(bad) {
            problems.push(format!("{path}: has {bad}"));
        }
    }
    if !int_or_string && node.contains_key("anyOf") {
        problems.push(format!("{path}: anyOf"));
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        problems.push(format!("{path}: properties and additionalProperties"));
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        for (k, p) in props {
            check_structural(p, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(a @ Value::Object(_)) = node.get("additionalProperties") {
        check_structural(a, &format!("{path}.*"), problems);
    }
    if let Some(items) = node.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
}

#[test]
fn every_crd_schema_is_structural() {
    for crd in CRDS {
        let schema = crd.schema().unwrap_or_else(|e| panic!("{}: {e}", crd.kind));
        let mut problems = Vec::new();
        check_structural(&schema, crd.kind.name(), &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[test]
fn crd_names_are_plural_dot_group() {
    for crd in CRDS {
        assert_eq!(crd.crd_name, format!("{}.{}", crd.plural, crd.group));
        assert_eq!(
            crd.file_name(),
            format!("{}_{}.yaml", crd.group, crd.plural)
        );
        assert_eq!(
            crd.kind.api_version(),
            format!("{}/{}", crd.group, crd.version)
        );
    }
}

#[test]
fn every_v3_kind_has_a_crd_or_a_reason() {
    for kind in Kind::ALL
        .iter()
        .copied()
        .filter(|k| k.api_version() == crate::v3::API_VERSION)
    {
        let crds = CRDS.iter().filter(|c| c.kind == kind).count();
        let reasons = NOT_CRDS.iter().filter(|(k, _)| *k == kind).count();
        assert_eq!(crds + reasons, 1, "{kind}: {crds} CRDs, {reasons} reasons");
    }
}

#[test]
fn definitions_carry_calico_names_scope_columns_and_status() {
    let gnp = crd_of(Kind::GlobalNetworkPolicy)
        .and_then(|c| c.definition().ok())
        .unwrap_or_default();
    assert_eq!(
        gnp["metadata"]["name"],
        "globalnetworkpolicies.projectcalico.org"
    );
    assert_eq!(gnp["spec"]["scope"], "Cluster");
    assert_eq!(gnp["spec"]["names"]["shortNames"], json!(["gnp", "cgnp"]));
    let columns = &gnp["spec"]["versions"][0]["additionalPrinterColumns"];
    assert_eq!(columns[0]["jsonPath"], ".spec.tier");
    assert_eq!(columns[1]["jsonPath"], ".spec.order");
    assert_eq!(gnp["spec"]["versions"][0].get("subresources"), None);
    let np = crd_of(Kind::NetworkPolicy)
        .and_then(|c| c.definition().ok())
        .unwrap_or_default();
    assert_eq!(np["spec"]["scope"], "Namespaced");
    let tier = crd_of(Kind::Tier)
        .and_then(|c| c.definition().ok())
        .unwrap_or_default();
    assert_eq!(
        tier["spec"]["versions"][0]["subresources"],
        json!({"status": {}})
    );
    let status = &tier["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(
        status["properties"]["conditions"]["items"]["required"],
        json!(["type", "status", "lastTransitionTime", "reason", "message"])
    );
}

#[test]
fn case_insensitive_enums_take_any_case() {
    let s = case_insensitive(&["Insert", "Append"]).to_value();
    assert_eq!(s["pattern"], "^(?i:Insert|Append)$");
}
