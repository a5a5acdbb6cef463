//! The replicated state machine: a map from resource key to JSON value, each
//! stamped with the revision (the Raft index) that last wrote it.
//!
//! It performs no I/O and reads no clock: committed Raft entries go in, the
//! changes they made come out, so every replica that applies the same log
//! holds the same map and the same state hash at the same revision.
//!
//! A batch is atomic: when any expected revision does not match, nothing in
//! the batch is written, and the revision still advances (the entry was
//! committed; it just changed nothing).
//!
//! Beside the map it keeps the audit history (`state_audit.rs`): each entry
//! that changed something, with the origin (identity, role, verb, time)
//! the proposing replica stamped into it. It is part of every replica's
//! state and of Raft snapshots, but not of the state hash, which covers
//! the resources that the Sync stream carries.

use std::collections::BTreeMap;

use bytes::Bytes;
use manul_proto::v1::{
    AuditChange, Command, Entry, Member, ResourceKey, StateSnapshot, command::Op,
};
use sha2::{Digest, Sha256};

use crate::state_audit::AuditHistory;

/// A resource's place in the map: kind key name, namespace ("" for
/// cluster-scoped kinds) and name. Orders like `manulctl get` lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn from_proto(k: &ResourceKey) -> Key {
        Key {
            kind: k.kind.clone(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
    }

    pub fn to_proto(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    value: Bytes,
    revision: u64,
}

/// Why a committed command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("revision conflict on {key}: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("empty command")]
    Empty,
}

/// What applying one committed command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub request_id: u64,
    pub revision: u64,
    /// The changes, for the fan-out and for the caller; empty on error.
    pub result: Result<Vec<Entry>, ApplyError>,
}

/// The state machine. See the module documentation.
#[derive(Debug, Default)]
pub struct StateMachine {
    entries: BTreeMap<Key, Stored>,
    members: BTreeMap<u64, Member>,
    applied: u64,
    hash: u128,
    audit: AuditHistory,
}

