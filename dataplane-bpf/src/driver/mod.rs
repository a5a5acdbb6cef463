//! [`BpfDriver`]: the dataplane contract applied to the kernel.
//!
//! A batch is first checked and recorded by an embedded [`NullDriver`] (the
//! contract and the desired state). Then the tables whose rules changed are
//! compiled (pure) and written under new table ids in the address space of
//! the version they replace (class bitmaps, ports, protocols, rules; the
//! address prefixes stay), each endpoint's entry in `manul_ep` is flipped to
//! its new ids in one map update, and the old versions are deleted: a
//! packet sees the old table or the new one, never a mix. An IP-set change
//! is written into the spaces that name the set, entry by entry (see
//! [`crate::space`] for why each step is safe). What to write is planned
//! without I/O ([`crate::batch`]) and carried out through a
//! [`crate::write::MapWriter`] ([`crate::program`]). A compile or capacity
//! error undoes the batch in the desired state and leaves the kernel as it
//! was. After any error the driver is out of sync and fails closed as the
//! contract requires (`manul_dataplane_api::driver`, "After an error"): a
//! map write that fails part-way unprograms the endpoints whose address
//! spaces it wrote into.
//!
//! - `config.rs`: [`BpfConfig`];
//! - `interfaces.rs`: attaching the programs to interfaces, adopting an
//!   earlier run's links;
//! - `counters.rs`: kernel counters and `BPF_PROG_TEST_RUN`;
//! - `flows.rs`: conntrack, flow events and their counters.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, Map, MapData, RingBuf};
use manul_dataplane_api::{
    ConntrackUsage, Driver, DriverError, FlowObservation, FlowQueue, NullDriver, Operation,
    PolicyCounter,
};

use crate::error::BpfError;
use crate::events::{self, FlowLogInterval, NatMaps, Reader, ReaderConfig, Shared};
use crate::ledger::Ledger;
use crate::loader::{self, PinDirs};
use crate::maps::Maps;
use crate::program::{self, Env};
use crate::service_backends::ServiceBackends;

mod config;
mod counters;
mod flows;
mod host_svc;
mod interfaces;

pub use config::{
    BpfConfig, ExternalServiceMode, MAX_MAP_SIZE, ServiceMapSizes, check_map_size,
    is_workload_interface,
};
pub use counters::{KernelCounters, SkbMeta, TestRunOutcome};
pub(crate) use flows::labels;
pub use host_svc::{HOST_SERVICE_DEVICE, HOST_SERVICE_MAC, HOST_SERVICE_PEER, is_own_or_loopback};

/// The eBPF dataplane driver. It acts in the network namespace of the
/// thread that calls it.
#[derive(Debug)]
pub struct BpfDriver {
    config: BpfConfig,
    dirs: PinDirs,
    /// Both programs, opened from their pins.
    programs: loader::Programs,
    maps: Maps,
    desired: NullDriver,
    shared: Arc<Mutex<Shared>>,
    reader: Option<Reader>,
    /// The flow log's interval, shared with the reader.
    flow_log_interval: FlowLogInterval,
    /// What this run wrote: lineages, endpoints, ids.
    ledger: Ledger,
    /// Interfaces (ifindex) both programs are attached to in this run.
    attached: std::collections::HashSet<u32>,
    services: crate::services::Services,
    /// Host interfaces in `manul_svc_if` (see `interfaces.rs`).
    service_only: std::collections::BTreeSet<u32>,
    /// Connect-time load balancing, when configured.
    ctlb: Option<crate::ctlb::ConnectTimeLb>,
    /// The host's service device, when `host_service_nat` is on.
    host_device: Option<host_svc::HostServiceDevice>,
}

