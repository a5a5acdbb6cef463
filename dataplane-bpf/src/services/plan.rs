//! Pure planning of the service maps (no I/O): from the desired services to
//! frontend and backend entries, and from what is programmed to the writes
//! that reach them in an order where no frontend ever points at an
//! incomplete backend list.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use manul_dataplane_api::{Backend, Balancing, MaglevTable, Service, ServiceKey, TrafficPolicy};

use crate::abi::{
    MANUL_SVC_FE_ADDRESS, MANUL_SVC_FE_DROP_EMPTY, MANUL_SVC_FE_EXT_CLUSTER,
    MANUL_SVC_FE_REJECT_UNKNOWN, MANUL_SVC_FE_SOURCE_RANGES,
};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// What a new connection is addressed to; port 0 and protocol 0: the
/// address entry of a service address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// Either family: IPv6 ones go to the IPv6 maps.
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
}

impl Frontend {
    pub fn address(addr: IpAddr) -> Self {
        Self {
            addr,
            port: 0,
            proto: 0,
        }
    }

    pub fn is_address(&self) -> bool {
        self.port == 0 && self.proto == 0
    }
}

/// One backend list: a service port under one traffic policy (`local`:
/// the `Local` policy's list), of one family (`ipv6`: its IPv6
/// backends, for IPv6 frontends; else its IPv4 ones).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListKey {
    pub service: ServiceKey,
    pub port_name: String,
    pub proto: u8,
    pub port: u16,
    pub local: bool,
    pub ipv6: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendAddr {
    pub addr: IpAddr,
    pub port: u16,
}

/// What a frontend entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrontendEntry {
    pub id: u32,
    pub count: u32,
    pub affinity_s: u32,
    /// `MANUL_SVC_FE_*`.
    pub flags: u32,
    /// The Maglev table new connections pick from (0: none, random) and
    /// its size.
    pub maglev: u32,
    pub maglev_size: u32,
}

/// A Maglev table in the maps: its size, and (when this run wrote it) the
/// list it was built for and from which backends. An earlier run's tables
/// are known by id and size only, and replaced by new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub size: u32,
    pub built: Option<(u32, Vec<BackendAddr>)>,
}

/// What a desired port frontend asks for: its list, the affinity
/// timeout and its `MANUL_SVC_FE_*` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub list: ListKey,
    pub affinity_s: u32,
    /// `MANUL_SVC_FE_EXT_CLUSTER` (an external frontend under the
    /// `Cluster` policy: masqueraded or sent with DSR from a host
    /// interface), `MANUL_SVC_FE_DROP_EMPTY` (a `Local` list with no
    /// backend here while the service has some elsewhere: dropped, not
    /// refused).
    pub flags: u32,
}

/// The frontends and backend lists the services ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub frontends: BTreeMap<Frontend, Wanted>,
    pub lists: BTreeMap<ListKey, Vec<BackendAddr>>,
    /// Every service address with its address entry's flags (cluster IPs
    /// refuse ports and protocols no service has there).
    pub addresses: BTreeMap<IpAddr, u32>,
    /// Load-balancer addresses' source ranges (IPv4 ones: an IPv4
    /// address's clients are IPv4); such an address's entry has
    /// `MANUL_SVC_FE_SOURCE_RANGES`, so a client outside them is dropped.
    pub source_ranges: BTreeSet<(Ipv4Addr, ipnet::Ipv4Net)>,
    /// The same for IPv6 load-balancer addresses and IPv6 ranges.
    pub source_ranges6: BTreeSet<(Ipv6Addr, ipnet::Ipv6Net)>,
    /// Frontends that pick by Maglev: the external ones (node ports,
    /// external and load-balancer addresses) of Services marked for it.
    pub maglev: BTreeSet<Frontend>,
    /// A Maglev table is sized for at least this many backends (0: for
    /// its own), so its size, and thus every flow's slot, stays put while
    /// a list grows up to it.
    pub maglev_capacity: usize,
    /// What the program cannot carry, for the log.
    pub skipped: Vec<Skipped>,
}

