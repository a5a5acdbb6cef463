//! The invariants, checked after every step against what every replica
//! and subscriber reported so far. No I/O.
//!
//! - one leader per term;
//! - the committed log: every replica applies, at each index, the same
//!   entry (term and bytes), indexes increasing, so each replica's applied
//!   log is a prefix of the others' (a replica that installed a snapshot
//!   skips the indexes it covers);
//! - every acknowledged write is the committed entry at the revision it was
//!   acknowledged with;
//! - every replica (and every subscriber) that reached a revision holds the
//!   same state hash there.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use manul_proto::v1::Command;
use prost::Message as _;

/// A broken invariant: what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(what: String) -> Result<T, Violation> {
    Err(Violation(what))
}

/// What every replica and subscriber reported so far.
#[derive(Debug, Default)]
pub struct Checks {
    /// Term to the replica that led in it.
    leaders: HashMap<u64, u64>,
    /// Index to the (term, data) first applied there, by any replica.
    log: BTreeMap<u64, (u64, Bytes)>,
    /// Per replica, the last index it applied in its current run.
    last_applied: HashMap<u64, u64>,
    /// Revision to the state hash first seen there.
    hashes: HashMap<u64, String>,
    /// Writes acknowledged: (request id, revision).
    pub acknowledged: Vec<(u64, u64)>,
}

impl Checks {
    pub fn leader(&mut self, term: u64, id: u64) -> Result<(), Violation> {
        match self.leaders.insert(term, id) {
            Some(other) if other != id => fail(format!(
                "two leaders in term {term}: replicas {other} and {id}"
            )),
            _ => Ok(()),
        }
    }

    /// How many terms had a leader.
    pub fn terms_led(&self) -> u64 {
        self.leaders.len() as u64
    }

    /// A replica restarted: its applied indexes start again from its
    /// snapshot.
    pub fn restarted(&mut self, replica: u64) {
        self.last_applied.remove(&replica);
    }

    pub fn applied(
        &mut self,
        replica: u64,
        entries: Vec<(u64, u64, Bytes)>,
    ) -> Result<(), Violation> {
        for (index, term, data) in entries {
            let last = self.last_applied.get(&replica).copied().unwrap_or(0);
            if index <= last {
                return fail(format!(
                    "replica {replica} applied index {index} after index {last}"
                ));
            }
            self.last_applied.insert(replica, index);
            match self.log.get(&index) {
                None => {
                    self.log.insert(index, (term, data));
                }
                Some((t, d)) if *t == term && *d == data => {}
                Some((t, _)) => {
                    return fail(format!(
                        "replica {replica} applied a different entry at index {index} (term {term}; another replica applied term {t}'s)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A write was acknowledged with `revision`: the committed entry there
    /// must carry it.
    pub fn acknowledged(&mut self, request_id: u64, revision: u64) -> Result<(), Violation> {
        let Some((_, data)) = self.log.get(&revision) else {
            return fail(format!(
                "write {request_id:#x} acknowledged at revision {revision}, which no replica applied"
            ));
        };
        match Command::decode(data.clone()) {
            Ok(c) if c.request_id == request_id => {
                self.acknowledged.push((request_id, revision));
                Ok(())
            }
            _ => fail(format!(
                "write {request_id:#x} acknowledged at revision {revision}, where another entry is committed"
            )),
        }
    }

    /// `who` holds `hash` at `revision`.
    pub fn state(&mut self, who: &str, revision: u64, hash: &str) -> Result<(), Violation> {
        match self.hashes.get(&revision) {
            None => {
                self.hashes.insert(revision, hash.to_owned());
                Ok(())
            }
            Some(h) if h == hash => Ok(()),
            Some(h) => fail(format!(
                "{who} holds state {hash} at revision {revision}, another holds {h}"
            )),
        }
    }

    /// The state hash some replica held at `revision`, if one was seen.
    pub fn hash_at(&self, revision: u64) -> Option<&str> {
        self.hashes.get(&revision).map(String::as_str)
    }

    /// Every acknowledged write is still the committed entry at its
    /// revision (the log map is never rewritten, so this holds unless an
    /// ack was recorded without an entry).
    pub fn every_ack_committed(&self, final_revision: u64) -> Result<(), Violation> {
        for (request_id, revision) in &self.acknowledged {
            if *revision > final_revision {
                return fail(format!(
                    "write {request_id:#x} acknowledged at revision {revision}, beyond the final revision {final_revision}"
                ));
            }
        }
        Ok(())
    }
}
