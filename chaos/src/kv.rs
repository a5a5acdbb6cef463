//! The sequential specification of one key of Typha's resource API, for
//! the linearizability checker: conditional applies, gets and deletes with
//! the revisions Typha answers. Pure.
//!
//! Each write stores a value unique to it (the write's id), so a get names
//! the write it saw. Typha's semantics, as the state machine has them: a
//! key's current revision is 0 when it is absent; an expected revision
//! must equal it; a delete of an absent key succeeds and deletes nothing;
//! every change's revision is above every earlier change's.
//!
//! A write whose outcome is unknown and which took effect leaves the key
//! at a revision nobody saw; a later read that sees the write fixes it.

use std::collections::BTreeMap;

use crate::linearizability::{self, Model, Operation, Verdict};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Store write `write`, only if the key's revision is `expected`.
    Apply {
        write: u64,
        expected: Option<u64>,
    },
    Get,
    Delete {
        expected: Option<u64>,
    },
}

/// What it was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A write committed at this revision.
    Written(u64),
    /// A delete found nothing to delete.
    Absent,
    /// A get saw write `write`, stored at `revision`.
    Found { write: u64, revision: u64 },
    /// An expected revision did not match.
    Conflict,
    /// The write's answer never came.
    Unknown,
}

/// One key's value: the write it holds and its revision (`None`: it took
/// effect at a revision nobody saw), the highest revision the key is
/// known to have changed at, and the deletes that removed a write left
/// out of the search ([`Searched::left_out_before`]): for each, how many
/// such writes it could have removed, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeyState {
    current: Option<(u64, Option<u64>)>,
    last_change: u64,
    left_out_used: Vec<u32>,
}

/// Whether an expected revision matches: yes, no, or maybe (the current
/// revision is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Yes,
    No,
    Maybe,
}

impl KeyState {
    fn matches(&self, expected: Option<u64>) -> Match {
        let Some(expected) = expected else {
            return Match::Yes;
        };
        match self.current {
            None if expected == 0 => Match::Yes,
            None => Match::No,
            Some((_, Some(r))) if r == expected => Match::Yes,
            Some((_, Some(_))) => Match::No,
            Some((_, None)) if expected > self.last_change => Match::Maybe,
            Some((_, None)) => Match::No,
        }
    }

    /// This state with one more delete that removed a left-out write, when
    /// each such delete can have its own one: the `k`-th smallest of
    /// their counts must be at least `k` (Hall's condition, the sets of
    /// writes each could have removed being nested).
    fn with_left_out_used(&self, available: u32) -> Option<Vec<u32>> {
        let mut used = self.left_out_used.clone();
        let at = used.partition_point(|u| *u <= available);
        used.insert(at, available);
        used.iter()
            .enumerate()
            .all(|(k, n)| *n as usize > k)
            .then_some(used)
    }
}

/// An operation as the search sees it: what was asked, and how many of
/// the writes left out of the search (unknown outcome, never read) were
/// called before it returned. Such a write can only matter to a later
/// delete: taking effect and being deleted before anyone read it, it lets
/// an unconditional delete succeed on a key that is otherwise absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Searched {
    pub input: Input,
    pub left_out_before: u32,
}

/// The model of one key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Key;

impl Model for Key {
    type State = KeyState;
    type Input = Searched;
    type Output = Output;

    fn init(&self) -> KeyState {
        KeyState::default()
    }

