//! The checks on what a run recorded, without I/O: acknowledged writes in
//! every replica's final state, panics in logs, memory growth.

use std::collections::BTreeMap;

use crate::kv::{Input, Output, Recorded};

/// A check's outcome, as the report shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invariant {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Invariant {
    pub fn new(name: &str, problems: &[String], fine: String) -> Invariant {
        Invariant {
            name: name.into(),
            ok: problems.is_empty(),
            detail: if problems.is_empty() {
                fine
            } else {
                let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
                format!("{} problem(s): {}", problems.len(), shown.join("; "))
            },
        }
    }
}

/// A key's final value on one replica: the write it holds and its
/// revision, or `None` when absent.
pub type Final = Option<(u64, u64)>;

/// Every acknowledged change must be in every replica's final state: the
/// key's final revision is at least the last acknowledged change's, and
/// when equal it is that change (that write, or absent after a delete).
/// An absent key whose last acknowledged change is a write needs a later
/// delete whose outcome is unknown.
pub fn acknowledged_writes(
    history: &[Recorded],
    finals: &BTreeMap<String, Vec<(String, Final)>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, replicas) in finals {
        let ops: Vec<&Recorded> = history.iter().filter(|r| &r.key == key).collect();
        let last_ack = ops
            .iter()
            .filter_map(|r| match (&r.input, &r.output) {
                (Input::Apply { write, .. }, Output::Written(rev)) => Some((*rev, Some(*write))),
                (Input::Delete { .. }, Output::Written(rev)) => Some((*rev, None)),
                _ => None,
            })
            .max_by_key(|(rev, _)| *rev);
        let Some((ack_rev, ack_write)) = last_ack else {
            continue;
        };
        let unknown_delete_after = ops
            .iter()
            .any(|r| matches!(r.input, Input::Delete { .. }) && r.output == Output::Unknown);
        for (replica, fin) in replicas {
            match (fin, ack_write) {
                (Some((_, rev)), _) if *rev > ack_rev => {}
                (Some((w, rev)), Some(aw)) if *rev == ack_rev && *w == aw => {}
                (None, None) => {}
                (None, Some(_)) if unknown_delete_after => {}
                _ => problems.push(format!(
                    "{key} on {replica}: final {fin:?}, last acknowledged {} at {ack_rev}",
                    match ack_write {
                        Some(w) => format!("write w{w}"),
                        None => "delete".into(),
                    }
                )),
            }
        }
    }
    problems
}

/// The lines of a log that report a panic.
pub fn panics(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked at") || l.contains("RUST_BACKTRACE"))
        .map(|l| l.chars().take(300).collect())
        .collect()
}

/// The least-squares slope of `samples` (seconds, bytes): bytes per
/// second. `None` with fewer than two distinct times.
pub fn slope(samples: &[(f64, f64)]) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return None;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The Theil–Sen slope of `samples`: the median of the slopes between
/// every two samples (of at most [`THEIL_SEN_POINTS`], evenly taken). A
/// transient peak moves few of those slopes, and one step (a Raft
/// compaction) moves fewer than half of them, so neither is read as
/// growth; memory that keeps growing moves them all. `None` with fewer
/// than two distinct times.
pub fn theil_sen(samples: &[(f64, f64)]) -> Option<f64> {
    let stride = samples.len().div_ceil(THEIL_SEN_POINTS).max(1);
    let points: Vec<(f64, f64)> = samples.iter().step_by(stride).copied().collect();
    let mut slopes: Vec<f64> = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    Some(if slopes.len() % 2 == 1 {
        slopes[mid]
    } else {
        (slopes[mid - 1] + slopes[mid]) / 2.0
    })
}

/// At most this many samples enter a Theil–Sen fit (about 80,000 slopes).
pub const THEIL_SEN_POINTS: usize = 400;

/// The shortest stretch of a process's life a growth is fitted over:
/// over a few minutes, one peak or one step decides any fit.
pub const MIN_FIT_SECONDS: f64 = 300.0;

/// The fitted growth per hour (Theil–Sen) of `samples` (seconds, bytes),
/// or `None` when they span less than [`MIN_FIT_SECONDS`].
pub fn fitted_growth_per_hour(samples: &[(f64, f64)]) -> Option<f64> {
    let (first, last) = (samples.first()?, samples.last()?);
    if last.0 - first.0 < MIN_FIT_SECONDS {
        return None;
    }
    theil_sen(samples).map(|s| s * 3600.0)
}

