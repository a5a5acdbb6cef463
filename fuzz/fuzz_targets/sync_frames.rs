//! Any bytes as a Typha server's lean Sync stream (length-delimited
//! `SyncMessage` frames), fed to the client's frame decoder in pieces:
//! never a panic, a length over the limit refused before its bytes are
//! buffered, every decoded message framed again to the same bytes. The
//! harness is shared with `proto/tests/fuzz_replay.rs`.
#![no_main]

#[path = "../../proto/tests/common/sync_frames.rs"]
mod sync_frames;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sync_frames::offer_frames(data);
});
