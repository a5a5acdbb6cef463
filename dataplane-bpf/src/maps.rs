//! The pinned maps, and writing or deleting one compiled table: thin calls
//! into aya, keys from [`crate::keys`].

use std::collections::HashSet;

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray};

use crate::abi;
use crate::compile::CompiledTable;
use crate::error::BpfError;
use crate::keys;

type Trie<K> = LpmTrie<MapData, K, abi::manul_bitmap>;

/// Handles on every map the driver writes.
pub struct Maps {
    pub ep: HashMap<MapData, u32, abi::manul_ep_value>,
    pub ct: HashMap<MapData, abi::manul_ct_key, abi::manul_ct_value>,
    pub meta: Array<MapData, u64>,
    pub cnt: PerCpuArray<MapData, u64>,
    ip: Trie<abi::manul_ip_data>,
    port: Trie<abi::manul_port_data>,
    proto: Trie<abi::manul_proto_data>,
    np: HashMap<MapData, abi::manul_np_key, abi::manul_bitmap>,
    rule: HashMap<MapData, abi::manul_rule_key, abi::manul_rule_value>,
    /// Entries the tables of this run hold in each table map (capacity
    /// checks; entries adopted from an earlier run are counted at start).
    pub used: TableCounts,
    pub capacity: TableCounts,
}

/// Entry counts per table map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub ip: usize,
    pub port: usize,
    pub proto: usize,
    pub np: usize,
    pub rule: usize,
}

impl TableCounts {
    pub fn of(t: &CompiledTable) -> Self {
        Self {
            ip: t.ip.iter().map(Vec::len).sum(),
            port: t.port.iter().map(Vec::len).sum(),
            proto: t.proto.len(),
            np: t.named.iter().map(Vec::len).sum(),
            rule: t.slots.len(),
        }
    }

    pub fn add(&mut self, o: &TableCounts) {
        self.ip += o.ip;
        self.port += o.port;
        self.proto += o.proto;
        self.np += o.np;
        self.rule += o.rule;
    }

    pub fn sub(&mut self, o: &TableCounts) {
        self.ip = self.ip.saturating_sub(o.ip);
        self.port = self.port.saturating_sub(o.port);
        self.proto = self.proto.saturating_sub(o.proto);
        self.np = self.np.saturating_sub(o.np);
        self.rule = self.rule.saturating_sub(o.rule);
    }

