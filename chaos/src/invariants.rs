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

/// Revisions a Typha replica applies after it starts before its memory
/// can stand at its bounds: its fan-out history fills up to
/// `--history-revisions` (10,000 by default), its Raft log grows to
/// `--snapshot-every` entries (10,000) before the first compaction, and
/// the replicated audit history holds up to 10,000 events. Under steady
/// churn a replica's RSS rises over these first revisions (and steps up
/// at its first Raft snapshot), then stays flat; a fit over that warm-up
/// reads bounded filling as growth.
pub const TYPHA_WARMUP_REVISIONS: u64 = 10_000;

/// The fitted growth per hour of one process life's `samples` (seconds,
/// bytes) after its warm-up: from the first sample at which the cluster's
/// revision (`revisions`: seconds, revision, in time order) stood
/// `warmup` revisions past where it stood at the life's first sample.
/// `None` when fewer than `min_samples` samples come after the warm-up.
/// Also returns the revisions the life saw in all.
pub fn growth_after_warmup(
    samples: &[(f64, f64)],
    revisions: &[(f64, u64)],
    warmup: u64,
    min_samples: usize,
) -> (Option<f64>, u64) {
    let at = |t: f64| match revisions.partition_point(|r| r.0 <= t) {
        0 => 0,
        i => revisions[i - 1].1,
    };
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (None, 0);
    };
    let start = at(first.0);
    let seen = at(last.0).saturating_sub(start);
    let warm: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|s| at(s.0) >= start + warmup)
        .collect();
    if warm.len() < min_samples {
        return (None, seen);
    }
    (slope(&warm).map(|s| s * 3600.0), seen)
}

/// Memory is bounded when, over the second half of the run (after start
/// up and the first caches), the fitted growth would add less than
/// `max_per_hour` bytes in an hour. Returns the fitted growth per hour.
pub fn memory_growth_per_hour(samples: &[(f64, f64)]) -> Option<f64> {
    let end = samples.iter().map(|s| s.0).fold(0.0, f64::max);
    let late: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|s| s.0 >= end / 2.0)
        .collect();
    slope(&late).map(|s| s * 3600.0)
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

    #[test]
    fn growth_is_fitted_over_the_second_half() {
        // 1 MB/s for the first half, flat after: bounded.
        let mut s: Vec<(f64, f64)> = (0..50).map(|t| (t as f64, 1e6 * t as f64)).collect();
        s.extend((50..100).map(|t| (t as f64, 5e7)));
        assert!(memory_growth_per_hour(&s).unwrap().abs() < 1.0);
        let leak: Vec<(f64, f64)> = (0..100).map(|t| (t as f64, 1e3 * t as f64)).collect();
        let g = memory_growth_per_hour(&leak).unwrap();
        assert!((g - 3.6e6).abs() < 1.0, "{g}");
        assert_eq!(slope(&[(1.0, 1.0)]), None);
    }

    #[test]
    fn typha_growth_is_fitted_after_its_warm_up_only() {
        // 100 revisions a second from revision 5,000; RSS fills for the
        // first 10,000 revisions (100 s), then stays flat.
        let revisions: Vec<(f64, u64)> = (0..300).map(|t| (t as f64, 5_000 + 100 * t)).collect();
        let filling: Vec<(f64, f64)> = (0..300)
            .map(|t| (t as f64, 1e6 * (t.min(100) as f64)))
            .collect();
        let (g, seen) = growth_after_warmup(&filling, &revisions, 10_000, 20);
        assert!(g.unwrap().abs() < 1.0, "{g:?}");
        assert_eq!(seen, 29_900);
        // A leak goes on after the warm-up.
        let leak: Vec<(f64, f64)> = (0..300).map(|t| (t as f64, 1e3 * t as f64)).collect();
        let (g, _) = growth_after_warmup(&leak, &revisions, 10_000, 20);
        assert!((g.unwrap() - 3.6e6).abs() < 1.0, "{g:?}");
        // A life that ends inside its warm-up is not fitted.
        let short = &filling[..110];
        let (g, seen) = growth_after_warmup(short, &revisions, 10_000, 20);
        assert_eq!((g, seen), (None, 10_900));
    }
}
