//! Pod-to-pod TCP throughput between two local-cluster nodes, without and
//! then with WireGuard; prints one JSON object.
//!
//! `wireguard-bench [SECONDS]` (default 5 per run, 3 runs each, the median
//! reported). Needs root; run it under the kernel-test lock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use manul_local_cluster::{ClusterConfig, Dataplane, LocalCluster, PodSpec, wireguard};

fn pod(name: &str, node: usize) -> PodSpec {
    PodSpec {
        namespace: "bench".into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        node,
        tcp_ports: Vec::new(),
        udp_ports: Vec::new(),
        service_account: None,
    }
}

/// Median throughput in Mbit/s of `runs` transfers of `secs` each.
fn measure(c: &LocalCluster, secs: u64, runs: usize, port: &mut u16) -> anyhow::Result<f64> {
    let from = c.pod("bench/sender")?;
    let to = c.pod("bench/receiver")?;
    let mut rates = Vec::new();
    for _ in 0..runs {
        *port += 1;
        let start = Instant::now();
        let bytes = wireguard::bulk_tcp(from, to, *port, Duration::from_secs(secs))?;
        let elapsed = start.elapsed().as_secs_f64();
        rates.push(bytes as f64 * 8.0 / elapsed / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let secs: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse().context("SECONDS must be a whole number")?,
        None => 5,
    };
    let runs = 3;
    let mut c = LocalCluster::up(ClusterConfig {
        name: "mnlwgbench".into(),
        nodes: 2,
        typha_replicas: 1,
        dataplane: Dataplane::Iptables,
        policy_setup_timeout: Duration::from_secs(10),
        ..ClusterConfig::default()
    })?;
    c.add_pod(pod("sender", 0))?;
    c.add_pod(pod("receiver", 1))?;
    let mut port = 9000;
    let plaintext = measure(&c, secs, runs, &mut port)?;
    wireguard::enable(&c, Duration::from_secs(60))?;
    let encrypted = measure(&c, secs, runs, &mut port)?;
    let backend = if c
        .nodes()
        .first()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .unwrap_or_default()
        .contains("kernel WireGuard")
    {
        "kernel"
    } else {
        "userspace"
    };
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "pod-to-pod TCP bulk transfer between two local-cluster nodes",
            "seconds_per_run": secs,
            "runs": runs,
            "plaintext_mbit_s": (plaintext * 10.0).round() / 10.0,
            "wireguard_mbit_s": (encrypted * 10.0).round() / 10.0,
            "wireguard_backend": backend,
            "ratio": ((encrypted / plaintext) * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}
