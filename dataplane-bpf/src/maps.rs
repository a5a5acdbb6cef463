//! The pinned maps, and writing or deleting compiled tables, class bitmaps
//! and address-space entries: thin calls into aya, keys from
//! [`crate::keys`]. [`Maps`] is the kernel's [`MapWriter`].

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray};
use ipnet::IpNet;

use crate::abi;
use crate::bitmap::Bitmap;
use crate::compile::{CompiledTable, IpEntry};
use crate::error::BpfError;
use crate::keys;
use crate::plan::EndpointKey;
use crate::write::MapWriter;

type Trie<K> = LpmTrie<MapData, K, abi::manul_bitmap>;

/// Handles on every map the driver writes.
pub struct Maps {
    pub ep: HashMap<MapData, u32, abi::manul_ep_value>,
    pub ct: HashMap<MapData, abi::manul_ct_key, abi::manul_ct_value>,
    pub meta: Array<MapData, u64>,
    pub cnt: PerCpuArray<MapData, u64>,
    addr: LpmTrie<MapData, abi::manul_addr_data, u32>,
    class: HashMap<MapData, abi::manul_class_key, abi::manul_bitmap>,
    port: Trie<abi::manul_port_data>,
    proto: Trie<abi::manul_proto_data>,
    np: HashMap<MapData, abi::manul_np_key, abi::manul_bitmap>,
    rule: HashMap<MapData, abi::manul_rule_key, abi::manul_rule_value>,
    failsafe: HashMap<MapData, abi::manul_failsafe_key, u8>,
    src: LpmTrie<MapData, abi::manul_src_data, u8>,
    /// Entries the tables of this run hold in each table map (capacity
    /// checks; entries adopted from an earlier run are counted at start).
    pub used: TableCounts,
    pub capacity: TableCounts,
}

/// Entry counts per table map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub addr: usize,
    pub class: usize,
    pub port: usize,
    pub proto: usize,
    pub np: usize,
    pub rule: usize,
}

impl TableCounts {
    pub fn of(t: &CompiledTable) -> Self {
        Self {
            addr: 0,
            class: 0,
            port: t.port.iter().map(Vec::len).sum(),
            proto: t.proto.len(),
            np: t.named.iter().map(Vec::len).sum(),
            rule: t.slots.len(),
        }
    }

    pub fn add(&mut self, o: &TableCounts) {
        self.addr += o.addr;
        self.class += o.class;
        self.port += o.port;
        self.proto += o.proto;
        self.np += o.np;
        self.rule += o.rule;
    }

    pub fn sub(&mut self, o: &TableCounts) {
        self.addr = self.addr.saturating_sub(o.addr);
        self.class = self.class.saturating_sub(o.class);
        self.port = self.port.saturating_sub(o.port);
        self.proto = self.proto.saturating_sub(o.proto);
        self.np = self.np.saturating_sub(o.np);
        self.rule = self.rule.saturating_sub(o.rule);
    }

    /// The first map that would overflow.
    pub fn check(&self, capacity: &TableCounts) -> Result<(), BpfError> {
        for (map, needed, cap) in [
            ("manul_addr", self.addr, capacity.addr),
            ("manul_class", self.class, capacity.class),
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
        let addr_map = take(ebpf, "manul_addr")?;
        capacity.addr = max_entries(&addr_map);
        let class_map = take(ebpf, "manul_class")?;
        capacity.class = max_entries(&class_map);
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
            addr: addr_map.try_into().map_err(conv("manul_addr"))?,
            class: class_map.try_into().map_err(conv("manul_class"))?,
            port: port_map.try_into().map_err(conv("manul_port"))?,
            proto: proto_map.try_into().map_err(conv("manul_proto"))?,
            np: np_map.try_into().map_err(conv("manul_np"))?,
            rule: rule_map.try_into().map_err(conv("manul_rule"))?,
            failsafe: typed!(ebpf, "manul_failsafe"),
            src: typed!(ebpf, "manul_src"),
            used: TableCounts::default(),
            capacity,
        };
        maps.used = maps.count_existing();
        Ok(maps)
    }

