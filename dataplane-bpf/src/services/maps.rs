//! The service maps in the kernel: reading what an earlier run left,
//! making a plan's writes in order, and cleaning up after backends that
//! went away. Thin calls into aya; keys and values from [`crate::abi`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap, LpmTrie, Map, MapData};

use super::clean::{self, V4, V6};
use super::plan::diff::{Counts, Peak};
use super::plan::{
    BackendAddr, Frontend, FrontendEntry, Programmed, SourceRange, TableInfo, Writes, slot_addr,
    slot_digest,
};
use crate::abi;
use crate::error::BpfError;
use manul_dataplane_api::MapUsage;

pub(super) type Hash<K, V> = HashMap<MapData, K, V>;

/// Handles on the service maps.
pub struct ServiceMaps {
    fe: Hash<abi::manul_svc_fe_key, abi::manul_svc_fe_value>,
    be: Hash<abi::manul_svc_be_key, abi::manul_svc_be_value>,
    nat: Hash<abi::manul_nat_key, abi::manul_nat_value>,
    aff: Hash<abi::manul_svc_aff_key, abi::manul_svc_aff_value>,
    /// Host interfaces carried for service NAT only (ifindex -> 1).
    ifs: Hash<u32, u32>,
    /// The other nodes' addresses, the only sources of a DSR option or
    /// header the programs honour (IPv4 ones IPv4-mapped) -> 1.
    dsr_nodes: Hash<abi::manul_dsr_node_key, u32>,
    /// Load-balancer addresses' source ranges, IPv4 and IPv6.
    src: LpmTrie<MapData, abi::manul_svc_src_data, u32>,
    src6: LpmTrie<MapData, abi::manul_svc_src6_data, u32>,
    /// Maglev tables: (table, slot) -> backend.
    mag: Hash<abi::manul_svc_mag_key, abi::manul_svc_be6_value>,
    /// The IPv6 frontends, backends, NAT conntrack and affinity.
    fe6: Hash<abi::manul_svc_fe6_key, abi::manul_svc_fe_value>,
    be6: Hash<abi::manul_svc_be_key, abi::manul_svc_be6_value>,
    nat6: Hash<abi::manul_nat6_key, abi::manul_nat6_value>,
    aff6: Hash<abi::manul_svc_aff6_key, abi::manul_svc_aff6_value>,
    fe_capacity: usize,
    be_capacity: usize,
    mag_capacity: usize,
    fe6_capacity: usize,
    be6_capacity: usize,
    aff_capacity: usize,
    aff6_capacity: usize,
}

impl std::fmt::Debug for ServiceMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMaps")
            .field("fe_capacity", &self.fe_capacity)
            .field("be_capacity", &self.be_capacity)
            .field("mag_capacity", &self.mag_capacity)
            .finish_non_exhaustive()
    }
}

fn take<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<(Hash<K, V>, usize), BpfError> {
    let map = ebpf.take_map(name).ok_or(BpfError::Missing(name))?;
    let capacity = match &map {
        Map::HashMap(d) | Map::LruHashMap(d) => d.info().map_or(0, |i| i.max_entries() as usize),
        _ => 0,
    };
    let map = map
        .try_into()
        .map_err(|e| BpfError::map(name, "unexpected map type", e))?;
    Ok((map, capacity))
}

/// A `manul_dsr_node` key: IPv6 as it is, IPv4 IPv4-mapped.
pub(super) fn dsr_node_key(a: IpAddr) -> abi::manul_dsr_node_key {
    let v6 = match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    abi::manul_dsr_node_key { addr: v6.octets() }
}

/// Addresses and ports are in network order in the maps.
fn net_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn host_addr(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a.to_ne_bytes())
}

/// A frontend's key, in its family's map.
enum FeKey {
    V4(abi::manul_svc_fe_key),
    V6(abi::manul_svc_fe6_key),
}

fn fe_key(f: &Frontend) -> FeKey {
    match f.addr {
        IpAddr::V4(a) => FeKey::V4(abi::manul_svc_fe_key {
            addr: net_addr(a),
            port: f.port.to_be(),
            proto: f.proto,
            scope: if f.in_cluster {
                abi::MANUL_SVC_FE_SCOPE_IN_CLUSTER as u8
            } else {
                0
            },
        }),
        IpAddr::V6(a) => FeKey::V6(abi::manul_svc_fe6_key {
            addr: a.octets(),
            port: f.port.to_be(),
            proto: f.proto,
            scope: if f.in_cluster {
                abi::MANUL_SVC_FE_SCOPE_IN_CLUSTER as u8
            } else {
                0
            },
        }),
    }
}

