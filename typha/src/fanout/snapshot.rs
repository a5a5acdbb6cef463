//! The snapshot cache: a snapshot of the state machine, chunked and encoded
//! once and shared by every client that needs one while it is current. No
//! I/O: the driver passes in how to take and compress a snapshot.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use manul_proto::v1::{Entry, EntryList};
use prost::Message as _;
use tokio::sync::OnceCell;

use super::Compression;
use super::history::gzip;

/// A snapshot at one revision, chunked and encoded in one compression.
#[derive(Debug)]
pub(crate) struct EncodedSnapshot {
    pub(crate) revision: u64,
    pub(crate) compression: Compression,
    /// Each an encoded (and compressed) `EntryList`; never empty: an empty
    /// state is one chunk holding an empty list.
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) entries: usize,
}

impl EncodedSnapshot {
    /// Chunks `entries` by `chunk_entries` and encodes each chunk.
    pub(crate) fn encode(
        revision: u64,
        entries: Vec<Entry>,
        chunk_entries: usize,
    ) -> EncodedSnapshot {
        let chunk_entries = chunk_entries.max(1);
        let count = entries.len();
        let mut chunks = Vec::with_capacity(count.div_ceil(chunk_entries).max(1));
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk = EntryList {
                entries: entries.by_ref().take(chunk_entries).collect(),
            };
            chunks.push(Bytes::from(chunk.encode_to_vec()));
        }
        if chunks.is_empty() {
            chunks.push(Bytes::new());
        }
        EncodedSnapshot {
            revision,
            compression: Compression::Identity,
            chunks,
            entries: count,
        }
    }

    /// The same snapshot with every chunk gzipped.
    pub(crate) fn gzip(&self) -> std::io::Result<EncodedSnapshot> {
        let chunks = self
            .chunks
            .iter()
            .map(|chunk| gzip(chunk))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(EncodedSnapshot {
            revision: self.revision,
            compression: Compression::Gzip,
            chunks,
            entries: self.entries,
        })
    }

    /// Total encoded size.
    pub(crate) fn bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// The latest snapshot (at most one), shared while nothing newer was
/// published.
#[derive(Debug, Default)]
pub(crate) struct SnapshotCache {
    latest: Mutex<Option<Arc<SnapshotSlot>>>,
}

impl SnapshotCache {
    /// The slot a client needing a snapshot uses when the latest published
    /// revision is `current`: the cached one if it is (or, while being
    /// taken, will be) at least at `current`, else a new one replacing it.
    pub(crate) fn slot_for(&self, current: u64) -> Arc<SnapshotSlot> {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = latest.as_ref()
            && slot.covers() >= current
        {
            return Arc::clone(slot);
        }
        let slot = Arc::new(SnapshotSlot::new(current));
        *latest = Some(Arc::clone(&slot));
        slot
    }

    /// Forgets the cached snapshot.
    pub(crate) fn clear(&self) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// One snapshot: taken once, encoded once per compression. Concurrent
/// requests wait for the first one's work instead of repeating it.
#[derive(Debug)]
pub(crate) struct SnapshotSlot {
    /// The latest published revision when the slot was made.
    created_at: u64,
    identity: OnceCell<Arc<EncodedSnapshot>>,
    gzip: OnceCell<Arc<EncodedSnapshot>>,
}

impl SnapshotSlot {
    fn new(created_at: u64) -> SnapshotSlot {
        SnapshotSlot {
            created_at,
            identity: OnceCell::new(),
            gzip: OnceCell::new(),
        }
    }

    /// The revision this slot's snapshot is (or will be, at least) at.
    fn covers(&self) -> u64 {
        self.identity
            .get()
            .map_or(self.created_at, |snapshot| snapshot.revision)
    }

    /// The identity-encoded snapshot, taken with `take` unless already
    /// taken; the flag says whether this call took it.
    pub(crate) async fn identity<F, Fut, E>(
        &self,
        take: F,
    ) -> Result<(Arc<EncodedSnapshot>, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<EncodedSnapshot, E>>,
    {
        let mut taken = false;
        let snapshot = self
            .identity
            .get_or_try_init(|| {
                taken = true;
                async move { take().await.map(Arc::new) }
            })
            .await?;
        Ok((Arc::clone(snapshot), taken))
    }

    /// The gzip-encoded snapshot, made from the identity one with
    /// `compress` unless already made.
    pub(crate) async fn gzip<F, Fut, E>(&self, compress: F) -> Result<Arc<EncodedSnapshot>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<EncodedSnapshot, E>>,
    {
        let snapshot = self
            .gzip
            .get_or_try_init(|| async { compress().await.map(Arc::new) })
            .await?;
        Ok(Arc::clone(snapshot))
    }
}