fn entry_digest(key: &Key, value: &[u8], revision: u64) -> u128 {
    let mut h = Sha256::new();
    for part in [
        key.kind.as_bytes(),
        key.namespace.as_bytes(),
        key.name.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(revision.to_be_bytes());
    h.update(value);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    u128::from_be_bytes(out)
}

impl StateMachine {
    pub fn new() -> StateMachine {
        StateMachine::default()
    }

    /// The last Raft index applied: the revision of the whole map.
    pub fn revision(&self) -> u64 {
        self.applied
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An order-independent digest of every (key, value, revision), as hex.
    /// Equal on every replica at the same revision.
    pub fn state_hash(&self) -> String {
        format!("{:032x}", self.hash)
    }

    /// Stores `value` under `key`; the revision it replaced, if any.
    fn insert(&mut self, key: Key, value: Bytes, revision: u64) -> Option<u64> {
        self.hash = self.hash.wrapping_add(entry_digest(&key, &value, revision));
        let old = self
            .entries
            .insert(key.clone(), Stored { value, revision })?;
        self.hash = self
            .hash
            .wrapping_sub(entry_digest(&key, &old.value, old.revision));
        Some(old.revision)
    }

    /// Removes `key`; the revision it had, if it was stored.
    fn remove(&mut self, key: &Key) -> Option<u64> {
        let old = self.entries.remove(key)?;
        self.hash = self
            .hash
            .wrapping_sub(entry_digest(key, &old.value, old.revision));
        Some(old.revision)
    }

    fn current_revision(&self, key: &Key) -> u64 {
        self.entries.get(key).map_or(0, |s| s.revision)
    }

    fn check(&self, key: &Key, expected: Option<u64>) -> Result<(), ApplyError> {
        match expected {
            Some(expected) if self.current_revision(key) != expected => Err(ApplyError::Conflict {
                key: key.to_string(),
                expected,
                actual: self.current_revision(key),
            }),
            _ => Ok(()),
        }
    }

    /// Records that Raft index `index` was applied without a command (a
    /// leader's empty entry or a configuration change).
    pub fn advance(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// Applies the committed command at Raft index `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Applied {
        self.advance(index);
        let mut audited: Vec<AuditChange> = Vec::new();
        let mut change = |key: &Key, action: &str, previous: Option<u64>| {
            audited.push(AuditChange {
                key: Some(key.to_proto()),
                action: action.to_string(),
                previous_revision: previous.unwrap_or(0),
            });
        };
        let result = match &command.op {
            Some(Op::Writes(batch)) => {
                let checked: Result<Vec<_>, _> = batch
                    .writes
                    .iter()
                    .map(|w| {
                        let key = Key::from_proto(&w.key.clone().unwrap_or_default());
                        self.check(&key, w.expected_revision).map(|()| key)
                    })
                    .collect();
                checked.map(|keys| {
                    let mut changes: Vec<Entry> = keys
                        .into_iter()
                        .zip(&batch.writes)
                        .map(|(key, w)| {
                            let previous = self.insert(key.clone(), w.value.clone(), index);
                            let action = if previous.is_some() {
                                "updated"
                            } else {
                                "created"
                            };
                            change(&key, action, previous);
                            Entry {
                                key: Some(key.to_proto()),
                                value: w.value.clone(),
                                revision: index,
                                deleted: false,
                            }
                        })
                        .collect();
                    for k in batch.deletes.iter().map(Key::from_proto) {
                        if let Some(previous) = self.remove(&k) {
                            change(&k, "deleted", Some(previous));
                            changes.push(Entry {
                                key: Some(k.to_proto()),
                                value: Bytes::new(),
                                revision: index,
                                deleted: true,
                            });
                        }
                    }
                    changes
                })
            }
            Some(Op::Deletes(batch)) => {
                let keys: Vec<Key> = batch.keys.iter().map(Key::from_proto).collect();
                keys.iter()
                    .try_for_each(|k| self.check(k, batch.expected_revision))
                    .map(|()| {
                        keys.iter()
                            .filter(|k| match self.remove(k) {
                                Some(previous) => {
                                    change(k, "deleted", Some(previous));
                                    true
                                }
                                None => false,
                            })
                            .map(|k| Entry {
                                key: Some(k.to_proto()),
                                value: Bytes::new(),
                                revision: index,
                                deleted: true,
                            })
                            .collect()
                    })
            }
            None => Err(ApplyError::Empty),
        };
        if !audited.is_empty() {
            self.audit
                .record(index, command.origin.clone().unwrap_or_default(), audited);
        }
        Applied {
            request_id: command.request_id,
            revision: index,
            result,
        }
    }

    /// The stored entry for `key`.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.entries.get(key).map(|s| Entry {
            key: Some(key.to_proto()),
            value: s.value.clone(),
            revision: s.revision,
            deleted: false,
        })
    }

    /// Every entry, or those of one kind and/or namespace (empty = any), in
    /// key order.
    pub fn list(&self, kind: &str, namespace: &str) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|(k, _)| {
                (kind.is_empty() || k.kind == kind)
                    && (namespace.is_empty() || k.namespace == namespace)
            })
            .map(|(k, s)| Entry {
                key: Some(k.to_proto()),
                value: s.value.clone(),
                revision: s.revision,
                deleted: false,
            })
            .collect()
    }

    /// The retained audit history.
    pub fn audit(&self) -> &AuditHistory {
        &self.audit
    }

    /// Cluster members as last configured through the log.
    pub fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// Records a member's address and role (applied with a configuration
    /// change, so every replica learns the addresses).
    pub fn set_member(&mut self, member: Member) {
        self.members.insert(member.id, member);
    }

    pub fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
    }

    /// The whole state, for a Raft snapshot.
    pub fn to_snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            revision: self.applied,
            entries: self.list("", ""),
            members: self.members(),
            audit: self.audit.events().cloned().collect(),
            audit_clock_unix_millis: self.audit.clock(),
        }
    }

    /// Replaces the state with a snapshot's.
    pub fn restore(&mut self, snap: &StateSnapshot) {
        *self = StateMachine::default();
        for e in &snap.entries {
            let key = Key::from_proto(&e.key.clone().unwrap_or_default());
            self.insert(key, e.value.clone(), e.revision);
        }
        for m in &snap.members {
            self.set_member(m.clone());
        }
        self.audit = AuditHistory::restore(&snap.audit, snap.audit_clock_unix_millis);
        self.applied = snap.revision;
    }
}

#[cfg(test)]
mod tests {
    use manul_proto::v1::{DeleteBatch, Write, WriteBatch};

    use super::*;

    fn key(name: &str) -> ResourceKey {
        ResourceKey {
            kind: "tier".into(),
            namespace: String::new(),
            name: name.into(),
        }
    }

    fn write(id: u64, items: &[(&str, &str, Option<u64>)]) -> Command {
        Command {
            request_id: id,
            origin: None,
            op: Some(Op::Writes(WriteBatch {
                writes: items
                    .iter()
                    .map(|(n, v, e)| Write {
                        key: Some(key(n)),
                        value: Bytes::from(v.to_string()),
                        expected_revision: *e,
                    })
                    .collect(),
                ..Default::default()
            })),
        }
    }

