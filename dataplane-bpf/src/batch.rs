//! A batch's plan, with no I/O: what to write to the maps, as a value.
//!
//! [`decide`] picks, for every table spec the endpoints read, a new
//! lineage (a new spec, or one whose bookkeeping a failed write spoiled),
//! a new table version in the same address space (its rules changed), or
//! only the IP sets its space names synced in place; it compiles and
//! changes nothing, so a compile or capacity error leaves everything as it
//! was. [`plan`] then allocates ids, settles the spaces and lists the map
//! operations in the order the packet path needs ([`crate::space`] says
//! why each is safe): per spec the new version's rules, class bitmaps and
//! address entries ([`BatchPlan::write`]); each endpoint's entry flipped in
//! one update ([`BatchPlan::flip`]); the replaced versions deleted and
//! their spaces shrunk ([`BatchPlan::retire`]); lineages no endpoint reads
//! deleted ([`BatchPlan::unused`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use manul_dataplane_api::DesiredState;

use crate::abi;
use crate::compile::{self, CompiledTable, TableSpec};
use crate::error::BpfError;
use crate::ledger::{Ledger, Lineage, Programmed};
use crate::loader::Hook;
use crate::maps::TableCounts;
use crate::plan::{EndpointKey, EndpointPlan, Touched};
use crate::space::{Delta, Space};
use crate::write::MapOp;

/// What a batch does to one table spec.
#[derive(Debug)]
pub enum Work {
    /// A new lineage (new spec, or replacing a poisoned one).
    Create(CompiledTable),
    /// A new table version in the same space.
    Replace(CompiledTable),
    /// Only IP sets the space names changed.
    Sync,
}

/// Decides and compiles the work of a batch; changes nothing.
pub fn decide(
    ledger: &Ledger,
    state: &DesiredState,
    touched: &Touched,
    plans: &[(EndpointKey, EndpointPlan)],
) -> Result<Vec<(TableSpec, Work)>, BpfError> {
    let mut work: Vec<(TableSpec, Work)> = Vec::new();
    let mut seen: HashSet<&TableSpec> = HashSet::new();
    for (key, p) in plans {
        for spec in p.all_specs() {
            if !seen.insert(spec) {
                continue;
            }
            let compile = || {
                compile::compile(state, spec).map_err(|source| BpfError::Compile {
                    endpoint: key.to_string(),
                    source,
                })
            };
            let w = match ledger.tables.get(spec) {
                Some(l) if !l.poisoned && !touched.rules_affect(spec, state) => {
                    if touched.sets.iter().any(|s| l.space.names_set(s)) {
                        Work::Sync
                    } else {
                        continue;
                    }
                }
                Some(l) if !l.poisoned => Work::Replace(compile()?),
                _ => Work::Create(compile()?),
            };
            work.push((spec.clone(), w));
        }
    }
    Ok(work)
}

/// The table-map entries the tables will hold once `work` is written
/// (before the old versions are deleted).
pub fn needed(used: TableCounts, work: &[(TableSpec, Work)]) -> TableCounts {
    let mut needed = used;
    for (_, w) in work {
        if let Work::Create(t) | Work::Replace(t) = w {
            needed.add(&TableCounts::of(t));
        }
    }
    needed
}

/// What a write step becomes in the ledger once the batch is flipped.
#[derive(Debug)]
pub enum Pending {
    Create(Box<Lineage>),
    Replace { id: u32, table: Arc<CompiledTable> },
    Sync,
}

/// The writes for one table spec, before any endpoint is flipped.
#[derive(Debug)]
pub struct Step {
    pub spec: TableSpec,
    pub pending: Pending,
    pub ops: Vec<MapOp>,
    /// The space of tables in use this step writes entries into, if any:
    /// a failure part-way leaves it half-changed.
    pub writes_live_space: Option<u32>,
}

/// Deletes after the flip for one spec: failing part-way poisons its
/// lineage.
#[derive(Debug)]
pub struct Retire {
    pub spec: TableSpec,
    pub ops: Vec<MapOp>,
}

/// Everything a batch writes, in order.
#[derive(Debug)]
pub struct BatchPlan {
    pub write: Vec<Step>,
    pub flip: Vec<MapOp>,
    pub retire: Vec<Retire>,
    /// Lineages no endpoint reads any more, with their deletes (none for a
    /// poisoned one: its ids are deleted by scanning).
    pub unused: Vec<(TableSpec, Vec<MapOp>)>,
    /// The endpoints' entries once flipped.
    pub endpoints: BTreeMap<EndpointKey, Programmed>,
    /// Interfaces that must carry the programs.
    pub attach: Vec<(String, u32)>,
    /// Interfaces that must not any more.
    pub detach: Vec<u32>,
}

/// The state a batch is planned against.
#[derive(Debug)]
pub struct Context<'a> {
    pub state: &'a DesiredState,
    pub touched: &'a Touched,
    /// The node's interfaces, by name.
    pub interfaces: &'a BTreeMap<String, u32>,
}

