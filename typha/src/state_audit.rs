//! The audit history the state machine keeps: one event per committed
//! entry that changed something, with the origin the proposing replica
//! stamped into the entry (identity, role, verb, time), bounded so that a
//! long-lived cluster does not grow without end.
//!
//! No I/O and no clock: time comes from the entries themselves. The
//! bounds are constants, the same on every replica, and pruning looks only
//! at what the log carried (the age bound counts back from the latest
//! stamp applied, [`AuditHistory::clock`]), so every replica that applied
//! the same log retains the same events. The history travels in Raft
//! snapshots, so a replica that installs one (a new member, one far
//! behind) answers as the others do; what was pruned before a snapshot is
//! gone from every replica.

use std::collections::VecDeque;

use manul_proto::v1::{AuditChange, AuditEvent, Origin};

/// The most events retained.
pub const MAX_EVENTS: usize = 10_000;
/// The most changes retained across all events (a Kubernetes relist can
/// change thousands of keys in one entry).
pub const MAX_CHANGES: usize = 100_000;
/// Events stamped longer ago than this before the latest stamp are
/// dropped: 7 days.
pub const MAX_AGE_MILLIS: u64 = 7 * 24 * 3600 * 1000;

/// A filter over the history; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub since_unix_millis: u64,
    /// A kind's key name.
    pub kind: String,
    pub namespace: String,
    pub identity: String,
    pub after_revision: u64,
    /// At most this many events, the newest.
    pub limit: usize,
}

/// The bounded history. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditHistory {
    events: VecDeque<AuditEvent>,
    changes: usize,
    clock: u64,
}

impl AuditHistory {
    /// Records the changes the entry at `revision` made.
    pub fn record(&mut self, revision: u64, origin: Origin, changes: Vec<AuditChange>) {
        self.clock = self.clock.max(origin.unix_millis);
        self.changes += changes.len();
        self.events.push_back(AuditEvent {
            revision,
            origin: Some(origin),
            changes,
        });
        self.prune();
    }

    fn prune(&mut self) {
        let oldest_kept = self.clock.saturating_sub(MAX_AGE_MILLIS);
        while let Some(first) = self.events.front() {
            let stamped = first.origin.as_ref().map_or(0, |o| o.unix_millis);
            let over = self.events.len() > MAX_EVENTS || self.changes > MAX_CHANGES;
            // Keep the newest event whatever its size or age.
            if self.events.len() == 1 || !(over || stamped < oldest_kept) {
                break;
            }
            self.changes -= first.changes.len();
            self.events.pop_front();
        }
    }