    /// The first map that would overflow.
    pub fn check(&self, capacity: &TableCounts) -> Result<(), BpfError> {
        for (map, needed, cap) in [
            ("manul_ip", self.ip, capacity.ip),
            ("manul_port", self.port, capacity.port),
            ("manul_proto", self.proto, capacity.proto),
            ("manul_np", self.np, capacity.np),
            ("manul_rule", self.rule, capacity.rule),
        ] {
            if needed > cap {
                return Err(BpfError::Capacity {
                    map,
                    needed,
                    capacity: cap,
                });
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps")
            .field("used", &self.used)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, BpfError> {
    ebpf.take_map(name).ok_or(BpfError::Missing(name))
}

fn max_entries(map: &Map) -> usize {
    let data: &MapData = match map {
        Map::LpmTrie(d) | Map::HashMap(d) => d,
        _ => return 0,
    };
    data.info().map_or(0, |i| i.max_entries() as usize)
}

macro_rules! typed {
    ($ebpf:expr, $name:literal) => {{
        let map = take($ebpf, $name)?;
        map.try_into()
            .map_err(|e| BpfError::map($name, "unexpected map type", e))?
    }};
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let mut capacity = TableCounts::default();
        let ip_map = take(ebpf, "manul_ip")?;
        capacity.ip = max_entries(&ip_map);
        let port_map = take(ebpf, "manul_port")?;
        capacity.port = max_entries(&port_map);
        let proto_map = take(ebpf, "manul_proto")?;
        capacity.proto = max_entries(&proto_map);
        let np_map = take(ebpf, "manul_np")?;
        capacity.np = max_entries(&np_map);
        let rule_map = take(ebpf, "manul_rule")?;
        capacity.rule = max_entries(&rule_map);
        let conv = |name: &'static str| move |e| BpfError::map(name, "unexpected map type", e);
        let mut maps = Self {
            ep: typed!(ebpf, "manul_ep"),
            ct: typed!(ebpf, "manul_ct"),
            meta: typed!(ebpf, "manul_meta"),
            cnt: typed!(ebpf, "manul_cnt"),
            ip: ip_map.try_into().map_err(conv("manul_ip"))?,
            port: port_map.try_into().map_err(conv("manul_port"))?,
            proto: proto_map.try_into().map_err(conv("manul_proto"))?,
            np: np_map.try_into().map_err(conv("manul_np"))?,
            rule: rule_map.try_into().map_err(conv("manul_rule"))?,
            used: TableCounts::default(),
            capacity,
        };
        maps.used = maps.count_existing();
        Ok(maps)
    }

    fn count_existing(&self) -> TableCounts {
        TableCounts {
            ip: self.ip.keys().count(),
            port: self.port.keys().count(),
            proto: self.proto.keys().count(),
            np: self.np.keys().count(),
            rule: self.rule.keys().count(),
        }
    }

    /// Writes a table under `id`; on failure removes what it wrote.
    /// `labels` gives the numeric policy and rule ids of each slot.
    pub fn write_table(
        &mut self,
        id: u32,
        t: &CompiledTable,
        labels: &[(u32, u32)],
    ) -> Result<(), BpfError> {
        let needed = {
            let mut n = self.used;
            n.add(&TableCounts::of(t));
            n
        };
        needed.check(&self.capacity)?;
        match self.try_write(id, t, labels) {
            Ok(()) => {
                self.used = needed;
                Ok(())
            }
            Err(e) => {
                self.delete_table(id, t);
                Err(e)
            }
        }
    }

    fn try_write(
        &mut self,
        id: u32,
        t: &CompiledTable,
        labels: &[(u32, u32)],
    ) -> Result<(), BpfError> {
        for (side, entries) in t.ip.iter().enumerate() {
            for (e, b) in entries {
                let (len, data) = keys::ip_key(id, side as u8, e);
                self.ip
                    .insert(&Key::new(len, data), b.to_abi(), 0)
                    .map_err(|e| BpfError::map("manul_ip", format!("insert into table {id}"), e))?;
            }
        }
        for (side, entries) in t.port.iter().enumerate() {
            for (e, b) in entries {
                let (len, data) = keys::port_key(id, side as u8, e);
                self.port
                    .insert(&Key::new(len, data), b.to_abi(), 0)
                    .map_err(|e| {
                        BpfError::map("manul_port", format!("insert into table {id}"), e)
                    })?;
            }
        }
        for (side, entries) in t.named.iter().enumerate() {
            for (triple, b) in entries {
                self.np
                    .insert(keys::np_key(id, side as u8, *triple), b.to_abi(), 0)
                    .map_err(|e| BpfError::map("manul_np", format!("insert into table {id}"), e))?;
            }
        }
        for (e, b) in &t.proto {
            let (len, data) = keys::proto_key(id, e);
            self.proto
                .insert(&Key::new(len, data), b.to_abi(), 0)
                .map_err(|e| BpfError::map("manul_proto", format!("insert into table {id}"), e))?;
        }
        for (i, slot) in t.slots.iter().enumerate() {
            let (policy, rule) = labels.get(i).copied().unwrap_or_default();
            self.rule
                .insert(
                    keys::rule_key(id, i),
                    keys::rule_value(slot, policy, rule),
                    0,
                )
                .map_err(|e| BpfError::map("manul_rule", format!("insert into table {id}"), e))?;
        }
        Ok(())
    }

    /// Deletes a table written by [`Maps::write_table`] (missing entries are
    /// fine).
    pub fn delete_table(&mut self, id: u32, t: &CompiledTable) {
        for (side, entries) in t.ip.iter().enumerate() {
            for (e, _) in entries {
                let (len, data) = keys::ip_key(id, side as u8, e);
                let _ = self.ip.remove(&Key::new(len, data));
            }
        }
        for (side, entries) in t.port.iter().enumerate() {
            for (e, _) in entries {
                let (len, data) = keys::port_key(id, side as u8, e);
                let _ = self.port.remove(&Key::new(len, data));
            }
        }
        for (side, entries) in t.named.iter().enumerate() {
            for (triple, _) in entries {
                let _ = self.np.remove(&keys::np_key(id, side as u8, *triple));
            }
        }
        for (e, _) in &t.proto {
            let (len, data) = keys::proto_key(id, e);
            let _ = self.proto.remove(&Key::new(len, data));
        }
        for i in 0..t.slots.len() {
            let _ = self.rule.remove(&keys::rule_key(id, i));
        }
        self.used.sub(&TableCounts::of(t));
    }

    /// Deletes every table entry whose id is not in `live` (tables left by
    /// an earlier run). Returns how many entries it removed.
    pub fn delete_tables_except(&mut self, live: &HashSet<u32>) -> usize {
        let mut removed = 0;
        let ip: Vec<_> = self.ip.keys().filter_map(Result::ok).collect();
        for k in ip.iter().filter(|k| !live.contains(&{ k.data().table })) {
            removed += usize::from(self.ip.remove(k).is_ok());
        }
        let port: Vec<_> = self.port.keys().filter_map(Result::ok).collect();
        for k in port.iter().filter(|k| !live.contains(&{ k.data().table })) {
            removed += usize::from(self.port.remove(k).is_ok());
        }
        let proto: Vec<_> = self.proto.keys().filter_map(Result::ok).collect();
        for k in proto.iter().filter(|k| !live.contains(&{ k.data().table })) {
            removed += usize::from(self.proto.remove(k).is_ok());
        }
        let np: Vec<_> = self.np.keys().filter_map(Result::ok).collect();
        for k in np.iter().filter(|k| !live.contains(&k.table)) {
            removed += usize::from(self.np.remove(k).is_ok());
        }
        let rule: Vec<_> = self.rule.keys().filter_map(Result::ok).collect();
        for k in rule.iter().filter(|k| !live.contains(&k.table)) {
            removed += usize::from(self.rule.remove(k).is_ok());
        }
        self.used = self.count_existing();
        removed
    }

    /// The next table id to allocate (kept in `manul_meta` across restarts).
    pub fn next_table_id(&self) -> u32 {
        let stored = self.meta.get(&abi::MANUL_META_NEXT_TABLE, 0).unwrap_or(0);
        u32::try_from(stored).unwrap_or(1).max(1)
    }

    pub fn store_next_table_id(&mut self, id: u32) -> Result<(), BpfError> {
        self.meta
            .set(abi::MANUL_META_NEXT_TABLE, u64::from(id), 0)
            .map_err(|e| BpfError::map("manul_meta", "store the next table id", e))
    }

    /// The per-CPU counters, summed.
    pub fn counters(&self) -> Vec<u64> {
        (0..abi::MANUL_CNT_MAX)
            .map(|i| {
                self.cnt
                    .get(&i, 0)
                    .map(|v| v.iter().sum::<u64>())
                    .unwrap_or(0)
            })
            .collect()
    }
}
