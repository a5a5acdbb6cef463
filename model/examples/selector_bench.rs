//! Selector parse and match benchmark.
//!
//! `cargo run --release -p manul-model --example selector_bench` prints one
//! JSON object: parse throughput for a mix of typical selectors, and match
//! time (ns/op; median, min and max over several runs) of a typical
//! selector against a 10-label `BTreeMap`, for a matching and a
//! non-matching label set.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use manul_model::selector::Selector;

const RUNS: usize = 9;
const MATCH_ITERATIONS: u64 = 2_000_000;
const PARSE_ROUNDS: u64 = 20_000;

const MIX: &[&str] = &[
    "app == 'api'",
    "app == \"api\" && tier in {\"backend\", \"db\"} && has(version) && env != \"dev\"",
    "kubernetes.io/metadata.name in {'kube-system', 'calico-system', 'tigera-operator'}",
    "has(node-role.kubernetes.io/worker) && !has(node-role.kubernetes.io/control-plane)",
    "projectcalico.org/namespace == 'default' || global()",
    "role starts with 'db-' && zone notin {'us-east-1a'} || !(team contains 'legacy')",
    "all()",
    "",
    "(a == '1' || b == '2') && !(c == '3' && d != '4') && e endswith '.internal'",
];

const SELECTOR: &str =
    r#"(app == "api" && tier in {"backend", "db"} && has(version) && env != "dev")"#;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `f` `iterations` times per run, `RUNS` times; returns the sorted
/// per-run ns/op figures.
fn time_runs(iterations: u64, mut f: impl FnMut() -> bool) -> Vec<f64> {
    let mut per_op: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    per_op
}

fn stats(sorted: &[f64]) -> String {
    let median = sorted[sorted.len() / 2];
    let min = sorted[0];
    let max = sorted[sorted.len() - 1];
    format!(r#"{{"median_ns": {median:.1}, "min_ns": {min:.1}, "max_ns": {max:.1}}}"#)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Parse throughput over the mix.
    let mut parsed = 0u64;
    let mut parse_rates: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..PARSE_ROUNDS {
                for text in MIX {
                    if let Ok(sel) = Selector::parse(black_box(text)) {
                        black_box(&sel);
                        parsed += 1;
                    }
                }
            }
            (PARSE_ROUNDS * MIX.len() as u64) as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    parse_rates.sort_by(f64::total_cmp);
    if parsed != PARSE_ROUNDS * MIX.len() as u64 * RUNS as u64 {
        return Err("a selector in the benchmark mix failed to parse".into());
    }

    let selector = Selector::parse(SELECTOR)?;
    let matching = labels(&[
        ("app", "api"),
        ("tier", "db"),
        ("version", "v1.2.3"),
        ("env", "prod"),
        ("team", "payments"),
        ("zone", "us-east-1a"),
        ("kubernetes.io/metadata.name", "payments"),
        ("pod-template-hash", "5d8f7c6b9"),
        ("projectcalico.org/namespace", "payments"),
        ("projectcalico.org/orchestrator", "k8s"),
    ]);
    let mut non_matching = matching.clone();
    non_matching.insert("env".to_owned(), "dev".to_owned());
    if !selector.matches(&matching) || selector.matches(&non_matching) {
        return Err("benchmark label sets do not match as intended".into());
    }

    let hit = time_runs(MATCH_ITERATIONS, || {
        black_box(&selector).matches(black_box(&matching))
    });
    let miss = time_runs(MATCH_ITERATIONS, || {
        black_box(&selector).matches(black_box(&non_matching))
    });

    println!(
        concat!(
            r#"{{"runs": {runs}, "iterations": {iterations}, "#,
            r#""parse": {{"selectors": {selectors}, "rounds": {rounds}, "#,
            r#""median_selectors_per_s": {pmed:.0}, "min_selectors_per_s": {pmin:.0}, "#,
            r#""max_selectors_per_s": {pmax:.0}}}, "#,
            r#""match": {{"selector": {sel}, "labels": 10, "#,
            r#""matching": {hit}, "non_matching": {miss}}}}}"#
        ),
        runs = RUNS,
        iterations = MATCH_ITERATIONS,
        selectors = MIX.len(),
        rounds = PARSE_ROUNDS,
        pmed = parse_rates[parse_rates.len() / 2],
        pmin = parse_rates[0],
        pmax = parse_rates[parse_rates.len() - 1],
        sel = serde_json::to_string(SELECTOR)?,
        hit = stats(&hit),
        miss = stats(&miss),
    );
    Ok(())
}
