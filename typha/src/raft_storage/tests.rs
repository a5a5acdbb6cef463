use std::collections::VecDeque;

use raft::prelude::{Config, EntryType, Message, MessageType, RawNode, SnapshotStatus};
use raft::{GetEntriesContext, NO_LIMIT, StateRole};
use tempfile::TempDir;

use super::*;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("data-{index}-{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn entries_with_terms(first: u64, terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| entry(first + i as u64, term))
        .collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        ..Default::default()
    }
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn store_err(err: raft::StorageError) -> raft::Error {
    raft::Error::Store(err)
}

fn indexes_and_terms(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries.iter().map(|e| (e.index, e.term)).collect()
}

fn voters(storage: &SledStorage) -> Vec<u64> {
    storage.conf_state().voters
}

#[test]
fn append_entries_term_first_last() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 0);
    assert_eq!(s.term(0).unwrap(), 0);
    assert_eq!(s.term(1), Err(store_err(raft::StorageError::Unavailable)));
    assert_eq!(s.entries(1, 1, None, ctx()).unwrap(), Vec::<Entry>::new());

    let ents = entries_with_terms(1, &[1, 1, 2, 2, 3]);
    s.append(&ents).unwrap();
    s.append(&[]).unwrap();
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 5);
    for e in &ents {
        assert_eq!(s.term(e.index).unwrap(), e.term);
    }
    assert_eq!(s.term(6), Err(store_err(raft::StorageError::Unavailable)));
    assert_eq!(s.entries(2, 5, None, ctx()).unwrap(), ents[1..4].to_vec());
    assert_eq!(s.entries(1, 6, None, ctx()).unwrap(), ents);
    assert_eq!(
        s.entries(0, 2, None, ctx()),
        Err(store_err(raft::StorageError::Compacted))
    );
    assert_eq!(
        s.entries(1, 7, None, ctx()),
        Err(store_err(raft::StorageError::Unavailable))
    );

    // Continuing the log works; gaps and non-contiguous batches are refused.
    s.append(&[entry(6, 3)]).unwrap();
    assert_eq!(s.last_index().unwrap(), 6);
    assert!(matches!(
        s.append(&[entry(8, 3)]),
        Err(StorageError::AppendGap {
            index: 8,
            last_index: 6
        })
    ));
    assert!(matches!(
        s.append(&[entry(7, 3), entry(9, 3)]),
        Err(StorageError::NonContiguous {
            previous: 7,
            found: 9
        })
    ));
    assert_eq!(
        s.last_index().unwrap(),
        6,
        "a refused append changes nothing"
    );
}

#[test]
fn append_overwrites_conflicting_suffix() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path(), &[1]).unwrap();
        s.append(&entries_with_terms(1, &[1, 1, 1, 1, 1])).unwrap();
        // A new leader at term 2 replaces entries 3.. with a shorter suffix.
        s.append(&entries_with_terms(3, &[2, 2])).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(s.term(5), Err(store_err(raft::StorageError::Unavailable)));
        assert_eq!(
            indexes_and_terms(&s.entries(1, 5, None, ctx()).unwrap()),
            vec![(1, 1), (2, 1), (3, 2), (4, 2)]
        );
        // Overwrite from the very first index, longer than before.
        s.append(&entries_with_terms(1, &[3, 3, 3, 3, 3, 3]))
            .unwrap();
        assert_eq!(s.last_index().unwrap(), 6);
        assert_eq!(s.entries(2, 3, None, ctx()).unwrap(), vec![entry(2, 3)]);
        s.append(&entries_with_terms(5, &[4])).unwrap();
        s.flush().unwrap();
    }
    // The truncation itself is durable: entry 6 must not come back.
    let s = SledStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(
        indexes_and_terms(&s.entries(1, 6, None, ctx()).unwrap()),
        vec![(1, 3), (2, 3), (3, 3), (4, 3), (5, 4)]
    );
}

