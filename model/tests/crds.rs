//! The CRDs checked in under `deploy/kubernetes/base/crds/` are the
//! generator's output, and their schemas accept every document in
//! `examples/` and reject those in `examples/bad/` that a schema can judge.

use std::path::{Path, PathBuf};

use manul_model::Kind;
use manul_model::crd::{self, CRDS};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn checked_in_crds_are_the_generators_output() {
    let dir = repo().join("deploy/kubernetes/base/crds");
    let files = crd::files().unwrap_or_else(|e| panic!("{e}"));
    let regenerate = "regenerate them with `cargo run -p manul-ctl -- crds --out deploy/kubernetes/base/crds` \
                      and re-render deploy/manul.yaml (`python3 scripts/check-manifests.py --write`)";
    for (name, text) in &files {
        let have = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if have != *text {
            let line = have.lines().zip(text.lines()).position(|(a, b)| a != b);
            let at = line.map_or_else(
                || "in length".to_string(),
                |i| {
                    format!(
                        "at line {}: {:?}",
                        i + 1,
                        text.lines().nth(i).unwrap_or_default()
                    )
                },
            );
            panic!(
                "deploy/kubernetes/base/crds/{name} differs from the generator's output {at}; {regenerate}"
            );
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    on_disk.sort();
    let mut generated: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
    generated.sort();
    assert_eq!(
        on_disk, generated,
        "files in deploy/kubernetes/base/crds; {regenerate}"
    );
}

/// The schema as the API server applies it with strict field validation
/// (kubectl's default): unknown fields are errors. The CRD itself leaves
/// that to the server (a structural schema cannot say
/// `additionalProperties: false`).
fn strict(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out: serde_json::Map<String, Value> =
                m.iter().map(|(k, x)| (k.clone(), strict(x))).collect();
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(strict).collect()),
        other => other.clone(),
    }
}

fn validator(kind: Kind) -> Option<jsonschema::Validator> {
    let crd = crd::crd_of(kind)?;
    let schema = strict(&crd.schema().unwrap_or_else(|e| panic!("{kind}: {e}")));
    Some(jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{kind}: {e}")))
}

/// Each document of a YAML file with its kind; documents of kinds without
/// a CRD are left out.
fn documents(path: &Path) -> Vec<(Kind, Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(de)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (Some(api), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str()) else {
            continue;
        };
        if let Some(k) = Kind::from_type(api, kind).filter(|k| crd::crd_of(*k).is_some()) {
            out.push((k, doc));
        }
    }
    out
}

/// Problems the schema finds in `doc`.
fn problems(kind: Kind, doc: &Value) -> Vec<String> {
    let Some(v) = validator(kind) else {
        return vec![format!("{kind} has no CRD")];
    };
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn schemas_accept_every_example() {
    let mut checked = 0;
    for path in yaml_files(&repo().join("examples")) {
        for (kind, doc) in documents(&path) {
            let p = problems(kind, &doc);
            assert!(
                p.is_empty(),
                "{}: {kind} {}: {p:#?}",
                path.display(),
                doc["metadata"]["name"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} documents checked");
}

/// Bad examples whose rule no schema can state, and why. Each is still
/// rejected by the model (`manulctl validate`, Typha's write API and the
/// watchers).
const BEYOND_A_SCHEMA: &[(&str, &str)] = &[(
    "bad-selector.yaml",
    "a selector's grammar (quoting, operators, parentheses) is not a regular language, so no pattern can judge it; the model's parser does",
)];

#[test]
fn schemas_reject_the_bad_examples_they_can_judge() {
    for path in yaml_files(&repo().join("examples/bad")) {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let text = std::fs::read(&path).unwrap_or_default();
        assert!(
            !manul_model::load(file, &text).errors.is_empty(),
            "{file}: the model accepts it"
        );
        let docs = documents(&path);
        assert!(!docs.is_empty(), "{file}: no document of a kind with a CRD");
        let rejected = docs.iter().any(|(k, d)| !problems(*k, d).is_empty());
        match BEYOND_A_SCHEMA.iter().find(|(f, _)| *f == file) {
            None => assert!(rejected, "{file}: the CRD schema accepts it"),
            Some((_, why)) => assert!(
                !rejected,
                "{file}: the schema rejects it, so drop it from BEYOND_A_SCHEMA ({why})"
            ),
        }
    }
}

fn doc(yaml: &str) -> (Kind, Value) {
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    let kind = Kind::from_type(
        v["apiVersion"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
    )
    .unwrap_or_else(|| panic!("no kind in {yaml}"));
    (kind, v)
}

#[test]
fn schemas_judge_ports_protocols_cidrs_enums_and_unknown_fields() {
    let policy = |rule: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  ingress:\n  - {rule}\n"
        )
    };
    let good = [
        policy("{action: Allow, protocol: TCP, destination: {ports: [80, '8000:8080', http-alt]}}"),
        policy("{action: Allow, protocol: 132}"),
        policy("{action: Allow, protocol: udplite, source: {nets: [10.0.0.0/8, 10.1.2.3, 'fd00::/64', '::1']}}"),
        policy("{action: Deny, icmp: {type: 8, code: 0}, protocol: ICMP}"),
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {chainInsertMode: append, bpfConntrackTimeouts: {tcpEstablished: 1h30m, udpTimeout: Auto}, routeRefreshInterval: 90s}\n".to_string(),
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, interfaceName: eth0, expectedIPs: [192.168.0.1, 'fd00::1']}\n".to_string(),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: 10.65.0.0/16, vxlanMode: CrossSubnet, blockSize: 26}\n".to_string(),
    ];
    for y in &good {
        let (k, d) = doc(y);
        let p = problems(k, &d);
        assert!(p.is_empty(), "{y}: {p:#?}");
    }
    let bad = [
        (policy("{action: Allow, destination: {ports: [70000]}}"), "port out of range"),
        (policy("{action: Allow, destination: {ports: [Not_A_Name]}}"), "bad port name"),
        (policy("{action: Allow, destination: {ports: [a-very-long-port-name]}}"), "port name too long"),
        (policy("{action: Allow, protocol: 0}"), "protocol 0"),
        (policy("{action: Allow, protocol: GRE}"), "unknown protocol name"),
        (policy("{action: allow}"), "action is case-sensitive"),
        (policy("{protocol: TCP}"), "no action"),
        (policy("{action: Allow, source: {nets: [10.0.0.0/33]}}"), "prefix too long"),
        (policy("{action: Allow, icmp: {type: 255}}"), "ICMP type 255"),
        (policy("{action: Allow, ipVersion: 5}"), "IP version 5"),
        (policy("{action: Allow, sauce: {}}"), "unknown field"),
        (
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {chainInsertMode: sideways}\n".into(),
            "unknown enum value",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {routeRefreshInterval: soon}\n".into(),
            "not a duration",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec: {expectedIPs: [300.1.1.1]}\n".into(),
            "not an address",
        ),
    ];
    for (y, why) in &bad {
        let (k, d) = doc(y);
        assert!(!problems(k, &d).is_empty(), "{why}: the schema accepts {y}");
        let model = manul_model::load("test", y.as_bytes());
        assert!(!model.errors.is_empty(), "{why}: the model accepts {y}");
    }
    assert_eq!(CRDS.len(), 14);
}
