//! `scale-test`: time to first ping under pod and policy churn on a local
//! cluster, the README's main job, the reachability-matrix probe, and
//! virtual nodes against Typha replicas on loopback.

/// Felix's allocator, so that the virtual nodes' memory is what Felix's
/// would be.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use manul_local_cluster::Dataplane;
use manul_scale_test::report::{Machine, Report};
use manul_scale_test::run::{RunConfig, progress_bar, run_one};
use manul_scale_test::{mainjob, scenario, vnodes};

#[derive(Debug, Parser)]
#[command(
    name = "scale-test",
    version,
    about = "Manul's scale test, main job and reachability probe on a local cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Churn pods and policies; measure time to first ping and enforcement latency.
    Run(RunArgs),
    /// The README's main job: 2 nodes, the frontend-to-api example, a reachability table, TTFP.
    MainJob(MainJobArgs),
    /// Run a reachability scenario file; exit 0 only when every result matches.
    Probe(ProbeArgs),
    /// Many simulated Felix (sync client, calculation graph, null driver) in
    /// this process against Typha replicas on loopback: policy propagation,
    /// Typha's CPU and memory, a reconnect storm. Prints JSON.
    VirtualNodes(VirtualNodesArgs),
}

#[derive(Debug, Args)]
struct VirtualNodesArgs {
    /// Virtual nodes (each its own sync client, graph and driver).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    nodes: u32,
    /// Typha replicas (processes on loopback).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    replicas: u8,
    /// Probe-policy changes timed one after the other.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    changes: u32,
    /// Workload endpoints per node.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    endpoints_per_node: u16,
    /// Namespaces the endpoints are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    namespaces: u16,
    /// Standing policies (besides the probe policy).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=10_000))]
    policies: u16,
    /// Worker threads of the runtime all nodes share.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=64))]
    threads: u8,
    /// Which replica the reconnect storm SIGKILLs: follower, leader or none.
    #[arg(long, default_value = "follower")]
    kill: String,
    /// How the nodes' sync clients reach Typha: grpc (the Sync call on the
    /// API port) or tcp (the lean transport on each replica's
    /// --sync-listen, `typhaSyncTransport tcp`).
    #[arg(long, default_value = "grpc")]
    transport: String,
    /// Nodes started per second, as a DaemonSet rollout brings agents up
    /// over time; 0 starts every node at once.
    #[arg(long, default_value_t = 0.0)]
    start_per_s: f64,
    /// Pause between two changes, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    change_pause_ms: u64,
    /// Seconds every node has to take one change (startup gets 0.1 s more
    /// per node).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    timeout_s: u64,
    /// The typha binary (default: the one next to this program).
    #[arg(long)]
    typha: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Prefix of the cluster's namespaces (runs at the same time need different names).
    #[arg(long, default_value = "manul-scale")]
    name: String,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    nodes: u16,
    #[arg(long, default_value_t = 20)]
    standing_pods: usize,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    standing_policies: u64,
    /// New pods per second during churn.
    #[arg(long, default_value_t = 10.0)]
    pods_per_s: f64,
    /// Policy updates per second during churn.
    #[arg(long, default_value_t = 4.0)]
    policy_updates_per_s: f64,
    /// Seconds of churn per dataplane.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// bpf, iptables, or both (in turn).
    #[arg(long, default_value = "both")]
    dataplane: String,
    /// Write report.json and report.html here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A short run (2 nodes, 20 policies, 12 s per dataplane): under 90 s for both.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Args)]
struct MainJobArgs {
    /// Prefix of the cluster's namespaces (runs at the same time need different names).
    #[arg(long, default_value = "manul-demo")]
    name: String,
    /// bpf or iptables.
    #[arg(long, default_value = "bpf")]
    dataplane: String,
    /// The policy file whose NetworkPolicy is applied (default: the quick
    /// start's example, relative to the repository root).
    #[arg(long, default_value = "examples/frontend-to-api.yaml")]
    policy: PathBuf,
    /// New pods in the short churn.
    #[arg(long, default_value_t = 20)]
    churn_pods: usize,
    /// Keep the cluster running until Ctrl-C, to explore it with manulctl.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// Prefix of the cluster's namespaces (runs at the same time need different names).
    #[arg(long, default_value = "manul-probe")]
    name: String,
    /// The scenario file (YAML; see the README).
    scenario: PathBuf,
    /// bpf or iptables.
    #[arg(long, default_value = "iptables")]
    dataplane: String,
}

fn dataplanes(word: &str) -> Result<Vec<Dataplane>, String> {
    match word {
        "both" => Ok(vec![Dataplane::Bpf, Dataplane::Iptables]),
        other => Dataplane::parse(other)
            .map(|d| vec![d])
            .map_err(|e| e.to_string()),
    }
}

fn bad(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Ctrl-C sets the flag; the work stops and the cluster is removed.
fn on_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt
            && rt.block_on(tokio::signal::ctrl_c()).is_ok()
        {
            eprintln!("interrupted: cleaning up");
            set.store(true, Ordering::Relaxed);
        }
    });
    flag
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A thousand virtual nodes each warn when their replica dies: that is
    // the storm being measured, not news.
    let default_filter = match cli.command {
        Cmd::VirtualNodes(_) => "warn,manul_felix=error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let interrupted = on_ctrl_c();
    match cli.command {
        Cmd::VirtualNodes(args) => virtual_nodes(args, &interrupted),
        Cmd::Run(args) => run(args, &interrupted),
        Cmd::MainJob(args) => {
            let dp = match Dataplane::parse(&args.dataplane) {
                Ok(d) => d,
                Err(e) => return bad(e),
            };
            match mainjob::run(
                &args.name,
                dp,
                &args.policy,
                args.churn_pods,
                args.keep,
                &interrupted,
            ) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Probe(args) => {
            let dp = match Dataplane::parse(&args.dataplane) {
                Ok(d) => d,
                Err(e) => return bad(e),
            };
            let text = match std::fs::read_to_string(&args.scenario) {
                Ok(t) => t,
                Err(e) => return bad(format!("cannot read {}: {e}", args.scenario.display())),
            };
            let sc = match scenario::Scenario::parse(&text) {
                Ok(s) => s,
                Err(e) => return bad(format!("{}: {e:#}", args.scenario.display())),
            };
            match scenario::run(&args.name, &sc, dp, &interrupted) {
                Ok(outcome) => {
                    print!("{}", outcome.render());
                    if outcome.matches() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(args: RunArgs, interrupted: &AtomicBool) -> ExitCode {
    let dps = match dataplanes(&args.dataplane) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    for (name, v) in [
        ("--pods-per-s", args.pods_per_s),
        ("--policy-updates-per-s", args.policy_updates_per_s),
        ("--duration", args.duration),
    ] {
        if !(v.is_finite() && v > 0.0 && v <= 10_000.0) {
            return bad(format!(
                "{name} must be a number above 0 and at most 10000, not {v}"
            ));
        }
    }
    let mut cfg = RunConfig {
        name: args.name.clone(),
        nodes: usize::from(args.nodes),
        standing_pods: args.standing_pods,
        standing_policies: args.standing_policies as usize,
        pods_per_s: args.pods_per_s,
        policy_updates_per_s: args.policy_updates_per_s,
        duration_s: args.duration,
        dataplanes: dps.iter().map(|d| d.as_str().to_string()).collect(),
        live_churn_pods: 20,
    };
    if args.quick {
        cfg.nodes = 2;
        cfg.standing_pods = 6;
        cfg.standing_policies = 20;
        cfg.pods_per_s = 5.0;
        cfg.policy_updates_per_s = 4.0;
        cfg.duration_s = 12.0;
    }
    let mut report = Report {
        config: serde_json::to_value(&cfg).unwrap_or_default(),
        machine: Machine::detect(),
        dataplanes: Default::default(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let mut ok = true;
    for dp in dps {
        let bar = progress_bar(dp.as_str());
        match run_one(&cfg, dp, &bar, interrupted) {
            Ok(result) => {
                bar.finish_with_message(format!("{}: done", dp.as_str()));
                ok &= result.unexpected_allows == 0 && result.failures == 0;
                report.dataplanes.insert(dp.as_str().to_string(), result);
            }
            Err(e) => {
                bar.abandon_with_message(format!("{}: failed", dp.as_str()));
                eprintln!("error: the {} run failed: {e}", dp.as_str());
                ok = false;
                if interrupted.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    println!("{}", report.summary_text());
    if let Some(dir) = &args.out {
        match report.write(dir) {
            Ok(()) => println!(
                "reports: {}/report.json, {}/report.html",
                dir.display(),
                dir.display()
            ),
            Err(e) => {
                eprintln!("error: cannot write the reports: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn virtual_nodes(args: VirtualNodesArgs, interrupted: &AtomicBool) -> ExitCode {
    let kill = match vnodes::Kill::parse(&args.kill) {
        Ok(k) => k,
        Err(e) => return bad(e),
    };
    let transport = match vnodes::Transport::parse(&args.transport) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    if !(args.start_per_s.is_finite() && args.start_per_s >= 0.0) {
        return bad(format!(
            "--start-per-s must be 0 or a positive number of nodes per second, not {}",
            args.start_per_s
        ));
    }
    if kill != vnodes::Kill::None && args.replicas < 3 {
        return bad("--kill needs --replicas 3 or more (a quorum must survive); use --kill none");
    }
    let typha = match args.typha {
        Some(p) => p,
        None => match manul_local_cluster::procs::program("typha") {
            Ok(p) => p,
            Err(e) => return bad(e),
        },
    };
    let config = vnodes::Config {
        nodes: args.nodes as usize,
        replicas: usize::from(args.replicas),
        changes: args.changes,
        endpoints_per_node: usize::from(args.endpoints_per_node),
        namespaces: usize::from(args.namespaces),
        policies: usize::from(args.policies),
        threads: usize::from(args.threads),
        kill,
        transport,
        start_per_s: args.start_per_s,
        change_pause_ms: args.change_pause_ms,
        timeout_s: args.timeout_s,
        typha,
    };
    match vnodes::run(&config, interrupted) {
        Ok(report) => {
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("error: cannot print the report: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if report.sound() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: a driver refused a batch, or a client took a snapshot on reconnect"
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
