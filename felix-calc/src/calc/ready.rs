//! The graph's raft-rs shape: updates in, the next batch out, committed
//! once the dataplane holds it, the whole state for one that does not.

use manul_dataplane_api as dp;

use super::{CalcGraph, Update};

/// A batch for the dataplane, from [`CalcGraph::ready`] or
/// [`CalcGraph::resync`]; pass it to [`CalcGraph::advance`] once the
/// dataplane holds it.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Ready {
    /// The operations, in the contract's order (the graph never emits
    /// `InSync`; a caller that knows the state is complete appends it).
    pub ops: Vec<dp::Operation>,
    /// The emitted batch this one applies on top of; None for the whole
    /// state.
    base: Option<u64>,
    /// The emitted batch the dataplane is at once it holds this one.
    number: u64,
}

impl Ready {
    /// Whether this is the whole state rather than a change.
    pub fn is_whole(&self) -> bool {
        self.base.is_none()
    }
}

impl CalcGraph {
    /// Takes one update in. Nothing is computed until [`Self::ready`].
    pub fn update(&mut self, u: Update) {
        self.ingest(u);
    }

    /// Applies a batch of updates and commits the operations it returns,
    /// in order: [`Self::update`] each, [`Self::ready`], [`Self::advance`].
    /// For callers whose dataplane takes every batch.
    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> Vec<dp::Operation> {
        for u in updates {
            self.update(u);
        }
        let ready = self.ready();
        self.advance(&ready);
        ready.ops
    }

    /// The next batch for the dataplane: the ordered operations that bring
    /// it from what the graph emitted last to what the updates taken in
    /// since require. The graph counts it as emitted at once (the next
    /// batch is diffed against it), but as held by the dataplane only once
    /// it is passed to [`Self::advance`].
    pub fn ready(&mut self) -> Ready {
        let ops = self.flush();
        let base = self.emitted.number;
        if !ops.is_empty() {
            self.emitted.number += 1;
        }
        Ready {
            ops,
            base: Some(base),
            number: self.emitted.number,
        }
    }

    /// The dataplane holds `ready`: commits it. A batch that follows one
    /// the dataplane never took (after a failure) commits nothing: only
    /// [`Self::resync`] can bring such a dataplane back.
    pub fn advance(&mut self, ready: &Ready) {
        if ready.base.is_none_or(|b| b == self.emitted.committed) {
            self.emitted.committed = ready.number;
        }
    }

    /// Whether the dataplane holds every batch the graph emitted (each was
    /// passed to [`Self::advance`]).
    pub fn committed(&self) -> bool {
        self.emitted.committed == self.emitted.number
    }

    /// The whole state as one batch, for a dataplane that lost track (or a
    /// new one): updates taken in but not yet computed are folded in
    /// first. Advancing it commits everything emitted.
    pub fn resync(&mut self) -> Ready {
        let ready = self.ready();
        Ready {
            ops: self.whole_state(),
            base: None,
            number: ready.number,
        }
    }

    /// The operation that tells the driver it has the whole state, after
    /// whatever is pending; committed like [`Self::apply`]'s.
    pub fn in_sync(&mut self) -> Vec<dp::Operation> {
        let ready = self.ready();
        self.advance(&ready);
        let mut ops = ready.ops;
        ops.push(dp::Operation::InSync);
        ops
    }
}

#[cfg(test)]
mod tests;
