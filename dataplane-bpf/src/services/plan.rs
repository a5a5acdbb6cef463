//! Pure planning of the service maps (no I/O): from the desired services to
//! frontend and backend entries, and from what is programmed to the writes
//! that reach them in an order where no frontend ever points at an
//! incomplete backend list.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use manul_dataplane_api::{Service, ServiceKey, TrafficPolicy};

use crate::abi::{MANUL_SVC_FE_ADDRESS, MANUL_SVC_FE_REJECT_UNKNOWN};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// What a new connection is addressed to; port 0 and protocol 0: the
/// address entry of a service address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

impl Frontend {
    pub fn address(addr: Ipv4Addr) -> Self {
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
/// the `Local` policy's list).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListKey {
    pub service: ServiceKey,
    pub port_name: String,
    pub proto: u8,
    pub port: u16,
    pub local: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendAddr {
    pub addr: Ipv4Addr,
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
}

/// The frontends and backend lists the services ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub frontends: BTreeMap<Frontend, (ListKey, u32)>,
    pub lists: BTreeMap<ListKey, Vec<BackendAddr>>,
    /// Every service address with its address entry's flags (cluster IPs
    /// refuse ports and protocols no service has there).
    pub addresses: BTreeMap<Ipv4Addr, u32>,
    /// What the program cannot carry, for the log.
    pub skipped: Vec<Skipped>,
}

/// A part of a service left out of the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// IPv6 frontends: the program translates IPv4 only.
    Ipv6 { service: ServiceKey, addr: IpAddr },
    /// Protocols other than TCP and UDP (SCTP's CRC32c checksum cannot
    /// be updated incrementally).
    Protocol { service: ServiceKey, proto: u8 },
    /// A load-balancer address with source ranges: the program does not
    /// check them, so it does not translate that address at all.
    SourceRanges { service: ServiceKey, addr: IpAddr },
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
            Skipped::Ipv6 { service, addr } => write!(
                f,
                "service {}/{}: frontend {addr} not programmed (IPv4 only)",
                service.0, service.1
            ),
            Skipped::Protocol { service, proto } => write!(
                f,
                "service {}/{}: protocol {proto} not programmed (TCP and UDP only)",
                service.0, service.1
            ),
            Skipped::SourceRanges { service, addr } => write!(
                f,
                "service {}/{}: load-balancer address {addr} with source ranges not programmed",
                service.0, service.1
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

/// The frontends and backend lists of `services`: a cluster IP uses the
/// internal traffic policy's list, an external or load-balancer address
/// the external one's; and the service addresses. Node ports are not frontends here (the program
/// translates at workload interfaces only).
pub fn desired(services: &BTreeMap<ServiceKey, Service>) -> Desired {
    let mut d = Desired::default();
    for (key, svc) in services {
        let mut frontends: Vec<(IpAddr, TrafficPolicy)> = svc
            .cluster_ips
            .iter()
            .map(|ip| (*ip, svc.internal_traffic))
            .chain(
                svc.external_ips
                    .iter()
                    .map(|ip| (*ip, svc.external_traffic)),
            )
            .collect();
        for ip in &svc.load_balancer_ips {
            if svc.load_balancer_source_ranges.is_empty() {
                frontends.push((*ip, svc.external_traffic));
            } else {
                d.skipped.push(Skipped::SourceRanges {
                    service: key.clone(),
                    addr: *ip,
                });
            }
        }
        for port in &svc.ports {
            if port.protocol != PROTO_TCP && port.protocol != PROTO_UDP {
                d.skipped.push(Skipped::Protocol {
                    service: key.clone(),
                    proto: port.protocol,
                });
                continue;
            }
            for (ip, policy) in &frontends {
                let addr = match ip {
                    IpAddr::V4(a) => *a,
                    IpAddr::V6(_) => {
                        d.skipped.push(Skipped::Ipv6 {
                            service: key.clone(),
                            addr: *ip,
                        });
                        continue;
                    }
                };
                let flags = d.addresses.entry(addr).or_insert(MANUL_SVC_FE_ADDRESS);
                if svc.cluster_ips.contains(ip) {
                    *flags |= MANUL_SVC_FE_REJECT_UNKNOWN;
                }
                let list = ListKey {
                    service: key.clone(),
                    port_name: port.name.clone(),
                    proto: port.protocol,
                    port: port.port,
                    local: *policy == TrafficPolicy::Local,
                };
                let frontend = Frontend {
                    addr,
                    port: port.port,
                    proto: port.protocol,
                };
                if let Some((kept, _)) = d.frontends.get(&frontend) {
                    if kept.service != *key || kept != &list {
                        d.skipped.push(Skipped::Conflict {
                            frontend,
                            kept: kept.service.clone(),
                            dropped: key.clone(),
                        });
                    }
                    continue;
                }
                d.lists.entry(list.clone()).or_insert_with(|| {
                    port.backends_for(*policy)
                        .iter()
                        .filter_map(|b| match b.ip {
                            IpAddr::V4(addr) => Some(BackendAddr { addr, port: b.port }),
                            IpAddr::V6(_) => None,
                        })
                        .collect()
                });
                d.frontends
                    .insert(frontend, (list, svc.affinity_timeout_seconds.unwrap_or(0)));
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
}

/// The map writes of one sync, in the order they must be made: backends
/// first (new indices are invisible until a frontend's count covers them),
/// then frontends (address entries last, so a new service's ports exist
/// before its cluster IP refuses unknown ones), then deletions (address
/// entries first).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Writes {
    pub backends: Vec<(u32, u32, BackendAddr)>,
    pub frontends: Vec<(Frontend, FrontendEntry)>,
    pub frontend_deletes: Vec<Frontend>,
    pub backend_deletes: Vec<(u32, u32)>,
    /// Backends a list no longer holds, by list id: their affinity
    /// entries and UDP flows are cleaned up.
    pub gone: BTreeMap<u32, BTreeSet<BackendAddr>>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
            && self.frontends.is_empty()
            && self.frontend_deletes.is_empty()
            && self.backend_deletes.is_empty()
    }
}

/// The writes from `programmed` to `desired`, and what the maps hold
/// after them. `in_sync`: what an earlier run left and nobody asked for
/// again is removed.
pub fn plan(desired: &Desired, programmed: &Programmed, in_sync: bool) -> (Writes, Programmed) {
    let mut w = Writes::default();
    let mut next = Programmed {
        next_id: programmed.next_id.max(1),
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
    for (frontend, (list, affinity_s)) in &desired.frontends {
        // Every desired frontend's list is a desired list.
        let Some(&id) = next.ids.get(list) else {
            continue;
        };
        let entry = FrontendEntry {
            id,
            count: next.lists.get(&id).map_or(0, Vec::len) as u32,
            affinity_s: *affinity_s,
            flags: 0,
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
    (w, next)
}

#[cfg(test)]
mod tests;
