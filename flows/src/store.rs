//! The aggregator's window of flow records, with no I/O and time passed
//! in: batches from each Felix stored once (a batch whose sequence number
//! its run already sent is a duplicate and dropped), records older than
//! the window or beyond the record bound dropped oldest first, and the
//! queries (list with a filter, statistics per policy rule).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use manul_proto::flows::{FlowRecord, RecordBatch, RuleStats};
use prost::Message;

use crate::filter::Filter;

/// What the store keeps per record besides the record: its estimated
/// heap size (for the retained-bytes figure).
#[derive(Debug)]
struct Stored {
    record: Arc<FlowRecord>,
    bytes: usize,
}

/// Per sending run of a Felix: the last batch stored.
#[derive(Debug, Clone, Copy)]
struct Sender {
    last_seq: u64,
    seen_s: u64,
}

/// What [`Store::ingest`] did with a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    /// The records stored (empty for a duplicate).
    pub stored: Vec<Arc<FlowRecord>>,
    pub duplicate: bool,
    /// What to acknowledge: every batch up to this one is stored.
    pub ack: u64,
}

/// Counters for metrics and the statistics call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub batches: u64,
    pub records: u64,
    pub duplicates: u64,
    pub expired: u64,
    pub evicted: u64,
}

#[derive(Debug)]
pub struct Store {
    window_s: u64,
    max_records: usize,
    records: VecDeque<Stored>,
    bytes: usize,
    senders: HashMap<(String, u64), Sender>,
    pub stats: StoreStats,
}

/// A record's heap estimate: its encoded size is a lower bound on its
/// strings; the struct, the `Arc` and the maps' and vectors' headers come
/// on top (measured by the ingest benchmark against the process's RSS).
fn estimate(r: &FlowRecord) -> usize {
    std::mem::size_of::<FlowRecord>() + 16 + r.encoded_len() * 2
}

