//! Any bytes as an apply, delete or get request (first byte: which; the
//! rest: the request message as sent) to a real single-voter Typha on
//! loopback: never a panic; a refused request stores nothing; an apply the
//! model's loader refuses is refused; whatever is stored decodes as Felix
//! decodes it. The harness is shared with `typha/tests/fuzz_replay.rs`.
#![no_main]

#[path = "../../typha/tests/common/write_request.rs"]
mod write_request;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    write_request::offer_request(data);
});
