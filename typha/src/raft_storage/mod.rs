//! Durable Raft storage for tikv raft's `RawNode`, backed by `sled`.
//!
//! [`SledStorage`] keeps the Raft log, the hard state, the conf state and the
//! latest snapshot in one sled database with two trees, and its large values
//! in files beside it (`files/`, see [`files`]):
//!
//! * `log`: key = big-endian `u64` entry index, value = the protobuf-encoded
//!   [`Entry`], or, for an entry encoded larger than [`FILE_ENTRY_BYTES`],
//!   a marker (a zero byte and the entry's term: no encoded entry starts
//!   with a zero byte) for the file `entry-INDEX-TERM` that holds it. It
//!   always holds exactly the contiguous entries
//!   `snapshot index + 1 ..= last index`; nothing at or below the snapshot.
//! * `meta`: the protobuf-encoded [`HardState`], [`ConfState`] and
//!   [`Snapshot`] metadata under fixed keys; the snapshot's data is the
//!   file `snapshot-INDEX-TERM`.
//!
//! sled keeps no value larger than 4 KiB: it stores a tree node larger than
//! about 128 KiB (a leaf holds up to 17 values) as a blob file, which it does
//! not reclaim, and rewrites such a node whole whenever one of its values
//! changes or a neighbour is inserted.
//!
//! An in-memory cache (hard state, conf state, snapshot, and the term of every
//! entry in the log) answers `term`, `first_index`, `last_index` and
//! `initial_state` without touching disk; `entries` reads the requested range
//! from sled and the files.
//!
//! # What survives a crash
//!
//! Every mutating call is a single atomic sled write: after a crash the store
//! is either exactly as before the call or exactly as after it, never in
//! between. Writes are only guaranteed durable once [`SledStorage::flush`]
//! returns (sled also syncs in the background every 500 ms); the owner must
//! flush before sending the messages `Ready::persisted_messages` holds.
//!
//! * `open` on a fresh directory writes the bootstrap conf state and flushes
//!   before returning.
//! * `append`: one sled batch writes the new entries and deletes the
//!   conflicting suffix they replace. An entry kept in a file is written
//!   whole and fsynced under its final name before the batch refers to it.
//! * `set_hard_state`, `set_commit`, `set_conf_state`: one key each.
//! * `apply_snapshot`: one transaction across both trees stores the snapshot,
//!   its conf state, the raised hard state and deletes the whole old log.
//! * `create_snapshot`: one transaction stores the new snapshot, raises the
//!   stored commit to the snapshot index if it was lower, and deletes the
//!   compacted entries. A crash leaves either the old snapshot with the full
//!   log or the new snapshot with the compacted log, never a gap.
//!
//! * A file sled no longer refers to (a replaced or compacted entry, an
//!   older snapshot) is removed by the `flush` after the change, once the
//!   change is durable; `open` removes every file the stored state does not
//!   refer to (what a crash left behind).
//!
//! On reopen the log is checked for contiguity with the snapshot and the
//! stored commit index for being within `[snapshot index, last index]` (raft
//! would otherwise panic in `load_state`), and every file the log or the
//! snapshot refers to must exist; a violation is reported as
//! [`StorageError::Corrupt`] rather than silently repaired.
//!
//! # What it refuses to do
//!
//! It knows nothing about the state machine: snapshot data is opaque bytes
//! supplied by the owner (`create_snapshot`) or by the leader
//! (`apply_snapshot`), and it is returned unchanged. It never invents a
//! snapshot: `Storage::snapshot` answers `SnapshotTemporarilyUnavailable` when
//! no stored snapshot is recent enough, and raft retries later. It refuses to
//! append entries below the snapshot or leaving a gap, to install a snapshot
//! older than the stored commit index, and to snapshot an index outside the
//! log.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};
use sled::transaction::{ConflictableTransactionResult, TransactionError, Transactional};

mod files;
#[cfg(test)]
mod tests;

pub use files::FileError;
use files::{Files, entry_name, snapshot_name};