/// The programs loaded into the kernel (past the verifier) with the
/// node's pinned maps adopted, or created and pinned, and nothing else:
/// nothing is attached, no entry is written, so an earlier run's programs
/// keep enforcing what they enforced. Loading needs only where the pins
/// live and the maps' sizes, none of Felix's configuration from the
/// datastore, so Felix loads while it reads that configuration and
/// connects to Typha ([`BpfDriver::load`], then [`BpfDriver::start`]).
#[derive(Debug)]
pub struct LoadedPrograms {
    dirs: PinDirs,
    ebpf: Ebpf,
    programs: loader::Programs,
    /// `manul_events`, the ring the programs write to.
    events: Map,
    /// What the load depended on: a configuration that differs is loaded
    /// again.
    key: LoadKey,
    /// How long loading took.
    pub took: std::time::Duration,
}

/// The settings a load depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadKey {
    pin_root: std::path::PathBuf,
    node: String,
    /// Every sized map and its size.
    sizes: Vec<(&'static str, u32)>,
    no_conntrack: bool,
}

impl LoadKey {
    fn of(config: &BpfConfig) -> Result<LoadKey, BpfError> {
        Ok(LoadKey {
            pin_root: config.pin_root.clone(),
            node: config.node.clone(),
            sizes: config.map_sizes()?,
            no_conntrack: config.benchmark_no_conntrack,
        })
    }
}

impl BpfDriver {
    /// Loads the programs (adopting the node's pinned maps and links if an
    /// earlier run left them) and starts the event reader. What the earlier
    /// run programmed keeps being enforced until [`Operation::InSync`].
    pub fn new(config: BpfConfig) -> Result<Self, BpfError> {
        let loaded = Self::load(&config)?;
        Self::start(config, loaded)
    }

    /// The first half of [`BpfDriver::new`]: mounts bpffs if needed,
    /// creates the node's pin directories and loads the programs with the
    /// maps pinned there (see [`LoadedPrograms`]).
    pub fn load(config: &BpfConfig) -> Result<LoadedPrograms, BpfError> {
        Self::load_with(config, LoadKey::of(config)?)
    }

    /// [`BpfDriver::load`] before the configuration is known in full
    /// (Felix's early load, while it reads the datastore): each map already
    /// pinned keeps its size, so no map is created anew for sizes the
    /// datastore may not ask for; [`BpfDriver::start`] loads again when
    /// the configuration's sizes differ.
    pub fn preload(config: &BpfConfig) -> Result<LoadedPrograms, BpfError> {
        let mut key = LoadKey::of(config)?;
        let maps = config.pin_root.join(&config.node).join("maps");
        key.sizes = crate::resize::pinned_sizes(&maps, &key.sizes);
        Self::load_with(config, key)
    }

    fn load_with(config: &BpfConfig, key: LoadKey) -> Result<LoadedPrograms, BpfError> {
        let started = std::time::Instant::now();
        loader::ensure_bpffs(&config.pin_root)?;
        let dirs = PinDirs::create(&config.pin_root, &config.node)?;
        let (ebpf, programs, events) =
            loader::load(&dirs, &key.sizes, config.benchmark_no_conntrack)?;
        Ok(LoadedPrograms {
            dirs,
            ebpf,
            programs,
            events,
            key,
            took: started.elapsed(),
        })
    }

