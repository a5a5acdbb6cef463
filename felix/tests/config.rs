//! FelixConfiguration against the `felix` binary and a real Typha (in this
//! process, on loopback), with the null dataplane: the per-node resource
//! overrides the global one, the environment overrides both, a live setting
//! changes without a restart, a restart setting restarts Felix in place,
//! Calico's listeners follow their settings, the operator's Installation
//! picks the dataplane, `--print-config` shows each value's source, and
//! SIGTERM stops Felix cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use manul_typha::server::{TyphaConfig, start};

fn felix_config(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn lines_with(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_follows_felix_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().unwrap();
    let typha = start(TyphaConfig::single(dir.path().to_path_buf(), addr))
        .await
        .unwrap();
    let mut api = api_client(&typha, addr).await;
    let (global_health, node_health, prometheus) = (port(), port(), port());
    apply(
        &mut api,
        &[
            felix_config(
                "default",
                &format!(
                    "  interfacePrefix: tap\n  logSeverityScreen: Warning\n  healthEnabled: true\n  healthPort: {global_health}\n  routeRefreshInterval: 45s\n"
                ),
            ),
            felix_config(
                "node.node1",
                &format!("  interfacePrefix: cali\n  healthPort: {node_health}\n"),
            ),
            // Another node's resource does not apply here.
            felix_config("node.node2", "  interfacePrefix: other\n"),
        ],
    )
    .await;

    // --print-config: the merge, with sources, without starting anything.
    let out = Command::new(env!("CARGO_BIN_EXE_felix"))
        .args([
            "--node",
            "node1",
            "--typha",
            &addr.to_string(),
            "--print-config",
        ])
        .env("FELIX_IPTABLESREFRESHINTERVAL", "30")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("interfacePrefix"),
        "interfacePrefix cali datastore (node) restart"
    );
    assert_eq!(
        line("logSeverityScreen"),
        "logSeverityScreen Warning datastore (default) live"
    );
    assert_eq!(
        line("iptablesRefreshInterval"),
        "iptablesRefreshInterval 30s environment live"
    );
    assert_eq!(line("bpfEnabled"), "bpfEnabled false default restart");

    let metrics_port = port();
    let log = dir.path().join("felix.log");
    let child = Command::new(env!("CARGO_BIN_EXE_felix"))
        .args(["--node", "node1", "--typha", &addr.to_string()])
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
        .env_remove("RUST_LOG")
        .env("FELIX_IPTABLESREFRESHINTERVAL", "30")
        .env("FELIX_HEALTHHOST", "127.0.0.1")
        .env("FELIX_PROMETHEUSMETRICSENABLED", "true")
        .env("FELIX_PROMETHEUSMETRICSHOST", "127.0.0.1")
        .env("FELIX_PROMETHEUSMETRICSPORT", prometheus.to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("felix.err")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut felix = Felix(child);
    let first = config_where(metrics_port, "felix serves /config", |_| true).await;
    assert_eq!(first["node"], "node1");
    assert_eq!(
        setting(&first, "interfacePrefix"),
        ("cali".into(), "datastorePerHost".into())
    );
    assert_eq!(
        setting(&first, "healthPort"),
        (node_health.to_string(), "datastorePerHost".into())
    );
    assert_eq!(
        setting(&first, "healthEnabled"),
        ("true".into(), "datastoreGlobal".into())
    );
    assert_eq!(
        setting(&first, "iptablesRefreshInterval"),
        ("30s".into(), "environment".into())
    );
    assert_eq!(
        setting(&first, "routeRefreshInterval"),
        ("45s".into(), "datastoreGlobal".into())
    );
    let run = first["runId"].as_str().unwrap().to_string();

    // Calico's listeners: health on the node's port (not the global one),
    // Prometheus where the environment says.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(node_health, "/readiness").await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the health listener never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(node_health, "/liveness").await.map(|r| r.0), Some(200));
    assert!(get(global_health, "/readiness").await.is_none());
    let (code, body) = get(prometheus, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("felix_resync_state"), "{body}");
    assert_eq!(get(prometheus, "/config").await.map(|r| r.0), Some(404));

    // A live change: the log level, applied without a restart.
    assert_eq!(lines_with(&log, "DEBUG"), 0, "debug lines at Warning");
    apply(
        &mut api,
        &[felix_config(
            "node.node1",
            &format!(
                "  interfacePrefix: cali\n  healthPort: {node_health}\n  logSeverityScreen: Debug\n  iptablesRefreshInterval: 10s\n"
            ),
        )],
    )
    .await;
    let live = config_where(metrics_port, "logSeverityScreen becomes Debug", |v| {
        setting(v, "logSeverityScreen").0 == "Debug"
    })
    .await;
    assert_eq!(live["runId"], run.as_str(), "a live change restarted Felix");
    assert_eq!(setting(&live, "logSeverityScreen").1, "datastorePerHost");
    // The environment still wins over the datastore.
    assert_eq!(
        setting(&live, "iptablesRefreshInterval"),
        ("30s".into(), "environment".into())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines_with(&log, "DEBUG") == 0 {
        assert!(Instant::now() < deadline, "no debug lines after the change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(felix.0.try_wait().unwrap().is_none());

    // A change that needs a restart: Felix restarts in place (same
    // process, a new run) and comes back with the new value.
    apply(
        &mut api,
        &[felix_config(
            "node.node1",
            &format!("  interfacePrefix: cali,tap\n  healthPort: {node_health}\n  logSeverityScreen: Debug\n"),
        )],
    )
    .await;
    let restarted = config_where(metrics_port, "Felix restarts with the new prefixes", |v| {
        setting(v, "interfacePrefix").0 == "cali,tap"
    })
    .await;
    assert_ne!(restarted["runId"], run.as_str());
    assert!(
        restarted["runId"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{pid}-"))
    );
    assert!(
        felix.0.try_wait().unwrap().is_none(),
        "felix exited instead of restarting"
    );
    assert!(lines_with(&log, "configuration changed: restarting Felix") >= 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(metrics_port, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "felix never became ready after restarting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleting the node's resource falls back to the global one.
    api.delete(manul_proto::v1::DeleteRequest {
        keys: vec![manul_proto::v1::ResourceKey {
            kind: "felixconfiguration".into(),
            namespace: String::new(),
            name: "node.node1".into(),
        }],
        expected_revision: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let fallback = config_where(metrics_port, "the global prefix applies again", |v| {
        setting(v, "interfacePrefix").0 == "tap"
    })
    .await;
    assert_eq!(setting(&fallback, "interfacePrefix").1, "datastoreGlobal");
    assert_eq!(
        setting(&fallback, "logSeverityScreen"),
        ("Warning".into(), "datastoreGlobal".into())
    );

    // The operator's Installation picks the dataplane over the datastore
    // (a restart-requiring change, so Felix restarts in place).
    apply(
        &mut api,
        &["apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: default\nspec:\n  calicoNetwork:\n    linuxDataplane: BPF\n".to_string()],
    )
    .await;
    let installed = config_where(metrics_port, "the Installation turns bpfEnabled on", |v| {
        setting(v, "bpfEnabled").0 == "true"
    })
    .await;
    assert_eq!(setting(&installed, "bpfEnabled").1, "installation");
    assert!(felix.0.try_wait().unwrap().is_none());

    // SIGTERM (the kubelet stopping the pod): a clean exit, soon.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = felix.0.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "felix ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Success, not death by the signal: Felix handled it.
    assert!(code.success(), "{code:?}");
    drop(felix);
    typha.shutdown().await;
}

#[test]
fn a_malformed_variable_is_an_error_before_anything_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_felix"))
        .args([
            "--node",
            "node1",
            "--typha",
            "127.0.0.1:1",
            "--print-config",
        ])
        .env("FELIX_INTERFACEPREFIX", "cali,,tap")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FELIX_INTERFACEPREFIX") && err.contains("empty"),
        "{err}"
    );
}
