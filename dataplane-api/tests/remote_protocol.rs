//! The remote driver protocol against hostile clients: the `remote_lines`
//! fuzz target's harness, replayed over its seeds (real request streams)
//! and reproducible mutations of them on every test run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/remote_lines.rs"]
mod remote_lines;
#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn seeds_are_real_request_streams() {
    let seeds = remote_lines::seeds();
    replay::check_seeds(
        &replay::seeds_dir(env!("CARGO_MANIFEST_DIR"), "remote_lines"),
        &seeds,
    );
    let answers = |name: &str| {
        let (_, bytes) = seeds.iter().find(|(n, _)| n == name).unwrap();
        remote_lines::offer_lines(bytes)
    };
    // A whole session in contract order is taken, batch by batch.
    assert_eq!(answers("seed-session"), [true, true, true]);
    assert_eq!(answers("seed-one-per-line"), [true; 8]);
    // The documented exchange: taken, a contract violation, garbage.
    assert_eq!(answers("seed-documented-exchange"), [true, false, false]);
    // Empty, blank, an unknown key, InSync, over-long; the unterminated
    // last line is not answered.
    assert_eq!(answers("seed-edges"), [false, false, false, true, false]);
}

#[test]
fn hostile_request_streams_are_answered_line_by_line() {
    let seeds = replay::read_seeds(&replay::seeds_dir(
        env!("CARGO_MANIFEST_DIR"),
        "remote_lines",
    ));
    let mut taken = 0;
    let offered = replay::replay("remote_lines", &seeds, 3_000, |input| {
        taken += remote_lines::offer_lines(input)
            .iter()
            .filter(|ok| **ok)
            .count();
    });
    // The mutations reach past decoding into the driver often enough to
    // mean something.
    assert!(
        taken > offered / 10,
        "{taken} batches taken of {offered} inputs"
    );
}
