use super::*;

/// A document of the entry's kind that sets the entry's field to null:
/// loading it proves the field exists (an unknown field is an error).
fn document_naming(entry: &NotActedOn) -> String {
    let (api, kind) = (entry.kind.api_version(), entry.kind.name());
    let mut body = String::new();
    for (depth, key) in entry.field.split('.').enumerate() {
        body.push_str(&format!("{}{key}:\n", "  ".repeat(depth)));
    }
    format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: default\n{body}")
}

#[test]
fn every_entry_names_a_field_the_types_accept() {
    for entry in NOT_ACTED_ON {
        let doc = document_naming(entry);
        let out = crate::load("t.yaml", doc.as_bytes());
        assert!(out.errors.is_empty(), "{doc}\n{:#?}", out.errors);
    }
    let mut fields: Vec<_> = NOT_ACTED_ON.iter().map(|e| e.field).collect();
    fields.sort_unstable();
    fields.dedup();
    assert_eq!(fields.len(), NOT_ACTED_ON.len(), "a field is listed twice");
}

/// The README's section, as this table says it must read: the fields
/// grouped by reason, in the table's order.
fn readme_section() -> String {
    let mut out = String::new();
    for kind in [Kind::FelixConfiguration, Kind::Installation] {
        out.push_str(&format!("\n{}:\n\n", kind.name()));
        let mut reasons: Vec<&str> = Vec::new();
        for e in NOT_ACTED_ON.iter().filter(|e| e.kind == kind) {
            if !reasons.contains(&e.reason) {
                reasons.push(e.reason);
            }
        }
        for reason in reasons {
            let fields: Vec<String> = NOT_ACTED_ON
                .iter()
                .filter(|e| e.kind == kind && e.reason == reason)
                .map(|e| format!("`{}`", e.field))
                .collect();
            out.push_str(&format!("- {}: {}.\n", fields.join(", "), reason));
        }
    }
    out
}

#[test]
fn the_readme_lists_every_field_with_its_reason() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let begin = "<!-- not-acted-on: generated from model/src/not_acted.rs -->\n";
    let end = "<!-- end of not-acted-on -->";
    let section = readme
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(s, _)| s);
    let want = readme_section();
    assert_eq!(
        section,
        Some(want.as_str()),
        "README.md's list of fields accepted but not acted on must read, \
         between {begin:?} and {end:?}:\n{want}"
    );
}

#[test]
fn warnings_name_each_field_set_and_nothing_else() {
    let doc: Value = serde_yaml_ng::from_str(
        "metadata: {name: default}\nspec:\n  ipipMTU: 1400\n  chainInsertMode: Append\n  \
         logSeverityScreen: Info\n  ipv6Support: null\n",
    )
    .expect("yaml");
    let w = warnings(Kind::FelixConfiguration, &doc);
    let paths: Vec<_> = w.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["spec.ipipMTU", "spec.chainInsertMode"]);
    assert!(warnings(Kind::NetworkPolicy, &doc).is_empty());
    let inst: Value = serde_yaml_ng::from_str(
        "spec:\n  cni: {type: Calico}\n  calicoNetwork:\n    nodeAddressAutodetectionV4: {firstFound: true}\n",
    )
    .expect("yaml");
    let paths: Vec<_> = warnings(Kind::Installation, &inst)
        .into_iter()
        .map(|w| w.path)
        .collect();
    assert_eq!(
        paths,
        ["spec.cni", "spec.calicoNetwork.nodeAddressAutodetectionV4"]
    );
}
