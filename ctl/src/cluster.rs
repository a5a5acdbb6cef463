//! `manulctl cluster`: replica status and membership changes.
//!
//! Cluster administration is served only on Typha's peer listener
//! (`--peer-server` or `MANUL_PEER_SERVER`) and only to holders of the
//! cluster's peer token (`--peer-token-file` or `MANUL_PEER_TOKEN_FILE`),
//! sent as gRPC metadata. Several replicas' peer listeners may be named,
//! separated by commas: the commands move on to the next while one is
//! unavailable, through [`manul_client::Client::cluster`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use manul_proto::v1::{Member, StatusResponse};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::client::{ServerArgs, client_error, failure};

/// `manulctl cluster`'s flags and command.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// A Typha replica's peer listener (any replica; changes are forwarded
    /// to the leader), or several separated by commas.
    #[arg(
        long,
        env = "MANUL_PEER_SERVER",
        default_value = "127.0.0.1:5474",
        global = true
    )]
    pub peer_server: String,
    /// File holding the cluster's peer token (a replica started without
    /// `--peer-token-file` keeps its own in DATA_DIR/peer-token).
    #[arg(long, env = "MANUL_PEER_TOKEN_FILE", global = true)]
    pub peer_token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// Reads the token file; a missing flag, an unreadable file or an
/// unusable token is bad input.
fn token(args: &ClusterArgs) -> Result<AsciiMetadataValue> {
    let path = args.peer_token_file.as_ref().ok_or_else(|| {
        crate::BadInput(
            "cluster commands need the peer token: pass --peer-token-file or set MANUL_PEER_TOKEN_FILE".into(),
        )
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::BadInput(format!("--peer-token-file {}: {e}", path.display())))?;
    MetadataValue::try_from(text.trim()).map_err(|_| {
        crate::BadInput(format!(
            "--peer-token-file {}: the token may hold only visible ASCII characters",
            path.display()
        ))
        .into()
    })
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied revisions, state hash per replica.
    Status,
    /// Add a replica as a non-voting learner (start it with `typha --join` first).
    AddLearner { id: u64, address: String },
    /// Promote a caught-up learner to a voter.
    Promote { id: u64 },
    /// Remove a member.
    Remove { id: u64 },
}

fn print_members(members: &[Member]) {
    for m in members {
        let role = if m.learner { "learner" } else { "voter" };
        println!("member {} {} {role}", m.id, m.address);
    }
}

pub async fn run(server: &ServerArgs, args: &ClusterArgs) -> Result<ExitCode> {
    // With TLS the peer listener admits an administrator's certificate;
    // the token is for plaintext clusters.
    let token = match (server.tls(), &args.peer_token_file) {
        (true, None) => None,
        _ => Some(token(args)?),
    };
    let server = &ServerArgs {
        server: args.peer_server.clone(),
        ..server.clone()
    };
    let cluster = server.client().await?.cluster(token);
    let result = match &args.command {
        ClusterCommand::Status => {
            let s = server
                .call(|| cluster.status())
                .await
                .map_err(client_error)?;
            print_status(&s);
            return Ok(ExitCode::SUCCESS);
        }
        ClusterCommand::AddLearner { id, address } => {
            server.call(|| cluster.add_learner(*id, address)).await
        }
        ClusterCommand::Promote { id } => server.call(|| cluster.promote(*id)).await,
        ClusterCommand::Remove { id } => server.call(|| cluster.remove(*id)).await,
    };
    match result {
        Ok(r) => {
            print_members(&r.members);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failure(e),
    }
}

fn print_status(s: &StatusResponse) {
    let leader = s
        .replicas
        .iter()
        .map(|r| r.leader_id)
        .find(|l| *l != 0)
        .unwrap_or(0);
    println!(
        "leader: {}",
        if leader == 0 {
            "none".to_string()
        } else {
            leader.to_string()
        }
    );
    println!(
        "{:>4} {:<22} {:<11} {:>6} {:>8} {:>10} {:>10} {:>8} {:>7}  STATE-HASH",
        "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "OBJECTS", "CLIENTS"
    );
    for r in &s.replicas {
        println!(
            "{:>4} {:<22} {:<11} {:>6} {:>8} {:>10} {:>10} {:>8} {:>7}  {}",
            r.id,
            r.address,
            r.role,
            r.term,
            r.leader_id,
            r.commit_index,
            r.applied_revision,
            r.resources,
            r.sync_clients,
            r.state_hash
        );
    }
}
