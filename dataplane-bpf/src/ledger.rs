//! What the driver believes the kernel holds, with no I/O: each table
//! spec's lineage (its address space and current table version), each
//! endpoint's `manul_ep` entry, the ids to delete by scanning, and the
//! table/space id allocator.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::compile::{CompiledTable, TableSpec};
use crate::plan::EndpointKey;
use crate::space::Space;

/// One table spec's kernel state: its address space and its current
/// table version in that space.
#[derive(Debug)]
pub struct Lineage {
    pub space_id: u32,
    pub space: Space,
    pub id: u32,
    pub table: Arc<CompiledTable>,
    /// A failed write left the kernel and this bookkeeping apart: the next
    /// apply builds a new lineage and deletes this one's ids by scanning.
    pub poisoned: bool,
}

/// An endpoint's entry in `manul_ep`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed {
    pub interface: String,
    /// None while the interface does not exist (retried on every apply).
    pub ifindex: Option<u32>,
    pub tables: [u32; 2],
    pub spaces: [u32; 2],
    /// Host endpoints: by hook, then as [`crate::plan::STAGES`]; 0 = none.
    pub stage_tables: [[u32; 3]; 2],
    pub stage_spaces: [[u32; 3]; 2],
    /// Workloads: the sources written to `manul_src` for its interface.
    pub sources: Vec<ipnet::IpNet>,
}

impl Programmed {
    pub fn reads_space(&self, spaces: &HashSet<u32>) -> bool {
        self.spaces
            .iter()
            .chain(self.stage_spaces.iter().flatten())
            .any(|s| spaces.contains(s))
    }
}

/// The driver's bookkeeping of the kernel's tables and endpoints.
#[derive(Debug)]
pub struct Ledger {
    pub tables: HashMap<TableSpec, Lineage>,
    /// Table and space ids to delete by scanning (from failed writes and
    /// replaced poisoned lineages).
    pub garbage: HashSet<u32>,
    pub endpoints: BTreeMap<EndpointKey, Programmed>,
    /// The next id of the shared table/space allocator (never 0).
    pub next_table: u32,
}

impl Ledger {
    /// An empty ledger whose allocator starts at `next_table` (what an
    /// earlier run stored; ids it used are never handed out again before
    /// the counter wraps).
    pub fn new(next_table: u32) -> Self {
        Self {
            tables: HashMap::new(),
            garbage: HashSet::new(),
            endpoints: BTreeMap::new(),
            next_table: next_table.max(1),
        }
    }

    /// The next table or space id (never 0).
    pub fn allocate(&mut self) -> u32 {
        let id = self.next_table;
        self.next_table = self.next_table.wrapping_add(1).max(1);
        id
    }

    /// Every table and space id a lineage holds.
    pub fn live_ids(&self) -> HashSet<u32> {
        self.tables
            .values()
            .flat_map(|l| [l.id, l.space_id])
            .collect()
    }

    /// Drops every lineage whose space is one of `spaces` (their ids go to
    /// the garbage) and returns the endpoints that read one of them,
    /// removed from the ledger: their entries must go.
    pub fn drop_readers_of(&mut self, spaces: &HashSet<u32>) -> Vec<(EndpointKey, Programmed)> {
        if spaces.is_empty() {
            return Vec::new();
        }
        let dead: Vec<TableSpec> = self
            .tables
            .iter()
            .filter(|(_, l)| spaces.contains(&l.space_id))
            .map(|(spec, _)| spec.clone())
            .collect();
        for spec in dead {
            if let Some(l) = self.tables.remove(&spec) {
                self.garbage.extend([l.space_id, l.id]);
            }
        }
        let affected: Vec<EndpointKey> = self
            .endpoints
            .iter()
            .filter(|(_, p)| p.reads_space(spaces))
            .map(|(k, _)| k.clone())
            .collect();
        affected
            .into_iter()
            .filter_map(|k| self.endpoints.remove(&k).map(|p| (k, p)))
            .collect()
    }
}
