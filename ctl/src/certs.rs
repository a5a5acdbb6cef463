//! `manulctl certs dev`: a development CA and every certificate a cluster
//! needs (Typha, one Felix and one CNI identity per node, an
//! administrator), written to a directory. The identities are listed in
//! `manul_tls::dev`. Not for production: the CA key is written beside them.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a development CA and certificates in a new directory.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory to write to (created; refused if it already holds a CA).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Names and addresses Typha is reached by, comma-separated (DNS and
    /// IP SANs of its certificate).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    typha_name: Vec<String>,
    /// Typha's common name (what Felix's TyphaCN names).
    #[arg(long, default_value = manul_tls::dev::TYPHA_CN)]
    typha_cn: String,
    /// Nodes to make Felix and CNI certificates for, comma-separated.
    #[arg(long, value_delimiter = ',')]
    node: Vec<String>,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
    days: i64,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
}

pub fn run(cmd: &CertsCommand) -> Result<ExitCode> {
    let CertsCommand::Dev(args) = cmd;
    let bad = |m: String| anyhow::Error::new(crate::BadInput(m));
    if let Some(n) = args.node.iter().find(|n| !valid_name(n)) {
        return Err(bad(format!("--node {n:?} is not a node name")));
    }
    if let Some(n) = args
        .typha_name
        .iter()
        .find(|n| !valid_name(n) && n.parse::<std::net::IpAddr>().is_err())
    {
        return Err(bad(format!(
            "--typha-name {n:?} is not a host name or address"
        )));
    }
    if args.typha_cn.trim().is_empty() {
        return Err(bad("--typha-cn must not be empty".into()));
    }
    if args.out.join("ca.crt").exists() {
        return Err(bad(format!(
            "{} already holds a CA (ca.crt); choose a new directory",
            args.out.display()
        )));
    }
    let set = manul_tls::dev::DevSet {
        typha_names: args.typha_name.clone(),
        typha_cn: args.typha_cn.clone(),
        nodes: args.node.clone(),
        days: args.days,
    };
    for path in manul_tls::dev::write_dev_set(&args.out, &set)? {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
