//! The scale test, the main job and the reachability scenarios on real
//! local clusters (root; CI=true makes a missing privilege a failure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn root_or_skip() -> bool {
    manul_netns::testing::have_root("this test")
}

fn scale_test() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scale-test"))
}

#[test]
fn quick_run_on_both_dataplanes_writes_reports_with_no_unexpected_allows() {
    if !root_or_skip() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let status = scale_test()
        .args([
            "run",
            "--quick",
            "--dataplane",
            "both",
            "--name",
            "mt-quick",
            "--out",
        ])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "scale-test run --quick failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    for dp in ["bpf", "iptables"] {
        let d = &report["dataplanes"][dp];
        assert_eq!(d["unexpected_allows"], 0, "{dp}");
        assert_eq!(d["failures"], 0, "{dp}");
        assert!(d["ttfp_ms"]["count"].as_u64().unwrap() > 10, "{dp}: {d}");
        assert!(d["ttfp_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(
            d["policy_enforce_ms"]["count"].as_u64().unwrap() >= 2,
            "{dp}: {d}"
        );
    }
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 5);
}

#[test]
fn shipped_scenarios_match_on_both_dataplanes() {
    if !root_or_skip() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for (scenario, dataplane) in [
        ("deny-all-ingress.yaml", "bpf"),
        ("namespace-and-pod-selector.yaml", "iptables"),
        ("ports-and-protocols.yaml", "bpf"),
        ("default-deny-egress.yaml", "iptables"),
        ("ip-block-except.yaml", "bpf"),
        ("allow-same-namespace.yaml", "iptables"),
        // Every rule field, and the two rules that were once widened, on
        // both dataplanes.
        ("service-match-of-a-missing-service.yaml", "bpf"),
        ("service-match-of-a-missing-service.yaml", "iptables"),
        ("service-account-selector.yaml", "bpf"),
        ("service-account-selector.yaml", "iptables"),
        ("rule-fields.yaml", "bpf"),
        ("rule-fields.yaml", "iptables"),
        // Services on both dataplanes: each family of kube-proxy's
        // packet-flow tests that a static scenario can express.
        ("service-no-endpoints.yaml", "bpf"),
        ("service-no-endpoints.yaml", "iptables"),
        ("service-cluster-ip.yaml", "bpf"),
        ("service-cluster-ip.yaml", "iptables"),
        ("service-session-affinity.yaml", "bpf"),
        ("service-session-affinity.yaml", "iptables"),
        ("service-terminating-fallback.yaml", "bpf"),
        ("service-terminating-fallback.yaml", "iptables"),
        ("service-backend-policy-sees-client.yaml", "bpf"),
        ("service-backend-policy-sees-client.yaml", "iptables"),
        ("service-node-port.yaml", "bpf"),
        ("service-node-port.yaml", "iptables"),
        ("service-target-port.yaml", "bpf"),
        ("service-target-port.yaml", "iptables"),
        ("service-protocol-mismatch.yaml", "bpf"),
        ("service-protocol-mismatch.yaml", "iptables"),
        ("service-hairpin.yaml", "bpf"),
        ("service-hairpin.yaml", "iptables"),
        ("service-lb-source-ranges.yaml", "bpf"),
        ("service-lb-source-ranges.yaml", "iptables"),
        // Steps: a change under open connections. A backend removed under
        // an established TCP connection: reset on eBPF, kept on nftables
        // (as kube-proxy keeps it); a connected UDP socket whose backend
        // moved reaches the new one at its next datagram on both.
        ("service-backend-removed-tcp.yaml", "bpf"),
        ("service-backend-removed-tcp.yaml", "iptables"),
        ("service-udp-backend-moved.yaml", "bpf"),
        ("service-udp-backend-moved.yaml", "iptables"),
    ] {
        let out = scale_test()
            .args(["probe", "--name", "mt-scen", "--dataplane", dataplane])
            .arg(dir.join(scenario))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{scenario} on {dataplane}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("results as expected"), "{text}");
    }
}

#[test]
fn a_scenario_that_expects_the_wrong_thing_fails() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.yaml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/deny-all-ingress.yaml"),
    )
    .unwrap()
    .replace(
        "prod/a: {prod/b: deny, dev/c: allow}",
        "prod/a: {prod/b: allow, dev/c: allow}",
    );
    std::fs::write(&path, text).unwrap();
    let out = scale_test()
        .args(["probe", "--dataplane", "iptables"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 of 6 results as expected"));
}

#[test]
fn bad_flags_and_files_exit_2() {
    for args in [
        vec!["run", "--dataplane", "ipvs"],
        vec!["run", "--duration", "-1"],
        vec!["run", "--nodes", "0"],
        vec!["probe", "/nonexistent/scenario.yaml"],
        vec!["main-job", "--dataplane", "nope"],
    ] {
        let out = scale_test().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}
