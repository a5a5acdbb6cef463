//! The smallest piece of a non-linearizable history that shows why, for a
//! person to read. Pure: no I/O.
//!
//! A history of a hundred thousand operations that no order explains says
//! nothing by itself. [`minimal`] takes the search's deepest partial
//! linearization, starts a window some operations before the point where
//! it got stuck (from the state the model was in there), adds every
//! operation not yet linearized that was called before the stuck one
//! returned, and widens the window until it fails on its own. It then
//! drops operations, in halves, quarters and down to one at a time, as
//! long as what is left still fails. "Fails" means: not linearizable, and
//! linearizable without the stuck operation. The second half keeps the
//! piece about the stuck operation: dropping the write a read saw would
//! otherwise leave a read of a value nobody wrote, which fails for a
//! reason the real history does not have. The result is 1-minimal under
//! that rule. The starting state is one the search reached, so the piece
//! explains the verdict under that prefix; the verdict itself is the
//! whole history's. For the same reason an operation another kept one
//! needs (`needs`: for a key, the write a read saw) is never dropped.

use crate::linearizability::{self, Model, Operation, UNKNOWN_RETURN, Verdict};

/// A non-linearizable piece of a history: the model's state it starts
/// from and its operations (indices into the history, in call order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<S> {
    pub initial: S,
    pub ops: Vec<usize>,
}

/// How many linearized operations before the stuck point the first
/// window starts; each try goes four times further back.
const FIRST_WINDOW: usize = 8;

/// The minimal non-linearizable piece of `history`, or `None` when it is
/// linearizable or a search ran out of `budget`.
pub fn minimal<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    needs: &dyn Fn(usize) -> Vec<usize>,
    budget: u64,
) -> Option<Piece<M::State>>
where
    M::Input: Clone,
    M::Output: Clone,
{
    let deepest = linearizability::deepest(model, model.init(), history, budget)?;
    let depth = deepest.order.len();
    // Operations not placed by the deepest partial linearization that
    // were called before the stuck operation returned (all of them when
    // only unknown returns are left).
    let bound = deepest
        .stuck
        .map(|op| history[op].ret)
        .filter(|r| *r != UNKNOWN_RETURN)
        .unwrap_or(u64::MAX);
    let placed: std::collections::HashSet<usize> =
        deepest.order.iter().map(|(op, _)| *op).collect();
    let pending: Vec<usize> = (0..history.len())
        .filter(|i| !placed.contains(i) && history[*i].call <= bound)
        .collect();
    let mut back = FIRST_WINDOW;
    let (initial, ops) = loop {
        let start = depth.saturating_sub(back);
        let initial = match start {
            0 => model.init(),
            s => deepest.order[s - 1].1.clone(),
        };
        let mut ops: Vec<usize> = deepest.order[start..].iter().map(|(op, _)| *op).collect();
        ops.extend(&pending);
        if fails(model, &initial, history, &ops, deepest.stuck, budget) {
            break (initial, ops);
        }
        if start == 0 {
            // No window fails on its own: the whole history, shrunk
            // without the stuck operation's rule.
            let all: Vec<usize> = (0..history.len()).collect();
            let ops = shrink(model, &model.init(), history, all, None, needs, budget);
            return Some(sorted(history, model.init(), ops));
        }
        back = back.saturating_mul(4);
    };
    let ops = shrink(model, &initial, history, ops, deepest.stuck, needs, budget);
    Some(sorted(history, initial, ops))
}

fn sorted<S, I, O>(history: &[Operation<I, O>], initial: S, mut ops: Vec<usize>) -> Piece<S> {
    ops.sort_by_key(|i| (history[*i].call, *i));
    Piece { initial, ops }
}

/// Whether `ops` fail from `initial`: not linearizable, and (when the
/// stuck operation is among them) linearizable without it.
fn fails<M: Model>(
    model: &M,
    initial: &M::State,
    history: &[Operation<M::Input, M::Output>],
    ops: &[usize],
    stuck: Option<usize>,
    budget: u64,
) -> bool
where
    M::Input: Clone,
    M::Output: Clone,
{
    if verdict(model, initial, history, ops, budget) != Verdict::NotLinearizable {
        return false;
    }
    match stuck {
        Some(s) if ops.contains(&s) => {
            let without: Vec<usize> = ops.iter().copied().filter(|i| *i != s).collect();
            verdict(model, initial, history, &without, budget) == Verdict::Linearizable
        }
        _ => true,
    }
}

