//! What the Raft thread refuses before raft-rs sees it. Pure functions: the
//! caller passes a view of the local log and membership.
//!
//! - [`admit`]: a message from a peer. Only the types peers exchange are
//!   accepted (never `MsgPropose`, `MsgHup`, `MsgBeat`, `MsgReadIndex` or
//!   any other type only a local node generates: writes go through the
//!   validated API); the sender must be a member, and a voter for what only
//!   a leader or candidate sends; and the fields raft-rs trusts (a
//!   heartbeat's commit, an append's entries, an acknowledged index, a
//!   snapshot's configuration) must be possible, because raft-rs panics on
//!   the impossible ones.
//! - [`check_change`]: a membership change raft-rs would refuse when
//!   applying it (remove the last voter, add a voter as learner, promote a
//!   learner that has not caught up) is refused before it is proposed.
//! - [`check_command`]: a committed command is checked again when applied,
//!   with the model, so an entry that never passed the API is skipped.

use manul_model::{Kind, stored};
use manul_proto::v1::{Command, ResourceKey, StateSnapshot, command::Op};
use prost::Message as _;
use raft::prelude::{ConfState, Message, MessageType};

use super::MembershipChange;

/// What the local node knows when judging a message.
#[derive(Debug, Clone, Copy)]
pub struct LogView<'a> {
    pub id: u64,
    pub conf: &'a ConfState,
    pub last_index: u64,
}

/// Why a message from a peer was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("addressed to replica {to}, not to this one")]
    NotForUs { to: u64 },
    #[error("claims to come from this replica")]
    FromSelf,
    #[error("carries no term (raft-rs takes a message without one for a local one)")]
    NoTerm,
    #[error("an index or term no log reaches (raft-rs would overflow on it)")]
    Overflowing,
    #[error("{0:?} is generated only inside a replica, never accepted from a peer")]
    LocalOnly(MessageType),
    #[error("replica {0} is not a member")]
    NotAMember(u64),
    #[error("replica {from} is not a voter and may not send {kind:?}")]
    NotAVoter { from: u64, kind: MessageType },
    #[error("commit {commit} is beyond this replica's last index {last}")]
    CommitBeyondLog { commit: u64, last: u64 },
    #[error("appended entries do not follow index {index} one by one")]
    AppendNotContiguous { index: u64 },
    #[error("appended terms do not rise from the previous entry's to the message's term {term}")]
    AppendTermAhead { term: u64 },
    #[error("an append after index {index} names no term for it")]
    AppendNoLogTerm { index: u64 },
    #[error("acknowledges index {index}, beyond this replica's last index {last}")]
    AckBeyondLog { index: u64, last: u64 },
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Above any index or term a real log reaches; raft-rs adds to them
/// unchecked.
const LIMIT: u64 = 1 << 62;

fn overflowing(m: &Message) -> bool {
    let snap = m.snapshot.as_ref().map(|s| s.get_metadata());
    [
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.reject_hint,
        m.request_snapshot,
    ]
    .into_iter()
    .chain(m.entries.iter().flat_map(|e| [e.index, e.term]))
    .chain(snap.into_iter().flat_map(|s| [s.index, s.term]))
    .any(|n| n >= LIMIT)
}

fn is_member(conf: &ConfState, id: u64) -> bool {
    conf.voters.contains(&id) || conf.learners.contains(&id)
}

