//! Whether this replica serves Sync clients. A replica that has known no
//! Raft leader for an election timeout (a partition cut it off, or it was
//! the leader and stepped down for want of a quorum) may hold a stale
//! state for as long as the cut lasts, and its clients with it: it stops
//! serving ([`Fanout::stop_serving`]), so they resume on a replica that
//! has a leader, from their revision, without a snapshot. It serves again
//! once it knows a leader and has applied everything it knows committed.
//!
//! The decision ([`Gate`]) is pure, time passed in; [`watch`] drives it
//! from the node's status. It refuses to judge how far behind the leader
//! a replica that knows one is: a follower's commit index is only what
//! its leader told it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fanout::Fanout;
use crate::node::{Node, RaftStatus};

/// What the gate decided on an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Stop serving, for this reason.
    Stop(String),
    /// Serve again.
    Resume,
}

/// The serving decision of one replica.
#[derive(Debug, Clone)]
pub struct Gate {
    grace: Duration,
    /// Since when no leader has been known (`None` while one is).
    leaderless_since: Option<Instant>,
    serving: bool,
}

impl Gate {
    /// A gate that starts serving, with no leader known since `now`.
    pub fn new(grace: Duration, now: Instant) -> Gate {
        Gate {
            grace,
            leaderless_since: Some(now),
            serving: true,
        }
    }

    pub fn serving(&self) -> bool {
        self.serving
    }

    /// Takes in the node's status at `now`; says when serving changes.
    pub fn observe(&mut self, status: &RaftStatus, now: Instant) -> Option<Change> {
        let leader = status.leader_id != 0 && status.voters.contains(&status.leader_id);
        if leader {
            self.leaderless_since = None;
            if !self.serving && status.applied_index >= status.commit_index {
                self.serving = true;
                return Some(Change::Resume);
            }
            return None;
        }
        let since = *self.leaderless_since.get_or_insert(now);
        let without = now.saturating_duration_since(since);
        if self.serving && without >= self.grace {
            self.serving = false;
            return Some(Change::Stop(format!(
                "it has known no Raft leader for {:.1} s (at revision {})",
                without.as_secs_f64(),
                status.applied_index
            )));
        }
        None
    }
}

/// Observes `node` every `period` and stops or resumes `fanout`'s serving
/// as the [`Gate`] decides, until `stop` turns true.
pub async fn watch(
    node: Node,
    fanout: Arc<Fanout>,
    grace: Duration,
    period: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut gate = Gate::new(grace, Instant::now());
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match gate.observe(&node.status(), Instant::now()) {
            Some(Change::Stop(reason)) => {
                let ended = fanout.stop_serving(&reason);
                tracing::warn!(ended, "{reason}: Sync clients sent to other replicas");
            }
            Some(Change::Resume) => fanout.resume_serving(),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn status(leader_id: u64, applied: u64, commit: u64) -> RaftStatus {
        RaftStatus {
            id: 1,
            leader_id,
            applied_index: applied,
            commit_index: commit,
            voters: vec![1, 2, 3],
            ..RaftStatus::default()
        }
    }

    #[test]
    fn a_replica_without_a_leader_for_the_grace_stops_and_resumes_once_caught_up() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(1);
        let mut g = Gate::new(grace, t0);
        assert_eq!(g.observe(&status(2, 10, 10), t0), None);
        // The leader is lost: nothing changes within the grace.
        let lost = t0 + Duration::from_secs(5);
        assert_eq!(g.observe(&status(0, 10, 10), lost), None);
        assert_eq!(g.observe(&status(0, 10, 10), lost + grace / 2), None);
        assert!(g.serving());
        let Some(Change::Stop(reason)) = g.observe(&status(0, 10, 10), lost + grace) else {
            panic!("not stopped");
        };
        assert!(reason.contains("no Raft leader") && reason.contains("revision 10"));
        assert!(!g.serving());
        // Stopped once only.
        assert_eq!(g.observe(&status(0, 10, 10), lost + grace * 3), None);
        // A leader again, but the log still catching up: not yet.
        let back = lost + grace * 4;
        assert_eq!(g.observe(&status(2, 10, 40), back), None);
        assert_eq!(g.observe(&status(2, 40, 40), back), Some(Change::Resume));
        assert!(g.serving());
        // A leader id that is not a voter counts as none, and the grace
        // starts again from scratch.
        assert_eq!(g.observe(&status(9, 40, 40), back + grace / 2), None);
        assert_eq!(g.observe(&status(9, 40, 40), back + grace), None);
        assert!(matches!(
            g.observe(&status(9, 40, 40), back + grace + grace / 2),
            Some(Change::Stop(_))
        ));
    }

    #[test]
    fn a_replica_that_never_finds_a_leader_stops_after_the_grace_from_its_start() {
        let t0 = Instant::now();
        let mut g = Gate::new(Duration::from_secs(1), t0);
        assert_eq!(g.observe(&status(0, 1, 1), t0), None);
        assert!(matches!(
            g.observe(&status(0, 1, 1), t0 + Duration::from_secs(1)),
            Some(Change::Stop(_))
        ));
    }
}