#[test]
fn entries_respect_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    let ents = entries_with_terms(1, &[1; 10]);
    s.append(&ents).unwrap();
    let one = u64::from(ents[0].compute_size());

    assert_eq!(s.entries(1, 11, None, ctx()).unwrap().len(), 10);
    assert_eq!(s.entries(1, 11, NO_LIMIT, ctx()).unwrap().len(), 10);
    assert_eq!(s.entries(1, 11, 0, ctx()).unwrap().len(), 1, "at least one");
    assert_eq!(s.entries(1, 11, one, ctx()).unwrap().len(), 1);
    assert_eq!(s.entries(1, 11, 2 * one, ctx()).unwrap().len(), 2);
    assert_eq!(s.entries(1, 11, 3 * one - 1, ctx()).unwrap().len(), 2);
    assert_eq!(
        s.entries(3, 11, 3 * one, ctx()).unwrap(),
        ents[2..5].to_vec()
    );

    // Same answer as raft's own limit_size over the full range, for any limit.
    for max in 0..(12 * one) {
        let mut expected = ents.clone();
        raft::util::limit_size(&mut expected, Some(max));
        assert_eq!(s.entries(1, 11, max, ctx()).unwrap(), expected, "max {max}");
    }
}

#[test]
fn state_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hs = hard_state(3, 2, 4);
    let cs = conf_state(&[1, 2, 3], &[4]);
    let ents = entries_with_terms(1, &[1, 2, 2, 3, 3]);
    {
        let s = SledStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        s.append(&ents).unwrap();
        s.set_hard_state(&hs).unwrap();
        s.set_conf_state(&cs).unwrap();
        s.flush().unwrap();
    }
    {
        let s = SledStorage::open(dir.path(), &[7, 8]).unwrap();
        assert_eq!(s.hard_state(), hs);
        assert_eq!(s.conf_state(), cs, "stored conf state wins over voters");
        let state = s.initial_state().unwrap();
        assert_eq!(state.hard_state, hs);
        assert_eq!(state.conf_state, cs);
        assert_eq!(s.first_index().unwrap(), 1);
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.entries(1, 6, None, ctx()).unwrap(), ents);
        assert_eq!(s.term(4).unwrap(), 3);
        s.set_commit(5).unwrap();
        s.flush().unwrap();
    }
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    assert_eq!(s.hard_state().commit, 5);
    assert_eq!(s.hard_state().term, 3);
    assert_eq!(s.hard_state().vote, 2);
}

#[test]
fn bootstrap_voters_only_on_first_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(voters(&s), vec![1, 2, 3]);
        assert!(s.initial_state().unwrap().initialized());
        assert_eq!(s.last_index().unwrap(), 0);
    }
    {
        let s = SledStorage::open(dir.path(), &[]).unwrap();
        assert_eq!(voters(&s), vec![1, 2, 3], "bootstrap conf state is durable");
    }
    let s = SledStorage::open(dir.path(), &[4, 5]).unwrap();
    assert_eq!(voters(&s), vec![1, 2, 3], "later voters are ignored");

    // A joining node starts uninitialized and stays so across reopen.
    let joiner = tempfile::tempdir().unwrap();
    drop(SledStorage::open(joiner.path(), &[]).unwrap());
    let s = SledStorage::open(joiner.path(), &[9]).unwrap();
    // Nothing was stored by the first open, so this counts as a first open.
    assert_eq!(voters(&s), vec![9]);
    let joiner = tempfile::tempdir().unwrap();
    let s = SledStorage::open(joiner.path(), &[]).unwrap();
    assert!(!s.initial_state().unwrap().initialized());
    assert_eq!(s.conf_state(), ConfState::default());
}