    /// The retained events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &AuditEvent> {
        self.events.iter()
    }

    /// The latest stamp applied (milliseconds since the Unix epoch).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The revision of the oldest retained event; 0 when none is.
    pub fn oldest_retained(&self) -> u64 {
        self.events.front().map_or(0, |e| e.revision)
    }

    /// The history a snapshot carried.
    pub fn restore(events: &[AuditEvent], clock: u64) -> AuditHistory {
        let mut h = AuditHistory {
            events: events.iter().cloned().collect(),
            changes: events.iter().map(|e| e.changes.len()).sum(),
            clock,
        };
        h.prune();
        h
    }

    /// The events matching `filter`, oldest first, each holding only the
    /// changes that matched.
    pub fn query(&self, filter: &AuditFilter) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for e in self.events.iter().rev() {
            if filter.limit > 0 && out.len() >= filter.limit {
                break;
            }
            if e.revision <= filter.after_revision {
                break;
            }
            let origin = e.origin.clone().unwrap_or_default();
            if origin.unix_millis < filter.since_unix_millis
                || (!filter.identity.is_empty() && origin.identity != filter.identity)
            {
                continue;
            }
            let changes: Vec<AuditChange> = e
                .changes
                .iter()
                .filter(|c| {
                    let k = c.key.clone().unwrap_or_default();
                    (filter.kind.is_empty() || k.kind == filter.kind)
                        && (filter.namespace.is_empty() || k.namespace == filter.namespace)
                })
                .cloned()
                .collect();
            if !changes.is_empty() {
                out.push(AuditEvent {
                    revision: e.revision,
                    origin: Some(origin),
                    changes,
                });
            }
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use manul_proto::v1::ResourceKey;

    use super::*;

    fn origin(identity: &str, at: u64) -> Origin {
        Origin {
            identity: identity.into(),
            role: "admin".into(),
            verb: "apply".into(),
            unix_millis: at,
        }
    }

    fn change(kind: &str, ns: &str, name: &str) -> AuditChange {
        AuditChange {
            key: Some(ResourceKey {
                kind: kind.into(),
                namespace: ns.into(),
                name: name.into(),
            }),
            action: "created".into(),
            previous_revision: 0,
        }
    }

    #[test]
    fn queries_filter_events_and_their_changes() {
        let mut h = AuditHistory::default();
        h.record(
            3,
            origin("alice", 1_000),
            vec![
                change("networkpolicy", "shop", "a"),
                change("tier", "", "t"),
            ],
        );
        h.record(
            5,
            origin("bob", 2_000),
            vec![change("networkpolicy", "db", "b")],
        );
        h.record(9, origin("alice", 3_000), vec![change("tier", "", "u")]);
        let revs =
            |f: &AuditFilter| -> Vec<u64> { h.query(f).iter().map(|e| e.revision).collect() };
        assert_eq!(revs(&AuditFilter::default()), [3, 5, 9]);
        let by_kind = AuditFilter {
            kind: "networkpolicy".into(),
            ..Default::default()
        };
        let events = h.query(&by_kind);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].changes.len(), 1, "only the matching change");
        let alice = AuditFilter {
            identity: "alice".into(),
            ..Default::default()
        };
        assert_eq!(revs(&alice), [3, 9]);
        let since = AuditFilter {
            since_unix_millis: 2_000,
            ..Default::default()
        };
        assert_eq!(revs(&since), [5, 9]);
        let after = AuditFilter {
            after_revision: 5,
            ..Default::default()
        };
        assert_eq!(revs(&after), [9]);
        let newest = AuditFilter {
            limit: 2,
            ..Default::default()
        };
        assert_eq!(revs(&newest), [5, 9]);
        let ns = AuditFilter {
            namespace: "shop".into(),
            ..Default::default()
        };
        assert_eq!(revs(&ns), [3]);
    }

    #[test]
    fn the_history_is_bounded_by_count_changes_and_age_from_the_log_alone() {
        let mut h = AuditHistory::default();
        for i in 0..(MAX_EVENTS as u64 + 5) {
            h.record(i + 1, origin("a", 1_000 + i), vec![change("tier", "", "t")]);
        }
        assert_eq!(h.events().count(), MAX_EVENTS);
        assert_eq!(h.oldest_retained(), 6);
        // One huge entry pushes out older ones but is kept itself.
        let many: Vec<AuditChange> = (0..MAX_CHANGES + 1)
            .map(|i| change("tier", "", &i.to_string()))
            .collect();
        h.record(100_000, origin("a", 20_000), many);
        assert_eq!(h.events().count(), 1);
        // Age counts back from the latest stamp, not from a clock.
        h.record(
            100_001,
            origin("a", 20_000 + MAX_AGE_MILLIS + 1),
            vec![change("tier", "", "x")],
        );
        assert_eq!(h.oldest_retained(), 100_001);
        // An entry stamped earlier than the latest (another replica's
        // clock) does not move the age bound back.
        h.record(100_002, origin("a", 5), vec![change("tier", "", "y")]);
        assert_eq!(h.clock(), 20_000 + MAX_AGE_MILLIS + 1);
        let restored = AuditHistory::restore(&h.events().cloned().collect::<Vec<_>>(), h.clock());
        assert_eq!(restored, h);
    }
}
