//! Raft membership for a Deployment, as pure decisions: no I/O, time passed
//! in. The driver ([`super::membership_driver`]) observes the Typha pods, the
//! `coordination.k8s.io` Lease and the local Raft configuration, and applies
//! what these functions decide.
//!
//! - [`node_id`]: a replica's Raft id is derived from its pod's uid. A pod's
//!   data (an `emptyDir`) lives exactly as long as its uid, so a restarted
//!   container with its data is the same member, and a new pod (new uid, no
//!   data) is a new member that joins as a learner and catches up from a
//!   peer's Raft snapshot. A member id never comes back without its log.
//! - [`decide_start`]: before the Raft node starts, whether this replica
//!   resumes from its data, joins a running cluster (starts empty and waits
//!   to be added), or tries to take the Lease to bootstrap a new cluster as
//!   its only voter. Only the Lease holder bootstraps, and only when no other
//!   Typha pod is ready (a ready pod knows a Raft leader: a cluster exists).
//! - [`plan`]: on the Raft leader, what to do next: take or renew the Lease
//!   (the leader holds it, so a pod starting later sees a live cluster), and
//!   at most one membership change, in this order: remove a member whose pod
//!   is gone (learners first; never this replica, never the last voter, and
//!   never one that would leave fewer live voters than a quorum), promote a
//!   caught-up learner while there are fewer voters than configured, add a
//!   new pod as a learner. Every change passes the node's own pre-check
//!   ([`crate::node::guard::check_change`]) before it is planned.
//!
//! It refuses to demote voters above the configured count, to remove a
//! member whose pod still exists (even while it is being deleted: it may
//! still hold the only copy of recent entries of a minority), and to take a
//! Lease that another live pod outside this cluster renewed within its
//! duration (two clusters: logged, left to an operator).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use raft::prelude::ConfState;
use sha2::{Digest, Sha256};

use crate::node::MembershipChange;
use crate::node::guard::check_change;

/// The Raft id of the replica running in the pod with this uid: the first
/// 53 bits of the uid's SHA-256 (exact in JSON numbers), never 0.
pub fn node_id(uid: &str) -> u64 {
    let digest = Sha256::digest(uid.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let id = u64::from_be_bytes(bytes) & ((1 << 53) - 1);
    id.max(1)
}

/// A Typha pod as the watcher last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    pub ip: Option<IpAddr>,
    /// The container port named `peer`, when the pod declares one.
    pub peer_port: Option<u16>,
    /// The pod's `Ready` condition is true.
    pub ready: bool,
    /// The pod has a deletion timestamp.
    pub deleting: bool,
}

impl PodView {
    pub fn id(&self) -> u64 {
        node_id(&self.uid)
    }

    /// Running and not going away: may join.
    fn live(&self) -> bool {
        !self.deleting && self.ip.is_some() && !self.uid.is_empty()
    }

    fn peer_address(&self, default_port: u16) -> Option<String> {
        let ip = self.ip?;
        Some(SocketAddr::new(ip, self.peer_port.unwrap_or(default_port)).to_string())
    }
}

/// The Lease as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity` (a pod name), when set and not empty.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`, in milliseconds.
    pub duration_ms: i64,
    /// Local time at which this replica first saw the Lease's current
    /// version (as client-go does: the holder's clock is not trusted).
    pub observed_ms: i64,
}

impl LeaseView {
    fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.observed_ms.saturating_add(self.duration_ms)
    }
}

/// What this replica decides before its Raft node starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Its data holds a Raft configuration: start from it.
    Resume,
    /// A cluster exists (or another pod is bootstrapping one): start empty
    /// and wait for the leader to add this replica as a learner.
    Join,
    /// No cluster is visible: take the Lease (a conditional write); the
    /// winner bootstraps as the only voter, a loser decides again.
    Acquire,
}

fn pod<'a>(pods: &'a [PodView], name: &str) -> Option<&'a PodView> {
    pods.iter().find(|p| p.name == name)
}

/// See the module documentation. `me` is this pod's name.
pub fn decide_start(
    has_data: bool,
    me: &str,
    pods: &[PodView],
    lease: Option<&LeaseView>,
    now_ms: i64,
) -> Start {
    if has_data {
        return Start::Resume;
    }
    if pods.iter().any(|p| p.name != me && p.ready && !p.deleting) {
        return Start::Join;
    }
    let Some(lease) = lease else {
        return Start::Acquire;
    };
    match lease.holder.as_deref() {
        None => Start::Acquire,
        Some(h) if h == me => Start::Acquire,
        Some(h) => match pod(pods, h) {
            Some(p) if !p.deleting && !lease.expired(now_ms) => Start::Join,
            _ => Start::Acquire,
        },
    }
}

/// What the leader knows of its Raft configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftView {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The leader's record of each member's log (`matched`).
    pub matched: BTreeMap<u64, u64>,
    /// The leader's commit index.
    pub committed: u64,
}

