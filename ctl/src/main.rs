//! `manulctl`: the operator's command line for Manul.
//!
//! Offline commands judge files without a server: `validate`, `convert`,
//! `selector eval`, and `crds` prints the CustomResourceDefinitions. Online commands talk to any Typha replica (`--server` or
//! `MANUL_SERVER`): `apply`, `get`, `delete`, `cluster`, `sync`, `trace` and
//! `policy promote`;
//! `services` asks one node's Felix (`--felix`) what its dataplane holds;
//! `flows` reads flow records from the flow aggregator (`--aggregator`);
//! `audit` reads the audit history of the replicated log from any
//! replica; `report policy` and `report compliance` combine the
//! aggregator's flows with a replica's state and audit history.
//! Exit codes: 0 success, 2 bad input (invalid resources, unreadable files,
//! bad flags, a request the server rejects), 1 any other failure (such as an
//! unreachable server).
//!
//! It refuses to send anything when any input is invalid.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod aggregator;
mod audit;
mod certs;
mod client;
mod cluster;
mod convert;
mod crds;
mod flows;
mod input;
mod policy;
mod report;
mod resources;
mod selector;
mod services;
mod sync;
mod trace;
mod validate;

/// Exit code for bad input of any kind.
const EXIT_BAD_INPUT: u8 = 2;

/// Marks an error as the user's input being wrong (exit code 2), as opposed
/// to a failure such as an unreachable server (exit code 1).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

#[derive(Debug, Parser)]
#[command(
    name = "manulctl",
    version,
    about = "Manul's command line: validate, apply and inspect network policy resources"
)]
struct Cli {
    #[command(flatten)]
    server: client::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check resource files; print `KIND NAMESPACE/NAME ok` per resource, or every error.
    Validate(input::FileArgs),
    /// Print the v3 form of the Kubernetes NetworkPolicies (and Namespaces) in files, as YAML.
    Convert(input::FileArgs),
    /// Print (or write with --out) the CRDs of the projectcalico.org/v3 kinds, generated from the model.
    Crds(crds::CrdsArgs),
    /// Selector tools.
    #[command(subcommand)]
    Selector(selector::SelectorCommand),
    /// Validate files, then create or update their resources in one atomic batch.
    Apply(input::FileArgs),
    /// Show resources of a kind, or one by name.
    Get(resources::GetArgs),
    /// Delete a resource by kind and name, or those in files.
    Delete(resources::DeleteArgs),
    /// Replica status and membership (on Typha's peer listener, with the peer token).
    Cluster(cluster::ClusterArgs),
    /// Debug the Typha-to-Felix delta stream.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Staged policies: `promote` makes one its enforced kind in one write.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Trace a packet through the policies: every step, then `verdict: allow` or `verdict: deny`.
    Trace(trace::TraceArgs),
    /// The Services a node's dataplane is programmed with, from its Felix: frontends and their backends.
    Services(services::ServicesArgs),
    /// Flow records from the flow aggregator, in the manner of `hubble observe`.
    Flows(Box<flows::FlowsArgs>),
    /// Who changed what and when: the audit history of the replicated log (any replica answers the same).
    Audit(audit::AuditArgs),
    /// Policy and compliance reports over a window, as text, JSON or an HTML page.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Certificates for TLS.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

/// Enters `--netns` before the runtime starts; false (after printing why)
/// when that fails.
fn enter_netns(name: Option<&str>) -> bool {
    let Some(name) = name else { return true };
    match manul_netns::NetNs::open(name).and_then(|ns| ns.enter_current_thread()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: --netns {name}: {e}");
            false
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Selector(cmd) => selector::run(cmd),
        Command::Crds(args) => crds::run(args),
        Command::Certs(cmd) => certs::run(cmd),
        _ if cli.server.netns.is_some() && !enter_netns(cli.server.netns.as_deref()) => {
            return ExitCode::from(2);
        }
        online => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async {
                match online {
                    Command::Apply(args) => resources::apply(&cli.server, args).await,
                    Command::Get(args) => resources::get(&cli.server, args).await,
                    Command::Delete(args) => resources::delete(&cli.server, args).await,
                    Command::Cluster(cmd) => cluster::run(&cli.server, cmd).await,
                    Command::Sync(cmd) => sync::run(&cli.server, cmd).await,
                    Command::Trace(args) => trace::run(&cli.server, args).await,
                    Command::Policy(cmd) => policy::run(&cli.server, cmd).await,
                    Command::Services(args) => services::run(args).await,
                    Command::Flows(args) => flows::run(&cli.server, args).await,
                    Command::Audit(args) => audit::run(&cli.server, args).await,
                    Command::Report(cmd) => report::run(&cli.server, cmd).await,
                    _ => Ok(ExitCode::SUCCESS),
                }
            }),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let bad_input = e.downcast_ref::<BadInput>().is_some();
            eprintln!("error: {e:#}");
            if bad_input {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
