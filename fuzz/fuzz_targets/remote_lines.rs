//! Any bytes as a client's request stream to a remote driver server (JSON
//! lines over a Unix socket), served by `serve_connection` to the null
//! driver: never a panic, one answer per line, `ok` exactly for a
//! well-formed request the driver took, a refused batch changes nothing.
//! The harness is shared with `dataplane-api/tests/remote_protocol.rs`.
#![no_main]

#[path = "../../dataplane-api/tests/common/remote_lines.rs"]
mod remote_lines;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    remote_lines::offer_lines(data);
});
