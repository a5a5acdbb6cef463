//! Golden-file tests of the reports' computation: fixed inputs (the
//! cluster in `testdata/cluster.yaml`, per-rule statistics, flow records
//! and audit events built here), outputs compared with
//! `testdata/*.golden.json`. `UPDATE_GOLDEN=1` rewrites the files.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use manul_felix_calc::evaluator::ClusterState;
use manul_proto::flows::{FlowEndpoint, FlowRecord, RuleStats};
use manul_proto::v1::{AuditChange, AuditEvent, Origin, ResourceKey};

use super::{Window, compliance, html, policy};

const WINDOW: Window = Window {
    since_unix_s: 1_700_000_000,
    until_unix_s: 1_700_003_600,
};

fn state() -> ClusterState {
    let text = include_str!("testdata/cluster.yaml");
    let loaded = manul_model::load::load("cluster.yaml", text.as_bytes());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    ClusterState::from_resources(loaded.resources.into_iter().map(|l| l.resource))
}

fn stat(
    kind: &str,
    ns: &str,
    name: &str,
    direction: &str,
    rule: Option<u32>,
    allowed: u64,
    denied: u64,
) -> RuleStats {
    RuleStats {
        tier: "default".into(),
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
        rule_index: rule,
        action: if allowed > 0 { "allow" } else { "deny" }.into(),
        records: allowed + denied,
        flows_allowed: allowed,
        flows_denied: denied,
        packets: 10 * (allowed + denied),
        bytes: 1000 * (allowed + denied),
        direction: direction.into(),
    }
}

fn stats() -> Vec<RuleStats> {
    vec![
        stat(
            "NetworkPolicy",
            "shop",
            "db-allow",
            "ingress",
            Some(0),
            40,
            0,
        ),
        stat(
            "NetworkPolicy",
            "shop",
            "db-allow",
            "ingress",
            Some(0),
            2,
            0,
        ),
        stat("NetworkPolicy", "blog", "web", "ingress", Some(0), 7, 0),
        stat("EndOfTier", "", "default", "egress", None, 0, 3),
        stat(
            "NetworkPolicy",
            "shop",
            "removed-since",
            "ingress",
            Some(1),
            1,
            0,
        ),
    ]
}

fn ep(ns: &str, workload: &str) -> FlowEndpoint {
    FlowEndpoint {
        kind: "pod".into(),
        namespace: ns.into(),
        workload: workload.into(),
        ..FlowEndpoint::default()
    }
}

fn record(src: FlowEndpoint, dst: FlowEndpoint, port: u32, action: &str, flows: u64) -> FlowRecord {
    FlowRecord {
        start_unix_s: WINDOW.since_unix_s + 15,
        end_unix_s: WINDOW.since_unix_s + 30,
        reporter: "dst".into(),
        src: Some(src),
        dst: Some(dst),
        protocol: 6,
        dst_port: port,
        action: action.into(),
        flows_started: flows,
        ..FlowRecord::default()
    }
}

fn records() -> Vec<FlowRecord> {
    let net = FlowEndpoint {
        kind: "net".into(),
        workload: "pvt".into(),
        ..FlowEndpoint::default()
    };
    vec![
        record(ep("shop", "web-*"), ep("shop", "db-*"), 5432, "allow", 40),
        record(ep("shop", "web-*"), ep("shop", "db-*"), 5432, "allow", 2),
        record(net.clone(), ep("blog", "web-*"), 443, "allow", 7),
        record(ep("blog", "cron-*"), net, 80, "allow", 1),
        record(ep("blog", "cron-*"), ep("shop", "db-*"), 5432, "deny", 3),
    ]
}

fn event(
    revision: u64,
    identity: &str,
    at: u64,
    changes: &[(&str, &str, &str, &str)],
) -> AuditEvent {
    AuditEvent {
        revision,
        origin: Some(Origin {
            identity: identity.into(),
            role: "admin".into(),
            verb: "apply".into(),
            unix_millis: at,
        }),
        changes: changes
            .iter()
            .map(|(action, kind, ns, name)| AuditChange {
                key: Some(ResourceKey {
                    kind: (*kind).into(),
                    namespace: (*ns).into(),
                    name: (*name).into(),
                }),
                action: (*action).into(),
                previous_revision: if *action == "created" {
                    0
                } else {
                    revision - 1
                },
            })
            .collect(),
    }
}

fn audit() -> Vec<AuditEvent> {
    let t = WINDOW.since_unix_s * 1000;
    vec![
        event(
            10,
            "spiffe://manul/admin",
            t + 1_000,
            &[("created", "networkpolicy", "shop", "db-allow")],
        ),
        event(
            11,
            "alice",
            t + 2_000,
            &[("updated", "globalnetworkpolicy", "", "legacy")],
        ),
        event(
            12,
            "cni",
            t + 3_000,
            &[(
                "created",
                "workloadendpoint",
                "blog",
                "node2-k8s-cron--1-eth0",
            )],
        ),
        event(
            13,
            "bob",
            t + 4_000,
            &[
                ("created", "networkpolicy", "blog", "web"),
                ("deleted", "stagednetworkpolicy", "blog", "web"),
            ],
        ),
    ]
}

fn golden(name: &str, actual: &serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/testdata")
        .join(name);
    let text = format!("{}\n", serde_json::to_string_pretty(actual).unwrap());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == text,
        "{} differs (UPDATE_GOLDEN=1 rewrites it):\n{text}",
        path.display()
    );
}

#[test]
fn the_policy_report_matches_its_golden_file() {
    let report = policy::policy_report(&state(), &stats(), WINDOW);
    golden(
        "policy.golden.json",
        &serde_json::to_value(&report).unwrap(),
    );
    // What the golden file says, spelled out.
    let names: Vec<String> = report
        .policies_selecting_nothing
        .iter()
        .map(|p| p.display())
        .collect();
    assert_eq!(names, ["legacy"]);
    let open: Vec<(String, bool, bool)> = report
        .unprotected_endpoints
        .iter()
        .map(|e| (e.name.clone(), e.ingress, e.egress))
        .collect();
    assert_eq!(
        open,
        [
            ("node2-k8s-cron--1-eth0".to_string(), true, true),
            ("node2-k8s-web--1-eth0".to_string(), false, true),
        ]
    );
    assert_eq!(report.policies[0].policy.name, "db-allow");
    assert_eq!(report.policies[0].hits.flows_allowed, 42);
    let page = html::policy_page(&report);
    assert!(page.contains("<svg") && page.contains("db-allow") && page.contains("</html>"));
}

#[test]
fn the_compliance_report_matches_its_golden_file() {
    let report = compliance::compliance_report(&state(), &records(), &audit(), WINDOW);
    golden(
        "compliance.golden.json",
        &serde_json::to_value(&report).unwrap(),
    );
    let shop = report
        .namespaces
        .iter()
        .find(|n| n.namespace == "shop")
        .unwrap();
    assert!(shop.ingress.default_deny && shop.egress.default_deny);
    let blog = report
        .namespaces
        .iter()
        .find(|n| n.namespace == "blog")
        .unwrap();
    assert!(!blog.ingress.default_deny && !blog.egress.default_deny);
    assert_eq!(
        blog.ingress.unselected_endpoints,
        ["node2-k8s-cron--1-eth0"]
    );
    assert_eq!(
        blog.changes.len(),
        2,
        "the policy and the staged one, not the endpoint"
    );
    assert_eq!(report.cluster_changes.len(), 1);
    let page = html::compliance_page(&report);
    assert!(page.contains("<svg") && page.contains("Namespace shop"));
}
