//! `manulctl cluster`: replica status and membership changes.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::{AddLearnerRequest, Member, MemberRequest, StatusRequest};

use crate::client::{ServerArgs, is_bad_input, status_error};

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

pub async fn run(server: &ServerArgs, cmd: &ClusterCommand) -> Result<ExitCode> {
    let c = ClusterClient::new(server.connect().await?);
    let result = match cmd {
        ClusterCommand::Status => {
            let s = server
                .call(|| {
                    let mut c = c.clone();
                    async move { c.status(StatusRequest {}).await }
                })
                .await
                .map_err(status_error)?
                .into_inner();
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
                "ID",
                "ADDRESS",
                "ROLE",
                "TERM",
                "LEADER",
                "COMMIT",
                "APPLIED",
                "OBJECTS",
                "CLIENTS"
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
            return Ok(ExitCode::SUCCESS);
        }
        ClusterCommand::AddLearner { id, address } => {
            let request = AddLearnerRequest {
                id: *id,
                address: address.clone(),
            };
            server
                .call(|| {
                    let (mut c, request) = (c.clone(), request.clone());
                    async move { c.add_learner(request).await }
                })
                .await
        }
        ClusterCommand::Promote { id } => {
            server
                .call(|| {
                    let mut c = c.clone();
                    async move { c.promote(MemberRequest { id: *id }).await }
                })
                .await
        }
        ClusterCommand::Remove { id } => {
            server
                .call(|| {
                    let mut c = c.clone();
                    async move { c.remove(MemberRequest { id: *id }).await }
                })
                .await
        }
    };
    match result {
        Ok(r) => {
            print_members(&r.into_inner().members);
            Ok(ExitCode::SUCCESS)
        }
        Err(s) if is_bad_input(&s) => {
            eprintln!("error: {}", s.message());
            Ok(ExitCode::from(crate::EXIT_BAD_INPUT))
        }
        Err(s) => Err(status_error(s)),
    }
}
