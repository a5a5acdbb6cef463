//! Any bytes as the request message of a `Sync` stream (a Felix's hello),
//! sent as a gRPC frame to the Sync service Typha's client listener
//! serves: never a panic; a request that does not decode or that the
//! fan-out's rules refuse gets an error status and opens no stream; any
//! other gets the `ServerHello` it asked for. The harness is shared with
//! `typha/tests/fuzz_replay.rs`.
#![no_main]

#[path = "../../typha/tests/common/sync_hello.rs"]
mod sync_hello;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sync_hello::offer_hello(data);
});
