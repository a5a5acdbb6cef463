//! What a Sync stream must look like, checked message by message: a
//! hello, then either a complete snapshot (chunks in order) or a resume at
//! the revision asked for, in-sync at that revision, then delta batches
//! each starting right after the previous one (no gap, no duplicate),
//! with entries inside their batch's range. The state the stream builds
//! (snapshot plus deltas) is kept, with Typha's order-independent state
//! hash, to compare with the replicas'. Pure.

use std::collections::BTreeMap;

use manul_proto::v1::{Entry, ServerHello};
use sha2::{Digest as _, Sha256};

type Key = (String, String, String);

/// A snapshot being received: its revision, the next chunk's index, its
/// entries so far.
type Pending = (u64, u32, BTreeMap<Key, (Vec<u8>, u64)>);

/// One stream's follower.
#[derive(Debug, Default, Clone)]
pub struct StreamCheck {
    /// The revision the stream's state is at (0 before the first in-sync).
    pub revision: u64,
    state: BTreeMap<Key, (Vec<u8>, u64)>,
    snapshot: Option<Pending>,
    /// Whether the current connection reached in-sync.
    in_sync: bool,
    /// The revision a resumed connection asked to start after.
    resumed_from: u64,
    pub violations: Vec<String>,
    pub batches: u64,
    pub snapshots: u64,
    pub resumes: u64,
}

/// Typha's per-entry digest (`typha::state`): the key's parts with their
/// lengths, the revision, the value.
fn digest(key: &Key, value: &[u8], revision: u64) -> u128 {
    let mut h = Sha256::new();
    for part in [&key.0, &key.1, &key.2] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(revision.to_be_bytes());
    h.update(value);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    u128::from_be_bytes(out)
}

fn key_of(e: &Entry) -> Option<Key> {
    let k = e.key.as_ref()?;
    Some((k.kind.clone(), k.namespace.clone(), k.name.clone()))
}

