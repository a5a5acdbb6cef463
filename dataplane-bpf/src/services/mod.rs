//! Services on the eBPF dataplane (kube-proxy replacement): the desired
//! services become entries of the frontend and backend maps, which the
//! programs read for every new connection. A service change is map writes,
//! never a program load; established connections keep their backend
//! through the NAT conntrack (`manul_nat`), which only the programs write.

pub mod maps;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};

use aya::Ebpf;
use manul_dataplane_api::{Operation, Service, ServiceKey};

use crate::error::BpfError;
use maps::ServiceMaps;
use plan::Programmed;

/// The service maps and what this run wrote into them.
#[derive(Debug)]
pub struct Services {
    maps: ServiceMaps,
    programmed: Programmed,
    /// Maglev tables are sized for at least this many backends.
    maglev_capacity: usize,
    /// Backends that left their lists since [`Services::take_gone`] was
    /// last called (list id → backends), for connect-time load balancing.
    gone: BTreeMap<u32, BTreeSet<plan::BackendAddr>>,
}

impl Services {
    /// Takes the service maps out of a loaded object and adopts what an
    /// earlier run left in them (kept until the state is in sync).
    pub fn new(ebpf: &mut Ebpf, maglev_capacity: usize) -> Result<Self, BpfError> {
        let maps = ServiceMaps::take(ebpf)?;
        let programmed = maps.read();
        Ok(Self {
            maps,
            programmed,
            maglev_capacity,
            gone: BTreeMap::new(),
        })
    }

    /// The session affinity map's entries.
    pub fn affinity_entries(&self) -> usize {
        self.maps.affinity_entries()
    }

    /// Brings the maps to `services` when the batch names a service or
    /// brings the state in sync. On an error the maps are read back, so
    /// the next sync starts from what they hold.
    pub fn apply(
        &mut self,
        batch: &[Operation],
        services: &BTreeMap<ServiceKey, Service>,
    ) -> Result<(), BpfError> {
        let in_sync = batch.iter().any(|op| matches!(op, Operation::InSync));
        let named = batch.iter().any(|op| {
            matches!(
                op,
                Operation::ServiceUpdate(_) | Operation::ServiceRemove { .. }
            )
        });
        if !(in_sync || named) {
            return Ok(());
        }
        self.sync(services, in_sync)
    }

    /// The backends that left their lists since the last call.
    pub fn take_gone(&mut self) -> BTreeMap<u32, BTreeSet<plan::BackendAddr>> {
        std::mem::take(&mut self.gone)
    }

    /// The host interfaces `manul_svc_if` holds.
    pub fn interfaces(&self) -> std::collections::BTreeSet<u32> {
        self.maps.interfaces()
    }

    /// Sets the host interfaces the programs carry for service NAT only.
    pub fn set_interfaces(
        &mut self,
        want: &std::collections::BTreeSet<u32>,
    ) -> Result<(), BpfError> {
        self.maps.set_interfaces(want)
    }

    fn sync(
        &mut self,
        services: &BTreeMap<ServiceKey, Service>,
        in_sync: bool,
    ) -> Result<(), BpfError> {
        let mut desired = plan::desired(services);
        desired.maglev_capacity = self.maglev_capacity;
        for s in &desired.skipped {
            tracing::warn!(what = %s, "service frontend not programmed");
        }
        let (writes, next) = plan::plan(&desired, &self.programmed, in_sync);
        let ranges = maps::SourceRanges {
            v4: &desired.source_ranges,
            v6: &desired.source_ranges6,
        };
        self.maps.add_source_ranges(ranges)?;
        // An earlier run's addresses keep their ranges while adopted.
        let prune = next.adopted.is_empty();
        if writes.is_empty() {
            self.programmed = next;
            return match prune {
                true => self.maps.remove_source_ranges(ranges),
                false => Ok(()),
            };
        }
        self.maps.check(&writes, &next)?;
        if let Err(e) = self.maps.write(&writes) {
            self.programmed = self.maps.read();
            return Err(e);
        }
        self.programmed = next;
        if prune {
            self.maps.remove_source_ranges(ranges)?;
        }
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