/// Entries encoded larger than this are kept in a file of their own.
pub const FILE_ENTRY_BYTES: usize = 4 * 1024;
/// The first byte of a log value that names a file.
const IN_FILE: u8 = 0;

const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Errors of [`SledStorage`]. Inside `raft::Storage` they are wrapped as
/// `raft::Error::Store(raft::StorageError::Other(..))`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled failed (I/O, corruption detected by sled, ...).
    #[error("sled operation failed")]
    Sled(#[from] sled::Error),
    /// A file of a large value could not be written, read or removed.
    #[error("storage file operation failed")]
    File(#[from] FileError),
    /// A protobuf message could not be encoded.
    #[error("failed to encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: protobuf::ProtobufError,
    },
    /// A stored protobuf message could not be decoded.
    #[error("failed to decode stored {what}")]
    Decode {
        what: String,
        #[source]
        source: protobuf::ProtobufError,
    },
    /// The stored state violates an invariant of this storage.
    #[error("stored raft state is inconsistent: {0}")]
    Corrupt(String),
    /// Entries passed to `append` do not have consecutive indexes.
    #[error("entries to append are not contiguous: index {found} follows {previous}")]
    NonContiguous { previous: u64, found: u64 },
    /// `append` started at or below the snapshot index.
    #[error("cannot append at index {index}: entries up to {snapshot_index} are compacted")]
    AppendCompacted { index: u64, snapshot_index: u64 },
    /// `append` started after `last index + 1`.
    #[error("cannot append at index {index}: it leaves a gap after last index {last_index}")]
    AppendGap { index: u64, last_index: u64 },
    /// A snapshot older than what the storage already has.
    #[error("snapshot at index {index} is out of date (must be at least {minimum})")]
    SnapshotOutOfDate { index: u64, minimum: u64 },
    /// `create_snapshot` at an index after the last log entry.
    #[error("cannot snapshot at index {index}: beyond last index {last_index}")]
    SnapshotIndexUnavailable { index: u64, last_index: u64 },
    /// A snapshot at index 0 carries nothing and raft treats it as "no snapshot".
    #[error("refusing a snapshot at index 0")]
    EmptySnapshot,
}

impl From<StorageError> for raft::Error {
    fn from(err: StorageError) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(err)))
    }
}

/// In-memory mirror of what is stored.
#[derive(Debug, Default)]
struct Cache {
    hard_state: HardState,
    conf_state: ConfState,
    /// The stored snapshot (index 0 and empty data if none).
    snapshot: Snapshot,
    /// `terms[i]` is the term of the entry at `first_index() + i`.
    terms: VecDeque<u64>,
    /// The entries kept in files: index to term.
    in_files: BTreeMap<u64, u64>,
}

impl Cache {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.terms.len() as u64
    }

    /// Whether the file `name` holds a value the cache refers to.
    fn refers_to(&self, name: &str) -> bool {
        let meta = self.snapshot.get_metadata();
        if meta.index > 0 && snapshot_name(meta.index, meta.term) == name {
            return true;
        }
        files::parse_entry_name(name)
            .is_some_and(|(index, term)| self.in_files.get(&index) == Some(&term))
    }

    fn term(&self, idx: u64) -> Result<u64, raft::StorageError> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < meta.index {
            return Err(raft::StorageError::Compacted);
        }
        let offset = idx - self.first_index();
        usize::try_from(offset)
            .ok()
            .and_then(|offset| self.terms.get(offset).copied())
            .ok_or(raft::StorageError::Unavailable)
    }
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    files: Files,
    /// Files the stored state stopped referring to: removed by the next
    /// `flush`, once that is durable.
    doomed: Mutex<Vec<String>>,
    cache: RwLock<Cache>,
}

/// Durable `raft::Storage` on sled. Cloning is cheap and every clone shares the
/// same database and cache: `RawNode` owns one handle, the owner keeps another
/// to persist `Ready` contents.
#[derive(Debug, Clone)]
pub struct SledStorage {
    inner: Arc<Inner>,
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode_log_key(key: &[u8]) -> Result<u64, StorageError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StorageError::Corrupt(format!("log key of {} bytes", key.len())))
}