/// A part of a service left out of the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// Protocols other than TCP, UDP and SCTP.
    Protocol { service: ServiceKey, proto: u8 },
    /// An SCTP frontend with a backend on another port: SCTP's CRC32c
    /// covers the ports and cannot be patched, so the programs translate
    /// SCTP addresses only. Left out, so a cluster IP refuses it.
    SctpPort {
        service: ServiceKey,
        frontend: Frontend,
        target: u16,
    },
    /// Two services claim one frontend: the first by name keeps it.
    Conflict {
        frontend: Frontend,
        kept: ServiceKey,
        dropped: ServiceKey,
    },
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Protocol { service, proto } => write!(
                f,
                "service {}/{}: protocol {proto} not programmed (TCP, UDP and SCTP only)",
                service.0, service.1
            ),
            Skipped::SctpPort {
                service,
                frontend,
                target,
            } => write!(
                f,
                "service {}/{}: SCTP frontend {}:{} not programmed: a backend listens on port \
                 {target} (SCTP's checksum covers the ports; only addresses are translated)",
                service.0, service.1, frontend.addr, frontend.port
            ),
            Skipped::Conflict {
                frontend,
                kept,
                dropped,
            } => write!(
                f,
                "frontend {}:{}/{} claimed by {}/{} and {}/{}: {}/{} keeps it",
                frontend.addr,
                frontend.port,
                frontend.proto,
                kept.0,
                kept.1,
                dropped.0,
                dropped.1,
                kept.0,
                kept.1
            ),
        }
    }
}

/// The backends of one family (`ipv6`), in order.
fn family_backends(backends: &[manul_dataplane_api::Backend], ipv6: bool) -> Vec<BackendAddr> {
    backends
        .iter()
        .filter(|b| b.ip.is_ipv6() == ipv6)
        .map(|b| BackendAddr {
            addr: b.ip,
            port: b.port,
        })
        .collect()
}

/// The flags of a port frontend: `external` (a node port, an external or a
/// load-balancer address) under `Cluster` masquerades or uses DSR; a
/// `Local` list without backends here while the port has some elsewhere
/// drops.
fn frontend_flags(
    port: &manul_dataplane_api::ServicePort,
    policy: TrafficPolicy,
    external: bool,
    ipv6: bool,
) -> u32 {
    match policy {
        TrafficPolicy::Cluster if external => MANUL_SVC_FE_EXT_CLUSTER,
        TrafficPolicy::Cluster => 0,
        TrafficPolicy::Local => {
            let here = family_backends(&port.local_backends, ipv6).is_empty();
            let anywhere = family_backends(&port.backends, ipv6).is_empty();
            if here && !anywhere {
                MANUL_SVC_FE_DROP_EMPTY
            } else {
                0
            }
        }
    }
}

