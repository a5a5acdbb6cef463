//! The breadcrumb history: the recent published revisions, each encoded once
//! and shared by every client. No I/O, no locking: [`super::Fanout`] wraps it
//! in a lock.
//!
//! Invariant: the crumbs are contiguous (`crumb[i + 1].first ==
//! crumb[i].last + 1`) and together hold every change with a revision in
//! `(oldest, current]`, so a client at any revision `r` with
//! `oldest <= r <= current` can be brought up to date from the history alone.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use manul_proto::v1::{Entry, EntryList};
use prost::Message as _;

use super::Compression;

/// One published revision range, encoded once and shared (`Arc`) by every
/// client that sends it.
#[derive(Debug)]
pub(crate) struct Breadcrumb {
    /// The first revision this crumb covers (the previous crumb's `last` + 1).
    pub(crate) first: u64,
    /// The revision that was published.
    pub(crate) last: u64,
    /// How many entries the encoded list holds.
    pub(crate) entries: usize,
    /// The encoded `EntryList`.
    identity: Bytes,
    /// The gzip form, made the first time a gzip client needs it; `None`
    /// inside means compression failed (it cannot, writing to memory).
    gzip: OnceLock<Option<Bytes>>,
}

impl Breadcrumb {
    fn new(first: u64, last: u64, encoded: EncodedEntries) -> Breadcrumb {
        Breadcrumb {
            first,
            last,
            entries: encoded.count,
            identity: encoded.bytes,
            gzip: OnceLock::new(),
        }
    }

    /// Size of the identity encoding, what history trimming counts.
    pub(crate) fn encoded_len(&self) -> usize {
        self.identity.len()
    }

    /// The shared encoded entries in `compression`; `None` only if gzip
    /// failed.
    pub(crate) fn payload(&self, compression: Compression) -> Option<Bytes> {
        match compression {
            Compression::Identity => Some(self.identity.clone()),
            Compression::Gzip => self.gzip.get_or_init(|| gzip(&self.identity).ok()).clone(),
        }
    }

    /// The encoded entries with a revision greater than `after`, for the
    /// rare client whose snapshot was taken in the middle of this crumb's
    /// range. Encoded for that client alone.
    pub(crate) fn payload_after(&self, after: u64, compression: Compression) -> Option<Bytes> {
        let mut list = EntryList::decode(self.identity.clone()).ok()?;
        list.entries.retain(|entry| entry.revision > after);
        let identity = list.encode_to_vec();
        match compression {
            Compression::Identity => Some(Bytes::from(identity)),
            Compression::Gzip => gzip(&identity).ok(),
        }
    }
}

/// An encoded `EntryList`, made before taking the history lock.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEntries {
    pub(crate) count: usize,
    pub(crate) bytes: Bytes,
}

impl EncodedEntries {
    pub(crate) fn encode(entries: Vec<Entry>) -> EncodedEntries {
        let count = entries.len();
        let bytes = Bytes::from(EntryList { entries }.encode_to_vec());
        EncodedEntries { count, bytes }
    }
}

/// Gzip `data` (default level) into a new buffer.
pub(crate) fn gzip(data: &[u8]) -> std::io::Result<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 32),
        flate2::Compression::default(),
    );
    encoder.write_all(data)?;
    Ok(Bytes::from(encoder.finish()?))
}

/// What a client at some revision gets next.
#[derive(Debug, Clone)]
pub(crate) enum Next {
    /// The crumb holding the revisions right after the client's.
    Crumb(Arc<Breadcrumb>),
    /// The client has everything published so far.
    UpToDate,
    /// The revisions right after the client's are no longer retained.
    Gone {
        /// The oldest revision a client can still resume from.
        oldest: u64,
        /// Whether they were lost to a [`History::reset`] rather than to
        /// trimming.
        by_reset: bool,
    },
}