/// Whether a fitted growth is unbounded: carried over the whole run
/// (`hours`), it would add more than half the process's median size
/// (and more than 32 MiB). All in MiB.
pub fn unbounded(growth_per_hour: f64, hours: f64, median: f64) -> bool {
    growth_per_hour * hours > (0.5 * median).max(32.0)
}

/// Revisions a Typha replica applies after it starts before its memory
/// can stand at its bounds: its fan-out history fills up to
/// `--history-revisions` (10,000 by default), its Raft log grows to
/// `--snapshot-every` entries (10,000) before the first compaction, and
/// the replicated audit history holds up to 10,000 events. Under steady
/// churn a replica's RSS rises over these first revisions (and steps up
/// at its first Raft snapshot), then stays flat; a fit over that warm-up
/// reads bounded filling as growth.
pub const TYPHA_WARMUP_REVISIONS: u64 = 10_000;

/// How long after a replica's first Raft snapshot in a life its RSS is
/// taken to have settled at its new level.
pub const COMPACTION_SETTLE_SECONDS: f64 = 30.0;

/// What [`growth_after_warmup`] found for one life of a Typha replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifeFit {
    /// The fitted growth per hour after the warm-up (`None`: not fitted).
    pub growth: Option<f64>,
    /// The cluster's revisions over the whole life.
    pub revisions_seen: u64,
    /// Whether the replica took (or installed) a Raft snapshot in it.
    pub compacted: bool,
    /// Seconds of the life after its warm-up.
    pub after_warmup: f64,
}

/// The fitted growth per hour of one life of a Typha replica (`samples`:
/// seconds, bytes) after its warm-up, which ends once both hold: the
/// cluster's revision (`revisions`: seconds, revision, in time order)
/// stands `warmup` revisions past where it stood at the life's first
/// sample, and [`COMPACTION_SETTLE_SECONDS`] have passed since the
/// replica's first Raft snapshot in this life (`snapshots`: seconds and
/// the replica's snapshot index, sampled in this life; its first rise).
/// A restarted replica resumes with a log of up to `--snapshot-every`
/// entries, so its first compaction (and the step of its RSS there) can
/// come after `warmup` revisions of its own; a fresh one compacts right at
/// `warmup`. Not fitted when less than [`MIN_FIT_SECONDS`] follow.
pub fn growth_after_warmup(
    samples: &[(f64, f64)],
    revisions: &[(f64, u64)],
    warmup: u64,
    snapshots: &[(f64, u64)],
) -> LifeFit {
    let at = |t: f64| match revisions.partition_point(|r| r.0 <= t) {
        0 => 0,
        i => revisions[i - 1].1,
    };
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return LifeFit {
            growth: None,
            revisions_seen: 0,
            compacted: false,
            after_warmup: 0.0,
        };
    };
    let start = at(first.0);
    let revisions_seen = at(last.0).saturating_sub(start);
    let compacted_at = snapshots
        .first()
        .and_then(|(_, index0)| snapshots.iter().find(|(_, i)| i > index0))
        .map(|(t, _)| *t);
    let settled = compacted_at.map(|t| t + COMPACTION_SETTLE_SECONDS);
    let warm: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|s| at(s.0) >= start + warmup && settled.is_some_and(|t| s.0 >= t))
        .collect();
    let after_warmup = match (warm.first(), warm.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    LifeFit {
        growth: fitted_growth_per_hour(&warm),
        revisions_seen,
        compacted: compacted_at.is_some(),
        after_warmup,
    }
}