#[test]
fn create_snapshot_compacts_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let terms = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3];
    let cs = conf_state(&[1, 2], &[]);
    {
        let s = SledStorage::open(dir.path(), &[1, 2]).unwrap();
        assert_eq!(
            s.snapshot(0, 2),
            Err(store_err(
                raft::StorageError::SnapshotTemporarilyUnavailable
            )),
            "no snapshot stored yet"
        );
        assert!(s.stored_snapshot().is_none());
        s.append(&entries_with_terms(1, &terms)).unwrap();
        // The stored commit lags behind what was applied: the snapshot raises it.
        s.set_commit(3).unwrap();
        s.create_snapshot(6, cs.clone(), b"state@6".to_vec())
            .unwrap();
        assert_eq!(s.hard_state().commit, 6);
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.term(6).unwrap(), 2, "term of the snapshot index is kept");
        assert_eq!(s.term(5), Err(store_err(raft::StorageError::Compacted)));
        assert_eq!(s.term(1), Err(store_err(raft::StorageError::Compacted)));
        assert_eq!(
            s.entries(5, 8, None, ctx()),
            Err(store_err(raft::StorageError::Compacted))
        );
        assert_eq!(
            indexes_and_terms(&s.entries(7, 11, None, ctx()).unwrap()),
            vec![(7, 3), (8, 3), (9, 3), (10, 3)]
        );
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 6);
        assert_eq!(snap.get_metadata().term, 2);
        assert_eq!(snap.get_metadata().get_conf_state(), &cs);
        assert_eq!(&snap.data[..], b"state@6");
        assert_eq!(
            s.snapshot(7, 2),
            Err(store_err(
                raft::StorageError::SnapshotTemporarilyUnavailable
            )),
            "never hand out a snapshot older than requested"
        );
        assert_eq!(s.snapshot(6, 2).unwrap(), snap);
        s.flush().unwrap();
    }
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    assert_eq!(s.first_index().unwrap(), 7);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(6).unwrap(), 2);
    assert_eq!(s.term(5), Err(store_err(raft::StorageError::Compacted)));
    assert_eq!(s.hard_state().commit, 6);
    let meta = s.snapshot_metadata();
    assert_eq!((meta.index, meta.term), (6, 2));
    let stored = s.stored_snapshot().unwrap();
    assert_eq!(&stored.data[..], b"state@6");
    assert_eq!(stored.get_metadata().get_conf_state(), &cs);

    // Appending below the snapshot is refused; appending after works.
    assert!(matches!(
        s.append(&[entry(6, 3)]),
        Err(StorageError::AppendCompacted {
            index: 6,
            snapshot_index: 6
        })
    ));
    s.append(&entries_with_terms(8, &[4])).unwrap();
    assert_eq!(s.last_index().unwrap(), 8);

    // Older snapshots, indexes beyond the log and index 0 are refused.
    assert!(matches!(
        s.create_snapshot(5, cs.clone(), vec![]),
        Err(StorageError::SnapshotOutOfDate {
            index: 5,
            minimum: 6
        })
    ));
    assert!(matches!(
        s.create_snapshot(9, cs.clone(), vec![]),
        Err(StorageError::SnapshotIndexUnavailable {
            index: 9,
            last_index: 8
        })
    ));
    assert!(matches!(
        s.create_snapshot(0, cs.clone(), vec![]),
        Err(StorageError::EmptySnapshot)
    ));

    // Re-snapshotting at the same index replaces the data only.
    s.create_snapshot(6, cs.clone(), b"again".to_vec()).unwrap();
    assert_eq!(&s.stored_snapshot().unwrap().data[..], b"again");
    assert_eq!(s.first_index().unwrap(), 7);
    assert_eq!(s.last_index().unwrap(), 8);

    // Compacting the whole log leaves first = last + 1.
    s.set_commit(8).unwrap();
    s.create_snapshot(8, cs, b"all".to_vec()).unwrap();
    assert_eq!(s.first_index().unwrap(), 9);
    assert_eq!(s.last_index().unwrap(), 8);
    assert_eq!(s.term(8).unwrap(), 4);
    assert_eq!(s.entries(9, 9, None, ctx()).unwrap(), Vec::<Entry>::new());
}

fn snapshot_at(index: u64, term: u64, voters: Vec<u64>, data: &[u8]) -> Snapshot {
    let mut snap = Snapshot {
        data: data.to_vec().into(),
        ..Default::default()
    };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.mut_conf_state().voters = voters;
    snap
}