/// The publishing outcome, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    /// A new crumb was appended.
    Appended,
    /// `revision` was not after the current one and carried no entries.
    Unchanged,
    /// `revision` was not after the current one but carried entries: a
    /// caller bug; the entries were ignored.
    OutOfOrder,
}

/// Recent breadcrumbs, bounded by count and by encoded bytes.
#[derive(Debug)]
pub(crate) struct History {
    crumbs: VecDeque<Arc<Breadcrumb>>,
    /// The latest published (or reset-to) revision.
    current: u64,
    /// The oldest revision a client can resume from.
    oldest: u64,
    /// The revision of the last reset, if any.
    reset_at: Option<u64>,
    /// Nothing was ever published or reset.
    pristine: bool,
    /// Sum of the crumbs' identity encodings.
    bytes: usize,
    max_revisions: usize,
    max_bytes: usize,
}

impl History {
    pub(crate) fn new(max_revisions: usize, max_bytes: usize) -> History {
        History {
            crumbs: VecDeque::new(),
            current: 0,
            oldest: 0,
            reset_at: None,
            pristine: true,
            bytes: 0,
            max_revisions: max_revisions.max(1),
            max_bytes,
        }
    }

    pub(crate) fn current(&self) -> u64 {
        self.current
    }

    pub(crate) fn oldest(&self) -> u64 {
        self.oldest
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.crumbs.len()
    }

    /// Whether a client that has applied everything up to `revision` can be
    /// brought up to date from the history alone.
    pub(crate) fn can_resume(&self, revision: u64) -> bool {
        revision >= self.oldest && revision <= self.current
    }

    /// Appends the crumb for `revision` (the changes since the previous
    /// publish) and trims the history.
    ///
    /// The very first publish of a history that was never reset covers only
    /// `revision` itself: the changes before it are unknown here, so a
    /// client behind `revision - 1` gets a snapshot.
    pub(crate) fn publish(&mut self, revision: u64, entries: EncodedEntries) -> Published {
        if self.pristine {
            self.pristine = false;
            self.current = revision.saturating_sub(1);
            self.oldest = self.current;
        }
        if revision <= self.current {
            return if entries.count == 0 {
                Published::Unchanged
            } else {
                Published::OutOfOrder
            };
        }
        let crumb = Arc::new(Breadcrumb::new(self.current + 1, revision, entries));
        self.bytes += crumb.encoded_len();
        self.current = revision;
        self.crumbs.push_back(crumb);
        self.trim();
        Published::Appended
    }

    /// Drops the oldest crumbs while over either bound, keeping the newest
    /// crumb whatever its size so that up-to-date clients never fall behind.
    fn trim(&mut self) {
        while self.crumbs.len() > 1
            && (self.crumbs.len() > self.max_revisions || self.bytes > self.max_bytes)
        {
            let Some(dropped) = self.crumbs.pop_front() else {
                break;
            };
            self.bytes -= dropped.encoded_len();
            self.oldest = dropped.last;
        }
    }

    /// Forgets every crumb: the history restarts at `revision`.
    pub(crate) fn reset(&mut self, revision: u64) {
        self.crumbs.clear();
        self.bytes = 0;
        self.current = revision;
        self.oldest = revision;
        self.reset_at = Some(revision);
        self.pristine = false;
    }

    /// What a client that has everything up to `revision` needs next.
    pub(crate) fn next_after(&self, revision: u64) -> Next {
        if revision < self.oldest {
            return Next::Gone {
                oldest: self.oldest,
                by_reset: self.reset_at == Some(self.oldest),
            };
        }
        if revision >= self.current {
            return Next::UpToDate;
        }
        let index = self.crumbs.partition_point(|crumb| crumb.last <= revision);
        match self.crumbs.get(index) {
            Some(crumb) => Next::Crumb(Arc::clone(crumb)),
            // Unreachable by the invariant; treat as lost rather than panic.
            None => Next::Gone {
                oldest: self.current,
                by_reset: false,
            },
        }
    }
}
