//! A linearizability checker: the algorithm porcupine uses (Wing and
//! Gong's search over the history's call and return events, with Lowe's
//! memoization of (linearized set, state) pairs), for any sequential
//! [`Model`] whose step is deterministic. Pure: no I/O, no clock.
//!
//! A history is a list of [`Operation`]s, each with the logical times of
//! its call and its return. An operation whose outcome is unknown (a
//! write whose answer never came) returns at [`UNKNOWN_RETURN`]: it may be
//! placed anywhere after its call, and placed after everything else it is
//! indistinguishable from never having happened.
//!
//! The search is exponential in the worst case; [`check`] gives up after a
//! step budget and says so ([`Verdict::Inconclusive`]) rather than guess.

use std::collections::HashSet;
use std::hash::Hash;

#[cfg(test)]
pub(crate) mod register;

/// The return time of an operation whose outcome is unknown.
pub const UNKNOWN_RETURN: u64 = u64::MAX;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;

    fn init(&self) -> Self::State;

    /// The state after `input` answered with `output` in `state`, or
    /// `None` when the sequential specification cannot answer so.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    pub input: I,
    pub output: O,
    /// Logical time of the call.
    pub call: u64,
    /// Logical time of the return ([`UNKNOWN_RETURN`] when unknown).
    pub ret: u64,
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations agrees with both their real-time order
    /// and the model.
    NotLinearizable,
    /// The step budget ran out first.
    Inconclusive,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    /// Index of the operation.
    op: usize,
    is_call: bool,
    /// For a call, the index (in the list) of its return.
    matching: usize,
    prev: usize,
    next: usize,
}

/// The doubly linked list of events, with a sentinel head at index 0.
#[derive(Debug)]
struct Events {
    list: Vec<Event>,
}

const NIL: usize = usize::MAX;

impl Events {
    fn new<I, O>(history: &[Operation<I, O>]) -> Events {
        // (time, is_return, op): at equal times calls come first, which
        // only makes more orders possible.
        let mut times: Vec<(u64, bool, usize)> = history
            .iter()
            .enumerate()
            .flat_map(|(i, op)| [(op.call, false, i), (op.ret.max(op.call), true, i)])
            .collect();
        times.sort_unstable();
        let mut list = vec![Event {
            op: NIL,
            is_call: false,
            matching: NIL,
            prev: NIL,
            next: NIL,
        }];
        let mut return_at = vec![NIL; history.len()];
        for (pos, &(_, is_return, op)) in times.iter().enumerate() {
            let index = pos + 1;
            if is_return {
                return_at[op] = index;
            }
            list.push(Event {
                op,
                is_call: !is_return,
                matching: NIL,
                prev: index - 1,
                next: if pos + 1 < times.len() {
                    index + 1
                } else {
                    NIL
                },
            });
        }
        list[0].next = if times.is_empty() { NIL } else { 1 };
        for e in list.iter_mut().skip(1) {
            if e.is_call {
                e.matching = return_at[e.op];
            }
        }
        Events { list }
    }

    fn unlink(&mut self, i: usize) {
        let Event { prev, next, .. } = self.list[i];
        self.list[prev].next = next;
        if next != NIL {
            self.list[next].prev = prev;
        }
    }

    fn relink(&mut self, i: usize) {
        let Event { prev, next, .. } = self.list[i];
        self.list[prev].next = i;
        if next != NIL {
            self.list[next].prev = i;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        let ret = self.list[call].matching;
        self.unlink(call);
        self.unlink(ret);
    }

    /// Puts them back (in the reverse order of [`Self::lift`]).
    fn unlift(&mut self, call: usize) {
        let ret = self.list[call].matching;
        self.relink(ret);
        self.relink(call);
    }
}

/// A set of operation indices, as bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one history against `model`, taking at most `budget` steps.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Verdict {
    check_from(model, model.init(), history, budget)
}

/// [`check`], starting from `init` rather than the model's initial state.
pub fn check_from<M: Model>(
    model: &M,
    init: M::State,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Verdict {
    search(model, init, history, budget, None).verdict
}

/// How far a search that found no order got: the operations of its
/// deepest partial linearization, in their order, each with the state
/// after it, and the operation it could not place next (the first whose
/// return came before it could be linearized; `None` when every
/// remaining operation's return is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deepest<S> {
    pub order: Vec<(usize, S)>,
    pub stuck: Option<usize>,
}

