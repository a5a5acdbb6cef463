//! The service maps in the kernel: reading what an earlier run left,
//! making a plan's writes in order, and cleaning up after backends that
//! went away. Thin calls into aya; keys and values from [`crate::abi`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap, LpmTrie, Map, MapData};

use super::plan::{
    BackendAddr, Frontend, FrontendEntry, PROTO_SCTP, PROTO_UDP, Programmed, TableInfo, Writes,
};
use crate::abi;
use crate::error::BpfError;

type Hash<K, V> = HashMap<MapData, K, V>;

/// Handles on the service maps.
pub struct ServiceMaps {
    fe: Hash<abi::manul_svc_fe_key, abi::manul_svc_fe_value>,
    be: Hash<abi::manul_svc_be_key, abi::manul_svc_be_value>,
    nat: Hash<abi::manul_nat_key, abi::manul_nat_value>,
    aff: Hash<abi::manul_svc_aff_key, abi::manul_svc_aff_value>,
    /// Host interfaces carried for service NAT only (ifindex -> 1).
    ifs: Hash<u32, u32>,
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
            pad: 0,
        }),
        IpAddr::V6(a) => FeKey::V6(abi::manul_svc_fe6_key {
            addr: a.octets(),
            port: f.port.to_be(),
            proto: f.proto,
            pad: 0,
        }),
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

/// Each family's source ranges: what the tries should hold.
#[derive(Debug, Clone, Copy)]
pub struct SourceRanges<'a> {
    pub v4: &'a BTreeSet<(Ipv4Addr, Ipv4Net)>,
    pub v6: &'a BTreeSet<(Ipv6Addr, Ipv6Net)>,
}

type Trie<K> = LpmTrie<MapData, K, u32>;

/// Takes an LPM trie out of a loaded object.
fn take_trie<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<Trie<K>, BpfError> {
    ebpf.take_map(name)
        .ok_or(BpfError::Missing(name))?
        .try_into()
        .map_err(|e| BpfError::map(name, "unexpected map type", e))
}

/// Deletes a trie's entries `keep` refuses.
fn remove_stale<K: aya::Pod>(
    trie: &mut Trie<K>,
    name: &'static str,
    keep: impl Fn(&Key<K>) -> bool,
) -> Result<(), BpfError> {
    let stale: Vec<Key<K>> = trie.keys().flatten().filter(|k| !keep(k)).collect();
    for k in stale {
        trie.remove(&k)
            .map_err(|e| BpfError::map(name, "remove a source range", e))?;
    }
    Ok(())
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
    let addr = match b.addr {
        IpAddr::V4(a) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            out
        }
        IpAddr::V6(a) => a.octets(),
    };
    abi::manul_svc_be6_value {
        addr,
        port: b.port.to_be(),
        pad: 0,
    }
}

fn backend_of(addr: u32, port: u16) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V4(host_addr(addr)),
        port: u16::from_be(port),
    }
}

fn backend6_of(addr: [u8; 16], port: u16) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V6(Ipv6Addr::from(addr)),
        port: u16::from_be(port),
    }
}

