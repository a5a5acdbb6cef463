//! One batch through the seam: decide and compile (a compile or capacity
//! error changes nothing), plan ([`crate::batch`]), then carry the plan out
//! through a [`MapWriter`] and keep the [`Ledger`] true to what was
//! written. After a write that fails part-way the kernel fails closed as
//! the contract requires (`manul_dataplane_api::driver`, "After an
//! error"): the endpoints whose address spaces the batch wrote into lose
//! their entries (their interfaces drop everything); the others keep the
//! tables of the state before the batch.

use std::collections::{BTreeMap, HashSet};

use manul_dataplane_api::{Driver, DriverError, NullDriver, Operation};

use crate::batch::{self, BatchPlan, Context, Pending};
use crate::compile::CompiledTable;
use crate::error::BpfError;
use crate::ledger::Ledger;
use crate::plan::{self, Before, Touched};
use crate::write::{self, MapWriter};

/// What the node offers a batch.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The node's interfaces, by name.
    pub interfaces: &'a BTreeMap<String, u32>,
    pub workload_prefixes: &'a [String],
}

/// The I/O a programmed batch leaves to the caller, and the errors after
/// the flip (each endpoint is on its old or its new tables).
#[derive(Debug, Default)]
pub struct Outcome {
    pub soft_errors: Vec<BpfError>,
    /// Interfaces that must carry the programs.
    pub attach: Vec<(String, u32)>,
    /// Interfaces that must not any more.
    pub detach: Vec<u32>,
}

/// Numeric policy and rule ids of each slot of a table.
pub type Labels<'a> = &'a mut dyn FnMut(&CompiledTable) -> Vec<(u32, u32)>;

/// Checks and records `batch` in `desired`, then programs it. A contract
/// error changes nothing; a compile or capacity error is undone in the
/// record and leaves the maps as they were; a failed write fails closed.
/// Every error leaves the record stale.
pub fn apply(
    desired: &mut NullDriver,
    ledger: &mut Ledger,
    maps: &mut impl MapWriter,
    batch: &[Operation],
    env: Env<'_>,
    labels: Labels<'_>,
) -> Result<Outcome, DriverError> {
    let touched = Touched::of(batch);
    let before = Before::capture(&touched, desired.state());
    // A refusal marks the record stale itself.
    desired.apply(batch)?;
    match program(desired, ledger, maps, &touched, env, labels) {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            let undo = before.undo(desired.state());
            if let Err(u) = desired.apply(&undo) {
                tracing::error!(error = %u, "cannot undo a batch the kernel refused in the record; the resync replaces it");
            }
            desired.mark_stale();
            Err(e.into())
        }
    }
}

/// Compiles, checks capacity, writes new table versions and set changes,
/// flips endpoints and deletes old versions. Errors before the flip leave
/// every table the endpoints use correct for the state before the batch.
pub fn program(
    desired: &NullDriver,
    ledger: &mut Ledger,
    maps: &mut impl MapWriter,
    touched: &Touched,
    env: Env<'_>,
    labels: Labels<'_>,
) -> Result<Outcome, BpfError> {
    let state = desired.state();
    let names: Vec<String> = env.interfaces.keys().cloned().collect();
    let plans = plan::plans(state, &names, env.workload_prefixes);
    let work = batch::decide(ledger, state, touched, &plans)?;
    batch::needed(maps.used(), &work).check(&maps.capacity())?;
    let cx = Context {
        state,
        touched,
        interfaces: env.interfaces,
    };
    let plan = batch::plan(ledger, work, &cx, plans, labels);

    // New versions and set changes; nothing is flipped yet, but set
    // changes go into spaces that tables in use read.
    if let Some((failed, e)) = plan
        .write
        .iter()
        .enumerate()
        .find_map(|(i, step)| write::execute(maps, &step.ops).err().map(|e| (i, e)))
    {
        abort(ledger, maps, plan, failed, touched);
        return Err(e);
    }
    Ok(commit(ledger, maps, plan, touched.in_sync))
}