/// Plans `work` (from [`decide`]). Ids are allocated and the spaces of
/// replaced and synced lineages settled in the ledger; the rest of the
/// ledger changes when the plan is committed.
pub fn plan(
    ledger: &mut Ledger,
    work: Vec<(TableSpec, Work)>,
    cx: &Context<'_>,
    plans: Vec<(EndpointKey, EndpointPlan)>,
    labels: &mut dyn FnMut(&CompiledTable) -> Vec<(u32, u32)>,
) -> BatchPlan {
    let state = cx.state;
    let mut write = Vec::new();
    let mut retire = Vec::new();
    for (spec, w) in work {
        match w {
            Work::Create(table) => {
                let space_id = ledger.allocate();
                let id = ledger.allocate();
                let table = Arc::new(table);
                let mut space = Space::new();
                space.add_table(&table.addr, state);
                let delta = space.settle();
                let mut ops = vec![MapOp::WriteTable {
                    id,
                    table: table.clone(),
                    labels: labels(&table),
                }];
                class_ops(&mut ops, &space, id, &table);
                delta_ops(&mut ops, space_id, &space, &delta, &[]);
                write.push(Step {
                    spec,
                    pending: Pending::Create(Box::new(Lineage {
                        space_id,
                        space,
                        id,
                        table,
                        poisoned: false,
                    })),
                    ops,
                    writes_live_space: None,
                });
            }
            Work::Replace(table) => {
                let id = ledger.allocate();
                let table = Arc::new(table);
                let table_labels = labels(&table);
                let Some(l) = ledger.tables.get_mut(&spec) else {
                    continue;
                };
                l.space.add_table(&table.addr, state);
                for s in &cx.touched.sets {
                    l.space.sync_set(s, state);
                }
                let delta = l.space.settle();
                let mut ops = Vec::new();
                delta_ops(&mut ops, l.space_id, &l.space, &delta, &[(l.id, &l.table)]);
                ops.push(MapOp::WriteTable {
                    id,
                    table: table.clone(),
                    labels: table_labels,
                });
                class_ops(&mut ops, &l.space, id, &table);
                // After the flip: the old version goes, and the space
                // shrinks to the items the new one names.
                let mut old = vec![MapOp::DeleteTable {
                    id: l.id,
                    table: l.table.clone(),
                }];
                old.extend(
                    l.space
                        .classes()
                        .map(|(side, class, _)| MapOp::DeleteClass {
                            table: l.id,
                            side,
                            class,
                        }),
                );
                l.space.remove_table(&l.table.addr);
                let shrink = l.space.settle();
                delta_ops(&mut old, l.space_id, &l.space, &shrink, &[(id, &table)]);
                retire.push(Retire {
                    spec: spec.clone(),
                    ops: old,
                });
                write.push(Step {
                    spec,
                    writes_live_space: (!delta.is_empty()).then_some(l.space_id),
                    pending: Pending::Replace { id, table },
                    ops,
                });
            }
            Work::Sync => {
                let Some(l) = ledger.tables.get_mut(&spec) else {
                    continue;
                };
                for s in &cx.touched.sets {
                    l.space.sync_set(s, state);
                }
                let delta = l.space.settle();
                let mut ops = Vec::new();
                delta_ops(&mut ops, l.space_id, &l.space, &delta, &[(l.id, &l.table)]);
                write.push(Step {
                    spec,
                    writes_live_space: (!delta.is_empty()).then_some(l.space_id),
                    pending: Pending::Sync,
                    ops,
                });
            }
        }
    }

    // Each spec's (table, space) once the batch is flipped.
    let mut ids: HashMap<&TableSpec, (u32, u32)> = ledger
        .tables
        .iter()
        .map(|(s, l)| (s, (l.id, l.space_id)))
        .collect();
    for step in &write {
        match &step.pending {
            Pending::Create(l) => {
                ids.insert(&step.spec, (l.id, l.space_id));
            }
            Pending::Replace { id, .. } => {
                if let Some(e) = ids.get_mut(&step.spec) {
                    e.0 = *id;
                }
            }
            Pending::Sync => {}
        }
    }
    let (flip, endpoints, attach, detach) = flips(ledger, &ids, cx.interfaces, &plans);

    let needed_specs: HashSet<&TableSpec> = plans.iter().flat_map(|(_, p)| p.all_specs()).collect();
    let unused: Vec<(TableSpec, Vec<MapOp>)> = ledger
        .tables
        .iter()
        .filter(|(s, _)| !needed_specs.contains(s))
        .map(|(spec, l)| (spec.clone(), lineage_deletes(l)))
        .collect();
    BatchPlan {
        write,
        flip,
        retire,
        unused,
        endpoints,
        attach,
        detach,
    }
}

type Flips = (
    Vec<MapOp>,
    BTreeMap<EndpointKey, Programmed>,
    Vec<(String, u32)>,
    Vec<u32>,
);

