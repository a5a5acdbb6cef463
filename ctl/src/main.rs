//! `manulctl`: the operator's command line for Manul.
//!
//! Offline commands judge files without a server: `validate`, `convert` and
//! `selector eval`. Exit codes: 0 success, 2 bad input (invalid resources,
//! unreadable files, bad flags), 1 an internal failure.
//!
//! It refuses to write anything when any input is invalid.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod convert;
mod input;
mod selector;
mod validate;

/// Exit code for bad input of any kind.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "manulctl",
    version,
    about = "Manul's command line: validate, convert and inspect network policy resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check resource files; print `KIND NAMESPACE/NAME ok` per resource, or every error.
    Validate(input::FileArgs),
    /// Print the v3 form of the Kubernetes NetworkPolicies (and Namespaces) in files, as YAML.
    Convert(input::FileArgs),
    /// Selector tools.
    #[command(subcommand)]
    Selector(selector::SelectorCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Selector(cmd) => selector::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
