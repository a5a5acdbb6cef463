//! An in-memory [`MapWriter`] for tests without root: each table map as an
//! ordered map, capacities checked as the kernel's maps are, and a write
//! that can be told to fail.

use std::collections::{BTreeMap, BTreeSet};

use crate::abi;
use crate::bitmap::Bitmap;
use crate::compile::{CompiledTable, IpEntry};
use crate::error::BpfError;
use crate::maps::TableCounts;
use crate::plan::EndpointKey;
use crate::write::MapWriter;

/// The maps a plan writes, in memory.
#[derive(Debug, Clone)]
pub struct FakeMaps {
    /// A table version's ports, named ports, protocols and rules, whole.
    pub tables: BTreeMap<u32, CompiledTable>,
    /// (table, side, class) -> bitmap.
    pub classes: BTreeMap<(u32, u8, u32), Bitmap>,
    /// (space, side, entry) -> class.
    pub addrs: BTreeMap<(u32, u8, IpEntry), u32>,
    pub endpoints: BTreeMap<u32, abi::manul_ep_value>,
    /// ifindex -> the sources its pod may send from (`manul_src`).
    pub sources: BTreeMap<u32, Vec<ipnet::IpNet>>,
    pub next_table_id: u32,
    pub capacity: TableCounts,
    writes: usize,
    fail_at: Option<usize>,
}

/// What a packet's lookups see through one table and its space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableView {
    pub table: CompiledTable,
    /// Per side, each address entry with the table's bitmap for its class
    /// (`None`: the class has no bitmap, a broken table).
    pub addr: [BTreeMap<IpEntry, Option<Bitmap>>; 2],
}

/// What an endpoint entry makes the kernel enforce: the tables it names,
/// normal ones first, then the stage tables (by hook, then stage); `None`
/// for a table that is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub flags: u32,
    pub tables: Vec<Option<TableView>>,
}

impl FakeMaps {
    /// Maps as large as `capacity`.
    pub fn new(capacity: TableCounts) -> Self {
        Self {
            tables: BTreeMap::new(),
            classes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            sources: BTreeMap::new(),
            next_table_id: 0,
            capacity,
            writes: 0,
            fail_at: None,
        }
    }

    /// Maps large enough for any test.
    pub fn roomy() -> Self {
        let n = 1 << 20;
        Self::new(TableCounts {
            addr: n,
            class: n,
            port: n,
            proto: n,
            np: n,
            rule: n,
        })
    }

