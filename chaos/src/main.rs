//! `manul-chaos`: runs the chaos test on a local cluster and writes its
//! report. Exits 0 when every invariant held, 1 when one did not (or the
//! run could not be carried out), 2 on bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use manul_chaos::run::{self, RunConfig};

#[derive(Parser, Debug)]
#[command(
    name = "manul-chaos",
    version,
    about = "Fault injection and invariant checks on a local Manul cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run faults against a fresh local cluster (needs root).
    Run {
        /// The CI run: each fault once, in a fixed order (about two
        /// minutes, three at most).
        #[arg(long, conflicts_with_all = ["soak", "length"])]
        ci: bool,
        /// A soak: random faults for this long (for example 30m, 2h).
        #[arg(long, value_parser = parse_duration)]
        soak: Option<Duration>,
        /// The seed of the random schedule (default: from the clock); the
        /// same seed gives the same schedule.
        #[arg(long)]
        seed: Option<u64>,
        /// How long a seeded run lasts (without --soak).
        #[arg(long, value_parser = parse_duration, default_value = "120s")]
        length: Duration,
        /// Where to write report.json and report.html.
        #[arg(long, default_value = "chaos-report")]
        out: PathBuf,
        /// Prefix of the cluster's namespaces (leftovers of an earlier run
        /// with this name are removed first).
        #[arg(long, default_value = "chaos")]
        name: String,
        /// Felix nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
        nodes: u16,
    },
    /// Check a run's recorded API history (its history.json) again, and
    /// write the minimal non-linearizable piece of each key that fails
    /// (nonlinearizable-KEY.json). No root needed.
    Check {
        /// The history.json a run wrote.
        history: PathBuf,
        /// Where to write the pieces (default: beside the history).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `manul-chaos check`: 0 when every key is linearizable, 1 when not, 2
/// when the history cannot be read.
fn check(history: &std::path::Path, out: Option<PathBuf>) -> ExitCode {
    let recorded: Vec<manul_chaos::kv::Recorded> = match std::fs::read_to_string(history)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", history.display());
            return ExitCode::from(2);
        }
    };
    let dir = out.unwrap_or_else(|| {
        history
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    });
    let verdicts = manul_chaos::kv::check_all(&recorded, run::SEARCH_BUDGET);
    match manul_chaos::kv::write_explained(&recorded, &verdicts, run::SEARCH_BUDGET, &dir) {
        Ok(lines) if lines.is_empty() => {
            println!(
                "ok: {} operations on {} keys linearizable",
                recorded.len(),
                verdicts.len()
            );
            ExitCode::SUCCESS
        }
        Ok(lines) => {
            for l in lines {
                println!("FAIL {l}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", manul_model::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `90s`, `30m`, `2h` or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use 90s, 30m or 2h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m or h)")),
    };
    if secs < 30 {
        return Err(format!("{s:?}: a run lasts at least 30 s"));
    }
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (ci, soak, seed, length, out, name, nodes) = match cli.command {
        Cmd::Check { history, out } => return check(&history, out),
        Cmd::Run {
            ci,
            soak,
            seed,
            length,
            out,
            name,
            nodes,
        } => (ci, soak, seed, length, out, name, nodes),
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("error: manul-chaos needs root (network namespaces, eBPF, nftables, mounts)");
        return ExitCode::from(2);
    }
    let mut config: RunConfig = if ci {
        run::ci_config(&name, out)
    } else {
        let seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
        let (length, mode) = match soak {
            Some(l) => (l, "soak"),
            None => (length, "seed"),
        };
        run::seeded_config(&name, out, seed, length, mode)
    };
    config.nodes = usize::from(nodes);
    eprintln!(
        "manul-chaos: {} run, {} faults over {:?}{}",
        config.mode,
        config.schedule.len(),
        config.length,
        config
            .seed
            .map(|s| format!(", seed {s}"))
            .unwrap_or_default()
    );
    match run::run(&config) {
        Ok(report) => {
            for i in &report.invariants {
                println!(
                    "{} {}: {}",
                    if i.ok { "ok  " } else { "FAIL" },
                    i.name,
                    i.detail
                );
            }
            println!("report: {}", config.out.join("report.html").display());
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {}", manul_model::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