    /// The second half of [`BpfDriver::new`]: takes programs loaded by
    /// [`BpfDriver::load`] (loaded again if they were loaded for another
    /// pin directory or other map sizes), stores the configuration's
    /// settings, starts the event reader and adopts the earlier run's
    /// links. What the earlier run programmed keeps being enforced until
    /// [`Operation::InSync`].
    pub fn start(config: BpfConfig, loaded: LoadedPrograms) -> Result<Self, BpfError> {
        let started = std::time::Instant::now();
        let loaded = if loaded.key == LoadKey::of(&config)? {
            loaded
        } else {
            tracing::info!("the eBPF programs were loaded for other settings; loading them again");
            drop(loaded);
            Self::load(&config)?
        };
        let load_ms = loaded.took.as_millis() as u64;
        let LoadedPrograms {
            dirs,
            mut ebpf,
            programs,
            events,
            ..
        } = loaded;
        let adopted = programs.adopted;
        let mut maps = Maps::take(&mut ebpf)?;
        let services = crate::services::Services::new(&mut ebpf, config.maglev_capacity)?;
        // After the TC object: it adopts the service maps that one pinned.
        let ctlb = match &config.connect_time_lb {
            Some(c) => Some(crate::ctlb::ConnectTimeLb::start(
                &dirs,
                c,
                config.service_map_sizes,
            )?),
            None => {
                crate::ctlb::ConnectTimeLb::remove_links(&dirs);
                None
            }
        };
        maps.store_to_host_drop(config.endpoint_to_host_drop)?;
        maps.store_peer_delivery(config.peer_delivery)?;
        maps.store_failsafe(&config.failsafe)?;
        maps.store_external_mode(config.external_service_mode)?;
        let ring = RingBuf::try_from(events)
            .map_err(|e| BpfError::map("manul_events", "unexpected map type", e))?;
        let gc_ct = MapData::from_pin(dirs.maps.join("manul_ct"))
            .ok()
            .and_then(|d| BpfHashMap::try_from(Map::HashMap(d)).ok());
        let nat_map = |name: &str| {
            MapData::from_pin(dirs.maps.join(name))
                .ok()
                .map(Map::LruHashMap)
        };
        let nat = NatMaps {
            v4: nat_map("manul_nat").and_then(|m| BpfHashMap::try_from(m).ok()),
            v6: nat_map("manul_nat6").and_then(|m| BpfHashMap::try_from(m).ok()),
        };
        let mut backends = ServiceBackends::default();
        // What an earlier run left in the service maps.
        backends.set(services.backends(), events::unix_ms());
        let shared = Arc::new(Mutex::new(Shared {
            flows: FlowQueue::new(config.flow_queue_capacity),
            backends,
            ..Shared::default()
        }));
        let flow_log_interval = FlowLogInterval::new(config.flow_log_interval);
        let rules = MapData::from_pin(dirs.maps.join("manul_rule"))
            .ok()
            .and_then(|d| BpfHashMap::try_from(Map::HashMap(d)).ok());
        let reader = Reader::start(
            ring,
            gc_ct,
            nat,
            rules,
            shared.clone(),
            ReaderConfig {
                flow_log: config.flow_log.clone(),
                flow_log_interval: flow_log_interval.clone(),
                gc_interval: config.scan_interval(),
                timeouts: config.conntrack_timeouts,
                tracked_flows: config.conntrack_capacity as usize,
                observe: config.flow_observations,
            },
        )
        .map_err(|source| BpfError::Io {
            path: dirs.node.clone(),
            source,
        })?;
        let ledger = Ledger::new(maps.next_table_id());
        let mut driver = Self {
            config,
            dirs,
            programs,
            maps,
            desired: NullDriver::new(),
            shared,
            reader: Some(reader),
            flow_log_interval,
            ledger,
            attached: std::collections::HashSet::new(),
            services,
            service_only: std::collections::BTreeSet::new(),
            ctlb,
            host_device: None,
        };
        // An earlier run's service-only interfaces: their links are
        // adopted below, and removed with their entries if no service
        // needs them any more.
        driver.service_only = driver.services.interfaces();
        driver.adopt_links();
        driver.start_host_service_device()?;
        tracing::info!(
            load_ms,
            adopted,
            start_ms = started.elapsed().as_millis() as u64,
            "eBPF dataplane started on the pinned state"
        );
        Ok(driver)
    }

    /// What connect-time load balancing counted, when it is on.
    pub fn ctlb_counters(&self) -> Option<crate::ctlb::CtlbCounters> {
        self.ctlb.as_ref().map(crate::ctlb::ConnectTimeLb::counters)
    }

