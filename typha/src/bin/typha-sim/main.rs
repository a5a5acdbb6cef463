//! `typha-sim`: runs seeds of Typha's deterministic simulation
//! (`manul_typha::sim`) and prints one JSON object: the seeds run, each
//! failure with its seed, step and broken invariant, and seeds per minute.
//! A failing seed reproduces with `--seed S --seeds 1`. Exits 1 when a seed
//! failed, 2 on bad arguments.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use manul_typha::sim::{self, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "typha-sim",
    about = "Deterministic simulation of a Typha cluster"
)]
struct Args {
    /// How many seeds to run (consecutive, from --seed).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps with faults per seed (a step is 10 ms of simulated time).
    #[arg(long, default_value_t = SimConfig::default().steps)]
    steps: u64,
    /// Where each seed's replicas keep their sled files (a fresh
    /// directory per seed, removed after it); a tmpfs is fastest.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("typha-sim: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let config = SimConfig {
        steps: args.steps,
        ..SimConfig::default()
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut acknowledged = 0usize;
    let mut steps = 0u64;
    let mut stats = sim::Stats::default();
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let outcome = sim::run(seed, &config, &dir).with_context(|| format!("seed {seed}"))?;
        acknowledged += outcome.acknowledged;
        steps += outcome.steps;
        stats.add(&outcome.stats);
        if let Some((step, what)) = outcome.failure {
            failures.push(serde_json::json!({
                "seed": seed,
                "step": step,
                "invariant": what,
                "reproduce": format!("typha-sim --seed {seed} --seeds 1 --steps {}", args.steps),
            }));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "seeds_run": args.seeds,
        "first_seed": args.seed,
        "steps_per_seed": args.steps,
        "simulated_steps": steps,
        "acknowledged_writes": acknowledged,
        "exercised": {
            "crashes": stats.crashes,
            "partitions": stats.partitions,
            "raft_messages_lost": stats.messages_lost,
            "raft_snapshots_delivered": stats.raft_snapshots,
            "terms_with_a_leader": stats.leaders,
            "sync_snapshots": stats.sync_snapshots,
            "sync_resumes": stats.sync_resumes,
            "sync_streams_cut": stats.sync_cut,
        },
        "failures": failures,
        "seconds": secs,
        "seeds_per_minute": if secs > 0.0 { args.seeds as f64 * 60.0 / secs } else { 0.0 },
    });
    println!("{report}");
    Ok(failures.is_empty())
}