/// The frontends and backend lists of `services`: a cluster IP uses the
/// internal traffic policy's list, an external or load-balancer address
/// the external one's, a node port (address 0.0.0.0, and :: for a
/// service with an IPv6 cluster IP) the external one's too; and the
/// service addresses (not 0.0.0.0 or ::: a node port has no address
/// entry). Each frontend's list holds its family's backends; an SCTP
/// frontend whose backends listen on another port is left out (see
/// [`Skipped::SctpPort`]).
pub fn desired(services: &BTreeMap<ServiceKey, Service>) -> Desired {
    let mut d = Desired::default();
    for (key, svc) in services {
        // (address, policy, external)
        let mut frontends: Vec<(IpAddr, TrafficPolicy, bool)> = svc
            .cluster_ips
            .iter()
            .map(|ip| (*ip, svc.internal_traffic, false))
            .chain(
                svc.external_ips
                    .iter()
                    .map(|ip| (*ip, svc.external_traffic, true)),
            )
            .collect();
        for ip in &svc.load_balancer_ips {
            frontends.push((*ip, svc.external_traffic, true));
            if svc.load_balancer_source_ranges.is_empty() {
                continue;
            }
            *d.addresses.entry(*ip).or_insert(MANUL_SVC_FE_ADDRESS) |= MANUL_SVC_FE_SOURCE_RANGES;
            // A range of the other family cannot match a client of this
            // address's.
            for range in &svc.load_balancer_source_ranges {
                match (ip, range) {
                    (IpAddr::V4(lb), ipnet::IpNet::V4(r)) => {
                        d.source_ranges.insert((*lb, r.trunc()));
                    }
                    (IpAddr::V6(lb), ipnet::IpNet::V6(r)) => {
                        d.source_ranges6.insert((*lb, r.trunc()));
                    }
                    _ => {}
                }
            }
        }
        let ipv6_node_port = svc.cluster_ips.iter().any(IpAddr::is_ipv6);
        for port in &svc.ports {
            if ![PROTO_TCP, PROTO_UDP, PROTO_SCTP].contains(&port.protocol) {
                d.skipped.push(Skipped::Protocol {
                    service: key.clone(),
                    proto: port.protocol,
                });
                continue;
            }
            // A node port: address 0.0.0.0 (::) in the map, which the
            // program looks up only for packets to the node's own
            // addresses arriving at a host interface.
            let unspecified = [
                Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                ipv6_node_port.then_some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            ];
            let node_port = port.node_port.into_iter().flat_map(|p| {
                unspecified
                    .into_iter()
                    .flatten()
                    .map(move |ip| (ip, svc.external_traffic, true, p))
            });
            let targets = frontends
                .iter()
                .map(|(ip, policy, external)| (*ip, *policy, *external, port.port))
                .chain(node_port);
            for (ip, policy, external, number) in targets {
                let ip = &ip;
                let policy = &policy;
                let ipv6 = ip.is_ipv6();
                let addr = *ip;
                if !addr.is_unspecified() {
                    let flags = d.addresses.entry(addr).or_insert(MANUL_SVC_FE_ADDRESS);
                    if svc.cluster_ips.contains(ip) {
                        *flags |= MANUL_SVC_FE_REJECT_UNKNOWN;
                    }
                }
                let backends = family_backends(port.backends_for(*policy), ipv6);
                if port.protocol == PROTO_SCTP
                    && let Some(b) = backends.iter().find(|b| b.port != number)
                {
                    d.skipped.push(Skipped::SctpPort {
                        service: key.clone(),
                        frontend: Frontend {
                            addr,
                            port: number,
                            proto: port.protocol,
                        },
                        target: b.port,
                    });
                    continue;
                }
                let list = ListKey {
                    service: key.clone(),
                    port_name: port.name.clone(),
                    proto: port.protocol,
                    port: port.port,
                    local: *policy == TrafficPolicy::Local,
                    ipv6,
                };
                let frontend = Frontend {
                    addr,
                    port: number,
                    proto: port.protocol,
                };
                if let Some(Wanted { list: kept, .. }) = d.frontends.get(&frontend) {
                    if kept.service != *key || kept != &list {
                        d.skipped.push(Skipped::Conflict {
                            frontend,
                            kept: kept.service.clone(),
                            dropped: key.clone(),
                        });
                    }
                    continue;
                }
                d.lists.entry(list.clone()).or_insert(backends);
                if external && svc.balancing == Balancing::Maglev {
                    d.maglev.insert(frontend);
                }
                d.frontends.insert(
                    frontend,
                    Wanted {
                        list,
                        affinity_s: svc.affinity_timeout_seconds.unwrap_or(0),
                        flags: frontend_flags(port, *policy, external, ipv6),
                    },
                );
            }
        }
    }
    d
}

