//! The `sync_frames` fuzz target's harness, replayed over its seeds (real
//! server streams, in `fuzz/seeds/sync_frames`) and reproducible mutations
//! of them on every test run: how CI runs it without libFuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/replay.rs"]
mod replay;
#[path = "common/sync_frames.rs"]
mod sync_frames;

#[test]
fn sync_frame_seeds_are_real_streams_and_hostile_ones_never_panic() {
    let dir = replay::seeds_dir(env!("CARGO_MANIFEST_DIR"), "sync_frames");
    let generated = sync_frames::seeds();
    replay::check_seeds(&dir, &generated);
    let offered: Vec<sync_frames::Offered> = generated
        .iter()
        .map(|(_, bytes)| sync_frames::offer_frames(bytes))
        .collect();
    assert_eq!(
        offered
            .iter()
            .map(|o| (o.messages, o.too_large))
            .collect::<Vec<_>>(),
        [(4, false), (4, false), (1, false), (0, true)]
    );
    let seeds = replay::read_seeds(&dir);
    let (mut messages, mut refused) = (0, 0);
    let rounds = replay::replay("sync_frames", &seeds, 5_000, |input| {
        let o = sync_frames::offer_frames(input);
        messages += o.messages;
        refused += usize::from(o.too_large);
    });
    assert!(
        messages > rounds / 2,
        "{messages} messages of {rounds} inputs"
    );
    assert!(
        refused > 0,
        "no length over the limit among {rounds} inputs"
    );
}