    /// After a batch's services are in the maps: the node's addresses for
    /// node ports, the pods' namespaces (those at the far end of the
    /// workload interfaces in `interfaces`: an endpoint's, or
    /// workload-prefixed), and the sockets of backends that left
    /// destroyed.
    fn connect_time_lb(
        &mut self,
        batch: &[Operation],
        interfaces: &std::collections::BTreeMap<String, u32>,
    ) -> Result<(), BpfError> {
        let gone = self.services.take_gone();
        let Some(ctlb) = self.ctlb.as_mut() else {
            return Ok(());
        };
        let endpoints = &self.desired.state().workload_endpoints;
        let workloads = interfaces
            .iter()
            .filter(|(name, _)| {
                is_workload_interface(&self.config.workload_prefixes, name)
                    || endpoints.values().any(|ep| &ep.interface_name == *name)
            })
            .map(|(name, ix)| (name.clone(), *ix))
            .collect();
        let pods = ctlb.serve_pods(workloads);
        let touched = batch.iter().any(|op| {
            matches!(
                op,
                Operation::InSync | Operation::ServiceUpdate(_) | Operation::ServiceRemove { .. }
            )
        });
        if touched {
            ctlb.set_local_addresses()?;
        }
        ctlb.reap(&gone);
        pods
    }

    /// The desired state as recorded (and enforced).
    pub fn desired(&self) -> &NullDriver {
        &self.desired
    }

    /// Whether this driver adopted an earlier run's pinned programs rather
    /// than loading them through the verifier.
    pub fn programs_adopted(&self) -> bool {
        self.programs.adopted
    }