/// What the service maps hold, as this run knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    pub frontends: BTreeMap<Frontend, FrontendEntry>,
    pub lists: BTreeMap<u32, Vec<BackendAddr>>,
    /// The list id of each desired list (an earlier run's lists have
    /// none: they are replaced by new ones).
    pub ids: BTreeMap<ListKey, u32>,
    pub next_id: u32,
    /// Frontends an earlier run left and this run has not been told about
    /// yet: kept (with their lists) until the state is in sync.
    pub adopted: BTreeSet<Frontend>,
    /// The Maglev tables by id (ids never reused by the run).
    pub tables: BTreeMap<u32, TableInfo>,
    pub next_table: u32,
}

/// The map writes of one sync, in the order they must be made: backends
/// first (new indices are invisible until a frontend's count covers them),
/// then new Maglev tables whole, then frontends (address entries last, so
/// a new service's ports exist before its cluster IP refuses unknown
/// ones), then deletions (address entries first; replaced tables last,
/// once no frontend names them).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Writes {
    pub backends: Vec<(u32, u32, BackendAddr)>,
    /// New Maglev tables: id, and each slot's backend.
    pub tables: Vec<(u32, Vec<BackendAddr>)>,
    pub frontends: Vec<(Frontend, FrontendEntry)>,
    pub frontend_deletes: Vec<Frontend>,
    pub backend_deletes: Vec<(u32, u32)>,
    /// Tables no frontend names any more: id and size.
    pub table_deletes: Vec<(u32, u32)>,
    /// Backends a list no longer holds, by list id: their affinity
    /// entries and UDP flows are cleaned up.
    pub gone: BTreeMap<u32, BTreeSet<BackendAddr>>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
            && self.tables.is_empty()
            && self.frontends.is_empty()
            && self.frontend_deletes.is_empty()
            && self.backend_deletes.is_empty()
            && self.table_deletes.is_empty()
    }
}

/// The writes from `programmed` to `desired`, and what the maps hold
/// after them. `in_sync`: what an earlier run left and nobody asked for
/// again is removed.
pub fn plan(desired: &Desired, programmed: &Programmed, in_sync: bool) -> (Writes, Programmed) {
    let mut w = Writes::default();
    let mut next = Programmed {
        next_id: programmed.next_id.max(1),
        next_table: programmed.next_table.max(1),
        adopted: if in_sync {
            BTreeSet::new()
        } else {
            programmed.adopted.clone()
        },
        ..Programmed::default()
    };
    for (key, list) in &desired.lists {
        let id = match programmed.ids.get(key) {
            Some(id) => *id,
            None => {
                let mut id = next.next_id;
                while programmed.lists.contains_key(&id) || next.lists.contains_key(&id) {
                    id = id.checked_add(1).unwrap_or(1);
                }
                next.next_id = id.checked_add(1).unwrap_or(1);
                id
            }
        };
        let old = programmed.lists.get(&id).map_or(&[][..], Vec::as_slice);
        for (i, b) in (0u32..).zip(list) {
            if old.get(i as usize) != Some(b) {
                w.backends.push((id, i, *b));
            }
        }
        for i in list.len()..old.len() {
            w.backend_deletes.push((id, i as u32));
        }
        let gone: BTreeSet<BackendAddr> =
            old.iter().filter(|b| !list.contains(b)).copied().collect();
        if !gone.is_empty() {
            w.gone.insert(id, gone);
        }
        next.ids.insert(key.clone(), id);
        next.lists.insert(id, list.clone());
    }
    for (frontend, wanted) in &desired.frontends {
        // Every desired frontend's list is a desired list.
        let Some(&id) = next.ids.get(&wanted.list) else {
            continue;
        };
        let (maglev, maglev_size) = match desired.maglev.contains(frontend) {
            true => maglev_table(desired, programmed, &mut next, &mut w, id),
            false => (0, 0),
        };
        let entry = FrontendEntry {
            id,
            count: next.lists.get(&id).map_or(0, Vec::len) as u32,
            affinity_s: wanted.affinity_s,
            flags: wanted.flags,
            maglev,
            maglev_size,
        };
        if programmed.frontends.get(frontend) != Some(&entry) {
            w.frontends.push((*frontend, entry));
        }
        next.frontends.insert(*frontend, entry);
        next.adopted.remove(frontend);
    }
    for (addr, flags) in &desired.addresses {
        let frontend = Frontend::address(*addr);
        let entry = FrontendEntry {
            id: 0,
            count: 0,
            affinity_s: 0,
            flags: *flags,
            maglev: 0,
            maglev_size: 0,
        };
        if programmed.frontends.get(&frontend) != Some(&entry) {
            w.frontends.push((frontend, entry));
        }
        next.frontends.insert(frontend, entry);
        next.adopted.remove(&frontend);
    }
    for (frontend, entry) in &programmed.frontends {
        if next.frontends.contains_key(frontend) {
            continue;
        }
        if next.adopted.contains(frontend) {
            next.frontends.insert(*frontend, *entry);
            if let Some(list) = programmed.lists.get(&entry.id) {
                next.lists.entry(entry.id).or_insert_with(|| list.clone());
            }
            if let Some(t) = programmed.tables.get(&entry.maglev) {
                next.tables.entry(entry.maglev).or_insert_with(|| t.clone());
            }
        } else {
            w.frontend_deletes.push(*frontend);
        }
    }
    // Address entries first: a cluster IP refuses unknown ports only
    // while all of its ports are there.
    w.frontend_deletes.sort_by_key(|f| !f.is_address());
    for (id, old) in &programmed.lists {
        if !next.lists.contains_key(id) {
            w.backend_deletes
                .extend((0..old.len() as u32).map(|i| (*id, i)));
            w.gone.insert(*id, old.iter().copied().collect());
        }
    }
    for (id, t) in &programmed.tables {
        if !next.tables.contains_key(id) {
            w.table_deletes.push((*id, t.size));
        }
    }
    (w, next)
}

