//! Injecting one planned fault into the cluster and healing it, and
//! finding the Raft leader (each replica's own status on its peer
//! listener).

use std::time::Duration;

use manul_client::Client;
use manul_local_cluster::LocalCluster;
use manul_proto::v1::ReplicaStatus;
use nix::sys::signal::Signal;

use crate::ChaosError;
use crate::schedule::{FaultKind, Planned};
use crate::setup::{REPLICAS, SLOW, SLOW_DISK_REPLICA, SMALL_DISK_REPLICA};

/// How to undo a fault in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    RestartTypha(usize),
    Heal,
    Continue(usize),
    FreeDisk,
    FastDisk,
    Nothing,
}

/// A fault in progress.
#[derive(Debug, Clone)]
pub struct Active {
    pub planned: Planned,
    pub target: String,
    pub undo: Undo,
}

/// Each replica's own status (`None` where it did not answer within a
/// second), through clients on the peer listeners.
pub async fn statuses(peers: &[Client]) -> Vec<Option<ReplicaStatus>> {
    let mut out = Vec::new();
    for p in peers {
        let status = tokio::time::timeout(Duration::from_secs(1), p.cluster(None).status()).await;
        out.push(match status {
            Ok(Ok(s)) => s.replicas.into_iter().next(),
            _ => None,
        });
    }
    out
}

/// The replica (0-based) that says it leads, at the highest term.
pub fn leader(statuses: &[Option<ReplicaStatus>]) -> Option<usize> {
    statuses
        .iter()
        .enumerate()
        .filter_map(|(k, s)| {
            s.as_ref()
                .filter(|s| s.role == "leader")
                .map(|s| (k, s.term))
        })
        .max_by_key(|(_, term)| *term)
        .map(|(k, _)| k)
}

/// Starts `planned` on the cluster; `leader` is the current leader, if
/// known (a leader fault without one picks replica 0).
pub fn inject(
    c: &mut LocalCluster,
    planned: Planned,
    leader: Option<usize>,
) -> Result<Active, ChaosError> {
    let nodes = c.nodes().len().max(1);
    let node = planned.node % nodes;
    let lead = leader.unwrap_or(0);
    let follower = (lead + 1 + planned.node % (REPLICAS - 1)) % REPLICAS;
    let others = |k: usize| -> Vec<usize> { (0..REPLICAS).filter(|&o| o != k).collect() };
    let (target, undo) = match planned.kind {
        FaultKind::KillLeader | FaultKind::KillFollower => {
            let k = if planned.kind == FaultKind::KillLeader {
                lead
            } else {
                follower
            };
            c.kill_typha(k)?;
            (format!("typha-{}", k + 1), Undo::RestartTypha(k))
        }
        FaultKind::PartitionLeader | FaultKind::PartitionFollower => {
            let k = if planned.kind == FaultKind::PartitionLeader {
                lead
            } else {
                follower
            };
            c.partition_typha(k, &others(k))?;
            (format!("typha-{}", k + 1), Undo::Heal)
        }
        FaultKind::StopFelix => {
            c.signal_felix(node, Signal::SIGSTOP)?;
            (format!("felix-node{}", node + 1), Undo::Continue(node))
        }
        FaultKind::RestartFelix => {
            c.restart_felix(node)?;
            (format!("felix-node{}", node + 1), Undo::Nothing)
        }
        FaultKind::FullDisk => {
            let bytes = c.fill_small_disk()?;
            tracing::info!(bytes, "filled the small disk");
            (format!("typha-{}", SMALL_DISK_REPLICA + 1), Undo::FreeDisk)
        }
        FaultKind::SlowDisk => {
            c.slow_down_disk(SLOW)?;
            (format!("typha-{}", SLOW_DISK_REPLICA + 1), Undo::FastDisk)
        }
    };
    Ok(Active {
        planned,
        target,
        undo,
    })
}

/// Heals a fault.
pub fn heal(c: &mut LocalCluster, active: &Active) -> Result<(), ChaosError> {
    match active.undo {
        Undo::RestartTypha(k) => c.restart_typha(k)?,
        Undo::Heal => c.heal_partitions()?,
        Undo::Continue(node) => c.signal_felix(node, Signal::SIGCONT)?,
        Undo::FreeDisk => c.free_small_disk()?,
        Undo::FastDisk => c.heal_slow_disk()?,
        Undo::Nothing => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(role: &str, term: u64) -> Option<ReplicaStatus> {
        Some(ReplicaStatus {
            role: role.into(),
            term,
            ..ReplicaStatus::default()
        })
    }

    #[test]
    fn the_leader_is_the_one_at_the_highest_term() {
        // A cut-off old leader still says it leads, at an older term.
        let s = [status("leader", 2), None, status("leader", 3)];
        assert_eq!(leader(&s), Some(2));
        assert_eq!(leader(&[status("follower", 3), None]), None);
    }
}
