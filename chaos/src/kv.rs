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
/// effect at a revision nobody saw), and the highest revision the key is
/// known to have changed at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeyState {
    current: Option<(u64, Option<u64>)>,
    last_change: u64,
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
}

/// The model of one key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Key;

impl Model for Key {
    type State = KeyState;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> KeyState {
        KeyState::default()
    }

    fn step(&self, s: &KeyState, input: &Input, output: &Output) -> Option<KeyState> {
        let m = |e| s.matches(e);
        match (input, output) {
            (Input::Apply { write, expected }, Output::Written(r)) => {
                (m(*expected) != Match::No && *r > s.last_change).then_some(KeyState {
                    current: Some((*write, Some(*r))),
                    last_change: *r,
                })
            }
            (Input::Apply { write, expected }, Output::Unknown) => {
                Some(if m(*expected) == Match::No {
                    s.clone()
                } else {
                    KeyState {
                        current: Some((*write, None)),
                        last_change: s.last_change,
                    }
                })
            }
            (Input::Apply { expected, .. } | Input::Delete { expected }, Output::Conflict) => {
                (m(*expected) != Match::Yes).then(|| s.clone())
            }
            (Input::Delete { expected }, Output::Written(r)) => (s.current.is_some()
                && m(*expected) != Match::No
                && *r > s.last_change)
                .then_some(KeyState {
                    current: None,
                    last_change: *r,
                }),
            (Input::Delete { expected }, Output::Absent) => {
                (s.current.is_none() && m(*expected) == Match::Yes).then(|| s.clone())
            }
            (Input::Delete { expected }, Output::Unknown) => {
                Some(if s.current.is_some() && m(*expected) != Match::No {
                    KeyState {
                        current: None,
                        last_change: s.last_change,
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
                }),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One recorded operation on a named key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub call: u64,
    pub ret: u64,
}

/// One key's operations, without what cannot change the verdict but
/// multiplies the search: a write of unknown outcome that no read ever
/// saw may be taken as never having happened, except that it could
/// explain a conflict after its call, so those conflicts (which change
/// nothing) go too. Every write of unknown outcome stays in the search
/// until its end, so each one kept doubles the orders to try.
fn pruned(ops: Vec<&Recorded>) -> Vec<Operation<Input, Output>> {
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
    let first_unseen = ops
        .iter()
        .filter(|r| unseen(r))
        .map(|r| r.call)
        .min()
        .unwrap_or(u64::MAX);
    ops.into_iter()
        .filter(|r| !(unseen(r) || (r.output == Output::Conflict && r.call > first_unseen)))
        .map(|r| Operation {
            input: r.input.clone(),
            output: r.output.clone(),
            call: r.call,
            ret: r.ret,
        })
        .collect()
}

/// The verdict on each key's history (keys are independent objects, so
/// the whole history is linearizable when every key's is).
pub fn check_all(history: &[Recorded], budget_per_key: u64) -> BTreeMap<String, Verdict> {
    let mut raw: BTreeMap<&str, Vec<&Recorded>> = BTreeMap::new();
    for r in history {
        raw.entry(&r.key).or_default().push(r);
    }
    let by_key: BTreeMap<&str, Vec<Operation<Input, Output>>> =
        raw.into_iter().map(|(k, ops)| (k, pruned(ops))).collect();
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
}