/// MANUL_HAIRPIN_SNAT_V6 (manul_maps.h) as the maps hold it.
fn hairpin_snat_v6() -> [u8; 16] {
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
        let (aff, _) = take(ebpf, "manul_svc_aff")?;
        let (ifs, _) = take(ebpf, "manul_svc_if")?;
        let (mag, mag_capacity) = take(ebpf, "manul_svc_mag")?;
        let (fe6, fe6_capacity) = take(ebpf, "manul_svc_fe6")?;
        let (be6, be6_capacity) = take(ebpf, "manul_svc_be6")?;
        let (nat6, _) = take(ebpf, "manul_nat6")?;
        let (aff6, _) = take(ebpf, "manul_svc_aff6")?;
        let src = take_trie(ebpf, "manul_svc_src")?;
        let src6 = take_trie(ebpf, "manul_svc_src6")?;
        Ok(Self {
            fe,
            be,
            nat,
            aff,
            ifs,
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

    /// Adds the source ranges of `want` the map lacks (before the address
    /// entries that name them: until then such an address drops every
    /// client, closed).
    pub fn add_source_ranges(&mut self, want: SourceRanges<'_>) -> Result<(), BpfError> {
        for (lb, range) in want.v4 {
            self.src
                .insert(&src_key(*lb, *range), 1, 0)
                .map_err(|e| BpfError::map("manul_svc_src", format!("add {range} to {lb}"), e))?;
        }
        for (lb, range) in want.v6 {
            self.src6
                .insert(&src6_key(*lb, *range), 1, 0)
                .map_err(|e| BpfError::map("manul_svc_src6", format!("add {range} to {lb}"), e))?;
        }
        Ok(())
    }

    /// Deletes the source ranges not in `want` (after the address entries
    /// stopped naming them).
    pub fn remove_source_ranges(&mut self, want: SourceRanges<'_>) -> Result<(), BpfError> {
        remove_stale(&mut self.src, "manul_svc_src", |k| {
            let d = k.data();
            let len = u8::try_from(k.prefix_len().saturating_sub(32)).unwrap_or(u8::MAX);
            let range = Ipv4Net::new(host_addr(d.client), len).map(|r| r.trunc());
            range.is_ok_and(|r| want.v4.contains(&(host_addr(d.lb), r)))
        })?;
        remove_stale(&mut self.src6, "manul_svc_src6", |k| {
            let d = k.data();
            let len = u8::try_from(k.prefix_len().saturating_sub(128)).unwrap_or(u8::MAX);
            let range = Ipv6Net::new(Ipv6Addr::from(d.client), len).map(|r| r.trunc());
            range.is_ok_and(|r| want.v6.contains(&(Ipv6Addr::from(d.lb), r)))
        })
    }

    /// What the maps hold (an earlier run's entries, or after a failed
    /// write): every frontend adopted, no list with a known service.
    pub fn read(&self) -> Programmed {
        let mut p = Programmed::default();
        for (k, v) in self.fe.iter().flatten() {
            let f = Frontend {
                addr: IpAddr::V4(host_addr(k.addr)),
                port: u16::from_be(k.port),
                proto: k.proto,
            };
            p.frontends.insert(f, entry_of(&v));
            p.adopted.insert(f);
        }
        for (k, v) in self.fe6.iter().flatten() {
            let f = Frontend {
                addr: IpAddr::V6(Ipv6Addr::from(k.addr)),
                port: u16::from_be(k.port),
                proto: k.proto,
            };
            p.frontends.insert(f, entry_of(&v));
            p.adopted.insert(f);
        }
        // A table's size is its highest slot plus one (a table cut short
        // by a failed write is deleted all the same).
        for k in self.mag.keys().flatten() {
            let t = p.tables.entry(k.table).or_insert(TableInfo {
                size: 0,
                built: None,
            });
            t.size = t.size.max(k.slot.saturating_add(1));
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
        p.next_id = lists.keys().max().map_or(1, |m| m.saturating_add(1));
        p.lists = lists
            .into_iter()
            .map(|(id, l)| (id, l.into_values().collect()))
            .collect();
        p
    }

    /// Checks that the maps can hold every entry at the sync's peak
    /// (before its deletions).
    pub fn check(&self, w: &Writes, next: &Programmed) -> Result<(), BpfError> {
        let v6 = |f: &&Frontend| f.addr.is_ipv6();
        let fe6 =
            next.frontends.keys().filter(v6).count() + w.frontend_deletes.iter().filter(v6).count();
        let fe = next.frontends.len() + w.frontend_deletes.len() - fe6;
        let backends = next.lists.values().flatten();
        let be6 = backends.clone().filter(|b| b.addr.is_ipv6()).count();
        // A deleted index may be of either family: counted in both.
        let be = backends.count() - be6 + w.backend_deletes.len();
        let be6 = be6 + w.backend_deletes.len();
        let size = |(_, size): &(u32, u32)| *size as usize;
        let mag = next.tables.values().map(|t| t.size as usize).sum::<usize>()
            + w.table_deletes.iter().map(size).sum::<usize>();
        for (map, needed, capacity) in [
            ("manul_svc_fe", fe, self.fe_capacity),
            ("manul_svc_be", be, self.be_capacity),
            ("manul_svc_mag", mag, self.mag_capacity),
            ("manul_svc_fe6", fe6, self.fe6_capacity),
            ("manul_svc_be6", be6, self.be6_capacity),
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

    /// Forgets what clients had of backends that went away: their
    /// affinity entries, and their UDP flows (the next datagram picks a
    /// live backend; a masqueraded flow's reverse entries too); marks their TCP connections for a reset (the
    /// program answers the client's next packet with a RST). Returns how
    /// many entries it removed or marked.
    pub fn clean(&mut self, gone: &BTreeMap<u32, BTreeSet<BackendAddr>>) -> usize {
        if gone.is_empty() {
            return 0;
        }
        let is_gone = |id: u32, addr: u32, port: u16| {
            gone.get(&id)
                .is_some_and(|s| s.contains(&backend_of(addr, port)))
        };
        let aff: Vec<_> = self
            .aff
            .iter()
            .flatten()
            .filter(|(k, v)| is_gone(k.id, v.addr, v.port))
            .map(|(k, _)| k)
            .collect();
        let snat = abi::MANUL_HAIRPIN_SNAT_V4.to_be();
        let mut nat = Vec::new();
        let mut reset = Vec::new();
        for (k, v) in self.nat.iter().flatten() {
            if k.dir != abi::MANUL_NAT_FWD as u8 || !is_gone(v.id, v.addr, v.port) {
                continue;
            }
            // TCP gets a RST; UDP and SCTP flows pick a live backend
            // with their next packet (an SCTP association finds none
            // there and is aborted by the new peer).
            if k.proto != PROTO_UDP && k.proto != PROTO_SCTP {
                reset.push((k, v));
                continue;
            }
            nat.push(k);
            nat.push(abi::manul_nat_key {
                src: v.addr,
                dst: if v.flags & abi::MANUL_NAT_HAIRPIN != 0 {
                    snat
                } else {
                    k.src
                },
                sport: v.port,
                dport: k.sport,
                proto: k.proto,
                dir: abi::MANUL_NAT_REV as u8,
                pad: 0,
            });
            if v.flags & abi::MANUL_NAT_SNAT != 0 {
                nat.push(abi::manul_nat_key {
                    src: v.addr,
                    dst: v.snat_addr,
                    sport: v.port,
                    dport: v.snat_port,
                    proto: k.proto,
                    dir: abi::MANUL_NAT_SNAT_REV as u8,
                    pad: 0,
                });
            }
        }
        let mut removed = self.clean6(gone);
        for k in &aff {
            removed += usize::from(self.aff.remove(k).is_ok());
        }
        for k in &nat {
            removed += usize::from(self.nat.remove(k).is_ok());
        }
        for (k, mut v) in reset {
            v.flags |= abi::MANUL_NAT_RESET;
            // Only while it exists (BPF_EXIST): a connection gone meanwhile
            // must not come back as one to reset.
            removed += usize::from(self.nat.insert(k, v, 2).is_ok());
        }
        removed
    }
}

impl ServiceMaps {
    /// [`ServiceMaps::clean`] for the IPv6 maps.
    fn clean6(&mut self, gone: &BTreeMap<u32, BTreeSet<BackendAddr>>) -> usize {
        let is_gone = |id: u32, addr: [u8; 16], port: u16| {
            gone.get(&id)
                .is_some_and(|s| s.contains(&backend6_of(addr, port)))
        };
        let aff: Vec<_> = self
            .aff6
            .iter()
            .flatten()
            .filter(|(k, v)| is_gone(k.id, v.addr, v.port))
            .map(|(k, _)| k)
            .collect();
        let snat = hairpin_snat_v6();
        let mut nat = Vec::new();
        let mut reset = Vec::new();
        for (k, v) in self.nat6.iter().flatten() {
            if k.dir != abi::MANUL_NAT_FWD as u8 || !is_gone(v.id, v.addr, v.port) {
                continue;
            }
            if k.proto != PROTO_UDP && k.proto != PROTO_SCTP {
                reset.push((k, v));
                continue;
            }
            nat.push(k);
            nat.push(abi::manul_nat6_key {
                src: v.addr,
                dst: if v.flags & abi::MANUL_NAT_HAIRPIN != 0 {
                    snat
                } else {
                    k.src
                },
                sport: v.port,
                dport: k.sport,
                proto: k.proto,
                dir: abi::MANUL_NAT_REV as u8,
                pad: 0,
            });
            if v.flags & abi::MANUL_NAT_SNAT != 0 {
                nat.push(abi::manul_nat6_key {
                    src: v.addr,
                    dst: v.snat_addr,
                    sport: v.port,
                    dport: v.snat_port,
                    proto: k.proto,
                    dir: abi::MANUL_NAT_SNAT_REV as u8,
                    pad: 0,
                });
            }
        }
        let mut removed = 0;
        for k in &aff {
            removed += usize::from(self.aff6.remove(k).is_ok());
        }
        for k in &nat {
            removed += usize::from(self.nat6.remove(k).is_ok());
        }
        for (k, mut v) in reset {
            v.flags |= abi::MANUL_NAT_RESET;
            removed += usize::from(self.nat6.insert(k, v, 2).is_ok());
        }
        removed
    }
}

/// Removes an entry; one already gone is fine.
fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut Hash<K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), BpfError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(2) => Ok(()),
        Err(e) => Err(BpfError::map(name, "cannot delete an entry", e)),
    }
}
