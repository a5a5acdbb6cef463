//! `manulctl report policy`, `manulctl report compliance` and `manulctl
//! audit` against a real single-node Typha and the real flow aggregator
//! (both in this process, on loopback ports): the cluster applied with
//! `manulctl apply` as a named local user, flow records stored in the
//! aggregator, the reports read over gRPC as JSON and as HTML pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::flows::{allowed_web_to_db as allowed, now, serve};
use common::{free_low_port, manulctl_env, text};
use manul_flows::{Shared, Store};
use manul_proto::flows::RecordBatch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_the_audit_trail_from_typha_and_the_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    let (_typha, server) = common::typha(dir.path()).await;
    let shared = Shared::new(Store::new(3600, 10_000));
    let port = free_low_port();
    serve(&shared, port).await;
    let url = format!("http://127.0.0.1:{port}");
    let user = [("USER", "report-tester")];
    let run = |args: Vec<String>| {
        let server = server.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            manulctl_env(&server, &refs, &user).await
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let cluster = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/report/testdata/cluster.yaml"
    );
    let out = run(args(&["apply", "-f", cluster])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = now();
    shared.store().ingest(
        "node1",
        1,
        RecordBatch {
            seq: 1,
            records: vec![allowed(t, 40), allowed(t - 15, 2)],
        },
        t,
    );

    // The policy report, as JSON and as a page.
    let page = dir.path().join("policy.html");
    let out = run(args(&[
        "report",
        "policy",
        "--aggregator",
        &url,
        "-o",
        "json",
        "--html",
        page.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &report["policies"][0];
    assert_eq!(first["name"], "db-allow", "{report:#}");
    assert_eq!(first["flows_allowed"], 42);
    assert_eq!(first["rules"][0]["flows_allowed"], 42);
    assert_eq!(first["rules"][0]["direction"], "ingress");
    assert_eq!(report["policies_selecting_nothing"][0]["name"], "legacy");
    let never: Vec<String> = report["rules_never_hit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}#{}", r["name"].as_str().unwrap(), r["index"]))
        .collect();
    assert!(
        never.contains(&"db-allow#1".to_string()) && never.contains(&"web#0".to_string()),
        "{never:?}"
    );
    let open: Vec<&str> = report["unprotected_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(open, ["node2-k8s-cron--1-eth0", "node2-k8s-web--1-eth0"]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<svg"),
        "no chart"
    );
    assert!(
        !html.contains("<script") && !html.contains("http://") || html.contains("xmlns"),
        "fetches nothing"
    );

    // The compliance report: default deny per namespace, exposure, and the
    // policy changes the audit history of the replicated log holds.
    let page = dir.path().join("compliance.html");
    let out = run(args(&[
        "report",
        "compliance",
        "--aggregator",
        &url,
        "-o",
        "json",
        "--html",
        page.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ns = |name: &str| {
        report["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == name)
            .cloned()
            .unwrap()
    };
    let shop = ns("shop");
    assert_eq!(shop["ingress"]["default_deny"], true, "{shop:#}");
    assert_eq!(shop["egress"]["default_deny"], true);
    assert_eq!(shop["ingress"]["observed_allowed"][0]["peer"], "shop/web-*");
    assert_eq!(shop["ingress"]["observed_allowed"][0]["flows"], 42);
    assert_eq!(
        shop["ingress"]["allowed_by_policy"][0]["ports"],
        "TCP ports 5432"
    );
    let blog = ns("blog");
    assert_eq!(blog["ingress"]["default_deny"], false);
    let changes = shop["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.iter().all(|c| c["identity"] == "report-tester"
        && c["role"] == "plaintext"
        && c["action"] == "created"));
    assert_eq!(report["cluster_changes"][0]["name"], "legacy");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Namespace shop") && html.contains("<svg"));

    // The audit trail: every key written, by the local user.
    let out = run(args(&["audit", "-o", "json", "--kind", "workloadendpoint"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "one apply");
    assert_eq!(lines[0]["identity"], "report-tester");
    assert_eq!(lines[0]["changes"].as_array().unwrap().len(), 4);
    let out = run(args(&["delete", "networkpolicy", "-n", "blog", "web"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(args(&["audit", "--namespace", "blog"])).await;
    let table = text(&out.stdout);
    assert!(table.lines().next().unwrap().starts_with("TIME"), "{table}");
    let last = table.lines().last().unwrap();
    assert!(
        last.contains("delete")
            && last.contains("deleted")
            && last.contains("blog/web")
            && last.contains("report-tester"),
        "{table}"
    );

    // Bad flags: exit 2, naming the flag.
    for (bad, named) in [
        (
            args(&["report", "policy", "--since", "soon", "--aggregator", &url]),
            "--since \"soon\"",
        ),
        (
            args(&["report", "compliance", "--aggregator", "ftp://x"]),
            "--aggregator \"ftp://x\"",
        ),
        (
            args(&[
                "report",
                "policy",
                "--aggregator",
                &url,
                "--html",
                dir.path().to_str().unwrap(),
            ]),
            "--html",
        ),
        (
            args(&["audit", "--kind", "widgets"]),
            "--kind \"widgets\": unknown kind",
        ),
        (args(&["report", "policy", "-o", "yaml"]), "yaml"),
    ] {
        let out = run(bad.clone()).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(named),
            "{bad:?}: {}",
            text(&out.stderr)
        );
    }
}
