//! The aggregator's window of flow records, with no I/O and time passed
//! in: batches from each Felix stored once (a batch whose sequence number
//! its run already sent is a duplicate and dropped), records older than
//! the window or beyond the record bound dropped oldest first, and the
//! queries (list with a filter, statistics per policy rule).

use manul_proto::flows::{FlowRecord, RecordBatch, RuleStats};
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::filter::Filter;
use crate::flow::{Flow, Sym};
use crate::intern::Interner;
use crate::wire::Batch;

/// Per sending run of a Felix: the last batch stored.
#[derive(Debug, Clone, Copy)]
struct Sender {
    last_seq: u64,
    seen_s: u64,
}

/// What [`Store::ingest`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// How many records were stored (0 for a duplicate): the newest ones
    /// ([`Store::newest`]).
    pub stored: usize,
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
    /// Each record in place: its strings, endpoints and traces shared.
    records: VecDeque<Flow>,
    senders: HashMap<(String, u64), Sender>,
    /// Shares the parts of records stored from decoded messages
    /// ([`Store::ingest`]); a stream's records come already shared by its
    /// own decoder ([`crate::wire::PushDecoder`]).
    interner: Interner,
    pub stats: StoreStats,
}

/// A record's bytes as the store estimates them: the record itself. Its
/// strings, endpoints and traces are shared by every record with the same
/// ones and drawn from small sets, so they are not counted per record.
const RECORD_BYTES: usize = std::mem::size_of::<Flow>();

impl Store {
    pub fn new(window_s: u64, max_records: usize) -> Store {
        Store {
            window_s,
            max_records,
            records: VecDeque::new(),
            senders: HashMap::new(),
            interner: Interner::new(),
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
        self.records.len() * RECORD_BYTES
    }

    /// Stores a decoded batch (see [`Store::ingest_flat`]), its records
    /// shared through the store's own interner.
    pub fn ingest(&mut self, node: &str, epoch: u64, batch: RecordBatch, now_s: u64) -> Ingested {
        let records = batch
            .records
            .iter()
            .map(|r| Flow::from_record(r, &mut self.interner))
            .collect();
        self.interner.maybe_prune();
        self.ingest_flat(
            node,
            epoch,
            Batch {
                seq: batch.seq,
                records,
            },
            now_s,
        )
    }

    /// Stores a batch from `node`'s run `epoch` unless it was stored
    /// before. A gap (the sender dropped batches it could not keep) is
    /// accepted: what is lost is lost, and the next batches are not.
    pub fn ingest_flat(&mut self, node: &str, epoch: u64, batch: Batch, now_s: u64) -> Ingested {
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
                stored: 0,
                duplicate: true,
                ack: sender.last_seq,
            };
        }
        sender.last_seq = batch.seq;
        let ack = batch.seq;
        let stored = batch.records.len();
        self.records.extend(batch.records);
        self.stats.records += stored as u64;
        while self.records.len() > self.max_records {
            self.records.pop_front();
            self.stats.evicted += 1;
        }
        Ingested {
            stored: stored.min(self.records.len()),
            duplicate: false,
            ack,
        }
    }

    /// The newest `n` records, oldest first, to hand to followers.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &Flow> {
        self.records.range(self.records.len().saturating_sub(n)..)
    }

    /// Drops records whose interval ended before the window, and forgets
    /// senders not heard from for a window; then the shared parts no
    /// record holds any more.
    pub fn expire(&mut self, now_s: u64) {
        let oldest = now_s.saturating_sub(self.window_s);
        // Records arrive roughly in time order; one that arrived late and
        // is older than its predecessors goes when they do.
        while self.records.front().is_some_and(|r| r.end_unix_s < oldest) {
            self.records.pop_front();
            self.stats.expired += 1;
        }
        self.senders.retain(|_, s| s.seen_s >= oldest);
        self.interner.prune();
    }

    /// The newest `limit` records that match, oldest first.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = self
            .records
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(limit)
            .map(Flow::to_record)
            .collect();
        out.reverse();
        out
    }

    /// The service graph of the matching records ([`crate::graph`]).
    pub fn graph(&self, filter: &Filter) -> crate::graph::Graph {
        crate::graph::build(self.records.iter().filter(|r| filter.matches(r)))
    }

    /// Per policy rule (or tier end) of the enforced traces of the
    /// matching records: how many records, allowed and denied flows,
    /// packets and bytes passed through it.
    pub fn rule_stats(&self, filter: &Filter) -> Vec<RuleStats> {
        type Key = (Sym, Sym, Sym, Sym, Option<u32>, Sym, &'static str);
        let mut by: BTreeMap<Key, RuleStats> = BTreeMap::new();
        for r in self.records.iter().filter(|r| filter.matches(r)) {
            let flows = r.flows_started + r.flows_denied;
            let direction = if &*r.reporter == "src" {
                "egress"
            } else {
                "ingress"
            };
            for h in r.enforced.iter() {
                let key = (
                    h.tier.clone(),
                    h.kind.clone(),
                    h.namespace.clone(),
                    h.name.clone(),
                    h.rule_index,
                    h.action.clone(),
                    direction,
                );
                let st = by.entry(key).or_insert_with(|| RuleStats {
                    tier: h.tier.to_string(),
                    kind: h.kind.to_string(),
                    namespace: h.namespace.to_string(),
                    name: h.name.to_string(),
                    rule_index: h.rule_index,
                    action: h.action.to_string(),
                    direction: direction.to_owned(),
                    ..RuleStats::default()
                });
                st.records += 1;
                if &*r.action == "allow" {
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
        assert_eq!((first.stored, first.ack), (1, 1));
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