#[test]
fn apply_snapshot_on_follower_with_conflicting_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        // Entries 4..=10 came from a deposed leader and were never committed.
        s.append(&entries_with_terms(1, &[1, 1, 1, 2, 2, 2, 2, 2, 2, 2]))
            .unwrap();
        s.set_hard_state(&hard_state(2, 1, 3)).unwrap();

        let snap = snapshot_at(6, 3, vec![1, 2, 3, 4], b"leader-state");
        s.apply_snapshot(&snap).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 6, "the conflicting tail is gone");
        assert_eq!(s.term(6).unwrap(), 3);
        assert_eq!(s.term(7), Err(store_err(raft::StorageError::Unavailable)));
        assert_eq!(s.term(5), Err(store_err(raft::StorageError::Compacted)));
        let hs = s.hard_state();
        assert_eq!((hs.term, hs.vote, hs.commit), (3, 1, 6));
        assert_eq!(voters(&s), vec![1, 2, 3, 4]);
        assert_eq!(s.snapshot(0, 1).unwrap(), snap);

        // Replication continues right after the snapshot.
        s.append(&entries_with_terms(7, &[3, 3])).unwrap();
        s.flush().unwrap();
    }
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    assert_eq!(s.first_index().unwrap(), 7);
    assert_eq!(s.last_index().unwrap(), 8);
    assert_eq!(s.term(6).unwrap(), 3);
    assert_eq!(s.hard_state().commit, 6);
    assert_eq!(voters(&s), vec![1, 2, 3, 4]);
    assert_eq!(&s.stored_snapshot().unwrap().data[..], b"leader-state");

    // A snapshot below the stored commit is out of date; index 0 is empty.
    s.set_commit(8).unwrap();
    assert!(matches!(
        s.apply_snapshot(&snapshot_at(7, 3, vec![1], b"old")),
        Err(StorageError::SnapshotOutOfDate {
            index: 7,
            minimum: 8
        })
    ));
    assert!(matches!(
        s.apply_snapshot(&Snapshot::default()),
        Err(StorageError::EmptySnapshot)
    ));
    assert_eq!(
        s.last_index().unwrap(),
        8,
        "refused snapshots change nothing"
    );
}

#[test]
fn apply_snapshot_on_follower_with_shorter_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    s.append(&entries_with_terms(1, &[1, 1])).unwrap();
    s.apply_snapshot(&snapshot_at(20, 4, vec![1, 2], b"x"))
        .unwrap();
    assert_eq!(s.first_index().unwrap(), 21);
    assert_eq!(s.last_index().unwrap(), 20);
    assert_eq!(s.term(20).unwrap(), 4);
    assert_eq!(s.term(2), Err(store_err(raft::StorageError::Compacted)));
    assert_eq!(s.hard_state().commit, 20);
    assert_eq!(s.hard_state().term, 4);
    assert!(s.initial_state().unwrap().initialized());

    // A hard state from raft with a stale commit is never stored below the
    // snapshot (raft would refuse to load it after a restart).
    s.set_hard_state(&hard_state(5, 0, 0)).unwrap();
    assert_eq!(s.hard_state().commit, 20);
    assert_eq!(s.hard_state().term, 5);
}

#[test]
fn clones_share_state() {
    let dir = tempfile::tempdir().unwrap();
    let a = SledStorage::open(dir.path(), &[1]).unwrap();
    let b = a.clone();
    a.append(&entries_with_terms(1, &[1, 1])).unwrap();
    assert_eq!(b.last_index().unwrap(), 2);
    b.create_snapshot(1, a.conf_state(), vec![1]).unwrap();
    assert_eq!(a.first_index().unwrap(), 2);
}

#[test]
fn reopen_rejects_commit_beyond_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path(), &[1]).unwrap();
        s.append(&entries_with_terms(1, &[1, 1])).unwrap();
        s.set_hard_state(&hard_state(0, 0, 7)).unwrap();
        s.flush().unwrap();
    }
    assert!(matches!(
        SledStorage::open(dir.path(), &[1]),
        Err(StorageError::Corrupt(_))
    ));
}

// ---------------------------------------------------------------------------
// End to end: three RawNodes on SledStorage, messages passed in memory.
// ---------------------------------------------------------------------------

const VOTERS: [u64; 3] = [1, 2, 3];

fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn encode_state(applied: &[Vec<u8>]) -> Vec<u8> {
    applied.join(&b'\n')
}

fn decode_state(data: &[u8]) -> Vec<Vec<u8>> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

struct TestNode {
    raw: RawNode<SledStorage>,
    store: SledStorage,
    /// The state machine: payloads of applied normal entries, in order.
    applied: Vec<Vec<u8>>,
    applied_index: u64,
}

