//! Calico's documented FelixConfiguration and Installation examples load
//! unchanged, round-trip through the stored form, and produce exactly the
//! warnings recorded in `calico-docs/warnings.golden` (set
//! `MANUL_UPDATE_GOLDEN=1` to rewrite it after a deliberate change).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/calico-docs")
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(docs_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    files
}

#[test]
fn calico_documents_load_unchanged_with_the_recorded_warnings() {
    let mut warnings = String::new();
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = manul_model::load(&name, &std::fs::read(&path).unwrap());
        assert!(out.errors.is_empty(), "{name}: {:#?}", out.errors);
        assert!(!out.resources.is_empty(), "{name}");
        for w in &out.warnings {
            warnings.push_str(&format!("warning: {w}\n"));
        }
        for loaded in &out.resources {
            let r = &loaded.resource;
            let bytes = serde_json::to_vec(r).unwrap();
            let stored = manul_model::stored::decode(&bytes)
                .unwrap_or_else(|e| panic!("{name}: stored form: {e}"));
            assert_eq!(&stored, r, "{name}");
            let yaml = serde_yaml_ng::to_string(r).unwrap();
            let again = manul_model::load("again", yaml.as_bytes())
                .into_result()
                .unwrap_or_else(|e| panic!("{name}: {yaml}\n{e:#?}"));
            assert_eq!(&again[0].resource, r, "{name}");
        }
    }
    let golden = docs_dir().join("warnings.golden");
    if std::env::var_os("MANUL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &warnings).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        warnings,
        want,
        "warnings differ from {} (MANUL_UPDATE_GOLDEN=1 rewrites it)",
        golden.display()
    );
}

#[test]
fn the_reference_sample_warns_about_each_field_felix_ignores() {
    let path = docs_dir().join("felixconfiguration-reference.yaml");
    let out = manul_model::load("felix.yaml", &std::fs::read(path).unwrap());
    let shown: Vec<String> = out.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with(
            "felix.yaml: document 1 (FelixConfiguration default): spec.ipv6Support \
             is accepted but not acted on by Manul ("
        ),
        "{}",
        shown[0]
    );
    assert!(shown[1].contains(": spec.ipipMTU is accepted but not acted on by Manul ("));
    assert!(shown[2].contains(": spec.chainInsertMode is accepted"));
}

#[test]
fn settings_are_typed() {
    let out = manul_model::load(
        "docs.yaml",
        &std::fs::read(docs_dir().join("felixconfiguration-default.yaml")).unwrap(),
    );
    let manul_model::Resource::FelixConfiguration(f) = &out.resources[0].resource else {
        panic!("{:?}", out.resources)
    };
    use manul_model::v3::{BpfConntrackTimeout, BpfExternalServiceMode, WorkloadSourceSpoofing};
    assert_eq!(
        f.spec.workload_source_spoofing,
        Some(WorkloadSourceSpoofing::Any)
    );
    assert_eq!(
        f.spec.bpf_external_service_mode,
        Some(BpfExternalServiceMode::Dsr)
    );
    assert_eq!(f.spec.ipip_enabled, Some(true));
    assert_eq!(
        f.spec
            .bpf_conntrack_timeouts
            .as_ref()
            .unwrap()
            .tcp_fins_seen,
        Some(BpfConntrackTimeout::Auto)
    );
    assert_eq!(
        f.spec.nat_outgoing_address,
        Some("192.0.2.10".parse().unwrap())
    );
    // Calico compares these without regard to case; the canonical
    // spelling is written back.
    let lower = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  chainInsertMode: append\n  bpfEnforceRPF: strict\n";
    let out = manul_model::load("lower.yaml", lower.as_bytes());
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    let json = serde_json::to_string(&out.resources[0].resource).unwrap();
    assert!(json.contains("\"chainInsertMode\":\"Append\""), "{json}");
    assert!(json.contains("\"bpfEnforceRPF\":\"Strict\""), "{json}");
}