/// The Maglev table of list `id` (as `next` holds it), for a frontend
/// that picks by Maglev: the one already written for the same backends
/// and size, else a new one (written whole before any frontend names it).
/// (0, 0) for an empty list: its frontends refuse new connections.
fn maglev_table(
    desired: &Desired,
    programmed: &Programmed,
    next: &mut Programmed,
    w: &mut Writes,
    id: u32,
) -> (u32, u32) {
    let Some(list) = next.lists.get(&id).filter(|l| !l.is_empty()) else {
        return (0, 0);
    };
    let backends: Vec<Backend> = list
        .iter()
        .map(|b| Backend {
            ip: b.addr,
            port: b.port,
            local: false,
            ready: true,
        })
        .collect();
    // The capacity is the driver's, fixed for the run: the same backends
    // give the same table.
    let built = Some((id, list.clone()));
    let same = |t: &TableInfo| t.built == built;
    if let Some((tid, t)) = next.tables.iter().find(|(_, t)| same(t)) {
        return (*tid, t.size);
    }
    if let Some((tid, t)) = programmed.tables.iter().find(|(_, t)| same(t)) {
        next.tables.insert(*tid, t.clone());
        return (*tid, t.size);
    }
    let table = MaglevTable::with_capacity(&backends, desired.maglev_capacity);
    let slots: Vec<BackendAddr> = table
        .slots()
        .iter()
        .filter_map(|i| table.backends().get(*i as usize))
        .map(|b| BackendAddr {
            addr: b.ip,
            port: b.port,
        })
        .collect();
    let mut tid = next.next_table;
    while programmed.tables.contains_key(&tid) || next.tables.contains_key(&tid) {
        tid = tid.checked_add(1).unwrap_or(1);
    }
    next.next_table = tid.checked_add(1).unwrap_or(1);
    let size = slots.len() as u32;
    next.tables.insert(tid, TableInfo { size, built });
    w.tables.push((tid, slots));
    (tid, size)
}

#[cfg(test)]
mod tests;
