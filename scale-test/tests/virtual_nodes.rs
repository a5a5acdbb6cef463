//! `scale-test virtual-nodes` at a small count: 50 virtual Felix against
//! three real `typha` processes on loopback (no root needed), a few policy
//! changes, one replica SIGKILLed. Every node must take every change, and
//! every client of the dead replica must resume on another without a
//! snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn scale_test() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scale-test"))
}

fn run(args: &[&str]) -> (std::process::ExitStatus, serde_json::Value, String) {
    let out = scale_test()
        .arg("virtual-nodes")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status, report, stderr)
}

#[test]
fn fifty_nodes_converge_and_resume_without_a_snapshot_after_a_replica_dies() {
    let (status, r, stderr) = run(&[
        "--nodes",
        "50",
        "--changes",
        "3",
        "--replicas",
        "3",
        "--kill",
        "follower",
        "--change-pause-ms",
        "20",
        "--timeout-s",
        "20",
    ]);
    assert!(status.success(), "{status}: {stderr}\n{r:#}");
    assert_eq!(r["driver_failures"], 0, "{r:#}");
    // Every node took the probe policy at start (from a snapshot) and then
    // every change.
    assert_eq!(r["startup"]["snapshots"], 50);
    assert!(r["startup"]["operations_per_node"]["p50"].as_f64().unwrap() > 10.0);
    let p = &r["propagation"];
    assert_eq!(p["ack_to_node_ms"]["count"], 150, "{p:#}");
    assert_eq!(p["ack_to_all_nodes_ms"]["count"], 3, "{p:#}");
    assert!(p["ack_to_all_nodes_ms"]["max"].as_f64().unwrap() < 20_000.0);
    // Three replicas shared the clients, each measured from /proc.
    let typha = r["typha"].as_array().unwrap();
    assert_eq!(typha.len(), 3);
    let clients: u64 = typha.iter().map(|t| t["clients"].as_u64().unwrap()).sum();
    assert_eq!(clients, 50);
    for t in typha {
        assert!(t["rss_in_sync_bytes"].as_u64().unwrap() > 1 << 20, "{t}");
        assert!(t["changes_cpu_s"].as_f64().unwrap() >= 0.0);
    }
    assert!(r["memory"]["per_node_bytes"].as_f64().unwrap() > 0.0);
    // The storm: a follower died; its clients came back by resuming.
    let s = &r["storm"];
    assert_eq!(s["killed_leader"], false, "{s:#}");
    let moved = s["clients_moved"].as_u64().unwrap();
    assert!(moved >= 10, "{s:#}");
    assert_eq!(s["snapshots"], 0, "{s:#}");
    assert_eq!(s["server_snapshots"], 0, "{s:#}");
    assert!(s["resumed"].as_u64().unwrap() >= moved, "{s:#}");
    assert_eq!(s["reconnect_ms"]["count"].as_u64().unwrap(), moved);
    assert!(s["converged_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn nodes_on_the_lean_transport_started_over_time_converge_and_resume() {
    let (status, r, stderr) = run(&[
        "--nodes",
        "30",
        "--changes",
        "2",
        "--transport",
        "tcp",
        "--start-per-s",
        "60",
        "--change-pause-ms",
        "20",
        "--timeout-s",
        "20",
    ]);
    assert!(status.success(), "{status}: {stderr}\n{r:#}");
    assert_eq!(r["config"]["transport"], "tcp", "{r:#}");
    assert_eq!(r["startup"]["snapshots"], 30, "{r:#}");
    // Started half a second apart from first to last.
    assert!(
        r["startup"]["all_in_sync_s"].as_f64().unwrap() >= 0.48,
        "{r:#}"
    );
    assert_eq!(r["startup"]["node_in_sync_ms"]["count"], 30, "{r:#}");
    assert_eq!(r["propagation"]["ack_to_node_ms"]["count"], 60, "{r:#}");
    let s = &r["storm"];
    assert!(s["clients_moved"].as_u64().unwrap() >= 5, "{s:#}");
    assert_eq!(s["snapshots"], 0, "{s:#}");
    assert!(s["resumed"].as_u64().unwrap() >= s["clients_moved"].as_u64().unwrap());
}

#[test]
fn bad_flags_exit_2_naming_the_problem() {
    for (args, says) in [
        (&["--kill", "sideways"][..], "--kill"),
        (&["--nodes", "0"][..], "--nodes"),
        (&["--replicas", "2", "--kill", "leader"][..], "--replicas 3"),
        (&["--threads", "x"][..], "--threads"),
        (&["--transport", "quic"][..], "--transport"),
        (&["--start-per-s", "nan"][..], "--start-per-s"),
    ] {
        let (status, _, stderr) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