impl TestNode {
    fn start(id: u64, dir: &Path, logger: &slog::Logger) -> TestNode {
        let store = SledStorage::open(dir, &VOTERS).unwrap();
        let config = Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            max_size_per_msg: 1024,
            max_inflight_msgs: 8,
            ..Default::default()
        };
        config.validate().unwrap();
        let raw = RawNode::new(&config, store.clone(), logger).unwrap();
        let (applied, applied_index) = match store.stored_snapshot() {
            Some(snap) => (decode_state(&snap.data), snap.get_metadata().index),
            None => (Vec::new(), 0),
        };
        TestNode {
            raw,
            store,
            applied,
            applied_index,
        }
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        for e in committed {
            assert_eq!(e.index, self.applied_index + 1, "entries applied in order");
            self.applied_index = e.index;
            assert_eq!(e.get_entry_type(), EntryType::EntryNormal);
            if !e.data.is_empty() {
                self.applied.push(e.data.to_vec());
            }
        }
    }

    /// One pass of raft-rs's documented Ready handling.
    fn handle_ready(&mut self, out: &mut Vec<Message>) {
        if !self.raw.has_ready() {
            return;
        }
        let mut ready = self.raw.ready();
        // 1. Messages that may be sent before persisting (leader only).
        out.extend(ready.take_messages());
        // 2. Snapshot from the leader.
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.store.apply_snapshot(&snap).unwrap();
            self.applied = decode_state(&snap.data);
            self.applied_index = snap.get_metadata().index;
        }
        // 3. Committed entries (already persisted by raft's contract).
        self.apply(ready.take_committed_entries());
        // 4. New entries, 5. hard state, then make both durable.
        self.store.append(ready.entries()).unwrap();
        if let Some(hs) = ready.hs() {
            self.store.set_hard_state(hs).unwrap();
        }
        self.store.flush().unwrap();
        // 6. Messages that require persisted state.
        out.extend(ready.take_persisted_messages());
        // 7. Advance, then handle the light ready the same way.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit).unwrap();
            self.store.flush().unwrap();
        }
        out.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
    }
}

struct Cluster {
    dirs: Vec<TempDir>,
    nodes: Vec<Option<TestNode>>,
    logger: slog::Logger,
    snapshots_delivered: Vec<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let logger = discard_logger();
        let dirs: Vec<TempDir> = VOTERS
            .iter()
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let nodes = VOTERS
            .iter()
            .zip(&dirs)
            .map(|(&id, dir)| Some(TestNode::start(id, dir.path(), &logger)))
            .collect();
        Cluster {
            dirs,
            nodes,
            logger,
            snapshots_delivered: Vec::new(),
        }
    }

    fn node(&mut self, id: u64) -> &mut TestNode {
        self.nodes[(id - 1) as usize].as_mut().unwrap()
    }

    fn stop(&mut self, id: u64) {
        self.nodes[(id - 1) as usize] = None;
    }

    fn restart(&mut self, id: u64) {
        let dir = self.dirs[(id - 1) as usize].path().to_path_buf();
        self.nodes[(id - 1) as usize] = Some(TestNode::start(id, &dir, &self.logger));
    }

    /// Handles readies and delivers messages until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut out = Vec::new();
            for node in self.nodes.iter_mut().flatten() {
                node.handle_ready(&mut out);
            }
            if out.is_empty() {
                return;
            }
            let mut queue: VecDeque<Message> = out.into();
            while let Some(msg) = queue.pop_front() {
                let (from, to) = (msg.from, msg.to);
                let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
                let delivered = match self.nodes[(to - 1) as usize].as_mut() {
                    Some(node) => {
                        node.raw.step(msg).unwrap();
                        true
                    }
                    None => false,
                };
                if let Some(sender) = self.nodes[(from - 1) as usize].as_mut() {
                    if !delivered {
                        sender.raw.report_unreachable(to);
                    }
                    if is_snapshot {
                        if delivered {
                            self.snapshots_delivered.push(to);
                        }
                        let status = if delivered {
                            SnapshotStatus::Finish
                        } else {
                            SnapshotStatus::Failure
                        };
                        sender.raw.report_snapshot(to, status);
                    }
                }
            }
        }
        panic!("cluster did not settle");
    }

    fn tick(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            node.raw.tick();
        }
        self.settle();
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Cluster) -> bool) {
        for _ in 0..1_000 {
            self.settle();
            if done(self) {
                return;
            }
            self.tick();
        }
        panic!("timed out waiting for {what}");
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .flatten()
            .find(|n| n.raw.raft.state == StateRole::Leader)
            .map(|n| n.raw.raft.id)
    }

    fn applied_counts(&self) -> Vec<Option<usize>> {
        self.nodes
            .iter()
            .map(|n| n.as_ref().map(|n| n.applied.len()))
            .collect()
    }

    fn propose(&mut self, leader: u64, range: std::ops::Range<u32>) {
        for i in range {
            self.node(leader)
                .raw
                .propose(vec![], format!("entry-{i}").into_bytes())
                .unwrap();
        }
    }
}

