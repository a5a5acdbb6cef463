//! Services on the eBPF dataplane (kube-proxy replacement): the desired
//! services become entries of the frontend and backend maps, which the
//! programs read for every new connection. A service change is map writes,
//! never a program load; established connections keep their backend
//! through the NAT conntrack (`manul_nat`), which only the programs write.

mod clean;
pub mod maps;
pub mod plan;
mod pools;

use std::collections::{BTreeMap, BTreeSet};

use aya::Ebpf;
use manul_dataplane_api::{Operation, Service, ServiceKey};

use crate::error::BpfError;
use maps::ServiceMaps;
use plan::diff::{self, Counts, Delta, Scope};
use plan::early;
use plan::index::Index;
use plan::{Programmed, SourceRange};

/// The service maps and what this run wrote into them.
#[derive(Debug)]
pub struct Services {
    maps: ServiceMaps,
    /// The cluster's IP pools (`manul_pool`).
    pools: pools::Pools,
    programmed: Programmed,
    /// What `programmed` holds of each map.
    counts: Counts,
    /// The desired services as last planned, service by service; `None`
    /// (at start, and after an error) makes the next sync plan the whole
    /// state.
    index: Option<Index>,
    /// Maglev tables are sized for at least this many backends.
    maglev_capacity: usize,
    /// Backends that left their lists since [`Services::take_gone`] was
    /// last called (list id → backends), for connect-time load balancing.
    gone: BTreeMap<u32, BTreeSet<plan::BackendAddr>>,
}

/// One sync's plan: the writes, what they change in the bookkeeping, and
/// the source ranges to add before them and remove after them.
struct Planned {
    writes: plan::Writes,
    delta: Delta,
    ranges_added: BTreeSet<SourceRange>,
    ranges_removed: BTreeSet<SourceRange>,
}

impl Services {
    /// Takes the service maps out of a loaded object and adopts what an
    /// earlier run left in them (kept until the state is in sync; the
    /// first plan gives its lists back to the services whose frontends
    /// name them, so their connections survive).
    pub fn new(ebpf: &mut Ebpf, maglev_capacity: usize) -> Result<Self, BpfError> {
        let maps = ServiceMaps::take(ebpf)?;
        let pools = pools::Pools::take(ebpf)?;
        let programmed = maps.read();
        Ok(Self {
            maps,
            pools,
            counts: Counts::of(&programmed),
            programmed,
            index: None,
            maglev_capacity,
            gone: BTreeMap::new(),
        })
    }

    /// The session affinity map's entries.
    pub fn affinity_entries(&self) -> usize {
        self.maps.affinity_entries()
    }

    /// Each service map's entries and capacity.
    pub fn usage(&self) -> Vec<manul_dataplane_api::MapUsage> {
        self.maps.usage(&self.counts)
    }

    /// Brings the maps to `services` when the batch names a service or
    /// brings the state in sync: only the named services' entries while
    /// this run's plan is what the maps hold, else the whole state. On an
    /// error the next sync plans the whole state again (after a failed
    /// write, from what the maps are read back to hold).
    ///
    /// `local`: this node's addresses. When they changed since the last
    /// plan, every service with load-balancer source ranges is planned
    /// again (a load-balancer IP may now be, or no longer be, an allowed
    /// source of itself).
    pub fn apply(
        &mut self,
        batch: &[Operation],
        services: &BTreeMap<ServiceKey, Service>,
        local: &BTreeSet<std::net::IpAddr>,
    ) -> Result<(), BpfError> {
        let in_sync = batch.iter().any(|op| matches!(op, Operation::InSync));
        let mut named: BTreeSet<ServiceKey> = batch
            .iter()
            .filter_map(|op| match op {
                Operation::ServiceUpdate(s) => Some((s.namespace.clone(), s.name.clone())),
                Operation::ServiceRemove { namespace, name } => {
                    Some((namespace.clone(), name.clone()))
                }
                _ => None,
            })
            .collect();
        if let Some(index) = self.index.as_mut()
            && index.local() != local
        {
            index.set_local(local);
            named.extend(
                services
                    .iter()
                    .filter(|(_, s)| {
                        !s.load_balancer_source_ranges.is_empty() && !s.load_balancer_ips.is_empty()
                    })
                    .map(|(k, _)| k.clone()),
            );
        }
        if !in_sync && named.is_empty() {
            return Ok(());
        }
        let planned = self.plan(services, &named, in_sync, local);
        let synced = self.sync(planned);
        if synced.is_err() {
            self.index = None;
        }
        synced
    }