/// Decides whether the local node steps `m`. See the module documentation.
pub fn admit(m: &Message, v: &LogView<'_>) -> Result<(), Refused> {
    use MessageType::*;
    let kind = m.get_msg_type();
    if m.to != v.id {
        return Err(Refused::NotForUs { to: m.to });
    }
    if m.from == v.id {
        return Err(Refused::FromSelf);
    }
    let from_leader = matches!(kind, MsgAppend | MsgHeartbeat | MsgSnapshot);
    let from_candidate = matches!(kind, MsgRequestVote | MsgRequestPreVote);
    let response = matches!(
        kind,
        MsgAppendResponse
            | MsgHeartbeatResponse
            | MsgRequestVoteResponse
            | MsgRequestPreVoteResponse
    );
    if !(from_leader || from_candidate || response) {
        return Err(Refused::LocalOnly(kind));
    }
    // Every message between replicas carries the sender's term.
    if m.term == 0 {
        return Err(Refused::NoTerm);
    }
    if overflowing(m) {
        return Err(Refused::Overflowing);
    }
    // A replica started with --join knows no members until the leader's
    // first snapshot: it can only follow.
    let joining = v.conf.voters.is_empty() && v.conf.learners.is_empty();
    if joining {
        if !from_leader || m.from == 0 {
            return Err(Refused::NotAMember(m.from));
        }
    } else if !is_member(v.conf, m.from) {
        return Err(Refused::NotAMember(m.from));
    } else if (from_leader || from_candidate) && !v.conf.voters.contains(&m.from) {
        return Err(Refused::NotAVoter { from: m.from, kind });
    }
    match kind {
        // raft-rs commits to a heartbeat's commit unchecked (a leader sends
        // at most what this follower has acknowledged).
        MsgHeartbeat if m.commit > v.last_index => Err(Refused::CommitBeyondLog {
            commit: m.commit,
            last: v.last_index,
        }),
        MsgAppend => check_append(m),
        // A leader trusts an acknowledged index and sends from after it.
        MsgAppendResponse if !m.reject && m.index > v.last_index => Err(Refused::AckBeyondLog {
            index: m.index,
            last: v.last_index,
        }),
        MsgSnapshot => check_snapshot(m, v.id),
        _ => Ok(()),
    }
}

/// An append names the term of the entry it follows (raft-rs takes term 0
/// beyond its log for a match and appends after a gap), and its entries
/// follow its index one by one with terms that never fall, from that term
/// up to the message's (raft-rs panics on a conflict at or below its commit
/// index, which a gap could fake).
fn check_append(m: &Message) -> Result<(), Refused> {
    if m.index > 0 && m.log_term == 0 {
        return Err(Refused::AppendNoLogTerm { index: m.index });
    }
    let mut term = m.log_term;
    for (k, e) in m.entries.iter().enumerate() {
        if Some(e.index) != m.index.checked_add(k as u64 + 1) {
            return Err(Refused::AppendNotContiguous { index: m.index });
        }
        if e.term < term || e.term > m.term {
            return Err(Refused::AppendTermAhead { term: m.term });
        }
        term = e.term;
    }
    if m.log_term > m.term {
        return Err(Refused::AppendTermAhead { term: m.term });
    }
    Ok(())
}

/// A snapshot must carry a configuration raft-rs can restore (it panics on
/// one it cannot) that includes this replica, and data this replica can
/// install.
fn check_snapshot(m: &Message, id: u64) -> Result<(), Refused> {
    let snap = m
        .snapshot
        .as_ref()
        .ok_or_else(|| Refused::Snapshot("no snapshot in the message".into()))?;
    let meta = snap.get_metadata();
    let cs = meta.get_conf_state();
    let bad = |why: &str| Err(Refused::Snapshot(why.into()));
    if meta.index == 0 || meta.term == 0 || meta.term > m.term {
        return bad("index or term impossible");
    }
    if cs.voters.is_empty() {
        return bad("no voters");
    }
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return bad("a joint configuration (never made by Manul)");
    }
    let ids: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != ids.len() {
        return bad("a replica is listed twice (or both voter and learner)");
    }
    if unique.first() == Some(&0) {
        return bad("replica id 0");
    }
    if !is_member(cs, id) {
        return bad("this replica is not in its configuration");
    }
    let data = StateSnapshot::decode(snap.get_data())
        .map_err(|e| Refused::Snapshot(format!("undecodable data: {e}")))?;
    if data.revision != meta.index {
        return bad("data revision differs from the snapshot index");
    }
    if data.members.iter().any(|mb| !is_member(cs, mb.id)) {
        return bad("data names a member outside its configuration");
    }
    Ok(())
}

