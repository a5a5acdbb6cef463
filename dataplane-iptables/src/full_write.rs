//! The whole table in one nf_tables transaction sent from this process.
//!
//! The table's structure (the table, sets and maps declared, chains,
//! rules, and the elements of interval and timeout sets) is a script that
//! `nft` compiles into messages (`compiled.rs`; `nft --check` only
//! evaluates it, the kernel applying nothing); the elements of every
//! other set and map, most of a large table's volume (the service maps),
//! are encoded here (`elements.rs`), without going through `nft`'s
//! parser. Both go to the kernel as one batch: the table is replaced
//! whole, or, when the kernel refuses any message, left as it was.
//!
//! An incremental write goes the same way ([`write_incremental`]): the
//! element deletions of the service maps, the script of the other
//! changes as `nft` compiles it, then their element additions.
//!
//! A dump that cannot be read back, or an element the encoder does not
//! know, is an error the caller answers by writing the whole script
//! through `nft -f` instead ([`FullWriteError::fall_back`]).

use std::time::{Duration, Instant};

use crate::compiled::{self, DumpError};
use crate::elements::{self, ElementError};
use crate::netlink;
use crate::nft::{Nft, NftError};
use crate::render::Ruleset;
use crate::script;

/// Why the whole table was not written.
#[derive(Debug, thiserror::Error)]
pub enum FullWriteError {
    #[error("nft refused the table's structure (nothing was applied)")]
    Compile(#[source] NftError),
    #[error("reading back the messages nft compiled")]
    Dump(#[source] DumpError),
    #[error("encoding the table's elements")]
    Elements(#[source] ElementError),
    #[error("the kernel refused the table (nothing of it was applied)")]
    Kernel(#[source] NftError),
}

impl FullWriteError {
    /// Whether writing the whole script through `nft -f` may still
    /// succeed (the fault is in this writer, not in the table).
    pub fn fall_back(&self) -> bool {
        matches!(self, Self::Dump(_) | Self::Elements(_))
    }
}

/// What a whole-table write sent, and where its time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The batch's messages (acknowledged each).
    pub messages: usize,
    pub bytes: usize,
    /// Splitting the table into the script `nft` compiles and the
    /// elements encoded here (of a change: diffing the old table with the
    /// new).
    pub diff: Duration,
    /// `nft` compiling the structure, and reading its dump.
    pub compile: Duration,
    /// Encoding the elements into the batch.
    pub encode: Duration,
    /// The kernel taking and committing the batch.
    pub kernel: Duration,
}

/// Writes `rs` as the whole table, in one transaction whose messages are
/// numbered from `seq`.
pub fn write(
    nft: &Nft,
    writer: &mut netlink::Writer,
    rs: &Ruleset,
    seq: u32,
) -> Result<Written, FullWriteError> {
    let started = Instant::now();
    let (structure, changes) = script::full_split(rs);
    let diff = started.elapsed();
    let dump = nft.compile(&structure).map_err(FullWriteError::Compile)?;
    let first = compiled::parse(&dump).map_err(FullWriteError::Dump)?;
    let compile = started.elapsed() - diff;
    send(writer, &[], &first, &changes, seq, diff, compile)
}

/// Writes the changes from `old` to `new` (the table holds `old`) in one
/// transaction, the elements of the service maps encoded here as for the
/// whole table (see `script::incremental_split`). `Ok(None)` when this
/// writer does not take the change (it removes chains or sets): the
/// caller writes it through `nft -f`.
pub fn write_incremental(
    nft: &Nft,
    writer: &mut netlink::Writer,
    old: &Ruleset,
    new: &Ruleset,
    seq: u32,
) -> Result<Option<Written>, FullWriteError> {
    let started = Instant::now();
    let Some(split) = script::incremental_split(old, new) else {
        return Ok(None);
    };
    let diff = started.elapsed();
    let first = if split.script.is_empty() {
        Vec::new()
    } else {
        let dump = nft
            .compile(&split.script)
            .map_err(FullWriteError::Compile)?;
        compiled::parse(&dump).map_err(FullWriteError::Dump)?
    };
    let compile = started.elapsed() - diff;
    send(
        writer,
        &split.deletes,
        &first,
        &split.adds,
        seq,
        diff,
        compile,
    )
    .map(Some)
}

fn send(
    writer: &mut netlink::Writer,
    before: &[elements::SetChange<'_>],
    first: &[compiled::Message],
    after: &[elements::SetChange<'_>],
    seq: u32,
    diff: Duration,
    compile: Duration,
) -> Result<Written, FullWriteError> {
    let started = Instant::now();
    let batch =
        elements::batch_around(before, first, after, seq).map_err(FullWriteError::Elements)?;
    let encode = started.elapsed();
    if !batch.acked.is_empty() {
        writer.apply(&batch).map_err(FullWriteError::Kernel)?;
    }
    Ok(Written {
        messages: batch.acked.len(),
        bytes: batch.bytes.len(),
        diff,
        compile,
        encode,
        kernel: started.elapsed() - encode,
    })
}