    /// Every backend (address and port) the backend lists name.
    pub fn backends(&self) -> impl Iterator<Item = (std::net::IpAddr, u16)> + '_ {
        self.programmed
            .lists
            .values()
            .flatten()
            .map(|b| (b.addr, b.port))
    }

    /// The backends that left their lists since the last call.
    pub fn take_gone(&mut self) -> BTreeMap<u32, BTreeSet<plan::BackendAddr>> {
        std::mem::take(&mut self.gone)
    }

    /// The host interfaces `manul_svc_if` holds.
    pub fn interfaces(&self) -> std::collections::BTreeSet<u32> {
        self.maps.interfaces()
    }

    /// Makes the trusted DSR senders exactly `nodes` (the other nodes'
    /// addresses).
    pub fn set_dsr_nodes(&mut self, nodes: &BTreeSet<std::net::IpAddr>) -> Result<(), BpfError> {
        self.maps.set_dsr_nodes(nodes)
    }

    /// Makes the cluster's IP pools exactly `pools` (new ones before old
    /// ones go).
    pub fn set_pools(&mut self, pools: &BTreeSet<ipnet::IpNet>) -> Result<(), BpfError> {
        self.pools.set(pools)
    }

    /// The IP pools the programs hold.
    pub fn pools(&self) -> BTreeSet<ipnet::IpNet> {
        self.pools.get()
    }

    /// The addresses the programs take a DSR option or header from.
    pub fn dsr_nodes(&self) -> BTreeSet<std::net::IpAddr> {
        self.maps.dsr_nodes()
    }

    /// Sets the host interfaces the programs carry for service NAT only.
    pub fn set_interfaces(
        &mut self,
        want: &std::collections::BTreeSet<u32>,
    ) -> Result<(), BpfError> {
        self.maps.set_interfaces(want)
    }

    /// Plans the named services alone while this run's own plan, with
    /// nothing adopted, is what the maps hold; else the whole state.
    fn plan(
        &mut self,
        services: &BTreeMap<ServiceKey, Service>,
        named: &BTreeSet<ServiceKey>,
        in_sync: bool,
        local: &BTreeSet<std::net::IpAddr>,
    ) -> Planned {
        if let Some(index) = self.index.as_mut()
            && !in_sync
            && self.programmed.adopted.is_empty()
        {
            let change = index.update(named.iter().map(|k| (k, services.get(k))));
            log_skipped(&change.skipped);
            let scope = Scope::Touched(&change.touched);
            let (writes, delta) = diff::diff(index.desired(), &self.programmed, scope, false);
            return Planned {
                writes,
                delta,
                ranges_added: change.ranges_added,
                ranges_removed: change.ranges_removed,
            };
        }
        let mut index = Index::new(services, self.maglev_capacity, local);
        log_skipped(&index.take_skipped());
        let desired = index.desired();
        let (writes, delta) = diff::diff(desired, &self.programmed, Scope::All, in_sync);
        // An earlier run's addresses keep their ranges while adopted.
        let ranges_removed = match delta.adopted.is_empty() {
            true => self
                .maps
                .source_ranges()
                .difference(&desired.source_ranges)
                .copied()
                .collect(),
            false => BTreeSet::new(),
        };
        let planned = Planned {
            writes,
            delta,
            ranges_added: desired.source_ranges.clone(),
            ranges_removed,
        };
        self.index = Some(index);
        planned
    }

    /// Makes a plan's writes: source ranges first, a capacity check (when
    /// the writes in their order do not fit, the deletions of what leaves
    /// go first, [`early`], and the check is of the rest), the map writes
    /// in order, then the ranges no longer named, and the
    /// clean-up after backends that went away.
    fn sync(&mut self, planned: Planned) -> Result<(), BpfError> {
        let Planned {
            writes,
            delta,
            ranges_added,
            ranges_removed,
        } = planned;
        self.maps.add_source_ranges(&ranges_added)?;
        let counts = self.counts.after(&self.programmed, &delta);
        // When the sync does not fit as ordered, what leaves goes first,
        // so that the peak is what stays plus what comes (the split walks
        // every programmed frontend: only then); a sync whose peak still
        // does not fit writes nothing.
        let (early, writes) = match self.maps.check(&counts.peak(&writes)) {
            Ok(()) => (plan::Writes::default(), writes),
            Err(_) => early::split(writes, &self.programmed),
        };
        if !early.is_empty() || !writes.is_empty() {
            self.maps.check(&counts.peak(&writes))?;
            for w in [&early, &writes] {
                if let Err(e) = self.maps.write(w) {
                    self.programmed = self.maps.read();
                    self.counts = Counts::of(&self.programmed);
                    return Err(e);
                }
            }
        }
        self.programmed.apply(delta);
        self.counts = counts;
        self.maps.remove_source_ranges(&ranges_removed)?;
        let cleaned = self.maps.clean(&writes.gone);
        for (id, backends) in &writes.gone {
            self.gone.entry(*id).or_default().extend(backends);
        }
        tracing::debug!(
            frontends = self.programmed.frontends.len(),
            lists = self.programmed.lists.len(),
            cleaned,
            "services programmed"
        );
        Ok(())
    }
}

fn log_skipped(skipped: &[plan::Skipped]) {
    for s in skipped {
        tracing::warn!(what = %s, "service frontend not programmed");
    }
}