/// Each endpoint's entry (written where it changed), then the entries of
/// endpoints that are gone.
fn flips(
    ledger: &Ledger,
    ids: &HashMap<&TableSpec, (u32, u32)>,
    interfaces: &BTreeMap<String, u32>,
    plans: &[(EndpointKey, EndpointPlan)],
) -> Flips {
    let mut ops = Vec::new();
    let mut attach = Vec::new();
    let mut live: BTreeMap<EndpointKey, Programmed> = BTreeMap::new();
    for (key, p) in plans {
        let of = |spec: &TableSpec| ids.get(spec).copied().unwrap_or((0, 0));
        let tables = Hook::BOTH.map(|h| of(p.spec(h)).0);
        let spaces = Hook::BOTH.map(|h| of(p.spec(h)).1);
        let stage = |f: fn((u32, u32)) -> u32| {
            p.stages.each_ref().map(|hook| {
                hook.each_ref()
                    .map(|spec| spec.as_ref().map_or(0, |s| f(of(s))))
            })
        };
        let stage_tables = stage(|(t, _)| t);
        let stage_spaces = stage(|(_, s)| s);
        let ifindex = interfaces.get(&p.interface).copied();
        let prog = Programmed {
            interface: p.interface.clone(),
            ifindex,
            tables,
            spaces,
            stage_tables,
            stage_spaces,
            sources: p.sources.clone(),
        };
        let previous = ledger.endpoints.get(key);
        if let Some(old_ix) = previous.and_then(|o| o.ifindex)
            && Some(old_ix) != ifindex
        {
            ops.push(MapOp::RemoveEndpoint { ifindex: old_ix });
        }
        if let Some(ix) = ifindex {
            if previous != Some(&prog) {
                ops.push(MapOp::SetEndpoint {
                    ifindex: ix,
                    value: abi::manul_ep_value {
                        table: tables,
                        space: spaces,
                        flags: if matches!(key, EndpointKey::Host { .. }) {
                            abi::MANUL_EP_HOST
                        } else {
                            0
                        },
                        reserved: 0,
                        stage_table: stage_tables,
                        stage_space: stage_spaces,
                    },
                    sources: p.sources.clone(),
                    endpoint: key.clone(),
                });
            }
            attach.push((p.interface.clone(), ix));
        }
        live.insert(key.clone(), prog);
    }
    let in_use: HashSet<u32> = live.values().filter_map(|p| p.ifindex).collect();
    let mut detach = Vec::new();
    for (key, old) in &ledger.endpoints {
        if live.contains_key(key) {
            continue;
        }
        let Some(ix) = old.ifindex else { continue };
        // Another endpoint took the interface over (a named host endpoint
        // replacing `*` on it): its entry is already written.
        if in_use.contains(&ix) {
            continue;
        }
        ops.push(MapOp::RemoveEndpoint { ifindex: ix });
        // A workload interface keeps its program (dropping everything)
        // until it disappears; a host interface goes back to normal.
        let gone = interfaces.get(&old.interface) != Some(&ix);
        if matches!(key, EndpointKey::Host { .. }) || gone {
            detach.push(ix);
        }
    }
    (ops, live, attach, detach)
}

/// Every entry of a lineage (none if poisoned: its entries are not known).
fn lineage_deletes(l: &Lineage) -> Vec<MapOp> {
    if l.poisoned {
        return Vec::new();
    }
    let mut ops = vec![MapOp::DeleteTable {
        id: l.id,
        table: l.table.clone(),
    }];
    ops.extend(
        l.space
            .classes()
            .map(|(side, class, _)| MapOp::DeleteClass {
                table: l.id,
                side,
                class,
            }),
    );
    ops.extend(l.space.entries().map(|(side, entry, _)| MapOp::DeleteAddr {
        space: l.space_id,
        side,
        entry,
    }));
    ops
}

/// A table's bitmap for every class of its space.
fn class_ops(ops: &mut Vec<MapOp>, space: &Space, id: u32, table: &CompiledTable) {
    for (side, class, sig) in space.classes() {
        ops.push(MapOp::WriteClass {
            table: id,
            side,
            class,
            bitmap: table.addr[usize::from(side)].bitmap(sig),
        });
    }
}

/// One settling of a space, in the order [`Delta`] requires: new classes'
/// bitmaps in every live table of the space, entries, then dropped
/// classes' bitmaps removed.
fn delta_ops(
    ops: &mut Vec<MapOp>,
    space_id: u32,
    space: &Space,
    delta: &Delta,
    tables: &[(u32, &CompiledTable)],
) {
    for &(side, class) in &delta.new_classes {
        let Some(sig) = space.sig(side, class) else {
            continue;
        };
        for (id, table) in tables {
            ops.push(MapOp::WriteClass {
                table: *id,
                side,
                class,
                bitmap: table.addr[usize::from(side)].bitmap(sig),
            });
        }
    }
    for &(side, entry, class, new) in &delta.upserts {
        ops.push(MapOp::SetAddr {
            space: space_id,
            side,
            entry,
            class,
            new,
        });
    }
    for &(side, entry) in &delta.deletes {
        ops.push(MapOp::DeleteAddr {
            space: space_id,
            side,
            entry,
        });
    }
    for &(side, class) in &delta.dropped_classes {
        for (id, _) in tables {
            ops.push(MapOp::DeleteClass {
                table: *id,
                side,
                class,
            });
        }
    }
}