fn encode<M: protobuf::Message>(msg: &M, what: &'static str) -> Result<Vec<u8>, StorageError> {
    msg.write_to_bytes()
        .map_err(|source| StorageError::Encode { what, source })
}

fn decode<M: protobuf::Message>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<M, StorageError> {
    M::parse_from_bytes(bytes).map_err(|source| StorageError::Decode {
        what: what(),
        source,
    })
}

fn read_meta<M: protobuf::Message>(
    meta: &sled::Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<M>, StorageError> {
    match meta.get(key)? {
        Some(bytes) => decode(&bytes, || what.to_owned()).map(Some),
        None => Ok(None),
    }
}

/// The log value of an entry kept in a file.
fn file_marker(term: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(IN_FILE);
    v.extend_from_slice(&term.to_be_bytes());
    v
}

/// The term a file marker carries; `None` for an inline entry.
fn marker_term(value: &[u8]) -> Result<Option<u64>, StorageError> {
    match value.split_first() {
        Some((&IN_FILE, term)) => <[u8; 8]>::try_from(term)
            .map(|t| Some(u64::from_be_bytes(t)))
            .map_err(|_| StorageError::Corrupt(format!("file marker of {} bytes", value.len()))),
        _ => Ok(None),
    }
}

/// A snapshot without its data: what the `meta` tree keeps.
fn metadata_only(snap: &Snapshot) -> Snapshot {
    let mut stored = Snapshot::default();
    stored.set_metadata(snap.get_metadata().clone());
    stored
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, StorageError> {
    let index = decode_log_key(key)?;
    let entry: Entry = decode(value, || format!("log entry {index}"))?;
    if entry.index != index {
        return Err(StorageError::Corrupt(format!(
            "log key {index} holds entry with index {}",
            entry.index
        )));
    }
    Ok(entry)
}

impl SledStorage {
    /// Opens (or creates) the storage in `dir`.
    ///
    /// When nothing is stored yet and `initial_voters` is non-empty, the conf
    /// state is set to `voters = initial_voters` (bootstrap of a fresh cluster:
    /// every initial member starts with the same conf state and an empty log).
    /// A node joining an existing cluster passes an empty slice and starts with
    /// an empty conf state, to be filled by the leader's snapshot. On later
    /// opens `initial_voters` is ignored.
    pub fn open(dir: &Path, initial_voters: &[u64]) -> Result<SledStorage, StorageError> {
        let db = sled::open(dir)?;
        let log = db.open_tree(LOG_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let files = Files::open(dir.join("files"))?;

        let hard_state: Option<HardState> = read_meta(&meta, KEY_HARD_STATE, "hard state")?;
        let conf_state: Option<ConfState> = read_meta(&meta, KEY_CONF_STATE, "conf state")?;
        let mut snapshot: Option<Snapshot> = read_meta(&meta, KEY_SNAPSHOT, "snapshot")?;
        let fresh = hard_state.is_none() && conf_state.is_none() && snapshot.is_none();
        if let Some(snap) = snapshot.as_mut() {
            let m = snap.get_metadata();
            // Data stored inline is an older store's; new ones keep it in
            // a file.
            if m.index > 0 && snap.get_data().is_empty() {
                let name = snapshot_name(m.index, m.term);
                if !files.exists(&name) {
                    return Err(StorageError::Corrupt(format!(
                        "the data of snapshot {} is missing (file {name})",
                        m.index
                    )));
                }
                snap.data = files.read(&name)?.into();
            }
        }

        let mut cache = Cache {
            hard_state: hard_state.unwrap_or_default(),
            conf_state: conf_state.unwrap_or_default(),
            snapshot: snapshot.unwrap_or_default(),
            terms: VecDeque::new(),
            in_files: BTreeMap::new(),
        };
        for item in log.iter() {
            let (key, value) = item?;
            let (index, term) = match marker_term(&value)? {
                Some(term) => {
                    let index = decode_log_key(&key)?;
                    if !files.exists(&entry_name(index, term)) {
                        return Err(StorageError::Corrupt(format!(
                            "the file of log entry {index} is missing"
                        )));
                    }
                    cache.in_files.insert(index, term);
                    (index, term)
                }
                None => {
                    let entry = decode_entry(&key, &value)?;
                    (entry.index, entry.term)
                }
            };
            let expected = cache.last_index() + 1;
            if index != expected {
                return Err(StorageError::Corrupt(format!(
                    "log entry {index} found where {expected} was expected (snapshot index {})",
                    cache.snapshot_index()
                )));
            }
            cache.terms.push_back(term);
        }
        let swept = files.sweep(|name| cache.refers_to(name))?;
        if swept > 0 {
            tracing::info!(
                files = swept,
                "removed storage files no stored state refers to"
            );
        }
        let commit = cache.hard_state.commit;
        if commit < cache.snapshot_index() || commit > cache.last_index() {
            return Err(StorageError::Corrupt(format!(
                "commit index {commit} outside [{}, {}]",
                cache.snapshot_index(),
                cache.last_index()
            )));
        }
        let bootstrap = fresh && cache.terms.is_empty() && !initial_voters.is_empty();

        let storage = SledStorage {
            inner: Arc::new(Inner {
                db,
                log,
                meta,
                files,
                doomed: Mutex::new(Vec::new()),
                cache: RwLock::new(cache),
            }),
        };
        if bootstrap {
            let mut cs = ConfState::default();
            cs.set_voters(initial_voters.to_vec());
            storage.set_conf_state(&cs)?;
            storage.flush()?;
            tracing::info!(voters = ?initial_voters, "bootstrapped fresh raft storage");
        }
        Ok(storage)
    }

    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.inner
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies both batches in one transaction (atomic across the two trees).
    fn transact(
        &self,
        log_batch: &sled::Batch,
        meta_batch: &sled::Batch,
    ) -> Result<(), StorageError> {
        (&self.inner.log, &self.inner.meta)
            .transaction(
                |(log, meta)| -> ConflictableTransactionResult<(), Infallible> {
                    log.apply_batch(log_batch)?;
                    meta.apply_batch(meta_batch)?;
                    Ok(())
                },
            )
            .map_err(|err| match err {
                TransactionError::Abort(never) => match never {},
                TransactionError::Storage(err) => StorageError::Sled(err),
            })
    }

    /// Appends `entries` (consecutive indexes) to the log. Entries at index
    /// `>= entries[0].index` already stored are replaced: the conflicting
    /// suffix is removed, as raft requires. One sled batch.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(head) = entries.first() else {
            return Ok(());
        };
        // Encoded, and the large ones written to their files, before the
        // cache is locked.
        let mut values = Vec::with_capacity(entries.len());
        let mut next = head.index;
        for entry in entries {
            if entry.index != next {
                return Err(StorageError::NonContiguous {
                    previous: next - 1,
                    found: entry.index,
                });
            }
            let bytes = encode(entry, "log entry")?;
            if bytes.len() > FILE_ENTRY_BYTES {
                self.inner
                    .files
                    .write(&entry_name(entry.index, entry.term), &bytes)?;
                values.push((entry.index, entry.term, None));
            } else {
                values.push((entry.index, entry.term, Some(bytes)));
            }
            next += 1;
        }
        let mut cache = self.write();
        let first_index = cache.first_index();
        let last_index = cache.last_index();
        if head.index < first_index {
            return Err(StorageError::AppendCompacted {
                index: head.index,
                snapshot_index: cache.snapshot_index(),
            });
        }
        if head.index > last_index + 1 {
            return Err(StorageError::AppendGap {
                index: head.index,
                last_index,
            });
        }
        let mut batch = sled::Batch::default();
        let mut in_files = Vec::new();
        for (index, term, value) in values {
            match value {
                Some(bytes) => batch.insert(&log_key(index)[..], bytes),
                None => {
                    batch.insert(&log_key(index)[..], file_marker(term));
                    in_files.push((index, term));
                }
            }
        }
        for stale in next..=last_index {
            batch.remove(&log_key(stale)[..]);
        }
        self.inner.log.apply_batch(batch)?;

        let keep = usize::try_from(head.index - first_index).unwrap_or(usize::MAX);
        cache.terms.truncate(keep);
        cache.terms.extend(entries.iter().map(|e| e.term));
        let replaced = cache.in_files.split_off(&head.index);
        cache.in_files.extend(in_files);
        self.doom(
            replaced
                .into_iter()
                .filter(|(index, term)| cache.in_files.get(index) != Some(term))
                .map(|(index, term)| entry_name(index, term)),
        );
        Ok(())
    }

    /// Files to remove at the next `flush`.
    fn doom(&self, names: impl IntoIterator<Item = String>) {
        self.inner
            .doomed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(names);
    }

    /// The entry a `log` value holds or names.
    fn stored_entry(&self, key: &[u8], value: &[u8]) -> Result<Entry, StorageError> {
        let Some(term) = marker_term(value)? else {
            return decode_entry(key, value);
        };
        let index = decode_log_key(key)?;
        let entry = decode_entry(key, &self.inner.files.read(&entry_name(index, term))?)?;
        if entry.term != term {
            return Err(StorageError::Corrupt(format!(
                "the file of log entry {index} holds term {} instead of {term}",
                entry.term
            )));
        }
        Ok(entry)
    }

    fn store_hard_state(&self, cache: &mut Cache, mut hs: HardState) -> Result<(), StorageError> {
        // The snapshot is committed by definition; a lower stored commit would
        // make raft panic on restart.
        hs.commit = hs.commit.max(cache.snapshot_index());
        self.inner
            .meta
            .insert(KEY_HARD_STATE, encode(&hs, "hard state")?)?;
        cache.hard_state = hs;
        Ok(())
    }

    /// Stores the hard state (the commit index is never stored below the
    /// snapshot index).
    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        let mut cache = self.write();
        self.store_hard_state(&mut cache, hs.clone())
    }

    /// Updates the commit index of the stored hard state (for
    /// `LightReady::commit_index`).
    pub fn set_commit(&self, commit: u64) -> Result<(), StorageError> {
        let mut cache = self.write();
        let mut hs = cache.hard_state.clone();
        hs.commit = commit;
        self.store_hard_state(&mut cache, hs)
    }

    /// Stores the conf state (after applying a conf change).
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), StorageError> {
        let mut cache = self.write();
        self.inner
            .meta
            .insert(KEY_CONF_STATE, encode(cs, "conf state")?)?;
        cache.conf_state = cs.clone();
        Ok(())
    }

    /// Installs a snapshot received from the leader (`Ready::snapshot`).
    ///
    /// Stores it, drops the whole log (raft only hands over a snapshot when its
    /// log does not contain the snapshot's index and term, so every stored
    /// entry is either covered by the snapshot or conflicts with it, and raft's
    /// in-memory log after `restore` ends at the snapshot index), sets the conf
    /// state to the snapshot's, the hard-state term to at least the snapshot's
    /// and the commit index to the snapshot index. One transaction.
    ///
    /// Refuses a snapshot at index 0 or below the stored commit index (raft's
    /// own `restore` ignores those too).
    pub fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let meta = snap.get_metadata();
        if meta.index == 0 {
            return Err(StorageError::EmptySnapshot);
        }
        let name = snapshot_name(meta.index, meta.term);
        {
            let cache = self.read();
            let minimum = cache.hard_state.commit.max(cache.snapshot_index());
            if meta.index < minimum {
                return Err(StorageError::SnapshotOutOfDate {
                    index: meta.index,
                    minimum,
                });
            }
        }
        // The data first, outside the lock: the stored metadata refers to
        // it once the transaction below commits.
        self.inner.files.write(&name, snap.get_data())?;
        let mut cache = self.write();
        let minimum = cache.hard_state.commit.max(cache.snapshot_index());
        if meta.index < minimum {
            return Err(StorageError::SnapshotOutOfDate {
                index: meta.index,
                minimum,
            });
        }
        let mut hs = cache.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        let cs = meta.get_conf_state().clone();

        let mut meta_batch = sled::Batch::default();
        meta_batch.insert(KEY_SNAPSHOT, encode(&metadata_only(snap), "snapshot")?);
        meta_batch.insert(KEY_HARD_STATE, encode(&hs, "hard state")?);
        meta_batch.insert(KEY_CONF_STATE, encode(&cs, "conf state")?);
        let mut log_batch = sled::Batch::default();
        for index in cache.first_index()..=cache.last_index() {
            log_batch.remove(&log_key(index)[..]);
        }
        self.transact(&log_batch, &meta_batch)?;

        let old = cache.snapshot.get_metadata();
        let old = (old.index > 0).then(|| snapshot_name(old.index, old.term));
        self.doom(
            std::mem::take(&mut cache.in_files)
                .into_iter()
                .map(|(index, term)| entry_name(index, term))
                .chain(old.filter(|old| *old != name)),
        );
        cache.hard_state = hs;
        cache.conf_state = cs;
        cache.snapshot = snap.clone();
        cache.terms.clear();
        tracing::debug!(
            index = meta.index,
            term = meta.term,
            "installed raft snapshot"
        );
        Ok(())
    }

    /// Creates a local snapshot at `index` with the given conf state and opaque
    /// state-machine `data`, stores it and compacts the log so entries
    /// `<= index` are removed (the snapshot keeps the term of `index`, so
    /// `term(index)` still answers).
    ///
    /// The caller guarantees `index <= applied`. `index` must be in the log or
    /// equal to the current snapshot index (which replaces the snapshot's conf
    /// state and data). The stored commit index is raised to `index` if it was
    /// lower, in the same transaction, so a restart never sees a snapshot
    /// beyond the commit index.
    pub fn create_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        if index == 0 {
            return Err(StorageError::EmptySnapshot);
        }
        // The data first, outside the lock: the stored metadata refers to
        // it once the transaction below commits. (Checked again below.)
        let term = {
            let cache = self.read();
            if index < cache.snapshot_index() {
                return Err(StorageError::SnapshotOutOfDate {
                    index,
                    minimum: cache.snapshot_index(),
                });
            }
            cache
                .term(index)
                .map_err(|_| StorageError::SnapshotIndexUnavailable {
                    index,
                    last_index: cache.last_index(),
                })?
        };
        let name = snapshot_name(index, term);
        self.inner.files.write(&name, &data)?;
        let mut cache = self.write();
        let snapshot_index = cache.snapshot_index();
        if index < snapshot_index {
            return Err(StorageError::SnapshotOutOfDate {
                index,
                minimum: snapshot_index,
            });
        }
        let stored_term =
            cache
                .term(index)
                .map_err(|_| StorageError::SnapshotIndexUnavailable {
                    index,
                    last_index: cache.last_index(),
                })?;
        if stored_term != term {
            return Err(StorageError::Corrupt(format!(
                "the term of entry {index} changed from {term} to {stored_term} while snapshotting"
            )));
        }

        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);

        let mut meta_batch = sled::Batch::default();
        meta_batch.insert(KEY_SNAPSHOT, encode(&metadata_only(&snap), "snapshot")?);
        let mut hs = cache.hard_state.clone();
        if hs.commit < index {
            hs.commit = index;
            meta_batch.insert(KEY_HARD_STATE, encode(&hs, "hard state")?);
        }
        let mut log_batch = sled::Batch::default();
        for compacted in cache.first_index()..=index {
            log_batch.remove(&log_key(compacted)[..]);
        }
        self.transact(&log_batch, &meta_batch)?;

        let removed = usize::try_from(index - snapshot_index).unwrap_or(usize::MAX);
        let removed = removed.min(cache.terms.len());
        cache.terms.drain(..removed);
        let kept = cache.in_files.split_off(&(index + 1));
        let compacted = std::mem::replace(&mut cache.in_files, kept);
        let old = cache.snapshot.get_metadata();
        let old = (old.index > 0).then(|| snapshot_name(old.index, old.term));
        self.doom(
            compacted
                .into_iter()
                .map(|(index, term)| entry_name(index, term))
                .chain(old.filter(|old| *old != name)),
        );
        cache.snapshot = snap;
        cache.hard_state = hs;
        tracing::debug!(index, term, "created raft snapshot and compacted log");
        Ok(())
    }

    /// fsync: everything written before this call is durable when it returns.
    /// Then removes the files the stored state stopped referring to.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.db.flush()?;
        let doomed = std::mem::take(
            &mut *self
                .inner
                .doomed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if !doomed.is_empty() {
            let cache = self.read();
            for name in doomed.iter().filter(|name| !cache.refers_to(name)) {
                self.inner.files.remove(name)?;
            }
        }
        Ok(())
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.read().hard_state.clone()
    }

    /// The stored conf state.
    pub fn conf_state(&self) -> ConfState {
        self.read().conf_state.clone()
    }

    /// Metadata of the stored snapshot (index 0 if none).
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.read().snapshot.get_metadata().clone()
    }

    /// The stored snapshot including its data, for the owner to restore its
    /// state machine on restart; `None` if no snapshot was ever stored.
    pub fn stored_snapshot(&self) -> Option<Snapshot> {
        let cache = self.read();
        (cache.snapshot_index() > 0).then(|| cache.snapshot.clone())
    }
}