/// The writes went through: flip the endpoints, retire the old versions,
/// delete what nothing reads.
fn commit(
    ledger: &mut Ledger,
    maps: &mut impl MapWriter,
    plan: BatchPlan,
    in_sync: bool,
) -> Outcome {
    for step in plan.write {
        match step.pending {
            Pending::Create(l) => {
                if let Some(old) = ledger.tables.insert(step.spec, *l) {
                    ledger.garbage.extend([old.space_id, old.id]);
                }
            }
            Pending::Replace { id, table } => {
                if let Some(l) = ledger.tables.get_mut(&step.spec) {
                    l.id = id;
                    l.table = table;
                }
            }
            Pending::Sync => {}
        }
    }
    let mut soft_errors = write::execute_all(maps, &plan.flip);
    ledger.endpoints = plan.endpoints;
    for r in plan.retire {
        if let Err(e) = write::execute(maps, &r.ops) {
            if let Some(l) = ledger.tables.get_mut(&r.spec) {
                l.poisoned = true;
            }
            soft_errors.push(e);
        }
    }
    for (spec, ops) in plan.unused {
        if let Some(old) = ledger.tables.remove(&spec) {
            if old.poisoned {
                ledger.garbage.extend([old.space_id, old.id]);
                continue;
            }
            soft_errors.extend(write::execute_all(maps, &ops));
        }
    }
    collect_garbage(ledger, maps);
    if in_sync {
        remove_stale(ledger, maps);
    }
    if let Err(e) = maps.store_next_table_id(ledger.next_table) {
        soft_errors.push(e);
    }
    Outcome {
        soft_errors,
        attach: plan.attach,
        detach: plan.detach,
    }
}

/// Write step `failed` of `plan` failed: the lineages the batch changed no
/// longer match the state the caller restores (they are poisoned, or
/// dropped with their ids deleted), and the endpoints reading a space the
/// batch wrote into are unprogrammed. Every lineage the plan gives a new
/// version is poisoned, also those after the failed step (their spaces
/// were settled for the new version when planned; nothing was written to
/// them, so their endpoints keep their tables until the resync rebuilds
/// them).
fn abort(
    ledger: &mut Ledger,
    maps: &mut impl MapWriter,
    plan: BatchPlan,
    failed: usize,
    touched: &Touched,
) {
    let mut written: HashSet<u32> = HashSet::new();
    for (i, step) in plan.write.into_iter().enumerate() {
        let attempted = i <= failed;
        if attempted && let Some(space) = step.writes_live_space {
            written.insert(space);
        }
        match step.pending {
            Pending::Create(l) if attempted => ledger.garbage.extend([l.space_id, l.id]),
            Pending::Create(_) | Pending::Sync => {}
            // Its space was settled for the new version when planned.
            Pending::Replace { id, .. } => {
                if let Some(l) = ledger.tables.get_mut(&step.spec) {
                    l.poisoned = true;
                }
                if attempted {
                    ledger.garbage.insert(id);
                }
            }
        }
    }
    for l in ledger.tables.values_mut() {
        if touched.sets.iter().any(|s| l.space.names_set(s)) {
            l.poisoned = true;
        }
    }
    unprogram_readers_of(ledger, maps, &written);
    collect_garbage(ledger, maps);
}

/// Fails closed after a write that stopped part-way: every endpoint whose
/// tables read one of `spaces` (which now hold part of the batch's set
/// changes beside tables of the state before it) loses its `manul_ep`
/// entry, so its interface drops everything until a later apply programs
/// it again. The others keep their tables. Nothing reads those spaces any
/// more: their lineages are dropped and their entries deleted, which also
/// makes room when the failure was a full map.
fn unprogram_readers_of(ledger: &mut Ledger, maps: &mut impl MapWriter, spaces: &HashSet<u32>) {
    for (key, p) in ledger.drop_readers_of(spaces) {
        let Some(ix) = p.ifindex else { continue };
        if let Err(e) = maps.remove_endpoint(ix) {
            tracing::error!(endpoint = %key, error = %e, "cannot unprogram an endpoint after a failed write");
        }
        tracing::warn!(endpoint = %key, interface = %p.interface, "a failed write left this endpoint's address space half-changed: it drops everything until it is programmed again");
    }
}

fn collect_garbage(ledger: &mut Ledger, maps: &mut impl MapWriter) {
    if ledger.garbage.is_empty() {
        return;
    }
    let garbage = std::mem::take(&mut ledger.garbage);
    let removed = maps.delete_where(&|id| garbage.contains(&id));
    tracing::debug!(entries = removed, "deleted abandoned tables and spaces");
}

/// After InSync: removes endpoint entries and tables that an earlier run
/// left and this one was not told about again.
fn remove_stale(ledger: &Ledger, maps: &mut impl MapWriter) {
    let ours: HashSet<u32> = ledger
        .endpoints
        .values()
        .filter_map(|p| p.ifindex)
        .collect();
    for ix in maps.endpoint_ifindexes() {
        if !ours.contains(&ix) {
            let _ = maps.remove_endpoint(ix);
        }
    }
    let live = ledger.live_ids();
    let removed = maps.delete_where(&|id| !live.contains(&id));
    if removed > 0 {
        tracing::info!(
            entries = removed,
            "removed rule tables left by an earlier run"
        );
    }
}

#[cfg(test)]
mod tests;
