//! Tests of the report module, with the fixtures they share.

mod json;
mod machine;
mod stats;
mod write;

use std::collections::BTreeMap;

use serde_json::json;

use super::{DataplaneRun, Machine, Report, ResourceSample, Sample};

/// `n` samples at one per 0.1 s whose values are `scale * 1..=n` in a
/// shuffled order (so sorting matters).
fn samples(n: usize, scale: f64) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            at_s: i as f64 * 0.1,
            // 37 is coprime with the sizes used, so this permutes 1..=n.
            value_ms: scale * ((i * 37 % n) + 1) as f64,
        })
        .collect()
}

/// Resource samples of one Typha and two Felixes, once a second.
fn resources(seconds: usize) -> Vec<ResourceSample> {
    let mut out = Vec::new();
    for t in 0..seconds {
        for (process, cpu, rss) in [
            ("typha-1", 10.0, 50u64 << 20),
            ("felix-node1", 5.0, 30 << 20),
            ("felix-node2", 6.0, 31 << 20),
        ] {
            out.push(ResourceSample {
                at_s: t as f64,
                process: process.to_owned(),
                cpu_percent: cpu + t as f64,
                rss_bytes: rss + (t as u64) * 4096,
            });
        }
    }
    out
}

/// A run with every series filled.
fn full_run(scale: f64) -> DataplaneRun {
    DataplaneRun {
        ttfp: samples(100, scale),
        policy_allow: samples(20, scale * 2.0),
        policy_deny: samples(30, scale * 3.0),
        unexpected_allows: 0,
        failures: 1,
        failure_messages: vec!["pod p-17: no reply in 10 s".to_owned()],
        pods_created: 101,
        pods_deleted: 90,
        policy_updates: 50,
        duration_s: 10.0,
        resources: resources(10),
    }
}

fn machine() -> Machine {
    Machine {
        cpus: 2,
        cpu_model: "Test CPU".to_owned(),
        memory_bytes: 4 << 30,
        kernel: "6.1.0-test".to_owned(),
        os: "Test OS 1".to_owned(),
    }
}

/// A report over `runs`.
fn report(runs: impl IntoIterator<Item = (&'static str, DataplaneRun)>) -> Report {
    Report {
        config: json!({"nodes": 3, "standing_policies": 100, "churn_pods_per_s": 10.0}),
        machine: machine(),
        dataplanes: runs
            .into_iter()
            .map(|(name, run)| (name.to_owned(), run))
            .collect::<BTreeMap<_, _>>(),
        started_unix: 1_700_000_000,
    }
}

/// Both dataplanes with full runs.
fn both() -> Report {
    report([("bpf", full_run(0.1)), ("iptables", full_run(0.5))])
}
