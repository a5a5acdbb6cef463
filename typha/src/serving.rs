//! Whether this replica serves Sync clients. A replica serves only while
//! it knows a Raft leader (a voter) and has applied everything it knows
//! committed; otherwise its state may be stale and its clients with it.
//!
//! - **At start it does not serve** until it has known a leader: whatever
//!   it has (an empty store, or a persisted state from before a long
//!   outage) is unconfirmed. A sole voter campaigns at once and is its own
//!   leader within a tick or so; a replica restarted into a running
//!   cluster hears its leader within a heartbeat; a cluster starting cold
//!   waits out its first election (one to two election timeouts).
//! - **Once it has served**, a replica that has known no leader for the
//!   grace (an election timeout: a partition cut it off, or it was the
//!   leader and stepped down for want of a quorum) stops serving
//!   ([`Fanout::stop_serving`]), so its clients resume on a replica that
//!   has a leader, from their revision, without a snapshot. It serves
//!   again once it knows a leader and has applied what it knows committed.
//!
//! Every refusal and every stream it ends for this is `UNAVAILABLE` with a
//! retry hint of [`RETRY_AFTER`] (`grpc-retry-pushback-ms` on gRPC, the
//! `StreamEnd`'s `retry_after_ms` on the lean transport): the condition
//! lasts about an election, so a client asks again (another replica)
//! soon instead of backing off as from a failure.
//!
//! The decision ([`Gate`]) is pure, time passed in; [`watch`] drives it
//! from the node's status. It refuses to judge how far behind the leader
//! a replica that knows one is: a follower's commit index is only what
//! its leader told it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fanout::Fanout;
use crate::node::{Node, RaftStatus};

/// How long a client refused for want of a leader is asked to wait before
/// it asks again: two Raft ticks, a fifth of an election timeout.
pub const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Why a replica that has not yet known a leader refuses.
pub const STARTING: &str = "it has not known a Raft leader since it started";

/// What the gate decided on an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Stop serving, for this reason.
    Stop(String),
    /// Serve (again).
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
    /// The gate of a replica started at `now`: not serving (for
    /// [`STARTING`]) until it knows a leader and has applied what it
    /// knows committed.
    pub fn new(grace: Duration, now: Instant) -> Gate {
        Gate {
            grace,
            leaderless_since: Some(now),
            serving: false,
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

/// Observes `node` every `period` (a tenth of it while not serving, so a
/// replica serves within a few milliseconds of knowing a leader) and
/// stops or resumes `fanout`'s serving as the [`Gate`] decides, until
/// `stop` turns true. `fanout` should already be stopped for
/// [`STARTING`] before its listeners open.
pub async fn watch(
    node: Node,
    fanout: Arc<Fanout>,
    grace: Duration,
    period: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut gate = Gate::new(grace, Instant::now());
    fanout.stop_serving(STARTING);
    let fast = (period / 10).max(Duration::from_millis(1));
    loop {
        let wait = if gate.serving() { period } else { fast };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
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
        assert_eq!(g.observe(&status(2, 10, 10), t0), Some(Change::Resume));
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
    fn a_fresh_replica_does_not_serve_until_it_has_known_a_leader_however_long_that_takes() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(1);
        let mut g = Gate::new(grace, t0);
        // Not serving from the start, and no Stop to announce: there is
        // nothing to end. Neither the grace nor any later time changes
        // that while no leader is known: what it holds is unconfirmed.
        assert!(!g.serving());
        for s in [0, 1, 2, 60, 3600] {
            let at = t0 + Duration::from_secs(s);
            assert_eq!(g.observe(&status(0, 7, 7), at), None, "at {s} s");
            assert!(!g.serving());
        }
        // A restarted replica hears its leader before it has applied
        // what that leader says is committed: still not.
        let heard = t0 + Duration::from_secs(3601);
        assert_eq!(g.observe(&status(3, 7, 12), heard), None);
        assert!(!g.serving());
        assert_eq!(g.observe(&status(3, 12, 12), heard), Some(Change::Resume));
        assert!(g.serving());
    }

    #[test]
    fn a_sole_voter_serves_as_soon_as_its_own_election_is_observed() {
        let t0 = Instant::now();
        let mut g = Gate::new(Duration::from_secs(1), t0);
        let mut single = status(0, 0, 0);
        single.voters = vec![1];
        // Before its campaign at start has run.
        assert_eq!(g.observe(&single, t0), None);
        // It won its own election and applied its term's empty entry.
        single.leader_id = 1;
        single.commit_index = 1;
        single.applied_index = 1;
        let elected = t0 + Duration::from_millis(3);
        assert_eq!(g.observe(&single, elected), Some(Change::Resume));
        // It stays its own leader: it serves for as long as it runs.
        assert_eq!(g.observe(&single, elected + Duration::from_secs(100)), None);
        assert!(g.serving());
    }

    #[test]
    fn a_replica_that_never_finds_a_leader_after_serving_stops_after_the_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(1);
        let mut g = Gate::new(grace, t0);
        assert_eq!(g.observe(&status(2, 1, 1), t0), Some(Change::Resume));
        let lost = t0 + Duration::from_millis(100);
        assert_eq!(g.observe(&status(0, 1, 1), lost), None);
        assert_eq!(
            g.observe(&status(0, 1, 1), lost + grace / 2 + grace / 4),
            None
        );
        assert!(matches!(
            g.observe(&status(0, 1, 1), lost + grace),
            Some(Change::Stop(_))
        ));
    }
}
