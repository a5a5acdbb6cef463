//! The seam between a batch's plan and the kernel: [`MapOp`], one map write
//! or delete; [`MapWriter`], the few calls that carry them out (the pinned
//! maps in [`crate::maps`], an in-memory fake in the tests); and the
//! executor that runs a list of them in order.

use std::sync::Arc;

use ipnet::IpNet;

use crate::abi;
use crate::bitmap::Bitmap;
use crate::compile::{CompiledTable, IpEntry};
use crate::error::BpfError;
use crate::maps::TableCounts;
use crate::plan::EndpointKey;

/// One write or delete of a batch's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum MapOp {
    /// A table version's ports, named ports, protocols and rules under
    /// `id`; `labels` are each slot's numeric policy and rule ids.
    WriteTable {
        id: u32,
        table: Arc<CompiledTable>,
        labels: Vec<(u32, u32)>,
    },
    DeleteTable {
        id: u32,
        table: Arc<CompiledTable>,
    },
    /// A table's bitmap for one class of its address space.
    WriteClass {
        table: u32,
        side: u8,
        class: u32,
        bitmap: Bitmap,
    },
    DeleteClass {
        table: u32,
        side: u8,
        class: u32,
    },
    /// An address-space entry (`new`: the key is not there yet).
    SetAddr {
        space: u32,
        side: u8,
        entry: IpEntry,
        class: u32,
        new: bool,
    },
    DeleteAddr {
        space: u32,
        side: u8,
        entry: IpEntry,
    },
    /// An endpoint's `manul_ep` entry: its tables and spaces, in one update;
    /// first its interface's `manul_src` entries are made `sources`.
    SetEndpoint {
        ifindex: u32,
        value: abi::manul_ep_value,
        sources: Vec<IpNet>,
        endpoint: EndpointKey,
    },
    RemoveEndpoint {
        ifindex: u32,
    },
}

/// The map calls a plan needs. Writes can fail (a full map, a refused
/// syscall); deletes are best effort (a missing key is fine).
pub trait MapWriter {
    /// Entries the tables hold in each table map.
    fn used(&self) -> TableCounts;
    /// Entries each table map holds at most.
    fn capacity(&self) -> TableCounts;
    /// Writes a whole table version; on failure removes what it wrote.
    fn write_table(
        &mut self,
        id: u32,
        table: &CompiledTable,
        labels: &[(u32, u32)],
    ) -> Result<(), BpfError>;
    fn delete_table(&mut self, id: u32, table: &CompiledTable);
    fn write_class(
        &mut self,
        table: u32,
        side: u8,
        class: u32,
        bitmap: &Bitmap,
    ) -> Result<(), BpfError>;
    fn delete_class(&mut self, table: u32, side: u8, class: u32);
    fn set_addr(
        &mut self,
        space: u32,
        side: u8,
        entry: &IpEntry,
        class: u32,
        new: bool,
    ) -> Result<(), BpfError>;
    fn delete_addr(&mut self, space: u32, side: u8, entry: &IpEntry);
    /// Makes the interface's `manul_src` entries `sources` (adding before
    /// removing), then writes its `manul_ep` entry.
    fn set_endpoint(
        &mut self,
        ifindex: u32,
        value: abi::manul_ep_value,
        sources: &[IpNet],
        endpoint: &EndpointKey,
    ) -> Result<(), BpfError>;
    /// Removes an endpoint's entry, then its interface's `manul_src`
    /// entries; a missing one is not an error.
    fn remove_endpoint(&mut self, ifindex: u32) -> Result<(), BpfError>;
    /// The interfaces with an endpoint entry.
    fn endpoint_ifindexes(&self) -> Vec<u32>;
    /// Deletes every entry of a table or space for which `dead` holds, by
    /// scanning; returns how many it removed.
    fn delete_where(&mut self, dead: &dyn Fn(u32) -> bool) -> usize;
    /// Keeps the id allocator's next id across restarts.
    fn store_next_table_id(&mut self, id: u32) -> Result<(), BpfError>;
}

/// Carries out one operation.
pub fn run(maps: &mut impl MapWriter, op: &MapOp) -> Result<(), BpfError> {
    match op {
        MapOp::WriteTable { id, table, labels } => maps.write_table(*id, table, labels),
        MapOp::DeleteTable { id, table } => {
            maps.delete_table(*id, table);
            Ok(())
        }
        MapOp::WriteClass {
            table,
            side,
            class,
            bitmap,
        } => maps.write_class(*table, *side, *class, bitmap),
        MapOp::DeleteClass { table, side, class } => {
            maps.delete_class(*table, *side, *class);
            Ok(())
        }
        MapOp::SetAddr {
            space,
            side,
            entry,
            class,
            new,
        } => maps.set_addr(*space, *side, entry, *class, *new),
        MapOp::DeleteAddr { space, side, entry } => {
            maps.delete_addr(*space, *side, entry);
            Ok(())
        }
        MapOp::SetEndpoint {
            ifindex,
            value,
            sources,
            endpoint,
        } => maps.set_endpoint(*ifindex, *value, sources, endpoint),
        MapOp::RemoveEndpoint { ifindex } => maps.remove_endpoint(*ifindex),
    }
}

/// Runs `ops` in order and stops at the first failure.
pub fn execute(maps: &mut impl MapWriter, ops: &[MapOp]) -> Result<(), BpfError> {
    ops.iter().try_for_each(|op| run(maps, op))
}

/// Runs every one of `ops`, whatever fails, and returns the failures of
/// writes (a failed endpoint removal is only logged: the entry it leaves
/// names tables that stay until the next scan).
pub fn execute_all(maps: &mut impl MapWriter, ops: &[MapOp]) -> Vec<BpfError> {
    let mut errors = Vec::new();
    for op in ops {
        match (run(maps, op), op) {
            (Ok(()), _) => {}
            (Err(e), MapOp::RemoveEndpoint { ifindex }) => {
                tracing::warn!(ifindex, error = %e, "cannot remove an endpoint entry");
            }
            (Err(e), _) => errors.push(e),
        }
    }
    errors
}