    /// The node's pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.dirs.node
    }

    /// The kernel table id currently enforced on an interface's hooks.
    pub fn endpoint_tables(&self, ifindex: u32) -> Option<[u32; 2]> {
        self.maps.ep.get(&ifindex, 0).ok().map(|v| v.table)
    }

    /// A host interface's untracked, pre-DNAT and forward table ids per
    /// hook (0: none), as the kernel reads them.
    pub fn endpoint_stage_tables(&self, ifindex: u32) -> Option<[[u32; 3]; 2]> {
        self.maps.ep.get(&ifindex, 0).ok().map(|v| v.stage_table)
    }

    /// How many distinct rule tables are installed.
    pub fn table_count(&self) -> usize {
        self.ledger.tables.len()
    }

    /// Removes every pin of a node (maps and links) and, in the calling
    /// thread's network namespace, the host's service device if it is
    /// there and Manul's: the node's dataplane state ends. For tests and
    /// decommissioning; the driver must not be running.
    pub fn purge_node(pin_root: &Path, node: &str) -> std::io::Result<()> {
        host_svc::remove_device().map_err(std::io::Error::other)?;
        let dir = pin_root.join(node);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl Driver for BpfDriver {
    /// Checks and records the batch, then programs it. After an error the
    /// driver is out of sync (everything recorded is stale until the
    /// resync's `InSync`) and the kernel fails closed: a contract, compile
    /// or capacity error leaves it as it was (and the batch is undone in
    /// the record); a map write that failed part-way leaves the tables in
    /// use as they were, except that endpoints whose address space the
    /// batch wrote into are unprogrammed (they drop everything); an error
    /// after the flip (an endpoint entry, an attachment) leaves each
    /// endpoint on its old or its new tables, except that an endpoint whose
    /// own entry could not be written names a deleted old version (the
    /// programs drop its new flows: no table).
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        let interfaces = interfaces::by_name();
        let env = Env {
            interfaces: &interfaces,
            workload_prefixes: &self.config.workload_prefixes,
        };
        let shared = &self.shared;
        let outcome = program::apply(
            &mut self.desired,
            &mut self.ledger,
            &mut self.maps,
            batch,
            env,
            &mut |t| labels(shared, t),
        )?;
        // The endpoint entries are written: flow events on their interfaces
        // name their endpoint from now on, not only once attaching is done.
        self.record_interfaces();
        let mut errors = outcome.soft_errors;
        // Services do not depend on endpoints: synced whatever an
        // endpoint's soft error. While their maps are written the flow
        // events look every connection's frontend up; then only those to
        // a backend the maps name.
        let services_named = batch.iter().any(|op| {
            matches!(
                op,
                Operation::ServiceUpdate(_) | Operation::ServiceRemove { .. } | Operation::InSync
            )
        });
        if services_named {
            events::lock(&self.shared).backends.begin_change();
        }
        let state = self.desired.state();
        if let Err(e) = self
            .services
            .apply(batch, &state.services, &state.local_addresses)
        {
            errors.push(e);
        }
        if services_named {
            let backends: Vec<_> = self.services.backends().collect();
            events::lock(&self.shared)
                .backends
                .set(backends, events::unix_ms());
        }
        if batch
            .iter()
            .any(|op| matches!(op, Operation::NodeAddresses { .. } | Operation::InSync))
        {
            let state = self.desired.state();
            if let Err(e) = self.services.set_dsr_nodes(&state.node_addresses) {
                errors.push(e);
            }
            if let Err(e) = self.services.set_pools(&state.pools) {
                errors.push(e);
            }
        }
        if let Err(e) = self.connect_time_lb(batch, &interfaces) {
            errors.push(e);
        }
        if let Err(e) = self.sync_host_service_routes(batch) {
            errors.push(e);
        }
        errors.extend(self.settle_attachments(&outcome.attach, &outcome.detach));
        if batch.iter().any(|op| matches!(op, Operation::InSync)) {
            self.unpin_stale_links();
        }
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => {
                self.desired.mark_stale();
                Err(e.into())
            }
        }
    }

    fn mark_stale(&mut self) {
        self.desired.mark_stale();
    }

    fn name(&self) -> &'static str {
        "bpf"
    }

    /// The flow-event counters per deciding policy (`tier/name`; profiles
    /// as `profile:NAME`, tier defaults as `TIER/(tier default)`, flows no
    /// rule decided as `(no match)`), in name order.
    fn policy_counters(&self) -> Vec<PolicyCounter> {
        self.policy_counter_list()
    }

    /// The live entries the background thread counted at its last
    /// garbage collection (it runs one as the driver starts), and the
    /// map's size.
    fn conntrack_usage(&self) -> Option<ConntrackUsage> {
        let entries = events::lock(&self.shared).conntrack_entries?;
        Some(ConntrackUsage {
            entries,
            capacity: u64::from(self.config.conntrack_capacity),
        })
    }

    /// The tc program's service counters and the affinity map's entries.
    fn service_counters(&self) -> Option<manul_dataplane_api::ServiceCounters> {
        let k = self.kernel_counters();
        Some(manul_dataplane_api::ServiceCounters {
            translated: k.service_nat,
            rejected_no_backend: k.service_rejected,
            hairpin: k.service_hairpin,
            reset: k.service_reset,
            dsr_untrusted_dropped: k.dsr_untrusted,
            affinity_entries: self.services.affinity_entries() as u64,
        })
    }

    /// The service maps' entries and capacities (the written maps' entries
    /// as this run programmed them, the affinity maps' walked).
    fn map_usage(&self) -> Vec<manul_dataplane_api::MapUsage> {
        self.services.usage()
    }

    /// Starts and denials from the flow events, updates and ends from the
    /// conntrack scans (every `gc_interval`); see [`crate::flow_track`].
    fn take_flows(&mut self) -> Vec<FlowObservation> {
        events::take_flows(&self.shared)
    }

    fn flows_dropped(&self) -> u64 {
        events::lock(&self.shared).flows.dropped()
    }

    /// The programs' count of events the ring buffer had no room for.
    fn flow_events_lost(&self) -> u64 {
        self.kernel_counters().events_lost
    }
}