/// The source-range trie of `lb`'s family.
fn src_map(lb: &IpAddr) -> &'static str {
    match lb {
        IpAddr::V4(_) => "manul_svc_src",
        IpAddr::V6(_) => "manul_svc_src6",
    }
}

fn src_key(lb: Ipv4Addr, range: Ipv4Net) -> Key<abi::manul_svc_src_data> {
    Key::new(
        32 + u32::from(range.prefix_len()),
        abi::manul_svc_src_data {
            lb: net_addr(lb),
            client: net_addr(range.network()),
        },
    )
}

fn src6_key(lb: Ipv6Addr, range: Ipv6Net) -> Key<abi::manul_svc_src6_data> {
    Key::new(
        128 + u32::from(range.prefix_len()),
        abi::manul_svc_src6_data {
            lb: lb.octets(),
            client: range.network().octets(),
        },
    )
}

type Trie<K> = LpmTrie<MapData, K, u32>;

/// Takes an LPM trie out of a loaded object.
fn take_trie<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<Trie<K>, BpfError> {
    ebpf.take_map(name)
        .ok_or(BpfError::Missing(name))?
        .try_into()
        .map_err(|e| BpfError::map(name, "unexpected map type", e))
}

pub fn fe_value(e: &FrontendEntry) -> abi::manul_svc_fe_value {
    abi::manul_svc_fe_value {
        id: e.id,
        count: e.count,
        affinity_s: e.affinity_s,
        flags: e.flags,
        maglev: e.maglev,
        maglev_size: e.maglev_size,
    }
}

fn entry_of(v: &abi::manul_svc_fe_value) -> FrontendEntry {
    FrontendEntry {
        id: v.id,
        count: v.count,
        affinity_s: v.affinity_s,
        flags: v.flags,
        maglev: v.maglev,
        maglev_size: v.maglev_size,
    }
}

/// A backend as 16 address bytes (IPv4 in the first 4, zeros after):
/// every Maglev slot's value.
pub fn be6_value(b: &BackendAddr) -> abi::manul_svc_be6_value {
    abi::manul_svc_be6_value {
        addr: slot_addr(b.addr),
        port: b.port.to_be(),
        pad: 0,
    }
}

pub(super) fn backend_of(addr: u32, port: u16) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V4(host_addr(addr)),
        port: u16::from_be(port),
    }
}

pub(super) fn backend6_of(addr: [u8; 16], port: u16) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V6(Ipv6Addr::from(addr)),
        port: u16::from_be(port),
    }
}

/// MANUL_HAIRPIN_SNAT_V6 (manul_maps.h) as the maps hold it.
pub(super) fn hairpin_snat_v6() -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&abi::MANUL_HAIRPIN_SNAT_V6_W0.to_be_bytes());
    out[12..].copy_from_slice(&abi::MANUL_HAIRPIN_SNAT_V6_W3.to_be_bytes());
    out
}