impl Store {
    pub fn new(window_s: u64, max_records: usize) -> Store {
        Store {
            window_s,
            max_records,
            records: VecDeque::new(),
            bytes: 0,
            senders: HashMap::new(),
            stats: StoreStats::default(),
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The estimated bytes the records hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores a batch from `node`'s run `epoch` unless it was stored
    /// before. A gap (the sender dropped batches it could not keep) is
    /// accepted: what is lost is lost, and the next batches are not.
    pub fn ingest(&mut self, node: &str, epoch: u64, batch: RecordBatch, now_s: u64) -> Ingested {
        self.stats.batches += 1;
        let sender = self
            .senders
            .entry((node.to_owned(), epoch))
            .or_insert(Sender {
                last_seq: 0,
                seen_s: now_s,
            });
        sender.seen_s = now_s;
        if batch.seq <= sender.last_seq {
            self.stats.duplicates += 1;
            return Ingested {
                stored: Vec::new(),
                duplicate: true,
                ack: sender.last_seq,
            };
        }
        sender.last_seq = batch.seq;
        let ack = batch.seq;
        let mut stored = Vec::with_capacity(batch.records.len());
        for r in batch.records {
            let bytes = estimate(&r);
            let record = Arc::new(r);
            self.bytes += bytes;
            self.records.push_back(Stored {
                record: record.clone(),
                bytes,
            });
            stored.push(record);
        }
        self.stats.records += stored.len() as u64;
        while self.records.len() > self.max_records {
            self.pop();
            self.stats.evicted += 1;
        }
        Ingested {
            stored,
            duplicate: false,
            ack,
        }
    }

    fn pop(&mut self) {
        if let Some(s) = self.records.pop_front() {
            self.bytes -= s.bytes;
        }
    }

    /// Drops records whose interval ended before the window, and forgets
    /// senders not heard from for a window.
    pub fn expire(&mut self, now_s: u64) {
        let oldest = now_s.saturating_sub(self.window_s);
        // Records arrive roughly in time order; one that arrived late and
        // is older than its predecessors goes when they do.
        while self
            .records
            .front()
            .is_some_and(|s| s.record.end_unix_s < oldest)
        {
            self.pop();
            self.stats.expired += 1;
        }
        self.senders.retain(|_, s| s.seen_s >= oldest);
    }

    /// The newest `limit` records that match, oldest first.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = self
            .records
            .iter()
            .rev()
            .filter(|s| filter.matches(&s.record))
            .take(limit)
            .map(|s| (*s.record).clone())
            .collect();
        out.reverse();
        out
    }

    /// The service graph of the matching records ([`crate::graph`]).
    pub fn graph(&self, filter: &Filter) -> crate::graph::Graph {
        crate::graph::build(
            self.records
                .iter()
                .map(|s| &*s.record)
                .filter(|r| filter.matches(r)),
        )
    }

    /// Per policy rule (or tier end) of the enforced traces of the
    /// matching records: how many records, allowed and denied flows,
    /// packets and bytes passed through it.
    pub fn rule_stats(&self, filter: &Filter) -> Vec<RuleStats> {
        type Key = (String, String, String, String, Option<u32>, String, String);
        let mut by: BTreeMap<Key, RuleStats> = BTreeMap::new();
        for s in self.records.iter().filter(|s| filter.matches(&s.record)) {
            let r = &s.record;
            let flows = r.flows_started + r.flows_denied;
            let direction = if r.reporter == "src" {
                "egress"
            } else {
                "ingress"
            };
            for h in &r.enforced {
                let key = (
                    h.tier.clone(),
                    h.kind.clone(),
                    h.namespace.clone(),
                    h.name.clone(),
                    h.rule_index,
                    h.action.clone(),
                    direction.to_owned(),
                );
                let st = by.entry(key).or_insert_with(|| RuleStats {
                    tier: h.tier.clone(),
                    kind: h.kind.clone(),
                    namespace: h.namespace.clone(),
                    name: h.name.clone(),
                    rule_index: h.rule_index,
                    action: h.action.clone(),
                    direction: direction.to_owned(),
                    ..RuleStats::default()
                });
                st.records += 1;
                if r.action == "allow" {
                    st.flows_allowed += flows;
                } else {
                    st.flows_denied += flows;
                }
                st.packets += r.packets_forward + r.packets_reverse;
                st.bytes += r.bytes_forward + r.bytes_reverse;
            }
        }
        by.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manul_proto::flows::{FlowFilter, PolicyHit};

    fn rec(end: u64, action: &str, rule: u32) -> FlowRecord {
        FlowRecord {
            start_unix_s: end - 15,
            end_unix_s: end,
            action: action.into(),
            flows_started: u64::from(action == "allow"),
            flows_denied: u64::from(action == "deny"),
            packets_forward: 2,
            enforced: vec![PolicyHit {
                tier: "default".into(),
                kind: "NetworkPolicy".into(),
                namespace: "prod".into(),
                name: "p".into(),
                rule_index: Some(rule),
                action: action.into(),
            }],
            ..FlowRecord::default()
        }
    }

    fn batch(seq: u64, records: Vec<FlowRecord>) -> RecordBatch {
        RecordBatch { seq, records }
    }

    fn all() -> Filter {
        Filter::new(FlowFilter::default()).unwrap()
    }

    #[test]
    fn a_resent_batch_is_stored_once() {
        let mut s = Store::new(3600, 100);
        let first = s.ingest("a", 1, batch(1, vec![rec(100, "allow", 0)]), 100);
        assert_eq!((first.stored.len(), first.ack), (1, 1));
        s.ingest("a", 1, batch(2, vec![rec(100, "allow", 0)]), 100);
        // The connection broke before the ack of 2: both come again.
        let again = s.ingest("a", 1, batch(1, vec![rec(100, "allow", 0)]), 101);
        assert!(again.duplicate);
        assert_eq!(again.ack, 2);
        assert!(
            s.ingest("a", 1, batch(2, vec![rec(100, "allow", 0)]), 101)
                .duplicate
        );
        assert_eq!(s.len(), 2);
        // Another node, or the same node's next run, counts on its own.
        assert!(
            !s.ingest("b", 1, batch(1, vec![rec(100, "deny", 1)]), 101)
                .duplicate
        );
        assert!(
            !s.ingest("a", 2, batch(1, vec![rec(100, "deny", 1)]), 101)
                .duplicate
        );
        assert_eq!((s.len(), s.stats.duplicates), (4, 2));
    }

    #[test]
    fn the_window_and_the_bound_drop_the_oldest() {
        let mut s = Store::new(60, 3);
        for (seq, end) in [(1, 100), (2, 150), (3, 200)] {
            s.ingest("a", 1, batch(seq, vec![rec(end, "allow", 0)]), end);
        }
        let before = s.bytes();
        s.expire(200);
        let ends: Vec<u64> = s.list(&all(), 10).iter().map(|r| r.end_unix_s).collect();
        assert_eq!(ends, vec![150, 200]);
        assert!(s.bytes() < before);
        s.ingest(
            "a",
            1,
            batch(4, vec![rec(210, "allow", 0), rec(211, "allow", 0)]),
            211,
        );
        let ends: Vec<u64> = s.list(&all(), 10).iter().map(|r| r.end_unix_s).collect();
        assert_eq!(ends, vec![200, 210, 211]);
        assert_eq!(
            s.list(&all(), 1)[0].end_unix_s,
            211,
            "the newest first when limited"
        );
        assert_eq!((s.stats.expired, s.stats.evicted), (1, 1));
    }

    #[test]
    fn statistics_count_per_rule() {
        let mut s = Store::new(3600, 100);
        s.ingest(
            "a",
            1,
            batch(
                1,
                vec![
                    rec(100, "allow", 0),
                    rec(100, "allow", 0),
                    rec(100, "deny", 3),
                ],
            ),
            100,
        );
        let st = s.rule_stats(&all());
        let summary: Vec<_> = st
            .iter()
            .map(|r| {
                (
                    r.rule_index,
                    r.records,
                    r.flows_allowed,
                    r.flows_denied,
                    r.packets,
                )
            })
            .collect();
        assert_eq!(summary, vec![(Some(0), 2, 2, 0, 4), (Some(3), 1, 0, 1, 2)]);
    }
}
