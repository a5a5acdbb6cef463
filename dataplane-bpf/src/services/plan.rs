//! Pure planning of the service maps (no I/O): each service's part of
//! the desired frontend and backend entries ([`part`]), put together for
//! the whole state ([`desired`]) or kept up to date service by service
//! ([`index`]), and the diff from what is programmed to the writes that
//! reach it ([`diff`]), in an order where no frontend ever points at an
//! incomplete backend list. An earlier run's lists are taken over by the
//! desired lists whose frontends name them ([`recover`]), so a restart
//! keeps list ids and established connections. A service change diffs only the keys it
//! touched; the same diff over every key is the whole plan ([`plan`]).

pub mod diff;
pub mod early;
pub mod index;
pub mod part;
pub mod recover;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use manul_dataplane_api::ServiceKey;

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
    /// The in-cluster twin of a port frontend under
    /// `externalTrafficPolicy: Local` (`MANUL_SVC_FE_SCOPE_IN_CLUSTER` in
    /// the key): what a pod of this node or the node itself gets there.
    pub in_cluster: bool,
}

impl Frontend {
    pub fn address(addr: IpAddr) -> Self {
        Self {
            addr,
            port: 0,
            proto: 0,
            in_cluster: false,
        }
    }

    /// The port frontend an in-cluster twin belongs to (itself for any
    /// other).
    pub fn primary(&self) -> Self {
        Self {
            in_cluster: false,
            ..*self
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

/// A Maglev table in the maps: its size, and (when this run wrote it, or
/// took it over) the list it was built for and from which backends. An
/// earlier run's tables are known by id, size and [`slot_digest`] sum,
/// and replaced by new ones unless a list taken over names one whose
/// slots are those its backends give ([`recover`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub size: u32,
    pub built: Option<(u32, Vec<BackendAddr>)>,
    /// An earlier run's table as read back: the wrapping sum of its
    /// slots' [`slot_digest`]s (None when a slot below its size is
    /// missing, or it was not read back).
    pub digest: Option<u64>,
}

/// The digest of one Maglev slot: its index and backend as the map holds
/// it (the address as 16 bytes, an IPv4 one in the first 4, and the
/// port). Summed over a table's slots, in any order.
pub fn slot_digest(slot: u32, addr: [u8; 16], port: u16) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (slot, addr, port).hash(&mut h);
    h.finish()
}

/// A backend's address as a Maglev slot holds it.
pub fn slot_addr(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            out
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The [`slot_digest`] sum of a table with `slots`.
pub fn table_digest(slots: &[BackendAddr]) -> u64 {
    (0u32..).zip(slots).fold(0u64, |acc, (i, b)| {
        acc.wrapping_add(slot_digest(i, slot_addr(b.addr), b.port))
    })
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
    /// refused), `MANUL_SVC_FE_IN_CLUSTER` (an external frontend under
    /// the `Local` policy: pods and the node take its in-cluster twin).
    pub flags: u32,
}

/// A load-balancer address and one client range of its own family
/// (truncated to its prefix): a range of the other family could never
/// match one of the address's clients, so it is not kept.
pub type SourceRange = (IpAddr, ipnet::IpNet);

/// The frontends and backend lists the services ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub frontends: BTreeMap<Frontend, Wanted>,
    pub lists: BTreeMap<ListKey, Vec<BackendAddr>>,
    /// Every service address with its address entry's flags (cluster IPs
    /// refuse ports and protocols no service has there).
    pub addresses: BTreeMap<IpAddr, u32>,
    /// Load-balancer addresses' source ranges; such an address's entry
    /// has `MANUL_SVC_FE_SOURCE_RANGES`, so a client outside them is
    /// dropped.
    pub source_ranges: BTreeSet<SourceRange>,
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
pub(crate) fn family_backends(
    backends: &[manul_dataplane_api::Backend],
    ipv6: bool,
) -> Vec<BackendAddr> {
    backends
        .iter()
        .filter(|b| b.ip.is_ipv6() == ipv6)
        .map(|b| BackendAddr {
            addr: b.ip,
            port: b.port,
        })
        .collect()
}

/// The frontends and backend lists of `services` (each service's
/// [`part::part`], added in name order): the whole-state reference that
/// [`index::Index`] keeps up to date.
#[cfg(test)]
pub fn desired(services: &BTreeMap<ServiceKey, manul_dataplane_api::Service>) -> Desired {
    desired_with(services, &BTreeSet::new())
}

/// [`desired`] with this node's addresses `local`.
#[cfg(test)]
pub fn desired_with(
    services: &BTreeMap<ServiceKey, manul_dataplane_api::Service>,
    local: &BTreeSet<IpAddr>,
) -> Desired {
    let mut d = Desired::default();
    for (key, svc) in services {
        d.add(key, &part::part(key, svc, local));
    }
    d
}

impl Desired {
    /// Adds one service's part after every service before it by name: a
    /// port frontend already claimed stays with its first claim (a
    /// [`Skipped::Conflict`] unless that claim is for the same list).
    pub fn add(&mut self, key: &ServiceKey, part: &part::Part) {
        for item in &part.items {
            let c = match item {
                part::Item::Skipped(s) => {
                    self.skipped.push(s.clone());
                    continue;
                }
                part::Item::Claim(c) => c,
            };
            if c.frontend.in_cluster {
                if self.keeps_twin(key, c) {
                    self.take(c);
                }
                continue;
            }
            if self.frontends.contains_key(&c.frontend) {
                self.skipped.extend(self.conflict(key, c));
                continue;
            }
            self.take(c);
        }
        for (addr, flags) in &part.addresses {
            *self.addresses.entry(*addr).or_insert(0) |= flags;
        }
        self.source_ranges
            .extend(part.source_ranges.iter().copied());
    }

    /// Gives a claim its frontend (and the frontend its list).
    fn take(&mut self, c: &part::Claim) {
        self.lists
            .entry(c.wanted.list.clone())
            .or_insert_with(|| c.backends.clone());
        if c.maglev {
            self.maglev.insert(c.frontend);
        }
        self.frontends.insert(c.frontend, c.wanted.clone());
    }

    /// Whether service `key` takes its in-cluster claim `c`: only when
    /// its own `Local` claim keeps the port frontend `c` is the twin of
    /// (so a contested frontend's entries are its keeper's alone).
    fn keeps_twin(&self, key: &ServiceKey, c: &part::Claim) -> bool {
        !self.frontends.contains_key(&c.frontend)
            && self.frontends.get(&c.frontend.primary()).is_some_and(|w| {
                w.list.service == *key
                    && w.list.local
                    && w.flags & crate::abi::MANUL_SVC_FE_IN_CLUSTER != 0
            })
    }

    /// Service `key`'s claim `c` left out: its frontend is another
    /// service's, or this one's for another list.
    fn conflict(&self, key: &ServiceKey, c: &part::Claim) -> Option<Skipped> {
        // A twin is its port frontend's: that one's conflict is reported.
        if c.frontend.in_cluster {
            return None;
        }
        let kept = &self.frontends.get(&c.frontend)?.list;
        (kept.service != *key || *kept != c.wanted.list).then(|| Skipped::Conflict {
            frontend: c.frontend,
            kept: kept.service.clone(),
            dropped: key.clone(),
        })
    }
}

/// What the service maps hold, as this run knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    pub frontends: BTreeMap<Frontend, FrontendEntry>,
    pub lists: BTreeMap<u32, Vec<BackendAddr>>,
    /// The list id of each desired list. An earlier run's lists have
    /// none until a desired list takes one over ([`recover`]: the one
    /// its frontends name); the others are replaced by new ones.
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
/// after them (the whole state: [`diff::Scope::All`]). `in_sync`: what an
/// earlier run left and nobody asked for again is removed.
#[cfg(test)]
pub fn plan(desired: &Desired, programmed: &Programmed, in_sync: bool) -> (Writes, Programmed) {
    let (w, delta) = diff::diff(desired, programmed, diff::Scope::All, in_sync);
    let mut next = programmed.clone();
    next.apply(delta);
    (w, next)
}

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;