/// The deepest partial linearization of a history that is not
/// linearizable from `init` (`None` when it is, or the budget ran out).
/// The search is deterministic, so it runs twice: once to learn the
/// depth, once to stop there.
pub fn deepest<M: Model>(
    model: &M,
    init: M::State,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Option<Deepest<M::State>> {
    let first = search(model, init.clone(), history, budget, None);
    if first.verdict != Verdict::NotLinearizable {
        return None;
    }
    search(model, init, history, budget, Some(first.max_depth)).deepest
}

struct Outcome<S> {
    verdict: Verdict,
    max_depth: usize,
    deepest: Option<Deepest<S>>,
}

/// Wing and Gong's search with Lowe's memoization; with `stop_at`, it
/// stops the first time it has linearized that many operations and
/// describes where it stands.
fn search<M: Model>(
    model: &M,
    init: M::State,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
    stop_at: Option<usize>,
) -> Outcome<M::State> {
    let mut events = Events::new(history);
    let mut state = init;
    let mut linearized = Bits::new(history.len());
    let mut cache: HashSet<(Bits, M::State)> = HashSet::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    let mut entry = events.list[0].next;
    let mut steps = 0u64;
    let mut max_depth = 0;
    let outcome = |verdict, max_depth| Outcome {
        verdict,
        max_depth,
        deepest: None,
    };
    if stop_at == Some(0) {
        return Outcome {
            verdict: Verdict::NotLinearizable,
            max_depth,
            deepest: Some(Deepest {
                order: Vec::new(),
                stuck: first_return(&events),
            }),
        };
    }
    while events.list[0].next != NIL {
        steps += 1;
        if steps > budget {
            return outcome(Verdict::Inconclusive, max_depth);
        }
        if entry == NIL {
            // Every remaining call was tried: back up.
            let Some((call, previous)) = calls.pop() else {
                return outcome(Verdict::NotLinearizable, max_depth);
            };
            state = previous;
            linearized.clear(events.list[call].op);
            events.unlift(call);
            entry = events.list[call].next;
            continue;
        }
        let e = events.list[entry];
        if e.is_call {
            let op = &history[e.op];
            if let Some(next) = model.step(&state, &op.input, &op.output) {
                let mut with = linearized.clone();
                with.set(e.op);
                if cache.insert((with.clone(), next.clone())) {
                    calls.push((entry, std::mem::replace(&mut state, next)));
                    linearized = with;
                    events.lift(entry);
                    entry = events.list[0].next;
                    max_depth = max_depth.max(calls.len());
                    if stop_at == Some(calls.len()) {
                        return Outcome {
                            verdict: Verdict::NotLinearizable,
                            max_depth,
                            deepest: Some(Deepest {
                                order: order_of(&events, &calls, &state),
                                stuck: first_return(&events),
                            }),
                        };
                    }
                    continue;
                }
            }
            entry = e.next;
        } else {
            // A return whose call is not linearized yet: this order fails.
            let Some((call, previous)) = calls.pop() else {
                return outcome(Verdict::NotLinearizable, max_depth);
            };
            state = previous;
            linearized.clear(events.list[call].op);
            events.unlift(call);
            entry = events.list[call].next;
        }
    }
    outcome(Verdict::Linearizable, max_depth)
}

/// The linearized operations in order, each with the state after it.
fn order_of<S: Clone>(events: &Events, calls: &[(usize, S)], state: &S) -> Vec<(usize, S)> {
    calls
        .iter()
        .enumerate()
        .map(|(i, (call, _))| {
            let after = calls
                .get(i + 1)
                .map_or(state, |(_, before_next)| before_next);
            (events.list[*call].op, after.clone())
        })
        .collect()
}

/// The operation of the first return event still in the list (a known
/// return: unknown ones sort last and are returns too, so any return).
fn first_return(events: &Events) -> Option<usize> {
    let mut i = events.list[0].next;
    while i != NIL {
        let e = events.list[i];
        if !e.is_call {
            return Some(e.op);
        }
        i = e.next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::register::{In, Register, op};
    use super::*;

    #[test]
    fn sequential_and_concurrent_histories_that_have_an_order_pass() {
        let h = [
            op(In::Write(1), 0, 0, 1),
            op(In::Read, 1, 2, 3),
            op(In::Write(2), 0, 4, 7),
            // Concurrent with the write: either value.
            op(In::Read, 1, 5, 6),
            op(In::Read, 2, 8, 9),
        ];
        assert_eq!(check(&Register, &h, 10_000), Verdict::Linearizable);
        assert_eq!(check(&Register, &[], 10), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_rejected() {
        let h = [
            op(In::Write(1), 0, 0, 1),
            op(In::Write(2), 0, 2, 3),
            op(In::Read, 1, 4, 5),
        ];
        assert_eq!(check(&Register, &h, 10_000), Verdict::NotLinearizable);
    }

    #[test]
    fn reads_may_not_go_back_in_time() {
        // The write is concurrent with both reads, but once one read saw
        // the new value a later read may not see the old one.
        let h = [
            op(In::Write(1), 0, 0, 10),
            op(In::Read, 1, 1, 2),
            op(In::Read, 0, 3, 4),
        ];
        assert_eq!(check(&Register, &h, 10_000), Verdict::NotLinearizable);
    }

    #[test]
    fn an_unknown_outcome_may_or_may_not_have_happened() {
        let happened = [
            op(In::Write(7), 0, 0, UNKNOWN_RETURN),
            op(In::Read, 7, 5, 6),
        ];
        assert_eq!(check(&Register, &happened, 10_000), Verdict::Linearizable);
        let did_not = [
            op(In::Write(7), 0, 0, UNKNOWN_RETURN),
            op(In::Read, 0, 5, 6),
        ];
        assert_eq!(check(&Register, &did_not, 10_000), Verdict::Linearizable);
        // But not both ways.
        let both = [
            op(In::Write(7), 0, 0, UNKNOWN_RETURN),
            op(In::Read, 7, 5, 6),
            op(In::Read, 0, 7, 8),
        ];
        assert_eq!(check(&Register, &both, 10_000), Verdict::NotLinearizable);
    }

    #[test]
    fn many_concurrent_writes_stay_within_the_budget() {
        let mut h: Vec<_> = (0..12)
            .map(|i| op(In::Write(i), 0, i as u64, 100))
            .collect();
        h.push(op(In::Read, 5, 101, 102));
        assert_eq!(check(&Register, &h, 1_000_000), Verdict::Linearizable);
        h.push(op(In::Read, 99, 103, 104));
        assert_eq!(check(&Register, &h, 1_000_000), Verdict::NotLinearizable);
    }

    #[test]
    fn the_budget_makes_a_hard_history_inconclusive() {
        let mut h: Vec<_> = (0..12)
            .map(|i| op(In::Write(i), 0, i as u64, 100))
            .collect();
        h.push(op(In::Read, 99, 101, 102));
        assert_eq!(check(&Register, &h, 50), Verdict::Inconclusive);
    }
}