/// The fitted growth per hour over the second half of one process life
/// (`samples`: seconds since the run started, bytes), after its start up
/// and first caches; `None` when that half is shorter than
/// [`MIN_FIT_SECONDS`] (a life shorter than twice that is not fitted).
pub fn memory_growth_per_hour(samples: &[(f64, f64)]) -> Option<f64> {
    let (first, last) = (samples.first()?, samples.last()?);
    let middle = (first.0 + last.0) / 2.0;
    let late: Vec<(f64, f64)> = samples.iter().copied().filter(|s| s.0 >= middle).collect();
    fitted_growth_per_hour(&late)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, input: Input, output: Output) -> Recorded {
        Recorded {
            key: key.into(),
            input,
            output,
            call: 0,
            ret: 1,
        }
    }

    #[test]
    fn the_last_acknowledged_write_must_survive_everywhere() {
        let history = [
            rec(
                "a",
                Input::Apply {
                    write: 1,
                    expected: None,
                },
                Output::Written(5),
            ),
            rec(
                "a",
                Input::Apply {
                    write: 2,
                    expected: None,
                },
                Output::Written(8),
            ),
            rec("b", Input::Delete { expected: None }, Output::Written(9)),
        ];
        let finals = BTreeMap::from([
            (
                "a".to_string(),
                vec![
                    ("t1".to_string(), Some((2, 8))),
                    ("t2".to_string(), Some((1, 5))),
                ],
            ),
            ("b".to_string(), vec![("t1".to_string(), None)]),
        ]);
        let problems = acknowledged_writes(&history, &finals);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("a on t2"));
    }

    #[test]
    fn a_later_unknown_write_may_replace_an_acknowledged_one() {
        let history = [
            rec(
                "a",
                Input::Apply {
                    write: 1,
                    expected: None,
                },
                Output::Written(5),
            ),
            rec(
                "a",
                Input::Apply {
                    write: 2,
                    expected: None,
                },
                Output::Unknown,
            ),
            rec("a", Input::Delete { expected: None }, Output::Unknown),
        ];
        for fin in [Some((1, 5)), Some((2, 7)), None] {
            let finals = BTreeMap::from([("a".to_string(), vec![("t1".to_string(), fin)])]);
            assert!(acknowledged_writes(&history, &finals).is_empty(), "{fin:?}");
        }
    }

    #[test]
    fn panics_are_found_in_logs() {
        let log = "INFO started\nthread 'raft' panicked at src/node.rs:3:5:\nboom\n";
        assert_eq!(panics(log).len(), 1);
        assert!(panics("INFO all good\n").is_empty());
    }

    /// A sampled RSS series in MiB, one sample a second from `from` to
    /// `to` seconds, `f(t)` plus a small deterministic jitter.
    fn series(from: u32, to: u32, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (from..to)
            .map(|t| {
                let jitter = f64::from((t * 7919) % 13) / 13.0 - 0.5;
                (f64::from(t), f(f64::from(t)) + jitter)
            })
            .collect()
    }

    /// 48 revisions a second (the 30-minute soak's rate) from revision
    /// 40,000 at second 0.
    fn revisions(to: u32) -> Vec<(f64, u64)> {
        (0..to)
            .map(|t| (f64::from(t), 40_000 + 48 * u64::from(t)))
            .collect()
    }

    struct TyphaCase {
        name: &'static str,
        rss: Vec<(f64, f64)>,
        /// (second, snapshot index) over the life.
        snapshots: Vec<(f64, u64)>,
        /// Expected: fitted, and then bounded or not.
        fitted: bool,
        bounded: bool,
    }

    #[test]
    fn typha_lives_are_fitted_after_their_warm_up_and_first_compaction() {
        let revs = revisions(3600);
        // A snapshot index that rises at `at` (and every 10,000 revisions,
        // about 208 s, after it).
        let snapshots = |from: u32, to: u32, at: u32| -> Vec<(f64, u64)> {
            (from..to)
                .map(|t| {
                    let n = if t < at { 0 } else { 1 + (t - at) / 208 };
                    (f64::from(t), 30_000 + 10_000 * u64::from(n))
                })
                .collect()
        };
        let restarted = || {
            series(1000, 1800, |t| {
                if t < 1208.0 {
                    70.0 + 31.0 * (t - 1000.0) / 208.0
                } else if t < 1300.0 {
                    101.0
                } else if t < 1305.0 {
                    101.0 + 32.0 * (t - 1300.0) / 5.0
                } else {
                    134.5
                }
            })
        };
        let cases = [
            TyphaCase {
                // The 30-minute soak's typha-1: restarted at second 1000,
                // filling for its first 10,000 revisions (to 101 MiB, at
                // second 1208), its first compaction at second 1300 (after
                // its warm-up in revisions), a step to 133 MiB, then flat
                // at 134-135 MiB.
                name: "restarted replica, first compaction after the revision warm-up",
                rss: restarted(),
                snapshots: snapshots(1000, 1800, 1300),
                fitted: true,
                bounded: true,
            },
            TyphaCase {
                // A fresh replica: fills to 92 MiB over 10,000 revisions,
                // steps by 30 MiB at its first compaction right there, and
                // gives a few MiB back and forth at later ones.
                name: "fresh replica, compaction at the warm-up's end",
                rss: series(0, 1800, |t| {
                    if t < 208.0 {
                        56.0 + 36.0 * t / 208.0
                    } else if t < 212.0 {
                        92.0 + 30.0 * (t - 208.0) / 4.0
                    } else {
                        122.0 + 4.0 * ((t / 208.0).floor() % 2.0)
                    }
                }),
                snapshots: snapshots(0, 1800, 208),
                fitted: true,
                bounded: true,
            },
            TyphaCase {
                // A leak: after the same warm-up and step, 200 MiB/h on.
                name: "a leak after the first compaction",
                rss: series(600, 1800, |t| {
                    if t < 900.0 {
                        101.0
                    } else {
                        134.0 + 200.0 * (t - 900.0) / 3600.0
                    }
                }),
                snapshots: snapshots(600, 1800, 900),
                fitted: true,
                bounded: false,
            },
            TyphaCase {
                // A life that never compacted is still in its warm-up.
                name: "no compaction in this life",
                rss: series(600, 1800, |t| 70.0 + 0.01 * t),
                snapshots: (600..1800).map(|t| (f64::from(t), 30_000)).collect(),
                fitted: false,
                bounded: true,
            },
        ];
        for case in cases {
            let fit =
                growth_after_warmup(&case.rss, &revs, TYPHA_WARMUP_REVISIONS, &case.snapshots);
            assert_eq!(fit.growth.is_some(), case.fitted, "{}: {fit:?}", case.name);
            let median = 120.0;
            let bounded = fit.growth.is_none_or(|g| !unbounded(g, 0.5, median));
            assert_eq!(bounded, case.bounded, "{}: {fit:?}", case.name);
        }
        // The first case is the one a least-squares fit from the revision
        // warm-up's end read as growth (+272 MiB/h in the soak).
        let old: Vec<(f64, f64)> = restarted().into_iter().filter(|s| s.0 >= 1208.0).collect();
        assert!(slope(&old).unwrap() * 3600.0 > 100.0);
    }

    struct FelixCase {
        name: &'static str,
        rss: Vec<(f64, f64)>,
        fitted: bool,
        bounded: bool,
    }

    #[test]
    fn felix_lives_are_fitted_over_a_long_enough_second_half_robustly() {
        let peak = |from: f64| {
            move |t: f64| {
                if (from..from + 20.0).contains(&t) {
                    78.0
                } else {
                    45.0
                }
            }
        };
        let cases = [
            FelixCase {
                // The soak's felix-node1: a 3-minute life, 45 MiB with one
                // transient peak at 78 MiB in its second half.
                name: "3-minute life with a transient peak",
                rss: series(1000, 1180, peak(1120.0)),
                fitted: false,
                bounded: true,
            },
            FelixCase {
                name: "20-minute life with a transient peak late in it",
                rss: series(0, 1200, peak(1100.0)),
                fitted: true,
                bounded: true,
            },
            FelixCase {
                name: "flat 30-minute life",
                rss: series(0, 1800, |_| 50.0),
                fitted: true,
                bounded: true,
            },
            FelixCase {
                // 150 MiB/h all along: 75 MiB over the half-hour run.
                name: "a leak",
                rss: series(0, 1800, |t| 43.0 + 150.0 * t / 3600.0),
                fitted: true,
                bounded: false,
            },
            FelixCase {
                // A leak in steps (a cache that doubles) still grows.
                name: "a leak in steps",
                rss: series(0, 1800, |t| 43.0 + 12.0 * (t / 120.0).floor()),
                fitted: true,
                bounded: false,
            },
        ];
        for case in cases {
            let g = memory_growth_per_hour(&case.rss);
            assert_eq!(g.is_some(), case.fitted, "{}: {g:?}", case.name);
            let median = 50.0;
            let bounded = g.is_none_or(|g| !unbounded(g, 0.5, median));
            assert_eq!(bounded, case.bounded, "{}: {g:?}", case.name);
        }
    }

    #[test]
    fn theil_sen_reads_a_line_exactly_and_ignores_outliers() {
        let line: Vec<(f64, f64)> = (0..100).map(|t| (t as f64, 3.0 * t as f64 + 1.0)).collect();
        assert!((theil_sen(&line).unwrap() - 3.0).abs() < 1e-9);
        let mut spiked = line.clone();
        spiked[50].1 = 1e9;
        spiked[70].1 = -1e9;
        assert!((theil_sen(&spiked).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(theil_sen(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
    }
}