fn expected_payloads(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("entry-{i}").into_bytes()).collect()
}

#[test]
fn three_node_cluster_replicates_and_catches_up_by_snapshot() {
    let mut cluster = Cluster::new();
    cluster.run_until("a leader", |c| c.leader().is_some());
    let leader = cluster.leader().unwrap();

    cluster.propose(leader, 0..50);
    cluster.run_until("50 entries applied everywhere", |c| {
        c.applied_counts() == vec![Some(50); 3]
    });
    for id in VOTERS {
        let node = cluster.node(id);
        assert_eq!(node.applied, expected_payloads(50), "node {id}");
        let last = node.store.last_index().unwrap();
        assert_eq!(node.store.hard_state().commit, last, "node {id}");
    }

    // Stop a follower; the other two keep committing.
    let down = VOTERS.into_iter().find(|&id| id != leader).unwrap();
    let down_last_index = cluster.node(down).store.last_index().unwrap();
    cluster.stop(down);
    cluster.propose(leader, 50..100);
    cluster.run_until("100 entries applied on the live nodes", |c| {
        c.applied_counts()
            .iter()
            .enumerate()
            .all(|(i, count)| i as u64 + 1 == down || *count == Some(100))
    });
    assert_eq!(cluster.leader(), Some(leader));

    // Compact the leader's log beyond everything the stopped node has.
    let node = cluster.node(leader);
    let snap_index = node.applied_index;
    let conf_state = node.store.conf_state();
    let data = encode_state(&node.applied);
    node.store
        .create_snapshot(snap_index, conf_state, data)
        .unwrap();
    assert!(snap_index >= down_last_index + 50);
    assert_eq!(node.store.first_index().unwrap(), snap_index + 1);
    assert_eq!(
        node.store.term(down_last_index),
        Err(store_err(raft::StorageError::Compacted))
    );

    // Restart the stopped node from its directory: it must catch up by snapshot.
    cluster.restart(down);
    assert_eq!(
        cluster.node(down).store.last_index().unwrap(),
        down_last_index,
        "log survived the restart"
    );
    cluster.run_until("restarted node to catch up", |c| {
        c.applied_counts() == vec![Some(100); 3]
    });
    assert!(
        cluster.snapshots_delivered.contains(&down),
        "catch-up went through a snapshot"
    );
    let restarted = cluster.node(down);
    assert_eq!(restarted.applied, expected_payloads(100));
    assert_eq!(restarted.store.snapshot_metadata().index, snap_index);
    assert_eq!(restarted.store.first_index().unwrap(), snap_index + 1);
    assert_eq!(
        decode_state(&restarted.store.stored_snapshot().unwrap().data),
        expected_payloads(100)
    );

    // The cluster keeps working with all three nodes.
    let leader = cluster.leader().unwrap();
    cluster.propose(leader, 100..105);
    cluster.run_until("105 entries applied everywhere", |c| {
        c.applied_counts() == vec![Some(105); 3]
    });
    for id in VOTERS {
        assert_eq!(
            cluster.node(id).applied,
            expected_payloads(105),
            "node {id}"
        );
    }

    // And a full restart of the restarted node replays snapshot + log.
    cluster.stop(down);
    cluster.restart(down);
    cluster.run_until("replay after second restart", |c| {
        c.applied_counts() == vec![Some(105); 3]
    });
    assert_eq!(cluster.node(down).applied, expected_payloads(105));
}

/// An entry encoded larger than [`FILE_ENTRY_BYTES`]: kept in a file.
fn large_entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: vec![(index % 251) as u8; FILE_ENTRY_BYTES + 1].into(),
        ..Default::default()
    }
}