/// The verdict on the operations `ops` of `history`, from `initial`.
fn verdict<M: Model>(
    model: &M,
    initial: &M::State,
    history: &[Operation<M::Input, M::Output>],
    ops: &[usize],
    budget: u64,
) -> Verdict
where
    M::Input: Clone,
    M::Output: Clone,
{
    let sub: Vec<Operation<M::Input, M::Output>> =
        ops.iter().map(|i| history[*i].clone()).collect();
    linearizability::check_from(model, initial.clone(), &sub, budget)
}

/// Drops chunks of `ops` (halves, then quarters, down to single
/// operations) while what is left still [`fails`].
fn shrink<M: Model>(
    model: &M,
    initial: &M::State,
    history: &[Operation<M::Input, M::Output>],
    mut ops: Vec<usize>,
    stuck: Option<usize>,
    needs: &dyn Fn(usize) -> Vec<usize>,
    budget: u64,
) -> Vec<usize>
where
    M::Input: Clone,
    M::Output: Clone,
{
    let window: std::collections::HashSet<usize> = ops.iter().copied().collect();
    // Whether every operation of `kept` has what it needs (of the window:
    // what came before it is in the starting state).
    let closed = |kept: &[usize]| {
        let set: std::collections::HashSet<usize> = kept.iter().copied().collect();
        kept.iter()
            .flat_map(|i| needs(*i))
            .all(|n| !window.contains(&n) || set.contains(&n))
    };
    let mut chunk = ops.len().div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < ops.len() {
            let end = (at + chunk).min(ops.len());
            let without: Vec<usize> = ops[..at].iter().chain(&ops[end..]).copied().collect();
            if !without.is_empty()
                && closed(&without)
                && fails(model, initial, history, &without, stuck, budget)
            {
                ops = without;
            } else {
                at = end;
            }
        }
        if chunk == 1 {
            return ops;
        }
        chunk = chunk.div_ceil(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::register::{In, Register, op};

    #[test]
    fn a_stale_read_deep_in_a_long_history_is_cut_down_to_its_cause() {
        // 300 sequential write-then-read pairs, then a read of a value
        // overwritten long ago, among a few concurrent writes.
        let mut h = Vec::new();
        for i in 0..300u32 {
            let t = u64::from(i) * 4;
            h.push(op(In::Write(i + 1), 0, t, t + 1));
            h.push(op(In::Read, i + 1, t + 2, t + 3));
        }
        h.push(op(In::Write(1000), 0, 1200, 1210));
        h.push(op(In::Read, 7, 1201, 1202));
        h.push(op(In::Write(1001), 0, 1203, 1211));
        let piece = minimal(&Register, &h, &|_| Vec::new(), 1_000_000).expect("not linearizable");
        // The stale read alone, from a state the search reached late in
        // the sequential part, shows it; nothing else is needed.
        assert_eq!(piece.ops, vec![601]);
        assert!(piece.initial > 250, "{piece:?}");
        let sub: Vec<_> = piece.ops.iter().map(|i| h[*i].clone()).collect();
        assert_eq!(
            linearizability::check_from(&Register, piece.initial, &sub, 1000),
            Verdict::NotLinearizable
        );
    }

    #[test]
    fn a_piece_keeps_what_makes_it_fail_and_nothing_more() {
        // Once a read saw 1, a later read may not see 0 again: both reads
        // and the write are needed, the unrelated later operations not.
        let h = [
            op(In::Write(1), 0, 0, 10),
            op(In::Read, 1, 1, 2),
            op(In::Read, 0, 3, 4),
            op(In::Write(5), 0, 20, 21),
            op(In::Read, 5, 22, 23),
        ];
        let piece = minimal(&Register, &h, &|_| Vec::new(), 10_000).expect("not linearizable");
        assert_eq!(piece.initial, 0);
        assert_eq!(piece.ops, vec![0, 1, 2]);
    }

    #[test]
    fn a_linearizable_history_has_no_piece() {
        let h = [op(In::Write(1), 0, 0, 1), op(In::Read, 1, 2, 3)];
        assert_eq!(minimal(&Register, &h, &|_| Vec::new(), 10_000), None);
    }
}