impl Storage for SledStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let cache = self.read();
        Ok(RaftState::new(
            cache.hard_state.clone(),
            cache.conf_state.clone(),
        ))
    }

    /// Entries in `[low, high)`, limited by `max_size` (at least one entry is
    /// returned when the range is not empty). Reads stop as soon as the limit
    /// is exceeded. `high > last_index + 1` is answered with `Unavailable`
    /// instead of the panic raft documents. Entries are always read
    /// synchronously, so the context is not used.
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let cache = self.read();
        if low < cache.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > cache.last_index() + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let wanted = high - low;
        let mut entries = Vec::with_capacity(usize::try_from(wanted.min(1024)).unwrap_or(0));
        let mut size = 0u64;
        let mut stopped_early = false;
        for item in self.inner.log.range(log_key(low)..log_key(high)) {
            let (key, value) = item.map_err(StorageError::from)?;
            let entry = self.stored_entry(&key, &value)?;
            let expected = low + entries.len() as u64;
            if entry.index != expected {
                return Err(StorageError::Corrupt(format!(
                    "log entry {} found where {expected} was expected",
                    entry.index
                ))
                .into());
            }
            size += u64::from(entry.compute_size());
            let over_limit = !entries.is_empty() && max_size.is_some_and(|max| size > max);
            entries.push(entry);
            if over_limit {
                stopped_early = true;
                break;
            }
        }
        if !stopped_early && entries.len() as u64 != wanted {
            return Err(StorageError::Corrupt(format!(
                "log holds {} of the entries [{low}, {high})",
                entries.len()
            ))
            .into());
        }
        raft::util::limit_size(&mut entries, max_size);
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.read().term(idx).map_err(raft::Error::Store)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index())
    }

    /// The stored snapshot. raft 0.7 treats a returned snapshot at index 0 as
    /// fatal and expects `SnapshotTemporarilyUnavailable` (it then simply
    /// retries on a later heartbeat response) when the storage cannot provide
    /// one at least as recent as `request_index`; we never fabricate one.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cache = self.read();
        let index = cache.snapshot_index();
        if index == 0 || index < request_index {
            tracing::debug!(
                to,
                request_index,
                stored_index = index,
                "no stored snapshot recent enough"
            );
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(cache.snapshot.clone())
    }
}