impl ServiceMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let (fe, fe_capacity) = take(ebpf, "manul_svc_fe")?;
        let (be, be_capacity) = take(ebpf, "manul_svc_be")?;
        let (nat, _) = take(ebpf, "manul_nat")?;
        let (aff, aff_capacity) = take(ebpf, "manul_svc_aff")?;
        let (ifs, _) = take(ebpf, "manul_svc_if")?;
        let (dsr_nodes, _) = take(ebpf, "manul_dsr_node")?;
        let (mag, mag_capacity) = take(ebpf, "manul_svc_mag")?;
        let (fe6, fe6_capacity) = take(ebpf, "manul_svc_fe6")?;
        let (be6, be6_capacity) = take(ebpf, "manul_svc_be6")?;
        let (nat6, _) = take(ebpf, "manul_nat6")?;
        let (aff6, aff6_capacity) = take(ebpf, "manul_svc_aff6")?;
        let src = take_trie(ebpf, "manul_svc_src")?;
        let src6 = take_trie(ebpf, "manul_svc_src6")?;
        Ok(Self {
            fe,
            be,
            nat,
            aff,
            ifs,
            dsr_nodes,
            src,
            src6,
            mag,
            fe6,
            be6,
            nat6,
            aff6,
            fe_capacity,
            be_capacity,
            mag_capacity,
            fe6_capacity,
            be6_capacity,
            aff_capacity,
            aff6_capacity,
        })
    }

    /// What `manul_svc_if` holds (an earlier run's entries at start).
    pub fn interfaces(&self) -> BTreeSet<u32> {
        self.ifs.keys().flatten().collect()
    }

    /// Makes `manul_svc_if` hold exactly `want`: new entries first, then
    /// the others deleted.
    pub fn set_interfaces(&mut self, want: &BTreeSet<u32>) -> Result<(), BpfError> {
        for ix in want {
            self.ifs
                .insert(ix, 1, 0)
                .map_err(|e| BpfError::map("manul_svc_if", format!("add interface {ix}"), e))?;
        }
        let stale: Vec<u32> = self
            .ifs
            .keys()
            .flatten()
            .filter(|ix| !want.contains(ix))
            .collect();
        for ix in stale {
            self.ifs
                .remove(&ix)
                .map_err(|e| BpfError::map("manul_svc_if", format!("remove interface {ix}"), e))?;
        }
        Ok(())
    }

    /// The other nodes' addresses `manul_dsr_node` holds.
    pub fn dsr_nodes(&self) -> BTreeSet<IpAddr> {
        self.dsr_nodes
            .keys()
            .flatten()
            .map(|k| Ipv6Addr::from(k.addr).to_canonical())
            .collect()
    }

    /// Makes `manul_dsr_node` hold exactly `want`: new addresses first,
    /// then the others deleted (a node that left is no longer believed
    /// once this returns).
    pub fn set_dsr_nodes(&mut self, want: &BTreeSet<IpAddr>) -> Result<(), BpfError> {
        for a in want {
            self.dsr_nodes
                .insert(dsr_node_key(*a), 1, 0)
                .map_err(|e| BpfError::map("manul_dsr_node", format!("add node {a}"), e))?;
        }
        let stale: Vec<IpAddr> = self
            .dsr_nodes()
            .into_iter()
            .filter(|a| !want.contains(a))
            .collect();
        for a in stale {
            self.dsr_nodes
                .remove(&dsr_node_key(a))
                .map_err(|e| BpfError::map("manul_dsr_node", format!("remove node {a}"), e))?;
        }
        Ok(())
    }

    /// Adds source ranges (before the address entries that name them:
    /// until then such an address drops every client, closed). A range
    /// of the other family than its address's is refused.
    pub fn add_source_ranges(&mut self, want: &BTreeSet<SourceRange>) -> Result<(), BpfError> {
        for (lb, range) in want {
            let added = match (lb, range) {
                (IpAddr::V4(a), IpNet::V4(r)) => self.src.insert(&src_key(*a, *r), 1, 0),
                (IpAddr::V6(a), IpNet::V6(r)) => self.src6.insert(&src6_key(*a, *r), 1, 0),
                _ => {
                    return Err(BpfError::MixedSourceRange {
                        lb: *lb,
                        range: *range,
                    });
                }
            };
            added.map_err(|e| BpfError::map(src_map(lb), format!("add {range} to {lb}"), e))?;
        }
        Ok(())
    }

    /// The source ranges the maps hold, both families.
    pub fn source_ranges(&self) -> BTreeSet<SourceRange> {
        let v4 = self.src.keys().flatten().filter_map(|k| {
            let d = k.data();
            let len = u8::try_from(k.prefix_len().checked_sub(32)?).ok()?;
            let range = Ipv4Net::new(host_addr(d.client), len).ok()?;
            Some((IpAddr::V4(host_addr(d.lb)), IpNet::V4(range.trunc())))
        });
        let v6 = self.src6.keys().flatten().filter_map(|k| {
            let d = k.data();
            let len = u8::try_from(k.prefix_len().checked_sub(128)?).ok()?;
            let range = Ipv6Net::new(Ipv6Addr::from(d.client), len).ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(d.lb)), IpNet::V6(range.trunc())))
        });
        v4.chain(v6).collect()
    }

    /// Deletes source ranges (after the address entries stopped naming
    /// them); one already gone, or of mixed families (never added), is
    /// fine.
    pub fn remove_source_ranges(&mut self, stale: &BTreeSet<SourceRange>) -> Result<(), BpfError> {
        for (lb, range) in stale {
            let removed = match (lb, range) {
                (IpAddr::V4(a), IpNet::V4(r)) => self.src.remove(&src_key(*a, *r)),
                (IpAddr::V6(a), IpNet::V6(r)) => self.src6.remove(&src6_key(*a, *r)),
                _ => continue,
            };
            already_gone_ok(removed, src_map(lb), || format!("remove {range} from {lb}"))?;
        }
        Ok(())
    }

    /// What the maps hold (an earlier run's entries, or after a failed
    /// write): every frontend adopted, no list with a known service (the
    /// plan gives each back to the desired list whose frontends name it).
    pub fn read(&self) -> Programmed {
        let mut p = Programmed::default();
        for (k, v) in self.fe.iter().flatten() {
            let f = Frontend {
                addr: IpAddr::V4(host_addr(k.addr)),
                port: u16::from_be(k.port),
                proto: k.proto,
                in_cluster: k.scope == abi::MANUL_SVC_FE_SCOPE_IN_CLUSTER as u8,
            };
            p.frontends.insert(f, entry_of(&v));
            p.adopted.insert(f);
        }
        for (k, v) in self.fe6.iter().flatten() {
            let f = Frontend {
                addr: IpAddr::V6(Ipv6Addr::from(k.addr)),
                port: u16::from_be(k.port),
                proto: k.proto,
                in_cluster: k.scope == abi::MANUL_SVC_FE_SCOPE_IN_CLUSTER as u8,
            };
            p.frontends.insert(f, entry_of(&v));
            p.adopted.insert(f);
        }
        // A table's size is its highest slot plus one (a table cut short
        // by a failed write is deleted all the same); its digest is the
        // sum of its slots', kept only when no slot below the size is
        // missing.
        let mut slots: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
        for (k, v) in self.mag.iter().flatten() {
            let t = p.tables.entry(k.table).or_insert(TableInfo {
                size: 0,
                built: None,
                digest: None,
            });
            t.size = t.size.max(k.slot.saturating_add(1));
            let (sum, n) = slots.entry(k.table).or_default();
            *sum = sum.wrapping_add(slot_digest(k.slot, v.addr, u16::from_be(v.port)));
            *n = n.saturating_add(1);
        }
        for (id, (sum, n)) in slots {
            if let Some(t) = p.tables.get_mut(&id) {
                t.digest = (n == t.size).then_some(sum);
            }
        }
        p.next_table = p.tables.keys().max().map_or(1, |m| m.saturating_add(1));
        let mut lists: BTreeMap<u32, BTreeMap<u32, BackendAddr>> = BTreeMap::new();
        for (k, v) in self.be.iter().flatten() {
            lists
                .entry(k.id)
                .or_default()
                .insert(k.index, backend_of(v.addr, v.port));
        }
        for (k, v) in self.be6.iter().flatten() {
            lists
                .entry(k.id)
                .or_default()
                .insert(k.index, backend6_of(v.addr, v.port));
        }
        // Past every id a frontend names too: a list without backends
        // has no entry of its own.
        let named = p.frontends.values().map(|e| e.id);
        p.next_id = lists
            .keys()
            .copied()
            .chain(named)
            .max()
            .map_or(1, |m| m.saturating_add(1));
        p.lists = lists
            .into_iter()
            .map(|(id, l)| (id, l.into_values().collect()))
            .collect();
        p
    }

    /// Checks that the maps can hold every entry at the sync's peak
    /// (before its deletions).
    pub fn check(&self, peak: &Peak) -> Result<(), BpfError> {
        for (map, needed, capacity) in [
            ("manul_svc_fe", peak.fe, self.fe_capacity),
            ("manul_svc_be", peak.be, self.be_capacity),
            ("manul_svc_mag", peak.mag, self.mag_capacity),
            ("manul_svc_fe6", peak.fe6, self.fe6_capacity),
            ("manul_svc_be6", peak.be6, self.be6_capacity),
        ] {
            if needed > capacity {
                return Err(BpfError::Capacity {
                    map,
                    needed,
                    capacity,
                });
            }
        }
        Ok(())
    }

    /// Makes the writes, in their order.
    pub fn write(&mut self, w: &Writes) -> Result<(), BpfError> {
        for (id, index, b) in &w.backends {
            let key = abi::manul_svc_be_key {
                id: *id,
                index: *index,
            };
            let IpAddr::V4(a) = b.addr else {
                self.be6
                    .insert(key, be6_value(b), 0)
                    .map_err(|e| BpfError::map("manul_svc_be6", "cannot write a backend", e))?;
                continue;
            };
            let v = abi::manul_svc_be_value {
                addr: net_addr(a),
                port: b.port.to_be(),
                pad: 0,
            };
            self.be
                .insert(key, v, 0)
                .map_err(|e| BpfError::map("manul_svc_be", "cannot write a backend", e))?;
        }
        for (table, slots) in &w.tables {
            for (slot, b) in (0u32..).zip(slots) {
                let key = abi::manul_svc_mag_key {
                    table: *table,
                    slot,
                };
                self.mag.insert(key, be6_value(b), 0).map_err(|e| {
                    BpfError::map("manul_svc_mag", format!("cannot write table {table}"), e)
                })?;
            }
        }
        for (f, e) in &w.frontends {
            let written = match fe_key(f) {
                FeKey::V4(k) => self
                    .fe
                    .insert(k, fe_value(e), 0)
                    .map_err(|e| BpfError::map("manul_svc_fe", "cannot write a frontend", e)),
                FeKey::V6(k) => self
                    .fe6
                    .insert(k, fe_value(e), 0)
                    .map_err(|e| BpfError::map("manul_svc_fe6", "cannot write a frontend", e)),
            };
            written?;
        }
        for f in &w.frontend_deletes {
            match fe_key(f) {
                FeKey::V4(k) => remove(&mut self.fe, &k, "manul_svc_fe")?,
                FeKey::V6(k) => remove(&mut self.fe6, &k, "manul_svc_fe6")?,
            }
        }
        for (id, index) in &w.backend_deletes {
            let key = abi::manul_svc_be_key {
                id: *id,
                index: *index,
            };
            // The index is of one family's list: the other map has none.
            remove(&mut self.be, &key, "manul_svc_be")?;
            remove(&mut self.be6, &key, "manul_svc_be6")?;
        }
        for (table, size) in &w.table_deletes {
            for slot in 0..*size {
                let key = abi::manul_svc_mag_key {
                    table: *table,
                    slot,
                };
                remove(&mut self.mag, &key, "manul_svc_mag")?;
            }
        }
        Ok(())
    }

    /// The session affinity maps' entries (one key walk, no values read).
    pub fn affinity_entries(&self) -> usize {
        self.aff.keys().flatten().count() + self.aff6.keys().flatten().count()
    }

    /// Each sized map's entries and capacity: the written maps' entries
    /// from `held` (what the maps hold as this run knows them), the
    /// affinity maps' (written by the programs) walked.
    pub fn usage(&self, held: &Counts) -> Vec<MapUsage> {
        let u = |map, entries: usize, capacity: usize| MapUsage {
            map,
            entries: entries as u64,
            capacity: capacity as u64,
        };
        vec![
            u("manul_svc_fe", held.fe, self.fe_capacity),
            u("manul_svc_fe6", held.fe6, self.fe6_capacity),
            u("manul_svc_be", held.be, self.be_capacity),
            u("manul_svc_be6", held.be6, self.be6_capacity),
            u("manul_svc_mag", held.mag, self.mag_capacity),
            u(
                "manul_svc_aff",
                self.aff.keys().flatten().count(),
                self.aff_capacity,
            ),
            u(
                "manul_svc_aff6",
                self.aff6.keys().flatten().count(),
                self.aff6_capacity,
            ),
        ]
    }

    /// Forgets what clients had of backends that went away, in both
    /// families: their affinity entries, and their UDP and SCTP flows (the
    /// next datagram picks a live backend; a masqueraded flow's reverse
    /// entries too); marks their TCP connections for a reset (the program
    /// answers the client's next packet with a RST). Returns how many
    /// entries it removed or marked.
    pub fn clean(&mut self, gone: &BTreeMap<u32, BTreeSet<BackendAddr>>) -> usize {
        if gone.is_empty() {
            return 0;
        }
        clean::clean::<V4>(&mut self.aff, &mut self.nat, gone)
            + clean::clean::<V6>(&mut self.aff6, &mut self.nat6, gone)
    }
}

/// Removes an entry; one already gone is fine.
fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut Hash<K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), BpfError> {
    already_gone_ok(map.remove(key), name, || {
        "cannot delete an entry".to_string()
    })
}

/// A removal's outcome, where an entry already gone is fine.
fn already_gone_ok(
    removed: Result<(), aya::maps::MapError>,
    name: &'static str,
    what: impl FnOnce() -> String,
) -> Result<(), BpfError> {
    match removed {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(2) => Ok(()),
        Err(e) => Err(BpfError::map(name, what(), e)),
    }
}
