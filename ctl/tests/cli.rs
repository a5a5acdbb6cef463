//! manulctl's offline commands, run as a user would: the real binary, real
//! files, real exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn manulctl(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manulctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repository's `examples/`.
fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn validate_accepts_every_example() {
    let dir = examples();
    let out = manulctl(&["validate", "-f", dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "HostEndpoint node1-eth0 ok",
        "NetworkPolicy production/frontend-to-api ok",
        "GlobalNetworkPolicy host-protection ok",
        "Installation default ok",
        "NetworkPolicy data/db-ingress ok",
        "Tier security ok",
        "GlobalNetworkSet blocked-ranges ok",
        "GlobalNetworkPolicy security.block-threats ok",
        "GlobalNetworkPolicy default-deny-with-dns ok",
        "GlobalThreatFeed abuse-ips ok",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing from:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.lines().count(),
        10,
        "bad/ is not read without -R:\n{stdout}"
    );
}

#[test]
fn validate_rejects_every_bad_example_with_exit_2() {
    let bad = examples().join("bad");
    for (file, needle) in [
        (
            "bad-cidr.yaml",
            "spec.nets[0]: \"10.0.0.300/8\" is not a valid CIDR",
        ),
        (
            "bad-selector.yaml",
            "spec.selector: invalid selector \"app == api\": at position 7",
        ),
    ] {
        let path = bad.join(file);
        let out = manulctl(&["validate", "-f", path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert!(
            out.stdout.is_empty(),
            "{file}: nothing is ok when anything is bad"
        );
        let stderr = text(&out.stderr);
        assert!(stderr.contains(needle), "{file}: {stderr}");
        assert!(
            stderr.contains(file),
            "{file}: error names the file: {stderr}"
        );
    }
    // Recursing into bad/ makes the whole run fail, reporting both errors.
    let out = manulctl(
        &["validate", "-R", "-f", examples().to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).matches("error: ").count(),
        2,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_reads_stdin_and_rejects_garbage() {
    let good = b"apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n";
    let out = manulctl(&["validate", "-f", "-"], Some(good));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "Tier t ok\n");

    let out = manulctl(&["validate", "-f", "-"], Some(b"\xff\xfe\x00garbage"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("-: input is not UTF-8"),
        "{}",
        text(&out.stderr)
    );

    let out = manulctl(&["validate", "-f", "/nonexistent/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot open /nonexistent/file.yaml"));

    let out = manulctl(&["validate"], None);
    assert_eq!(out.status.code(), Some(2), "missing -f is a usage error");
    let out = manulctl(&["validate", "--frobnicate", "-f", "-"], None);
    assert_eq!(out.status.code(), Some(2), "unknown flag is a usage error");
}

#[test]
fn validate_reports_a_50_mb_document_without_reading_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: big\nspec:\n  nets:\n").unwrap();
    let line = b"  - 10.0.0.0/8\n";
    for _ in 0..(50 * 1024 * 1024 / line.len()) {
        f.write_all(line).unwrap();
    }
    drop(f);
    let out = manulctl(&["validate", "-f", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the limit is 8388608 bytes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn convert_prints_the_v3_form() {
    let path = examples().join("k8s-networkpolicy.yaml");
    let out = manulctl(&["convert", "-f", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    // The output is itself loadable v3.
    let loaded = manul_model_load(&yaml);
    assert!(
        loaded.contains("NetworkPolicy data/knp.default.db-ingress ok"),
        "{loaded}"
    );
    for needle in [
        "selector: projectcalico.org/orchestrator == \"k8s\" && role == \"db\"",
        "namespaceSelector: team == \"web\"",
        "- 5432",
        "- 10.0.0.0/8",
        "notNets:\n      - 10.1.0.0/16",
    ] {
        assert!(yaml.contains(needle), "{needle:?} missing from:\n{yaml}");
    }
}

fn manul_model_load(yaml: &str) -> String {
    let out = manulctl(&["validate", "-f", "-"], Some(yaml.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn selector_eval_answers_each_line() {
    let input = concat!(
        "{\"selector\": \"app == \\\"api\\\" && !has(canary)\", \"labels\": {\"app\": \"api\"}}\n",
        "{\"selector\": \"env != 'prod'\", \"labels\": {}}\n",
        "{\"selector\": \"b in {'z','a','z'} || a == 'x' && c == 'y'\"}\n",
        "{\"selector\": \"app == api\"}\n",
    );
    let out = manulctl(&["selector", "eval"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], serde_json::json!({"match": true}));
    assert_eq!(
        lines[1],
        serde_json::json!({"match": true}),
        "absent label: != is true"
    );
    assert_eq!(
        lines[2],
        serde_json::json!({"canonical": "(b in {\"a\", \"z\"} || (a == \"x\" && c == \"y\"))"})
    );
    assert!(lines[3]["error"].as_str().unwrap().contains("position 7"));

    let out = manulctl(
        &["selector", "eval"],
        Some(b"{\"selector\": \"all()\"}\n[oops\n"),
    );
    assert_eq!(out.status.code(), Some(2));
}

fn calico_docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/calico-docs")
}

#[test]
fn validate_warns_about_fields_it_accepts_but_does_not_act_on() {
    let path = calico_docs().join("felixconfiguration-reference.yaml");
    let out = manulctl(&["validate", "-f", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "FelixConfiguration default ok\n");
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    let file = path.display().to_string();
    for (line, field) in lines
        .iter()
        .zip(["ipv6Support", "ipipMTU", "chainInsertMode"])
    {
        let head = format!(
            "warning: {file}: document 1 (FelixConfiguration default): spec.{field} is accepted but not acted on by Manul ("
        );
        assert!(line.starts_with(&head), "{line}");
    }
    // Every Installation of Calico's install pages validates, with warnings.
    let out = manulctl(&["validate", "-f", calico_docs().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches("Installation default ok").count(),
        8,
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains(
        "(Installation default): spec.calicoNetwork.nodeAddressAutodetectionV4 is accepted but not acted on by Manul ("
    ));
    let stderr = text(&out.stderr);
    assert!(
        stderr.lines().all(|l| l.starts_with("warning: ")),
        "{stderr}"
    );
}

#[test]
fn validate_reports_every_error_of_a_document() {
    let doc = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  ipipMTU: 1400\n  ipipMTUU: 1400\n  healthPort: 70000\n  interfacePrefix: 1234567890123456789012345\n";
    let out = manulctl(&["validate", "-f", "-"], Some(doc.as_bytes()));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "error: -: document 1 (FelixConfiguration default): spec: unknown field `ipipMTUU`; did you mean `ipipMTU`?\n\
         error: -: document 1 (FelixConfiguration default): spec.healthPort: expected an integer 0-65535, found the integer 70000\n\
         error: -: document 1 (FelixConfiguration default): spec.interfacePrefix: expected a string, found the integer 1234567890123456789012345\n\
         3 error(s); nothing is valid until all are fixed\n"
    );
}
