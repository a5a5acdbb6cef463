//! Felix's calculation graph and the reference evaluator, with no I/O and
//! no clock.
//!
//! [`calc`] turns cluster state (resource updates) into the ordered
//! operations of the dataplane contract for one node. It has raft-rs's
//! shape: updates go in ([`CalcGraph::update`]); [`CalcGraph::ready`]
//! gives the next batch for the dataplane; what was emitted counts as held
//! by the dataplane only once the caller reports it with
//! [`CalcGraph::advance`]; [`CalcGraph::resync`] gives the whole state, for
//! a dataplane that lost track. [`evaluator`] is the deliberately naive
//! reference the graph is tested against (`manulctl trace`).
//!
//! It refuses to do I/O, to read a clock, or to depend on anything above
//! the model and the dataplane contract: the sync client, the agent loop
//! and the kernel drivers live in `felix` and the `dataplane-*` crates.

pub mod calc;
#[cfg(test)]
mod datadriven;
pub mod evaluator;
pub mod pending;

pub use calc::{CalcGraph, Ready, Stats, Update};