    fn step(&self, s: &KeyState, searched: &Searched, output: &Output) -> Option<KeyState> {
        let m = |e| s.matches(e);
        match (&searched.input, output) {
            (Input::Apply { write, expected }, Output::Written(r)) => {
                (m(*expected) != Match::No && *r > s.last_change).then(|| KeyState {
                    current: Some((*write, Some(*r))),
                    last_change: *r,
                    ..s.clone()
                })
            }
            (Input::Apply { write, expected }, Output::Unknown) => {
                Some(if m(*expected) == Match::No {
                    s.clone()
                } else {
                    KeyState {
                        current: Some((*write, None)),
                        ..s.clone()
                    }
                })
            }
            (Input::Apply { expected, .. } | Input::Delete { expected }, Output::Conflict) => {
                (m(*expected) != Match::Yes).then(|| s.clone())
            }
            (Input::Delete { expected }, Output::Written(r)) if *r > s.last_change => {
                if s.current.is_some() {
                    (m(*expected) != Match::No).then(|| KeyState {
                        current: None,
                        last_change: *r,
                        ..s.clone()
                    })
                } else if expected.is_none() {
                    // Deleted a left-out write that had taken effect.
                    let used = s.with_left_out_used(searched.left_out_before)?;
                    Some(KeyState {
                        current: None,
                        last_change: *r,
                        left_out_used: used,
                    })
                } else {
                    None
                }
            }
            (Input::Delete { expected }, Output::Absent) => {
                (s.current.is_none() && m(*expected) == Match::Yes).then(|| s.clone())
            }
            (Input::Delete { expected }, Output::Unknown) => {
                Some(if s.current.is_some() && m(*expected) != Match::No {
                    KeyState {
                        current: None,
                        ..s.clone()
                    }
                } else {
                    s.clone()
                })
            }
            (Input::Get, Output::Absent) => s.current.is_none().then(|| s.clone()),
            (Input::Get, Output::Found { write, revision }) => match s.current {
                Some((w, Some(r))) if w == *write && r == *revision => Some(s.clone()),
                Some((w, None)) if w == *write && *revision > s.last_change => Some(KeyState {
                    current: Some((w, Some(*revision))),
                    last_change: *revision,
                    ..s.clone()
                }),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One recorded operation on a named key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub call: u64,
    pub ret: u64,
}

/// One key's operations, without what cannot change the verdict but
/// multiplies the search: a write of unknown outcome that no read ever
/// saw is left out, and so are the conflicts after the first such
/// write's call (it could explain them, and a conflict changes nothing).
/// Every write of unknown outcome kept stays in the search until its
/// end, so each one kept doubles the orders to try. What a left-out write
/// could still explain, a later unconditional delete that succeeded on a
/// key otherwise absent (the write took effect, and was deleted before
/// anyone read it), the model allows by counting them
/// ([`Searched::left_out_before`]).
fn pruned(ops: Vec<&Recorded>) -> Vec<(&Recorded, u32)> {
    let seen: std::collections::HashSet<u64> = ops
        .iter()
        .filter_map(|r| match r.output {
            Output::Found { write, .. } => Some(write),
            _ => None,
        })
        .collect();
    let unseen = |r: &Recorded| {
        matches!(r.input, Input::Apply { write, .. } if !seen.contains(&write))
            && r.output == Output::Unknown
    };
    let mut left_out: Vec<u64> = ops.iter().filter(|r| unseen(r)).map(|r| r.call).collect();
    left_out.sort_unstable();
    let first_unseen = left_out.first().copied().unwrap_or(u64::MAX);
    ops.into_iter()
        .filter(|r| !(unseen(r) || (r.output == Output::Conflict && r.call > first_unseen)))
        .map(|r| {
            let before = left_out.partition_point(|c| *c < r.ret);
            (r, u32::try_from(before).unwrap_or(u32::MAX))
        })
        .collect()
}

fn operation((r, left_out_before): (&Recorded, u32)) -> Operation<Searched, Output> {
    Operation {
        input: Searched {
            input: r.input.clone(),
            left_out_before,
        },
        output: r.output.clone(),
        call: r.call,
        ret: r.ret,
    }
}

/// The operations of `key` that the check searches, as recorded.
fn searched<'a>(history: &'a [Recorded], key: &str) -> Vec<(&'a Recorded, u32)> {
    pruned(history.iter().filter(|r| r.key == key).collect())
}

/// The verdict on each key's history (keys are independent objects, so
/// the whole history is linearizable when every key's is).
pub fn check_all(history: &[Recorded], budget_per_key: u64) -> BTreeMap<String, Verdict> {
    let mut raw: BTreeMap<&str, Vec<&Recorded>> = BTreeMap::new();
    for r in history {
        raw.entry(&r.key).or_default().push(r);
    }
    let by_key: BTreeMap<&str, Vec<Operation<Searched, Output>>> = raw
        .into_iter()
        .map(|(k, ops)| (k, pruned(ops).into_iter().map(operation).collect()))
        .collect();
    by_key
        .into_iter()
        .map(|(k, ops)| {
            (
                k.to_string(),
                linearizability::check(&Key, &ops, budget_per_key),
            )
        })
        .collect()
}

/// Why one key's history is not linearizable, for a person to read: the
/// minimal piece of what the check searched ([`crate::minimal`]), as
/// recorded, and the key's state it starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explained {
    pub key: String,
    /// The operations the check searched for this key (after leaving out
    /// unseen writes of unknown outcome and the conflicts after them).
    pub searched: usize,
    pub starts_from: String,
    pub operations: Vec<Recorded>,
}

/// The minimal non-linearizable piece of `key`'s history, or `None` when
/// it is linearizable (or the search ran out of `budget`).
pub fn explain(history: &[Recorded], key: &str, budget: u64) -> Option<Explained> {
    let kept = searched(history, key);
    let ops: Vec<Operation<Searched, Output>> = kept.iter().map(|r| operation(*r)).collect();
    // A read needs the write it saw.
    let writer: std::collections::HashMap<u64, usize> = kept
        .iter()
        .enumerate()
        .filter_map(|(i, (r, _))| match r.input {
            Input::Apply { write, .. } => Some((write, i)),
            _ => None,
        })
        .collect();
    let needs = |i: usize| match kept[i].0.output {
        Output::Found { write, .. } => writer.get(&write).copied().into_iter().collect(),
        _ => Vec::new(),
    };
    let piece = crate::minimal::minimal(&Key, &ops, &needs, budget)?;
    Some(Explained {
        key: key.to_string(),
        searched: kept.len(),
        starts_from: describe(&piece.initial),
        operations: piece.ops.iter().map(|i| kept[*i].0.clone()).collect(),
    })
}

/// The file [`write_explained`] writes for `key`.
pub fn explained_file(key: &str) -> String {
    format!("nonlinearizable-{key}.json")
}

/// Explains every key `verdicts` found not linearizable and writes each
/// piece into `dir` ([`explained_file`]); returns one line per key for
/// the report.
pub fn write_explained(
    history: &[Recorded],
    verdicts: &BTreeMap<String, Verdict>,
    budget: u64,
    dir: &std::path::Path,
) -> Result<Vec<String>, crate::ChaosError> {
    let mut lines = Vec::new();
    for (key, v) in verdicts {
        match v {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => lines.push(format!("{key}: search budget ran out")),
            Verdict::NotLinearizable => match explain(history, key, budget) {
                None => lines.push(format!("{key}: not linearizable (no piece found)")),
                Some(e) => {
                    let path = dir.join(explained_file(key));
                    let json = serde_json::to_string_pretty(&e)
                        .map_err(|err| crate::ChaosError::Setup(format!("{key}: {err}")))?;
                    std::fs::create_dir_all(dir).map_err(|err| crate::ChaosError::io(dir, err))?;
                    std::fs::write(&path, json).map_err(|err| crate::ChaosError::io(&path, err))?;
                    lines.push(format!(
                        "{key}: not linearizable; a minimal piece of {} of its {} searched operations, from {}, in {}",
                        e.operations.len(),
                        e.searched,
                        e.starts_from,
                        explained_file(key)
                    ));
                }
            },
        }
    }
    Ok(lines)
}

/// A key's state in words.
pub fn describe(s: &KeyState) -> String {
    let now = match s.current {
        None => "absent".to_string(),
        Some((w, Some(r))) => format!("w{w} @{r}"),
        Some((w, None)) => format!("w{w} at a revision nobody saw"),
    };
    format!("{now}, last change @{}", s.last_change)
}

impl serde::Serialize for Input {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&match self {
            Input::Apply { write, expected } => format!("apply w{write} if {expected:?}"),
            Input::Get => "get".into(),
            Input::Delete { expected } => format!("delete if {expected:?}"),
        })
    }
}