impl StreamCheck {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 100 {
            self.violations.push(what);
        }
    }

    /// A new connection asked to resume after `resume` (0: from scratch)
    /// and got `hello`.
    pub fn hello(&mut self, hello: &ServerHello, resume: u64) {
        self.in_sync = false;
        self.snapshot = None;
        self.resumed_from = resume;
        if hello.snapshot_follows {
            self.snapshot = Some((hello.revision, 0, BTreeMap::new()));
        } else {
            self.resumes += 1;
            if resume == 0 || hello.revision != resume {
                self.violation(format!(
                    "a resume after {resume} started at {} without a snapshot",
                    hello.revision
                ));
            }
        }
    }

    pub fn snapshot_chunk(&mut self, revision: u64, index: u32, count: u32, entries: &[Entry]) {
        let Some((rev, next, pending)) = self.snapshot.as_mut() else {
            self.violation(format!(
                "a snapshot chunk at {revision} without a snapshot hello"
            ));
            return;
        };
        let problem = if *rev != revision {
            Some(format!(
                "snapshot chunk at {revision} in a snapshot at {rev}"
            ))
        } else if index != *next || index >= count {
            Some(format!(
                "snapshot chunk {index} of {count} where {next} was due"
            ))
        } else {
            None
        };
        *next += 1;
        let mut dup = None;
        for e in entries {
            if let Some(k) = key_of(e)
                && pending
                    .insert(k.clone(), (e.value.to_vec(), e.revision))
                    .is_some()
            {
                dup = Some(k);
            }
        }
        if let Some(p) = problem {
            self.violation(p);
        }
        if let Some(k) = dup {
            self.violation(format!("key {k:?} twice in a snapshot"));
        }
    }

    pub fn in_sync(&mut self, revision: u64) {
        if self.in_sync {
            self.violation(format!("a second in-sync at {revision}"));
        }
        match self.snapshot.take() {
            Some((rev, _, pending)) => {
                if rev != revision {
                    self.violation(format!("in-sync at {revision} after a snapshot at {rev}"));
                }
                if revision < self.revision {
                    self.violation(format!(
                        "a new snapshot went back from {} to {revision}",
                        self.revision
                    ));
                }
                self.state = pending;
                self.snapshots += 1;
            }
            None => {
                if revision != self.resumed_from {
                    self.violation(format!(
                        "in-sync at {revision} on a resume after {}",
                        self.resumed_from
                    ));
                }
            }
        }
        self.revision = revision;
        self.in_sync = true;
    }

    pub fn deltas(&mut self, first: u64, last: u64, entries: &[Entry]) {
        if !self.in_sync {
            self.violation(format!("deltas {first}..={last} before in-sync"));
            return;
        }
        if first != self.revision + 1 {
            let what = if first <= self.revision {
                "duplicate"
            } else {
                "gap"
            };
            self.violation(format!(
                "{what}: deltas {first}..={last} after revision {}",
                self.revision
            ));
        }
        if last < first {
            self.violation(format!("an empty range {first}..={last}"));
        }
        let mut previous = 0;
        for e in entries {
            if e.revision < first || e.revision > last || e.revision < previous {
                self.violation(format!(
                    "entry at {} in deltas {first}..={last} (after {previous})",
                    e.revision
                ));
            }
            previous = e.revision;
            let Some(k) = key_of(e) else {
                self.violation(format!("an entry without a key at {}", e.revision));
                continue;
            };
            if e.deleted {
                self.state.remove(&k);
            } else {
                self.state.insert(k, (e.value.to_vec(), e.revision));
            }
        }
        self.batches += 1;
        self.revision = self.revision.max(last);
    }

    /// The hash of the state the stream built, as Typha prints it.
    pub fn state_hash(&self) -> String {
        let sum = self
            .state
            .iter()
            .fold(0u128, |acc, (k, (v, r))| acc.wrapping_add(digest(k, v, *r)));
        format!("{sum:032x}")
    }

    pub fn entries(&self) -> usize {
        self.state.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manul_proto::v1::ResourceKey;

    fn entry(name: &str, value: &str, revision: u64, deleted: bool) -> Entry {
        Entry {
            key: Some(ResourceKey {
                kind: "globalnetworkset".into(),
                namespace: String::new(),
                name: name.into(),
            }),
            value: value.as_bytes().to_vec().into(),
            revision,
            deleted,
        }
    }

    fn hello(revision: u64, snapshot: bool) -> ServerHello {
        ServerHello {
            revision,
            snapshot_follows: snapshot,
            ..ServerHello::default()
        }
    }

    #[test]
    fn snapshot_then_contiguous_deltas_is_clean_and_hashes_the_state() {
        let mut s = StreamCheck::default();
        s.hello(&hello(5, true), 0);
        s.snapshot_chunk(5, 0, 2, &[entry("a", "1", 3, false)]);
        s.snapshot_chunk(5, 1, 2, &[entry("b", "2", 5, false)]);
        s.in_sync(5);
        s.deltas(6, 6, &[entry("a", "", 6, true)]);
        s.deltas(7, 8, &[entry("c", "3", 8, false)]);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let mut direct = StreamCheck::default();
        direct.hello(&hello(8, true), 0);
        direct.snapshot_chunk(
            8,
            0,
            1,
            &[entry("c", "3", 8, false), entry("b", "2", 5, false)],
        );
        direct.in_sync(8);
        assert_eq!(s.state_hash(), direct.state_hash());
        assert_eq!(s.entries(), 2);
    }

    #[test]
    fn gaps_duplicates_and_out_of_range_entries_are_violations() {
        let mut s = StreamCheck::default();
        s.hello(&hello(5, true), 0);
        s.snapshot_chunk(5, 0, 1, &[]);
        s.in_sync(5);
        s.deltas(7, 7, &[]);
        s.deltas(7, 7, &[]);
        s.deltas(8, 8, &[entry("a", "1", 9, false)]);
        assert_eq!(s.violations.len(), 3, "{:?}", s.violations);
        assert!(s.violations[0].starts_with("gap"));
        assert!(s.violations[1].starts_with("duplicate"));
    }

    #[test]
    fn a_resume_continues_where_the_stream_left_off() {
        let mut s = StreamCheck::default();
        s.hello(&hello(2, true), 0);
        s.snapshot_chunk(2, 0, 1, &[]);
        s.in_sync(2);
        s.deltas(3, 4, &[entry("a", "1", 4, false)]);
        s.hello(&hello(4, false), 4);
        s.in_sync(4);
        s.deltas(5, 5, &[]);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        // A resume that starts elsewhere is caught.
        s.hello(&hello(3, false), 5);
        assert_eq!(s.violations.len(), 1);
    }

    #[test]
    fn a_snapshot_older_than_the_stream_is_a_violation() {
        let mut s = StreamCheck::default();
        s.hello(&hello(9, true), 0);
        s.snapshot_chunk(9, 0, 1, &[]);
        s.in_sync(9);
        s.hello(&hello(6, true), 9);
        s.snapshot_chunk(6, 0, 1, &[]);
        s.in_sync(6);
        assert_eq!(s.violations.len(), 1, "{:?}", s.violations);
    }
}