/// The names of the files beside sled, sorted.
fn stored_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Bytes of sled's blob files: sled keeps none, the large values being
/// files of their own.
fn sled_blob_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("blobs"))
        .map(|listing| listing.map(|e| e.unwrap().metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

#[test]
fn large_entries_live_in_files_until_replaced_or_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let cs = conf_state(&[1], &[]);
    let s = SledStorage::open(dir.path(), &[1]).unwrap();
    let mut ents = vec![large_entry(1, 1), entry(2, 1), large_entry(3, 1)];
    ents.push(large_entry(4, 1));
    s.append(&ents).unwrap();
    s.flush().unwrap();
    assert_eq!(
        stored_files(dir.path()),
        [entry_name(1, 1), entry_name(3, 1), entry_name(4, 1)]
    );
    assert_eq!(s.entries(1, 5, None, ctx()).unwrap(), ents);

    // A conflicting suffix from a new term replaces entries 3 and 4; the
    // same entry appended again keeps its file.
    let replacement = vec![large_entry(3, 2)];
    s.append(&replacement).unwrap();
    s.append(&[ents[0].clone(), ents[1].clone(), replacement[0].clone()])
        .unwrap();
    s.flush().unwrap();
    assert_eq!(
        stored_files(dir.path()),
        [entry_name(1, 1), entry_name(3, 2)]
    );
    assert_eq!(s.entries(3, 4, None, ctx()).unwrap(), replacement);

    // Compaction removes the compacted entries' files; the snapshot's data
    // is a file too.
    s.create_snapshot(2, cs.clone(), b"state@2".to_vec())
        .unwrap();
    s.flush().unwrap();
    assert_eq!(
        stored_files(dir.path()),
        [entry_name(3, 2), snapshot_name(2, 1)]
    );
    s.create_snapshot(3, cs, b"state@3".to_vec()).unwrap();
    s.flush().unwrap();
    assert_eq!(stored_files(dir.path()), [snapshot_name(3, 2)]);
    assert_eq!(sled_blob_bytes(dir.path()), 0);
    drop(s);

    let s = SledStorage::open(dir.path(), &[]).unwrap();
    assert_eq!(s.stored_snapshot().unwrap().get_data(), b"state@3");
    assert_eq!(s.first_index().unwrap(), 4);
}

#[test]
fn reopen_reads_large_entries_and_sweeps_what_nothing_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let ents = vec![large_entry(1, 1), large_entry(2, 1), entry(3, 1)];
    {
        let s = SledStorage::open(dir.path(), &[1]).unwrap();
        s.append(&ents).unwrap();
        s.set_hard_state(&hard_state(1, 1, 3)).unwrap();
        s.flush().unwrap();
    }
    // What a crash leaves: a half-written file, a value no log entry
    // refers to any more.
    std::fs::write(dir.path().join("files").join("entry-x.tmp"), b"half").unwrap();
    std::fs::write(dir.path().join("files").join(entry_name(9, 1)), b"orphan").unwrap();
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    assert_eq!(s.entries(1, 4, None, ctx()).unwrap(), ents);
    assert_eq!(
        stored_files(dir.path()),
        [entry_name(1, 1), entry_name(2, 1)]
    );
    drop(s);

    // A file the log refers to is missing: refused, not repaired.
    std::fs::remove_file(dir.path().join("files").join(entry_name(2, 1))).unwrap();
    match SledStorage::open(dir.path(), &[]) {
        Err(StorageError::Corrupt(why)) => assert!(why.contains("entry 2"), "{why}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn installed_snapshot_replaces_files_and_snapshot_cycles_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cs = conf_state(&[1], &[]);
    let s = SledStorage::open(dir.path(), &[1]).unwrap();
    s.append(&[large_entry(1, 1), large_entry(2, 1)]).unwrap();
    s.apply_snapshot(&snapshot_at(5, 2, vec![1], &[7u8; 300_000]))
        .unwrap();
    s.flush().unwrap();
    assert_eq!(stored_files(dir.path()), [snapshot_name(5, 2)]);

    // Many snapshot cycles of large state and large entries: the files and
    // sled's own size stay those of one cycle.
    let mut index = 5;
    for cycle in 0..40u64 {
        let ents: Vec<Entry> = (1..=3).map(|k| large_entry(index + k, 2)).collect();
        s.append(&ents).unwrap();
        index += 3;
        s.set_hard_state(&hard_state(2, 1, index)).unwrap();
        s.flush().unwrap();
        s.create_snapshot(index, cs.clone(), vec![cycle as u8; 400_000])
            .unwrap();
        s.flush().unwrap();
        assert_eq!(stored_files(dir.path()), [snapshot_name(index, 2)]);
    }
    assert_eq!(sled_blob_bytes(dir.path()), 0);
    drop(s);
    let s = SledStorage::open(dir.path(), &[]).unwrap();
    assert_eq!(
        s.stored_snapshot().unwrap().get_data(),
        &[39u8; 400_000][..]
    );
}
