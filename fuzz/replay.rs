//! How the ordinary test suite (and so CI) runs the cargo-fuzz targets
//! without libFuzzer: each target's harness (the file its fuzz target
//! includes) is offered the target's seeds from `fuzz/seeds/TARGET/`, then
//! a bounded number of reproducible mutations of them. Included with
//! `#[path]` by the replay tests (`typha/tests/fuzz_replay.rs`,
//! `dataplane-api/tests/remote_protocol.rs`).
//!
//! `FUZZ_REPLAY_ROUNDS=N` (mutations per run) and `FUZZ_REPLAY_SEED=S`
//! make a longer or different hunt; `UPDATE_FUZZ_SEEDS=1` rewrites the
//! generated seeds. An input that panics its harness is written to the
//! temporary directory, named in the failure, so it can be added to the
//! seeds as a regression.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// xorshift64*: reproducible, no dependency.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `fuzz/seeds/TARGET` of the repository whose member crate is at
/// `manifest_dir`.
pub fn seeds_dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir).join("../fuzz/seeds").join(target)
}

/// Every file of `dir`, sorted by name: generated seeds and regressions.
pub fn read_seeds(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Checks that every generated seed is in `dir` with these bytes (the
/// seeds are real messages built by the harness); with
/// `UPDATE_FUZZ_SEEDS=1` writes them instead. Other files in `dir`
/// (regressions) are left alone.
pub fn check_seeds(dir: &Path, generated: &[(String, Vec<u8>)]) {
    let update = std::env::var_os("UPDATE_FUZZ_SEEDS").is_some();
    if update {
        std::fs::create_dir_all(dir).unwrap();
    }
    for (name, bytes) in generated {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, bytes).unwrap();
            continue;
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == *bytes,
            "{} is missing or stale: run the test with UPDATE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}

/// A mutation of `input`: one to four edits (bit flips, random or boundary
/// bytes, insertions, deletions, duplicated ranges, truncation, a splice
/// from `other`).
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    const BOUNDARY: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'\n', b'"', b'{'];
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out[i] = BOUNDARY[rng.below(BOUNDARY.len())];
            }
            3 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                out.drain(at.min(len - 1)..end);
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            6 => out.truncate(at),
            _ if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            _ => {}
        }
    }
    out
}

/// Writes the input being offered to a file if the harness panics on it.
#[derive(Debug)]
struct Witness<'a> {
    target: &'a str,
    input: &'a [u8],
}

impl Drop for Witness<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let path = std::env::temp_dir().join(format!("fuzz-replay-{}-crash", self.target));
            let _ = std::fs::write(&path, self.input);
            eprintln!(
                "the {} harness panicked on the input written to {}",
                self.target,
                path.display()
            );
        }
    }
}

/// Offers every seed, then `default_rounds` mutations (or
/// `FUZZ_REPLAY_ROUNDS`), to `offer`. Returns how many inputs were offered.
pub fn replay(
    target: &str,
    seeds: &[(String, Vec<u8>)],
    default_rounds: usize,
    mut offer: impl FnMut(&[u8]),
) -> usize {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env("FUZZ_REPLAY_ROUNDS").map_or(default_rounds, |r| r as usize);
    let mut rng = Rng(env("FUZZ_REPLAY_SEED").unwrap_or(0x9E37_79B9_7F4A_7C15) | 1);
    for (_, seed) in seeds {
        let _witness = Witness {
            target,
            input: seed,
        };
        offer(seed);
    }
    for _ in 0..rounds {
        let base = &seeds[rng.below(seeds.len())].1;
        let other = &seeds[rng.below(seeds.len())].1;
        let input = mutate(&mut rng, base, other);
        let _witness = Witness {
            target,
            input: &input,
        };
        offer(&input);
    }
    seeds.len() + rounds
}