impl RaftView {
    fn conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            ..ConfState::default()
        }
    }

    fn members(&self) -> BTreeSet<u64> {
        self.voters.iter().chain(&self.learners).copied().collect()
    }

    /// The node's pre-check, with this view's progress.
    fn allows(&self, change: &MembershipChange) -> bool {
        let id = match change {
            MembershipChange::AddLearner { id, .. }
            | MembershipChange::Promote { id }
            | MembershipChange::Remove { id } => *id,
        };
        let matched = self.matched.get(&id).copied();
        check_change(change, &self.conf_state(), matched, self.committed).is_ok()
    }
}

/// Fixed settings of the membership driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// This pod's name (the Lease holder identity).
    pub me: String,
    /// This replica's Raft id.
    pub my_id: u64,
    /// Voters wanted; learners are promoted up to this many.
    pub voters: usize,
    /// The peer port of a pod that declares no port named `peer`.
    pub peer_port: u16,
    /// The holder renews the Lease this often.
    pub renew_ms: i64,
}

/// A write to the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease exists: create it held by this pod.
    Create,
    /// Make this pod the holder (a conditional update).
    Take,
    /// This pod holds it: refresh `renewTime` (a conditional update).
    Renew,
}

/// What the leader does next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub lease: Option<LeaseAction>,
    pub change: Option<MembershipChange>,
    /// A live pod outside this cluster holds the Lease (logged).
    pub lease_conflict: Option<String>,
}

fn lease_action(
    s: &Settings,
    pods: &[PodView],
    lease: Option<&LeaseView>,
    raft: &RaftView,
    now_ms: i64,
) -> (Option<LeaseAction>, Option<String>) {
    let Some(lease) = lease else {
        return (Some(LeaseAction::Create), None);
    };
    let Some(holder) = lease.holder.as_deref() else {
        return (Some(LeaseAction::Take), None);
    };
    if holder == s.me {
        let due = now_ms >= lease.observed_ms.saturating_add(s.renew_ms);
        return (due.then_some(LeaseAction::Renew), None);
    }
    match pod(pods, holder) {
        // A member of this cluster held it: Raft leadership moved here.
        Some(p) if raft.members().contains(&p.id()) => (Some(LeaseAction::Take), None),
        Some(_) if !lease.expired(now_ms) => (None, Some(holder.to_string())),
        _ => (Some(LeaseAction::Take), None),
    }
}

fn removal(s: &Settings, pods: &[PodView], raft: &RaftView) -> Option<MembershipChange> {
    let present: BTreeSet<u64> = pods.iter().map(PodView::id).collect();
    let gone = |id: &&u64| **id != s.my_id && !present.contains(id);
    let learner = raft.learners.iter().find(gone);
    let voter = raft.voters.iter().find(gone).filter(|id| {
        // The voters left, and how many of them have a pod: a quorum of
        // them must remain.
        let left: Vec<u64> = raft.voters.iter().copied().filter(|v| v != *id).collect();
        let live = left.iter().filter(|v| present.contains(v)).count();
        !left.is_empty() && live > left.len() / 2
    });
    learner
        .or(voter)
        .map(|id| MembershipChange::Remove { id: *id })
        .filter(|c| raft.allows(c))
}

fn promotion(s: &Settings, pods: &[PodView], raft: &RaftView) -> Option<MembershipChange> {
    if raft.voters.len() >= s.voters {
        return None;
    }
    let live: BTreeSet<u64> = pods.iter().filter(|p| p.live()).map(PodView::id).collect();
    raft.learners
        .iter()
        .filter(|id| live.contains(id))
        .map(|id| MembershipChange::Promote { id: *id })
        .find(|c| raft.allows(c))
}

fn addition(s: &Settings, pods: &[PodView], raft: &RaftView) -> Option<MembershipChange> {
    let members = raft.members();
    let mut candidates: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.live() && p.name != s.me && !members.contains(&p.id()))
        .collect();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    candidates
        .into_iter()
        .filter_map(|p| {
            Some(MembershipChange::AddLearner {
                id: p.id(),
                address: p.peer_address(s.peer_port)?,
            })
        })
        .find(|c| raft.allows(c))
}

/// See the module documentation. Call only on the leader, with every
/// committed entry applied.
pub fn plan(
    s: &Settings,
    pods: &[PodView],
    lease: Option<&LeaseView>,
    raft: &RaftView,
    now_ms: i64,
) -> Plan {
    let (lease, lease_conflict) = lease_action(s, pods, lease, raft, now_ms);
    let change = removal(s, pods, raft)
        .or_else(|| promotion(s, pods, raft))
        .or_else(|| addition(s, pods, raft));
    Plan {
        lease,
        change,
        lease_conflict,
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
