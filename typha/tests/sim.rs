//! A bounded run of Typha's deterministic simulation (`manul_typha::sim`):
//! every seed's invariants must hold. A failing seed is named with the
//! command that reproduces it.

use manul_typha::sim::{self, SimConfig};

/// Seeds run on every test run; `typha-sim --seeds N` runs more.
const SEEDS: u64 = 32;

#[test]
fn seeds_hold_every_invariant() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = SimConfig::default();
    let mut failures = Vec::new();
    let mut acknowledged = 0;
    for seed in 0..SEEDS {
        let outcome = sim::run(seed, &config, dir.path()).expect("simulation runs");
        acknowledged += outcome.acknowledged;
        if let Some((step, what)) = outcome.failure {
            failures.push(format!(
                "seed {seed}, step {step}: {what} (reproduce: typha-sim --seed {seed} --seeds 1 --steps {})",
                config.steps
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The runs did work: writes were acknowledged across the seeds.
    assert!(
        acknowledged > 0,
        "no write was acknowledged in {SEEDS} seeds"
    );
}

#[test]
fn a_seed_runs_the_same_way_twice() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = SimConfig::default();
    let first = sim::run(7, &config, dir.path()).expect("simulation runs");
    let second = sim::run(7, &config, dir.path()).expect("simulation runs");
    assert_eq!(first, second);
    assert!(
        first.stats.leaders > 0 && first.acknowledged > 0,
        "{first:?}"
    );
}