impl serde::Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&match self {
            Output::Written(r) => format!("ok @{r}"),
            Output::Absent => "absent".into(),
            Output::Found { write, revision } => format!("w{write} @{revision}"),
            Output::Conflict => "conflict".into(),
            Output::Unknown => "unknown".into(),
        })
    }
}

/// Parses what [`Input`]'s and [`Output`]'s `Serialize` wrote.
fn revision_option(s: &str) -> Option<Option<u64>> {
    match s {
        "None" => Some(None),
        _ => s
            .strip_prefix("Some(")?
            .strip_suffix(')')?
            .parse()
            .ok()
            .map(Some),
    }
}

impl std::str::FromStr for Input {
    type Err = String;
    fn from_str(s: &str) -> Result<Input, String> {
        let bad = || format!("{s:?} is not an operation (apply wN if E, get, delete if E)");
        if s == "get" {
            return Ok(Input::Get);
        }
        if let Some(e) = s.strip_prefix("delete if ") {
            return Ok(Input::Delete {
                expected: revision_option(e).ok_or_else(bad)?,
            });
        }
        let (write, expected) = s
            .strip_prefix("apply w")
            .and_then(|rest| rest.split_once(" if "))
            .ok_or_else(bad)?;
        Ok(Input::Apply {
            write: write.parse().map_err(|_| bad())?,
            expected: revision_option(expected).ok_or_else(bad)?,
        })
    }
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Output, String> {
        let bad = || format!("{s:?} is not an answer (ok @R, absent, wN @R, conflict, unknown)");
        let number = |t: &str| t.parse::<u64>().map_err(|_| bad());
        match s {
            "absent" => Ok(Output::Absent),
            "conflict" => Ok(Output::Conflict),
            "unknown" => Ok(Output::Unknown),
            _ => {
                if let Some(r) = s.strip_prefix("ok @") {
                    return Ok(Output::Written(number(r)?));
                }
                let (w, r) = s
                    .strip_prefix('w')
                    .and_then(|rest| rest.split_once(" @"))
                    .ok_or_else(bad)?;
                Ok(Output::Found {
                    write: number(w)?,
                    revision: number(r)?,
                })
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Input, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Output {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Output, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::UNKNOWN_RETURN;

    fn rec(key: &str, input: Input, output: Output, call: u64, ret: u64) -> Recorded {
        Recorded {
            key: key.into(),
            input,
            output,
            call,
            ret,
        }
    }

    fn apply(write: u64, expected: Option<u64>) -> Input {
        Input::Apply { write, expected }
    }

    fn verdict(h: &[Recorded]) -> Verdict {
        let all = check_all(h, 100_000);
        if all.values().any(|v| *v == Verdict::NotLinearizable) {
            Verdict::NotLinearizable
        } else if all.values().any(|v| *v == Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else {
            Verdict::Linearizable
        }
    }

    #[test]
    fn a_typical_history_is_linearizable() {
        let h = [
            rec("a", apply(1, Some(0)), Output::Written(5), 0, 1),
            rec(
                "a",
                Input::Get,
                Output::Found {
                    write: 1,
                    revision: 5,
                },
                2,
                3,
            ),
            rec("a", apply(2, Some(5)), Output::Written(9), 4, 7),
            // Raced the write above with the same expectation.
            rec("a", apply(3, Some(5)), Output::Conflict, 5, 8),
            rec("b", Input::Delete { expected: None }, Output::Absent, 0, 2),
            rec(
                "a",
                Input::Delete { expected: Some(9) },
                Output::Written(12),
                9,
                10,
            ),
            rec("a", Input::Get, Output::Absent, 11, 12),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_lost_acknowledged_write_is_rejected() {
        let h = [
            rec("a", apply(1, None), Output::Written(5), 0, 1),
            rec("a", apply(2, None), Output::Written(6), 2, 3),
            // A replica that missed the second write answered this read.
            rec(
                "a",
                Input::Get,
                Output::Found {
                    write: 1,
                    revision: 5,
                },
                4,
                5,
            ),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn two_conditional_writes_cannot_both_win() {
        let h = [
            rec("a", apply(1, None), Output::Written(5), 0, 1),
            rec("a", apply(2, Some(5)), Output::Written(7), 2, 5),
            rec("a", apply(3, Some(5)), Output::Written(8), 3, 6),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn revisions_only_grow() {
        let h = [
            rec("a", apply(1, None), Output::Written(9), 0, 1),
            rec("a", apply(2, None), Output::Written(4), 2, 3),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_writes_are_seen_or_not_but_consistently() {
        let seen = [
            rec("a", apply(1, None), Output::Unknown, 0, UNKNOWN_RETURN),
            rec(
                "a",
                Input::Get,
                Output::Found {
                    write: 1,
                    revision: 4,
                },
                3,
                4,
            ),
            rec("a", apply(2, Some(4)), Output::Written(6), 5, 6),
        ];
        assert_eq!(verdict(&seen), Verdict::Linearizable);
        let lost = [
            rec("a", apply(1, None), Output::Unknown, 0, UNKNOWN_RETURN),
            rec("a", Input::Get, Output::Absent, 3, 4),
            rec("a", Input::Delete { expected: None }, Output::Absent, 5, 6),
        ];
        assert_eq!(verdict(&lost), Verdict::Linearizable);
        let flapping = [
            rec("a", apply(1, None), Output::Unknown, 0, UNKNOWN_RETURN),
            rec(
                "a",
                Input::Get,
                Output::Found {
                    write: 1,
                    revision: 4,
                },
                3,
                4,
            ),
            rec("a", Input::Get, Output::Absent, 5, 6),
        ];
        assert_eq!(verdict(&flapping), Verdict::NotLinearizable);
    }

    #[test]
    fn unseen_unknown_writes_are_pruned_but_cannot_hide_a_stale_read() {
        let mut h: Vec<Recorded> = (0..40)
            .map(|i| {
                rec(
                    "a",
                    apply(100 + i, None),
                    Output::Unknown,
                    i,
                    UNKNOWN_RETURN,
                )
            })
            .collect();
        h.push(rec("a", apply(1, None), Output::Written(5), 50, 51));
        h.push(rec("a", apply(2, Some(3)), Output::Conflict, 52, 53));
        h.push(rec(
            "a",
            Input::Get,
            Output::Found {
                write: 1,
                revision: 5,
            },
            54,
            55,
        ));
        assert_eq!(verdict(&h), Verdict::Linearizable);
        h.push(rec("a", apply(3, None), Output::Written(6), 56, 57));
        h.push(rec(
            "a",
            Input::Get,
            Output::Found {
                write: 1,
                revision: 5,
            },
            58,
            59,
        ));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn a_conflict_needs_a_mismatch() {
        let h = [
            rec("a", apply(1, None), Output::Written(5), 0, 1),
            rec("a", apply(2, Some(5)), Output::Conflict, 2, 3),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    /// A write and its delete, then a write of unknown outcome (revision 7
    /// had it taken effect) and a second delete that answered: how the
    /// histories of the test below start.
    fn unknown_write_then_delete() -> Vec<Recorded> {
        vec![
            rec("a", apply(1, None), Output::Written(5), 0, 1),
            rec(
                "a",
                Input::Delete { expected: None },
                Output::Written(6),
                2,
                3,
            ),
            rec("a", apply(2, None), Output::Unknown, 4, UNKNOWN_RETURN),
            rec(
                "a",
                Input::Delete { expected: None },
                Output::Written(8),
                5,
                6,
            ),
        ]
    }

    #[test]
    fn a_left_out_unknown_write_can_explain_a_delete_of_an_absent_key() {
        // The unknown write took effect at revision 7 and the delete took
        // it away before anyone read the key: linearizable. Left out of
        // the search (nobody read it), it must still explain the delete.
        let mut deleted = unknown_write_then_delete();
        deleted.push(rec("a", Input::Get, Output::Absent, 7, 8));
        assert_eq!(verdict(&deleted), Verdict::Linearizable);
        // One such write explains one delete, not two.
        let mut twice = unknown_write_then_delete();
        twice.push(rec(
            "a",
            Input::Delete { expected: None },
            Output::Written(9),
            7,
            8,
        ));
        assert_eq!(verdict(&twice), Verdict::NotLinearizable);
        // Nor a delete that returned before the write was called.
        let before = [
            rec(
                "a",
                Input::Delete { expected: None },
                Output::Written(8),
                0,
                1,
            ),
            rec("a", apply(2, None), Output::Unknown, 4, UNKNOWN_RETURN),
        ];
        assert_eq!(verdict(&before), Verdict::NotLinearizable);
        // Nor a conditional delete (nobody saw the write's revision).
        let conditional = [
            rec("a", apply(2, None), Output::Unknown, 0, UNKNOWN_RETURN),
            rec(
                "a",
                Input::Delete { expected: Some(4) },
                Output::Written(8),
                5,
                6,
            ),
        ];
        assert_eq!(verdict(&conditional), Verdict::NotLinearizable);
        // Two such writes, two deletes, whichever order they are placed in.
        let two = [
            rec("a", apply(2, None), Output::Unknown, 0, UNKNOWN_RETURN),
            rec(
                "a",
                Input::Delete { expected: None },
                Output::Written(8),
                1,
                10,
            ),
            rec("a", apply(3, None), Output::Unknown, 2, UNKNOWN_RETURN),
            rec(
                "a",
                Input::Delete { expected: None },
                Output::Written(6),
                3,
                4,
            ),
        ];
        assert_eq!(verdict(&two), Verdict::Linearizable);
    }

    #[test]
    fn a_piece_of_a_failing_key_is_the_stale_read_and_the_state_it_missed() {
        let mut h: Vec<Recorded> = (0..200)
            .map(|i| {
                let t = 2 * i;
                rec("a", apply(i, None), Output::Written(10 + i), t, t + 1)
            })
            .collect();
        h.push(rec(
            "a",
            Input::Get,
            Output::Found {
                write: 150,
                revision: 160,
            },
            500,
            501,
        ));
        let e = explain(&h, "a", 100_000).expect("not linearizable");
        assert_eq!(e.searched, 201);
        // The read alone, from the state a few writes before the end: a
        // later write held the key.
        assert_eq!(e.operations.len(), 1, "{e:?}");
        assert_eq!(e.operations[0].input, Input::Get);
        assert_eq!(e.starts_from, "w191 @201, last change @201");
        assert!(explain(&h[..200], "a", 100_000).is_none());
    }

    #[test]
    fn recorded_operations_read_back_as_written() {
        let h = vec![
            rec("a", apply(3, Some(7)), Output::Written(9), 0, 1),
            rec("a", apply(4, None), Output::Unknown, 2, UNKNOWN_RETURN),
            rec(
                "a",
                Input::Get,
                Output::Found {
                    write: 3,
                    revision: 9,
                },
                3,
                4,
            ),
            rec("a", Input::Delete { expected: None }, Output::Absent, 5, 6),
            rec(
                "a",
                Input::Delete { expected: Some(9) },
                Output::Conflict,
                7,
                8,
            ),
        ];
        let json = serde_json::to_string(&h).unwrap();
        let back: Vec<Recorded> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert!("apply w1 if Maybe".parse::<Input>().is_err());
        assert!("ok @x".parse::<Output>().is_err());
    }
}