    fn delete(names: &[&str], expected: Option<u64>) -> Command {
        Command {
            request_id: 9,
            op: Some(Op::Deletes(DeleteBatch {
                keys: names.iter().map(|n| key(n)).collect(),
                expected_revision: expected,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn writes_are_stamped_with_their_index_and_deletes_are_changes() {
        let mut sm = StateMachine::new();
        let a = sm.apply(
            5,
            &write(1, &[("a", "1"), ("b", "2")].map(|(n, v)| (n, v, None))),
        );
        assert_eq!(a.request_id, 1);
        let changes = a.result.unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|e| e.revision == 5 && !e.deleted));
        assert_eq!(sm.revision(), 5);
        assert_eq!(sm.get(&Key::from_proto(&key("a"))).unwrap().revision, 5);

        let d = sm
            .apply(6, &delete(&["a", "missing"], None))
            .result
            .unwrap();
        assert_eq!(d.len(), 1, "only keys that existed are deleted");
        assert!(d[0].deleted && d[0].revision == 6 && d[0].value.is_empty());
        assert_eq!(sm.len(), 1);
    }

    #[test]
    fn a_write_batch_can_delete_in_the_same_step() {
        let mut sm = StateMachine::new();
        sm.apply(1, &write(1, &[("a", "1", None), ("b", "2", None)]));
        let mut mixed = write(2, &[("a", "3", None), ("c", "4", None)]);
        if let Some(Op::Writes(batch)) = &mut mixed.op {
            batch.deletes = vec![key("b"), key("missing")];
        }
        let changes = sm.apply(2, &mixed).result.unwrap();
        let seen: Vec<(String, bool)> = changes
            .iter()
            .map(|e| (e.key.clone().unwrap().name, e.deleted))
            .collect();
        assert_eq!(
            seen,
            [("a".into(), false), ("c".into(), false), ("b".into(), true)],
            "only keys that existed are reported deleted"
        );
        assert_eq!(sm.len(), 2);
        assert!(sm.get(&Key::from_proto(&key("b"))).is_none());
        // A conflict anywhere writes and deletes nothing.
        let mut conflicting = write(3, &[("c", "5", Some(1))]);
        if let Some(Op::Writes(batch)) = &mut conflicting.op {
            batch.deletes = vec![key("a")];
        }
        assert!(sm.apply(3, &conflicting).result.is_err());
        assert!(sm.get(&Key::from_proto(&key("a"))).is_some());
    }

    #[test]
    fn expected_revisions_make_batches_all_or_nothing() {
        let mut sm = StateMachine::new();
        sm.apply(1, &write(1, &[("a", "1", None)]));
        let hash = sm.state_hash();
        let r = sm.apply(2, &write(2, &[("b", "x", Some(0)), ("a", "2", Some(7))]));
        assert_eq!(
            r.result,
            Err(ApplyError::Conflict {
                key: "tier/a".into(),
                expected: 7,
                actual: 1
            })
        );
        assert_eq!(sm.len(), 1, "b was not written");
        assert_eq!(sm.state_hash(), hash);
        assert_eq!(sm.revision(), 2, "the revision advances anyway");
        assert!(
            sm.apply(3, &write(3, &[("a", "2", Some(1)), ("c", "3", Some(0))]))
                .result
                .is_ok()
        );
        assert!(sm.apply(4, &delete(&["a"], Some(1))).result.is_err());
        assert!(sm.apply(5, &delete(&["a"], Some(3))).result.is_ok());
    }

    #[test]
    fn state_hash_is_order_independent_and_restores_from_snapshot() {
        let mut x = StateMachine::new();
        let mut y = StateMachine::new();
        x.apply(1, &write(1, &[("a", "1", None)]));
        x.apply(2, &write(2, &[("b", "2", None)]));
        y.apply(1, &write(1, &[("a", "1", None)]));
        y.apply(2, &write(2, &[("b", "2", None)]));
        assert_eq!(x.state_hash(), y.state_hash());
        y.apply(3, &write(3, &[("b", "3", None)]));
        assert_ne!(x.state_hash(), y.state_hash());
        y.apply(4, &delete(&["b"], None));
        x.apply(3, &delete(&["b"], None));
        assert_eq!(x.state_hash(), y.state_hash(), "only live entries count");
        let mut z = StateMachine::new();
        z.set_member(Member {
            id: 1,
            address: "127.0.0.1:1".into(),
            learner: false,
        });
        z.restore(&x.to_snapshot());
        assert_eq!(z.state_hash(), x.state_hash());
        assert_eq!(z.revision(), x.revision());
        assert!(z.members().is_empty());
    }
}