/// Refuses, with the reason, a membership change raft-rs would refuse when
/// applying it or that would lose the cluster's quorum. `matched` is the
/// leader's record of the replica's log (`None`: no progress known);
/// `committed` the leader's commit index.
pub fn check_change(
    change: &MembershipChange,
    conf: &ConfState,
    matched: Option<u64>,
    committed: u64,
) -> Result<(), String> {
    if !conf.voters_outgoing.is_empty() {
        return Err("a joint configuration is in progress".into());
    }
    match change {
        MembershipChange::AddLearner { id, .. } if conf.voters.contains(id) => Err(format!(
            "replica {id} is already a voter; remove it first to re-add it as a learner"
        )),
        MembershipChange::AddLearner { id, .. } if conf.learners.contains(id) => {
            Err(format!("replica {id} is already a learner"))
        }
        MembershipChange::AddLearner { .. } => Ok(()),
        MembershipChange::Promote { id } if conf.voters.contains(id) => {
            Err(format!("replica {id} is already a voter"))
        }
        MembershipChange::Promote { id } if !conf.learners.contains(id) => Err(format!(
            "replica {id} is not a member; add it as a learner first"
        )),
        MembershipChange::Promote { id } => match matched {
            Some(m) if m >= committed => Ok(()),
            m => Err(format!(
                "learner {id} has not caught up (has index {}, the leader committed {committed}); promote it once it has",
                m.unwrap_or(0)
            )),
        },
        MembershipChange::Remove { id } if !is_member(conf, *id) => {
            Err(format!("replica {id} is not a member"))
        }
        MembershipChange::Remove { id } if conf.voters == [*id] => Err(format!(
            "replica {id} is the last voter; a cluster cannot lose its last voter"
        )),
        MembershipChange::Remove { .. } => Ok(()),
    }
}

fn check_key(k: Option<&ResourceKey>, path: &str) -> Result<Kind, String> {
    let k = k.ok_or_else(|| format!("{path}: no key"))?;
    let kind = manul_proto::wire::kind(&k.kind).map_err(|e| format!("{path}: {e}"))?;
    if k.name.is_empty() || k.name.chars().any(char::is_control) {
        return Err(format!("{path}: bad name {:?}", k.name));
    }
    if kind.namespaced() == k.namespace.is_empty() || k.namespace.chars().any(char::is_control) {
        return Err(format!(
            "{path}: bad namespace {:?} for {kind}",
            k.namespace
        ));
    }
    Ok(kind)
}

/// Checks a committed command as the API would have: every written value
/// decodes as a valid resource of its key's kind, stored under its own key,
/// and every deleted key names a known kind.
pub fn check_command(command: &Command) -> Result<(), String> {
    if let Some(o) = &command.origin {
        for (field, text) in [
            ("identity", &o.identity),
            ("role", &o.role),
            ("verb", &o.verb),
        ] {
            if text.len() > MAX_ORIGIN_FIELD {
                return Err(format!(
                    "origin.{field}: {} bytes, over {MAX_ORIGIN_FIELD}",
                    text.len()
                ));
            }
        }
    }
    match &command.op {
        None => Err("no operation".into()),
        Some(Op::Writes(batch)) => {
            if batch.writes.is_empty() && batch.deletes.is_empty() {
                return Err("an empty write batch".into());
            }
            for (i, k) in batch.deletes.iter().enumerate() {
                check_key(Some(k), &format!("deletes[{i}]"))?;
            }
            for (i, w) in batch.writes.iter().enumerate() {
                let path = format!("writes[{i}]");
                let kind = check_key(w.key.as_ref(), &path)?;
                let resource = stored::decode_as(kind, &w.value)
                    .map_err(|e| format!("{path}: not a valid {kind}: {e}"))?;
                let rk = resource.key();
                let k = w.key.clone().unwrap_or_default();
                if rk.name != k.name || rk.namespace.unwrap_or_default() != k.namespace {
                    return Err(format!("{path}: the value is not the resource of its key"));
                }
            }
            Ok(())
        }
        Some(Op::Deletes(batch)) => {
            if batch.keys.is_empty() {
                return Err("an empty delete batch".into());
            }
            for (i, k) in batch.keys.iter().enumerate() {
                check_key(Some(k), &format!("keys[{i}]"))?;
            }
            Ok(())
        }
    }
}

/// The longest identity, role or verb an entry's origin may hold (the
/// audit history keeps thousands of them).
pub const MAX_ORIGIN_FIELD: usize = 1024;

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
