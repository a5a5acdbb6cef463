//! Injecting one planned fault into the cluster and healing it, and
//! reading each replica's own status on its peer listener (whom a leader
//! or follower fault aims at comes from them, see `leadership.rs`).

use std::time::Duration;

use manul_client::Cluster;
use manul_local_cluster::LocalCluster;
use manul_proto::v1::ReplicaStatus;
use nix::sys::signal::Signal;

use crate::ChaosError;
use crate::leadership::Agreed;
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

/// How long one replica's status may take: its own view needs no peer,
/// so only a dead or stopped replica takes this long.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Each replica's own status (`None` where it did not answer within
/// [`STATUS_TIMEOUT`]), asked of all at once through clients on the peer
/// listeners. Only the answering replica's view (the `Replica` call), not
/// the cluster status, which asks every member in turn and, while one is
/// cut off, waits a second for it.
pub async fn statuses(peers: &[Cluster]) -> Vec<Option<ReplicaStatus>> {
    let asks = peers.iter().map(|p| async move {
        match tokio::time::timeout(STATUS_TIMEOUT, p.replica()).await {
            Ok(Ok(s)) => Some(s),
            _ => None,
        }
    });
    futures::future::join_all(asks).await
}

/// The newest revision any answering replica has applied: what every
/// Felix must reach after a heal. Only committed entries are applied, so
/// no replica, not even a cut-off old leader, is ahead of what the leader
/// has committed; a replica that lags is behind it.
pub fn newest_applied(statuses: &[Option<ReplicaStatus>]) -> Option<u64> {
    statuses.iter().flatten().map(|s| s.applied_revision).max()
}

/// Whether `kind` aims at the leader or at a follower, so that its target
/// depends on who leads.
pub fn needs_leader(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::KillLeader
            | FaultKind::KillFollower
            | FaultKind::PartitionLeader
            | FaultKind::PartitionFollower
    )
}

/// The replica a leader or follower fault aims at, from the agreed leader
/// (`node` picks one of the followers), and its role; `None` for a fault
/// that does not aim at a replica by role.
pub fn replica_target(
    kind: FaultKind,
    node: usize,
    leader: usize,
) -> Option<(usize, &'static str)> {
    let follower = (leader + 1 + node % (REPLICAS - 1)) % REPLICAS;
    match kind {
        FaultKind::KillLeader | FaultKind::PartitionLeader => Some((leader, "leader")),
        FaultKind::KillFollower | FaultKind::PartitionFollower => Some((follower, "follower")),
        _ => None,
    }
}

/// Starts `planned` on the cluster; `agreed` is the leadership every
/// answering replica agreed on just before, which a leader or follower
/// fault needs (without it such a fault is refused, never aimed at a
/// guess).
pub fn inject(
    c: &mut LocalCluster,
    planned: Planned,
    agreed: Option<Agreed>,
) -> Result<Active, ChaosError> {
    let nodes = c.nodes().len().max(1);
    let node = planned.node % nodes;
    let others = |k: usize| -> Vec<usize> { (0..REPLICAS).filter(|&o| o != k).collect() };
    let aimed = || -> Result<usize, ChaosError> {
        let leader = agreed.ok_or(ChaosError::NoAgreedLeader)?.leader;
        Ok(replica_target(planned.kind, planned.node, leader).map_or(leader, |(k, _)| k))
    };
    let (target, undo) = match planned.kind {
        FaultKind::KillLeader | FaultKind::KillFollower => {
            let k = aimed()?;
            c.kill_typha(k)?;
            (format!("typha-{}", k + 1), Undo::RestartTypha(k))
        }
        FaultKind::PartitionLeader | FaultKind::PartitionFollower => {
            let k = aimed()?;
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

    fn applied(rev: u64) -> Option<ReplicaStatus> {
        Some(ReplicaStatus {
            applied_revision: rev,
            ..ReplicaStatus::default()
        })
    }

    #[test]
    fn the_convergence_target_is_the_newest_applied_revision() {
        // A cut-off old leader (7) and a lagging follower (9) beside the
        // new leader (12).
        assert_eq!(
            newest_applied(&[applied(7), applied(12), applied(9)]),
            Some(12)
        );
        assert_eq!(newest_applied(&[None, applied(3), None]), Some(3));
        assert_eq!(newest_applied(&[None, None, None]), None);
    }

    #[test]
    fn leader_faults_hit_the_leader_and_follower_faults_never_do() {
        for leader in 0..REPLICAS {
            for node in 0..4 {
                let l = replica_target(FaultKind::PartitionLeader, node, leader);
                assert_eq!(l, Some((leader, "leader")));
                assert_eq!(replica_target(FaultKind::KillLeader, node, leader), l);
                let (f, role) = replica_target(FaultKind::PartitionFollower, node, leader).unwrap();
                assert_ne!(f, leader, "leader {leader}, node {node}");
                assert!(f < REPLICAS);
                assert_eq!(role, "follower");
                assert_eq!(
                    replica_target(FaultKind::KillFollower, node, leader),
                    Some((f, "follower"))
                );
            }
            // Both followers get picked, by the planned node.
            let picked: std::collections::BTreeSet<usize> = (0..4)
                .filter_map(|n| replica_target(FaultKind::KillFollower, n, leader))
                .map(|(k, _)| k)
                .collect();
            assert_eq!(picked.len(), REPLICAS - 1);
        }
        assert_eq!(replica_target(FaultKind::StopFelix, 0, 1), None);
        assert!(needs_leader(FaultKind::PartitionFollower));
        assert!(!needs_leader(FaultKind::SlowDisk));
    }
}
