//! `typha-bench`: measures real `typha` processes on 127.0.0.1.
//!
//! - `fanout`: N Sync clients (one connection each, gRPC or the lean TCP
//!   transport or both side by side): server memory per client, server CPU
//!   per delta, and delta latency from a write to every client;
//! - `snapshot`: R stored resources, C clients connecting together: time to
//!   in-sync, peak memory, and that the snapshot was encoded once;
//! - `writes`: committed writes per second and commit latency, on 1 or 3
//!   replicas, single or batched.
//!
//! Each prints one JSON object on stdout; progress goes to stderr. The
//! `typha` binary is looked for next to this one (`--typha` overrides).
//! Children run with fresh data directories under the system's temporary
//! directory, which are removed at the end (also on error).

mod clients;
mod fanout;
mod procs;
mod snapshot;
mod stats;
mod writes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use procs::TyphaOptions;

#[derive(Debug, Parser)]
#[command(name = "typha-bench", about = "Benchmarks real typha processes")]
struct Args {
    /// The typha binary (default: `typha` next to this executable).
    #[arg(long, global = true)]
    typha: Option<PathBuf>,
    /// RUST_LOG for the typha children (their logs go to the temporary
    /// directory).
    #[arg(long, global = true, default_value = "warn")]
    typha_log: String,
    /// Keep the temporary directory (data and logs) at the end.
    #[arg(long, global = true)]
    keep_temp: bool,
    /// Every connection over TLS (mutual, TLS 1.3): development
    /// certificates are made for the run, the clients present the
    /// administrator's.
    #[arg(long, global = true)]
    tls: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Server memory per Sync client and delta fan-out latency.
    Fanout(fanout::FanoutArgs),
    /// Time for many clients to take one large snapshot.
    Snapshot(snapshot::SnapshotArgs),
    /// Write throughput and commit latency.
    Writes(writes::WritesArgs),
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// What the numbers were measured on.
fn machine() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": model,
        "mem_total_bytes": mem_kib.map(|k| k * 1024),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// Raises this process's open-file limit to the hard limit (the typha
/// children inherit it); returns the new soft limit.
fn raise_nofile() -> Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("cannot raise RLIMIT_NOFILE")
}

async fn run(args: Args) -> Result<Value> {
    let binary = match args.typha {
        Some(p) => p,
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .with_file_name("typha"),
    };
    let tls = if args.tls {
        Some(std::sync::Arc::new(procs::BenchTls::create()?))
    } else {
        None
    };
    let opts = TyphaOptions {
        binary,
        log_filter: args.typha_log,
        keep_temp: args.keep_temp,
        tls,
    };
    let nofile = raise_nofile()?;
    eprintln!("RLIMIT_NOFILE soft limit: {nofile}");
    let started = Instant::now();
    let (name, mut report) = match &args.command {
        Command::Fanout(a) => ("fanout", fanout::run(&opts, a, nofile).await?),
        Command::Snapshot(a) => ("snapshot", snapshot::run(&opts, a, nofile).await?),
        Command::Writes(a) => ("writes", writes::run(&opts, a).await?),
    };
    if let Value::Object(map) = &mut report {
        map.insert("benchmark".into(), json!(name));
        map.insert("tls".into(), json!(args.tls));
        map.insert("machine".into(), machine());
        map.insert("typha".into(), json!(opts.binary.display().to_string()));
        map.insert("nofile_limit".into(), json!(nofile));
        map.insert(
            "wall_s".into(),
            json!(stats::round3(started.elapsed().as_secs_f64())),
        );
    }
    Ok(report)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
