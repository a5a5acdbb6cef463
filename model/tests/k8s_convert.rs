//! Golden tests of the Kubernetes conversions: each `k8s-convert/*.json`
//! holds one object exactly as the API server returns it; its `.yaml`
//! twin holds the v3 resources it becomes (a Node also gives its automatic
//! host endpoint), or `# skipped: WHY` / `# error: WHY`. Every produced
//! resource must pass validation and load back unchanged. Set
//! `MANUL_UPDATE_GOLDEN=1` to rewrite the `.yaml` files after a deliberate
//! change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use manul_model::Resource;
use manul_model::convert::node::{auto_host_endpoint, node};
use manul_model::convert::pod::{PodEndpoint, workload_endpoint};
use manul_model::convert::service_account::service_account_profile;
use manul_model::convert::{namespace_profile, network_policy};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s-convert");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).unwrap()
}

/// The resources `json` converts to, or the reason it gives none.
fn convert(json: &str) -> Result<Vec<Resource>, String> {
    let kind: serde_json::Value = serde_json::from_str(json).unwrap();
    let err = |e: manul_model::convert::ConvertError| format!("error: {e}");
    match kind["kind"].as_str().unwrap() {
        "Pod" => match workload_endpoint(&parse::<Pod>(json)).map_err(err)? {
            PodEndpoint::Endpoint(wep) => Ok(vec![Resource::WorkloadEndpoint(*wep)]),
            PodEndpoint::Skipped(why) => Err(format!("skipped: {why}")),
        },
        "Namespace" => Ok(vec![Resource::Profile(namespace_profile(&parse::<
            Namespace,
        >(json)))]),
        "ServiceAccount" => Ok(vec![Resource::Profile(
            service_account_profile(&parse::<ServiceAccount>(json)).map_err(err)?,
        )]),
        "Node" => {
            let n = node(&parse::<Node>(json)).map_err(err)?;
            let hep = auto_host_endpoint(&n);
            Ok(vec![Resource::Node(n), Resource::HostEndpoint(hep)])
        }
        "NetworkPolicy" => Ok(vec![Resource::NetworkPolicy(
            network_policy(&parse::<NetworkPolicy>(json)).map_err(err)?,
        )]),
        other => panic!("no conversion for {other}"),
    }
}

fn render(out: &Result<Vec<Resource>, String>) -> String {
    match out {
        Err(why) => format!("# {why}\n"),
        Ok(rs) => rs
            .iter()
            .map(|r| serde_yaml_ng::to_string(r).unwrap())
            .collect::<Vec<_>>()
            .join("---\n"),
    }
}

#[test]
fn kubernetes_objects_convert_as_recorded() {
    let cases = cases();
    assert!(cases.len() >= 15, "{cases:?}");
    let update = std::env::var_os("MANUL_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for input in cases {
        let name = input.file_stem().unwrap().to_string_lossy().into_owned();
        let out = convert(&std::fs::read_to_string(&input).unwrap());
        // The file name states the expected outcome class.
        match &out {
            Err(why) if name.contains("-skip-") => {
                assert!(why.starts_with("skipped:"), "{name}: {why}")
            }
            Err(why) if name.contains("-error-") => {
                assert!(why.starts_with("error:"), "{name}: {why}")
            }
            Err(why) => panic!("{name}: {why}"),
            Ok(_) => assert!(
                !name.contains("-skip-") && !name.contains("-error-"),
                "{name}"
            ),
        }
        for r in out.iter().flatten() {
            let problems = manul_model::validate::validate(r);
            assert!(problems.is_empty(), "{name}: {r:?}: {problems:?}");
            let yaml = serde_yaml_ng::to_string(r).unwrap();
            let back = manul_model::load(&name, yaml.as_bytes())
                .into_result()
                .unwrap();
            assert_eq!(back.len(), 1, "{name}");
            assert_eq!(&back[0].resource, r, "{name}: does not load back unchanged");
        }
        let text = render(&out);
        let golden = input.with_extension("yaml");
        if update {
            std::fs::write(&golden, &text).unwrap();
        } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(text.as_str()) {
            failures.push(format!("{name}: got\n{text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
