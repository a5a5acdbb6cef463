//! `manulctl trace` against a real single-node Typha (in this process, on a
//! loopback port), run as the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use common::{examples, manulctl, text};

const ENDPOINTS: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: production
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-frontend-eth0
  namespace: production
  labels: {app: frontend}
spec:
  node: node1
  pod: frontend
  ipNetworks: [10.0.1.1/32]
  profiles: [kns.production]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-api-eth0
  namespace: production
  labels: {app: api}
spec:
  node: node1
  pod: api
  ipNetworks: [10.0.1.2/32]
  profiles: [kns.production]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-other-eth0
  namespace: production
  labels: {app: other}
spec:
  node: node1
  pod: other
  ipNetworks: [10.0.1.3/32]
  profiles: [kns.production]
"#;

/// The last line of stdout, after checking the exit code.
fn verdict(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_frontend_to_api() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (typha, server) = common::typha(dir.path()).await;

    let endpoints = files.path().join("endpoints.yaml");
    std::fs::write(&endpoints, ENDPOINTS).unwrap();
    let policy = examples().join("frontend-to-api.yaml");
    let out = manulctl(
        &server,
        &[
            "apply",
            "-f",
            endpoints.to_str().unwrap(),
            policy.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let trace = |from: &'static str, to: &'static str, extra: &'static [&'static str]| {
        let server = server.clone();
        async move {
            let mut args = vec!["trace", "--from", from, "--to", to];
            args.extend_from_slice(extra);
            manulctl(&server, &args).await
        }
    };

    // frontend -> api:8080 is allowed by the policy's ingress rule.
    let out = trace(
        "production/frontend",
        "production/api",
        &["--proto", "tcp", "--port", "8080"],
    )
    .await;
    assert_eq!(verdict(&out), "verdict: allow");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "ingress rule 0 (Allow) of policy production/frontend-to-api in tier default"
        ),
        "{stdout}"
    );
    // By address and by WorkloadEndpoint name too.
    let out = trace(
        "10.0.1.1",
        "production/node1-k8s-api-eth0",
        &["--proto", "TCP", "--port", "8080"],
    )
    .await;
    assert_eq!(verdict(&out), "verdict: allow");

    // Another pod, or another port: default deny once the policy selects api.
    let out = trace(
        "production/other",
        "production/api",
        &["--proto", "tcp", "--port", "8080"],
    )
    .await;
    assert_eq!(verdict(&out), "verdict: deny");
    let out = trace(
        "production/frontend",
        "production/api",
        &["--proto", "tcp", "--port", "9090"],
    )
    .await;
    assert_eq!(verdict(&out), "verdict: deny");
    assert!(text(&out.stdout).contains("end of tier default"));

    // Pods the policy does not select keep the namespace's allow-all profile.
    let out = trace(
        "production/api",
        "production/other",
        &["--proto", "6", "--port", "22"],
    )
    .await;
    assert_eq!(
        verdict(&out),
        "verdict: deny",
        "api's egress allows only 443"
    );
    let out = trace(
        "production/frontend",
        "production/other",
        &["--proto", "icmp", "--icmp-type", "8"],
    )
    .await;
    assert_eq!(verdict(&out), "verdict: allow");
    let out = trace(
        "production/api",
        "93.184.216.34",
        &["--proto", "tcp", "--port", "443"],
    )
    .await;
    assert_eq!(verdict(&out), "verdict: allow");

    // Bad input: exit 2, with the reason.
    let out = trace(
        "production/nope",
        "production/api",
        &["--proto", "tcp", "--port", "80"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("production/nope"),
        "{}",
        text(&out.stderr)
    );
    let out = trace(
        "production/frontend",
        "production/api",
        &["--proto", "tcpx"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--proto"),
        "{}",
        text(&out.stderr)
    );
    let out = trace("nonsense", "production/api", &["--proto", "tcp"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = trace(
        "production/frontend",
        "production/api",
        &["--proto", "icmp", "--port", "80"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = trace(
        "production/frontend",
        "production/api",
        &["--proto", "tcp", "--port", "70000"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = trace(
        "production/frontend",
        "production/api",
        &["--proto", "icmp", "--icmp-code", "1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));

    typha.shutdown().await;
}