    /// The `n`th write from now (0: the next) fails, as a refused syscall
    /// does; deletes are not writes.
    pub fn fail_write(&mut self, n: usize) {
        self.fail_at = Some(self.writes + n);
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> usize {
        self.writes
    }

    fn write(&mut self, map: &'static str) -> Result<(), BpfError> {
        let n = self.writes;
        self.writes += 1;
        if self.fail_at == Some(n) {
            self.fail_at = None;
            let io_error = std::io::Error::from_raw_os_error(nix::errno::Errno::ENOMEM as i32);
            return Err(BpfError::map(
                map,
                "insert",
                aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_elem",
                    io_error,
                }),
            ));
        }
        Ok(())
    }

    /// Every endpoint entry as what it enforces.
    pub fn view(&self) -> BTreeMap<u32, EndpointView> {
        self.endpoints
            .iter()
            .map(|(ix, v)| {
                let pairs = v.table.iter().zip(v.space.iter()).chain(
                    v.stage_table
                        .iter()
                        .flatten()
                        .zip(v.stage_space.iter().flatten()),
                );
                let tables = pairs
                    .filter(|(t, _)| **t != 0)
                    .map(|(&t, &s)| self.table_view(t, s))
                    .collect();
                (
                    *ix,
                    EndpointView {
                        flags: v.flags,
                        tables,
                    },
                )
            })
            .collect()
    }

    fn table_view(&self, table: u32, space: u32) -> Option<TableView> {
        let t = self.tables.get(&table)?;
        let mut addr: [BTreeMap<IpEntry, Option<Bitmap>>; 2] = Default::default();
        for (&(_, side, entry), class) in self.addrs.iter().filter(|(k, _)| k.0 == space) {
            let bitmap = self.classes.get(&(table, side, *class)).copied();
            addr[usize::from(side)].insert(entry, bitmap);
        }
        Some(TableView {
            table: t.clone(),
            addr,
        })
    }

    /// Every table and space id that holds entries.
    pub fn ids(&self) -> BTreeSet<u32> {
        self.tables
            .keys()
            .copied()
            .chain(self.classes.keys().map(|k| k.0))
            .chain(self.addrs.keys().map(|k| k.0))
            .collect()
    }

    /// Table and space ids that hold entries but no endpoint entry names.
    pub fn orphans(&self) -> BTreeSet<u32> {
        let named: BTreeSet<u32> = self
            .endpoints
            .values()
            .flat_map(|v| {
                v.table
                    .iter()
                    .chain(&v.space)
                    .chain(v.stage_table.iter().flatten())
                    .chain(v.stage_space.iter().flatten())
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        self.ids()
            .into_iter()
            .filter(|id| !named.contains(id))
            .collect()
    }
}

impl MapWriter for FakeMaps {
    fn used(&self) -> TableCounts {
        let mut used = TableCounts {
            addr: self.addrs.len(),
            class: self.classes.len(),
            ..TableCounts::default()
        };
        for t in self.tables.values() {
            used.add(&TableCounts::of(t));
        }
        used
    }

    fn capacity(&self) -> TableCounts {
        self.capacity
    }

    fn write_table(
        &mut self,
        id: u32,
        table: &CompiledTable,
        _labels: &[(u32, u32)],
    ) -> Result<(), BpfError> {
        let mut needed = self.used();
        needed.add(&TableCounts::of(table));
        needed.check(&self.capacity)?;
        self.write("manul_rule")?;
        self.tables.insert(id, table.clone());
        Ok(())
    }

    fn delete_table(&mut self, id: u32, _table: &CompiledTable) {
        self.tables.remove(&id);
    }

    fn write_class(
        &mut self,
        table: u32,
        side: u8,
        class: u32,
        bitmap: &Bitmap,
    ) -> Result<(), BpfError> {
        let key = (table, side, class);
        if !self.classes.contains_key(&key) && self.classes.len() >= self.capacity.class {
            return Err(BpfError::Capacity {
                map: "manul_class",
                needed: self.classes.len() + 1,
                capacity: self.capacity.class,
            });
        }
        self.write("manul_class")?;
        self.classes.insert(key, *bitmap);
        Ok(())
    }

    fn delete_class(&mut self, table: u32, side: u8, class: u32) {
        self.classes.remove(&(table, side, class));
    }

    fn set_addr(
        &mut self,
        space: u32,
        side: u8,
        entry: &IpEntry,
        class: u32,
        new: bool,
    ) -> Result<(), BpfError> {
        let key = (space, side, *entry);
        assert_eq!(
            new,
            !self.addrs.contains_key(&key),
            "the plan's idea of whether {key:?} is new"
        );
        if new && self.addrs.len() >= self.capacity.addr {
            return Err(BpfError::Capacity {
                map: "manul_addr",
                needed: self.addrs.len() + 1,
                capacity: self.capacity.addr,
            });
        }
        self.write("manul_addr")?;
        self.addrs.insert(key, class);
        Ok(())
    }

    fn delete_addr(&mut self, space: u32, side: u8, entry: &IpEntry) {
        self.addrs.remove(&(space, side, *entry));
    }

    fn set_endpoint(
        &mut self,
        ifindex: u32,
        value: abi::manul_ep_value,
        sources: &[ipnet::IpNet],
        _endpoint: &EndpointKey,
    ) -> Result<(), BpfError> {
        self.write("manul_src")?;
        self.sources.insert(ifindex, sources.to_vec());
        self.write("manul_ep")?;
        self.endpoints.insert(ifindex, value);
        Ok(())
    }

    fn remove_endpoint(&mut self, ifindex: u32) -> Result<(), BpfError> {
        self.endpoints.remove(&ifindex);
        self.sources.remove(&ifindex);
        Ok(())
    }

    fn endpoint_ifindexes(&self) -> Vec<u32> {
        self.endpoints.keys().copied().collect()
    }

    fn delete_where(&mut self, dead: &dyn Fn(u32) -> bool) -> usize {
        let before = self.tables.len() + self.classes.len() + self.addrs.len();
        self.tables.retain(|id, _| !dead(*id));
        self.classes.retain(|k, _| !dead(k.0));
        self.addrs.retain(|k, _| !dead(k.0));
        before - (self.tables.len() + self.classes.len() + self.addrs.len())
    }

    fn store_next_table_id(&mut self, id: u32) -> Result<(), BpfError> {
        self.write("manul_meta")?;
        self.next_table_id = id;
        Ok(())
    }
}