    fn count_existing(&self) -> TableCounts {
        TableCounts {
            addr: self.addr.keys().count(),
            class: self.class.keys().count(),
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

    /// Writes a table's bitmap for one class of its address space.
    pub fn write_class(
        &mut self,
        table: u32,
        side: u8,
        class: u32,
        bitmap: &Bitmap,
    ) -> Result<(), BpfError> {
        if self.used.class >= self.capacity.class {
            return Err(BpfError::Capacity {
                map: "manul_class",
                needed: self.used.class + 1,
                capacity: self.capacity.class,
            });
        }
        self.class
            .insert(keys::class_key(table, side, class), bitmap.to_abi(), 0)
            .map_err(|e| BpfError::map("manul_class", format!("insert for table {table}"), e))?;
        self.used.class += 1;
        Ok(())
    }

    pub fn delete_class(&mut self, table: u32, side: u8, class: u32) {
        if self
            .class
            .remove(&keys::class_key(table, side, class))
            .is_ok()
        {
            self.used.class = self.used.class.saturating_sub(1);
        }
    }

    /// Writes an address-space entry (`new`: the key is not there yet).
    pub fn set_addr(
        &mut self,
        space: u32,
        side: u8,
        entry: &IpEntry,
        class: u32,
        new: bool,
    ) -> Result<(), BpfError> {
        if new && self.used.addr >= self.capacity.addr {
            return Err(BpfError::Capacity {
                map: "manul_addr",
                needed: self.used.addr + 1,
                capacity: self.capacity.addr,
            });
        }
        let (len, data) = keys::addr_key(space, side, entry);
        self.addr
            .insert(&Key::new(len, data), class, 0)
            .map_err(|e| BpfError::map("manul_addr", format!("insert into space {space}"), e))?;
        if new {
            self.used.addr += 1;
        }
        Ok(())
    }

    pub fn delete_addr(&mut self, space: u32, side: u8, entry: &IpEntry) {
        let (len, data) = keys::addr_key(space, side, entry);
        if self.addr.remove(&Key::new(len, data)).is_ok() {
            self.used.addr = self.used.addr.saturating_sub(1);
        }
    }

    /// Makes an interface's `manul_src` entries exactly `sources`: the new
    /// ones first, then the interface's others (found by scanning, so those
    /// an earlier run left go too).
    pub fn set_sources(&mut self, ifindex: u32, sources: &[IpNet]) -> Result<(), MapError> {
        let wanted: Vec<(u32, abi::manul_src_data)> = sources
            .iter()
            .map(|net| keys::src_key(ifindex, net))
            .collect();
        for &(len, data) in &wanted {
            self.src.insert(&Key::new(len, data), 1, 0)?;
        }
        let stale: Vec<Key<abi::manul_src_data>> = self
            .src
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                k.data().ifindex == ifindex && !wanted.contains(&(k.prefix_len(), k.data()))
            })
            .collect();
        for key in stale {
            match self.src.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes every entry of a table or space for which `dead` holds, by
    /// scanning the maps (tables and spaces left by an earlier run, or
    /// whose bookkeeping a failed write made unreliable). Returns how many
    /// entries it removed.
    pub fn delete_where(&mut self, dead: impl Fn(u32) -> bool) -> usize {
        let mut removed = 0;
        let addr: Vec<_> = self.addr.keys().filter_map(Result::ok).collect();
        for k in addr.iter().filter(|k| dead(k.data().space)) {
            removed += usize::from(self.addr.remove(k).is_ok());
        }
        let class: Vec<_> = self.class.keys().filter_map(Result::ok).collect();
        for k in class.iter().filter(|k| dead(k.table)) {
            removed += usize::from(self.class.remove(k).is_ok());
        }
        let port: Vec<_> = self.port.keys().filter_map(Result::ok).collect();
        for k in port.iter().filter(|k| dead(k.data().table)) {
            removed += usize::from(self.port.remove(k).is_ok());
        }
        let proto: Vec<_> = self.proto.keys().filter_map(Result::ok).collect();
        for k in proto.iter().filter(|k| dead(k.data().table)) {
            removed += usize::from(self.proto.remove(k).is_ok());
        }
        let np: Vec<_> = self.np.keys().filter_map(Result::ok).collect();
        for k in np.iter().filter(|k| dead(k.table)) {
            removed += usize::from(self.np.remove(k).is_ok());
        }
        let rule: Vec<_> = self.rule.keys().filter_map(Result::ok).collect();
        for k in rule.iter().filter(|k| dead(k.table)) {
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

    /// Whether a workload's traffic to its own host is dropped once its
    /// policy allowed it.
    pub fn store_to_host_drop(&mut self, drop: bool) -> Result<(), BpfError> {
        self.meta
            .set(abi::MANUL_META_TO_HOST_DROP, u64::from(drop), 0)
            .map_err(|e| BpfError::map("manul_meta", "store the endpoint-to-host action", e))
    }

    /// Whether a packet between two workloads of this node is delivered
    /// straight into the destination pod once both interfaces' logic
    /// allowed it (`bpf/manul_peer.h`), rather than routed by the host.
    pub fn store_peer_delivery(&mut self, on: bool) -> Result<(), BpfError> {
        self.meta
            .set(abi::MANUL_META_PEER_DELIVERY, u64::from(on), 0)
            .map_err(|e| BpfError::map("manul_meta", "store the peer delivery switch", e))
    }

    /// How external traffic reaches a backend on another node.
    pub fn store_external_mode(
        &mut self,
        mode: crate::driver::ExternalServiceMode,
    ) -> Result<(), BpfError> {
        let value = match mode {
            crate::driver::ExternalServiceMode::Snat => abi::MANUL_EXT_SNAT,
            crate::driver::ExternalServiceMode::Dsr => abi::MANUL_EXT_DSR,
        };
        self.meta
            .set(abi::MANUL_META_EXT_MODE, u64::from(value), 0)
            .map_err(|e| BpfError::map("manul_meta", "store the external service mode", e))
    }

    /// Names the host's service device to the programs (0: none).
    pub fn store_host_service_if(&mut self, ifindex: u32) -> Result<(), BpfError> {
        self.meta
            .set(abi::MANUL_META_HOST_SVC_IF, u64::from(ifindex), 0)
            .map_err(|e| BpfError::map("manul_meta", "store the host service device", e))
    }

    /// Replaces the failsafe ports: `(outbound, protocol, port)`.
    pub fn store_failsafe(&mut self, ports: &[(bool, u8, u16)]) -> Result<(), BpfError> {
        let key = |(outbound, proto, port): (bool, u8, u16)| abi::manul_failsafe_key {
            outbound: u8::from(outbound),
            proto,
            port,
        };
        let wanted: std::collections::HashSet<(bool, u8, u16)> = ports.iter().copied().collect();
        let stale: Vec<abi::manul_failsafe_key> = self
            .failsafe
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(&(k.outbound != 0, k.proto, k.port)))
            .collect();
        for k in stale {
            self.failsafe
                .remove(&k)
                .map_err(|e| BpfError::map("manul_failsafe", "remove a failsafe port", e))?;
        }
        for p in wanted {
            self.failsafe
                .insert(key(p), 1, 0)
                .map_err(|e| BpfError::map("manul_failsafe", "store a failsafe port", e))?;
        }
        Ok(())
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

impl MapWriter for Maps {
    fn used(&self) -> TableCounts {
        self.used
    }

    fn capacity(&self) -> TableCounts {
        self.capacity
    }

    fn write_table(
        &mut self,
        id: u32,
        table: &CompiledTable,
        labels: &[(u32, u32)],
    ) -> Result<(), BpfError> {
        Maps::write_table(self, id, table, labels)
    }

    fn delete_table(&mut self, id: u32, table: &CompiledTable) {
        Maps::delete_table(self, id, table);
    }

    fn write_class(
        &mut self,
        table: u32,
        side: u8,
        class: u32,
        bitmap: &Bitmap,
    ) -> Result<(), BpfError> {
        Maps::write_class(self, table, side, class, bitmap)
    }

    fn delete_class(&mut self, table: u32, side: u8, class: u32) {
        Maps::delete_class(self, table, side, class);
    }

    fn set_addr(
        &mut self,
        space: u32,
        side: u8,
        entry: &IpEntry,
        class: u32,
        new: bool,
    ) -> Result<(), BpfError> {
        Maps::set_addr(self, space, side, entry, class, new)
    }

    fn delete_addr(&mut self, space: u32, side: u8, entry: &IpEntry) {
        Maps::delete_addr(self, space, side, entry);
    }

    fn set_endpoint(
        &mut self,
        ifindex: u32,
        value: abi::manul_ep_value,
        sources: &[IpNet],
        endpoint: &EndpointKey,
    ) -> Result<(), BpfError> {
        self.set_sources(ifindex, sources)
            .map_err(|e| BpfError::map("manul_src", format!("program {endpoint}"), e))?;
        self.ep
            .insert(ifindex, value, 0)
            .map_err(|e| BpfError::map("manul_ep", format!("program {endpoint}"), e))
    }

    fn remove_endpoint(&mut self, ifindex: u32) -> Result<(), BpfError> {
        match self.ep.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) => {}
            Err(e) => {
                return Err(BpfError::map(
                    "manul_ep",
                    format!("remove the entry of interface {ifindex}"),
                    e,
                ));
            }
        }
        self.set_sources(ifindex, &[]).map_err(|e| {
            BpfError::map(
                "manul_src",
                format!("remove the entries of interface {ifindex}"),
                e,
            )
        })
    }

    fn endpoint_ifindexes(&self) -> Vec<u32> {
        self.ep.keys().filter_map(Result::ok).collect()
    }

    fn delete_where(&mut self, dead: &dyn Fn(u32) -> bool) -> usize {
        Maps::delete_where(self, dead)
    }

    fn store_next_table_id(&mut self, id: u32) -> Result<(), BpfError> {
        Maps::store_next_table_id(self, id)
    }
}
