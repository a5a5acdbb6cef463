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
//! [`crate::space`] for why each step is safe). A compile or capacity
//! error undoes the batch in the desired state and leaves the kernel as it
//! was. After any error the driver is out of sync and fails closed as the
//! contract requires (`manul_dataplane_api::driver`, "After an error"): a
//! map write that fails part-way unprograms the endpoints whose address
//! spaces it wrote into.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, Map, MapData, RingBuf};
use aya::programs::{TestRun, TestRunOptions};
use manul_dataplane_api::{
    ConntrackUsage, Driver, DriverError, NullDriver, Operation, PolicyCounter,
};

use crate::abi;
use crate::compile::{self, CompiledTable, TableSpec};
use crate::conntrack::{self, ConntrackEntry, ConntrackTimeouts, GcStats};
use crate::error::BpfError;
use crate::events::{self, FlowCounters, FlowLogInterval, Reader, ReaderConfig, Shared};
use crate::keys;
use crate::loader::{self, Hook, PinDirs};
use crate::maps::{Maps, TableCounts};
use crate::plan::{self, Before, EndpointKey, EndpointPlan, Touched};
use crate::space::{Delta, Space};

/// How to run the eBPF dataplane on one node.
#[derive(Debug, Clone)]
pub struct BpfConfig {
    /// The node's name: its pins live under `pin_root/node`.
    pub node: String,
    /// Default `/sys/fs/bpf/manul` (bpffs is mounted there if absent).
    pub pin_root: PathBuf,
    /// Conntrack entries (LRU). Fixed when the pinned map is first created.
    pub conntrack_capacity: u32,
    /// Entries of `manul_addr` (every prefix and IP-set member the tables'
    /// address spaces hold); `None`: the program's size (1 Mi). Fixed when
    /// the pinned map is first created. A batch that would overflow it is
    /// refused (the map is full) and the driver fails closed.
    pub addr_capacity: Option<u32>,
    pub conntrack_timeouts: ConntrackTimeouts,
    /// How often the background thread collects expired conntrack entries.
    pub gc_interval: Duration,
    /// Where to append flow-log JSON lines, if anywhere.
    pub flow_log: Option<PathBuf>,
    pub flow_log_interval: Duration,
    /// Interfaces whose names start with one of these prefixes are workload
    /// interfaces (Felix's `interfacePrefix`): the driver attaches to them
    /// as soon as it sees them, and drops their traffic until their
    /// endpoint is programmed. Default `manul_model::names::
    /// WORKLOAD_INTERFACE_PREFIX`; empty: attach to endpoints only.
    pub workload_prefixes: Vec<String>,
    /// Drop a workload's traffic to its own host once the workload's policy
    /// allowed it (Felix's `defaultEndpointToHostAction: Drop`); otherwise
    /// it goes on to the host. Applies to new flows.
    pub endpoint_to_host_drop: bool,
    /// Ports a host endpoint always allows new flows to, whatever its
    /// policy: `(outbound, protocol number, port)` (Felix's failsafe
    /// ports; inbound ones only for traffic to the host itself). Default
    /// none.
    pub failsafe: Vec<(bool, u8, u16)>,
    /// Benchmarks only: never create conntrack entries, so every packet is
    /// classified as a new flow.
    pub benchmark_no_conntrack: bool,
}

impl BpfConfig {
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            pin_root: PathBuf::from("/sys/fs/bpf/manul"),
            conntrack_capacity: 512 * 1024,
            addr_capacity: None,
            conntrack_timeouts: ConntrackTimeouts::default(),
            gc_interval: Duration::from_secs(10),
            flow_log: None,
            flow_log_interval: Duration::from_secs(10),
            workload_prefixes: vec!["mnl".to_owned()],
            endpoint_to_host_drop: false,
            failsafe: Vec::new(),
            benchmark_no_conntrack: false,
        }
    }
}

/// One table spec's kernel state: its address space and its current
/// table version in that space.
#[derive(Debug)]
struct Lineage {
    space_id: u32,
    space: Space,
    id: u32,
    table: CompiledTable,
    /// A failed write left the kernel and this bookkeeping apart: the next
    /// apply builds a new lineage and deletes this one's ids by scanning.
    poisoned: bool,
}

/// What a batch does to one table spec.
enum Work {
    /// A new lineage (new spec, or replacing a poisoned one).
    Create(CompiledTable),
    /// A new table version in the same space.
    Replace(CompiledTable),
    /// Only IP sets the space names changed.
    Sync,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    interface: String,
    /// None while the interface does not exist (retried on every apply).
    ifindex: Option<u32>,
    tables: [u32; 2],
    spaces: [u32; 2],
    /// Host endpoints: by hook, then as [`plan::STAGES`]; 0 = none.
    stage_tables: [[u32; 3]; 2],
    stage_spaces: [[u32; 3]; 2],
}

impl Programmed {
    fn reads_space(&self, spaces: &HashSet<u32>) -> bool {
        self.spaces
            .iter()
            .chain(self.stage_spaces.iter().flatten())
            .any(|s| spaces.contains(s))
    }
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The TC verdict: 0 (`TC_ACT_OK`) passes, 2 (`TC_ACT_SHOT`) drops.
    pub verdict: u32,
    /// The kernel's average time per repetition.
    pub duration: Duration,
}

impl TestRunOutcome {
    pub fn allowed(&self) -> bool {
        self.verdict == 0
    }
}

/// Kernel-side counters (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    pub packets: u64,
    pub conntrack_hits: u64,
    pub new_allowed: u64,
    pub new_denied: u64,
    pub denied_cached: u64,
    pub no_endpoint: u64,
    pub no_table: u64,
    pub not_ip: u64,
    pub events_lost: u64,
    pub neighbour_discovery: u64,
    /// Packets a host endpoint's untracked (doNotTrack) table allowed or
    /// denied (no flow events: they have no flow state).
    pub untracked_allowed: u64,
    pub untracked_denied: u64,
}

/// The eBPF dataplane driver. It acts in the network namespace of the
/// thread that calls it.
#[derive(Debug)]
pub struct BpfDriver {
    config: BpfConfig,
    dirs: PinDirs,
    ebpf: Ebpf,
    maps: Maps,
    desired: NullDriver,
    shared: Arc<Mutex<Shared>>,
    reader: Option<Reader>,
    /// The flow log's interval, shared with the reader.
    flow_log_interval: FlowLogInterval,
    tables: HashMap<TableSpec, Lineage>,
    /// Table and space ids to delete by scanning (from failed writes and
    /// replaced poisoned lineages).
    garbage: HashSet<u32>,
    endpoints: BTreeMap<EndpointKey, Programmed>,
    /// Interfaces (ifindex) both programs are attached to in this run.
    attached: HashSet<u32>,
    next_table: u32,
}

impl BpfDriver {
    /// Loads the programs (adopting the node's pinned maps and links if an
    /// earlier run left them) and starts the event reader. What the earlier
    /// run programmed keeps being enforced until [`Operation::InSync`].
    pub fn new(config: BpfConfig) -> Result<Self, BpfError> {
        loader::ensure_bpffs(&config.pin_root)?;
        let dirs = PinDirs::create(&config.pin_root, &config.node)?;
        let mut ebpf = loader::load(
            &dirs,
            config.conntrack_capacity,
            config.addr_capacity,
            config.benchmark_no_conntrack,
        )?;
        let mut maps = Maps::take(&mut ebpf)?;
        maps.store_to_host_drop(config.endpoint_to_host_drop)?;
        maps.store_failsafe(&config.failsafe)?;
        let ring = ebpf
            .take_map("manul_events")
            .ok_or(BpfError::Missing("manul_events"))?;
        let ring = RingBuf::try_from(ring)
            .map_err(|e| BpfError::map("manul_events", "unexpected map type", e))?;
        let gc_ct = MapData::from_pin(dirs.maps.join("manul_ct"))
            .ok()
            .and_then(|d| BpfHashMap::try_from(Map::HashMap(d)).ok());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let flow_log_interval = FlowLogInterval::new(config.flow_log_interval);
        let reader = Reader::start(
            ring,
            gc_ct,
            shared.clone(),
            ReaderConfig {
                flow_log: config.flow_log.clone(),
                flow_log_interval: flow_log_interval.clone(),
                gc_interval: config.gc_interval,
                timeouts: config.conntrack_timeouts,
            },
        )
        .map_err(|source| BpfError::Io {
            path: dirs.node.clone(),
            source,
        })?;
        let next_table = maps.next_table_id();
        let mut driver = Self {
            config,
            dirs,
            ebpf,
            maps,
            desired: NullDriver::new(),
            shared,
            reader: Some(reader),
            flow_log_interval,
            tables: HashMap::new(),
            garbage: HashSet::new(),
            endpoints: BTreeMap::new(),
            attached: HashSet::new(),
            next_table,
        };
        driver.adopt_links();
        Ok(driver)
    }

    /// Replaces the program in every link an earlier run pinned whose
    /// interface still exists (atomically: the interface is never without a
    /// program), so that the tables it finds keep being enforced by this
    /// run's programs.
    fn adopt_links(&mut self) {
        let names = interfaces();
        for (ifindex, _, path) in self.dirs.pinned_links() {
            let Some(name) = names.get(&ifindex) else {
                loader::unpin(&path);
                continue;
            };
            if self.attached.contains(&ifindex) {
                continue;
            }
            if let Err(e) = self.attach(name.clone(), ifindex) {
                tracing::warn!(interface = %name, error = %e, "cannot adopt a pinned link");
            }
        }
    }

    fn attach(&mut self, interface: String, ifindex: u32) -> Result<(), BpfError> {
        if self.attached.contains(&ifindex) {
            return Ok(());
        }
        for hook in Hook::BOTH {
            loader::attach(&mut self.ebpf, &self.dirs, &interface, ifindex, hook)?;
        }
        self.attached.insert(ifindex);
        Ok(())
    }

    fn detach(&mut self, ifindex: u32) {
        for hook in Hook::BOTH {
            loader::unpin(&self.dirs.link(ifindex, hook));
        }
        self.attached.remove(&ifindex);
    }

    /// The desired state as recorded (and enforced).
    pub fn desired(&self) -> &NullDriver {
        &self.desired
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
        self.tables.len()
    }

    /// Compiles, checks capacity, writes new table versions and set
    /// changes, flips endpoints and deletes old versions. Errors before the
    /// flip leave every table the endpoints use correct for the state
    /// before the batch (and are undone in the desired state by the
    /// caller).
    fn program(&mut self, touched: &Touched) -> Result<Vec<BpfError>, BpfError> {
        let state = self.desired.state();
        let mut names: Vec<String> = interfaces().into_values().collect();
        names.sort();
        let plans = plan::plans(state, &names, &self.config.workload_prefixes);

        // Decide and compile (pure).
        let mut work: Vec<(TableSpec, Work)> = Vec::new();
        let mut seen: HashSet<&TableSpec> = HashSet::new();
        for (key, p) in &plans {
            for spec in p.all_specs() {
                if !seen.insert(spec) {
                    continue;
                }
                let compile = || {
                    compile::compile(state, spec).map_err(|source| BpfError::Compile {
                        endpoint: key.to_string(),
                        source,
                    })
                };
                let w = match self.tables.get(spec) {
                    Some(l) if !l.poisoned && !touched.rules_affect(spec, state) => {
                        if touched.sets.iter().any(|s| l.space.names_set(s)) {
                            Work::Sync
                        } else {
                            continue;
                        }
                    }
                    Some(l) if !l.poisoned => Work::Replace(compile()?),
                    _ => Work::Create(compile()?),
                };
                work.push((spec.clone(), w));
            }
        }
        let mut needed = self.maps.used;
        for (_, w) in &work {
            if let Work::Create(t) | Work::Replace(t) = w {
                needed.add(&TableCounts::of(t));
            }
        }
        needed.check(&self.maps.capacity)?;

        // Write new versions and set changes; nothing is flipped yet, but
        // set changes go into spaces that tables in use read.
        let mut written_spaces: HashSet<u32> = HashSet::new();
        let mut created: Vec<(TableSpec, Lineage)> = Vec::new();
        let mut replaced: Vec<(TableSpec, u32, CompiledTable)> = Vec::new();
        let mut failure = None;
        for (spec, w) in work {
            let r = match w {
                Work::Create(table) => {
                    let space_id = next_id(&mut self.next_table);
                    let id = next_id(&mut self.next_table);
                    let mut space = Space::new();
                    space.add_table(&table.addr, state);
                    let delta = space.settle();
                    let labels = self.labels(&table);
                    let r = self
                        .maps
                        .write_table(id, &table, &labels)
                        .and_then(|()| write_classes(&mut self.maps, &space, id, &table))
                        .and_then(|()| write_delta(&mut self.maps, space_id, &space, &delta, &[]));
                    if r.is_ok() {
                        created.push((
                            spec,
                            Lineage {
                                space_id,
                                space,
                                id,
                                table,
                                poisoned: false,
                            },
                        ));
                    } else {
                        self.garbage.extend([space_id, id]);
                    }
                    r
                }
                Work::Replace(table) => {
                    let id = next_id(&mut self.next_table);
                    let labels = self.labels(&table);
                    let Some(l) = self.tables.get_mut(&spec) else {
                        continue;
                    };
                    l.space.add_table(&table.addr, state);
                    for s in &touched.sets {
                        l.space.sync_set(s, state);
                    }
                    let delta = l.space.settle();
                    if !delta.is_empty() {
                        written_spaces.insert(l.space_id);
                    }
                    let r = write_delta(
                        &mut self.maps,
                        l.space_id,
                        &l.space,
                        &delta,
                        &[(l.id, &l.table)],
                    )
                    .and_then(|()| self.maps.write_table(id, &table, &labels))
                    .and_then(|()| write_classes(&mut self.maps, &l.space, id, &table));
                    if r.is_ok() {
                        replaced.push((spec, id, table));
                    } else {
                        l.poisoned = true;
                        self.garbage.insert(id);
                    }
                    r
                }
                Work::Sync => {
                    let Some(l) = self.tables.get_mut(&spec) else {
                        continue;
                    };
                    for s in &touched.sets {
                        l.space.sync_set(s, state);
                    }
                    let delta = l.space.settle();
                    if !delta.is_empty() {
                        written_spaces.insert(l.space_id);
                    }
                    let r = write_delta(
                        &mut self.maps,
                        l.space_id,
                        &l.space,
                        &delta,
                        &[(l.id, &l.table)],
                    );
                    l.poisoned |= r.is_err();
                    r
                }
            };
            if let Err(e) = r {
                failure = Some(e);
                break;
            }
        }
        if let Some(e) = failure {
            // The lineages this batch already changed (sets synced in
            // place) no longer match the state the caller restores.
            for (spec, _, table) in replaced {
                if let Some(l) = self.tables.get_mut(&spec) {
                    l.poisoned = true;
                    l.space.remove_table(&table.addr);
                }
            }
            for (_, l) in created {
                self.garbage.extend([l.space_id, l.id]);
            }
            for l in self.tables.values_mut() {
                if touched.sets.iter().any(|s| l.space.names_set(s)) {
                    l.poisoned = true;
                }
            }
            self.unprogram_readers_of(&written_spaces);
            self.collect_garbage();
            return Err(e);
        }
        let mut retire: Vec<(TableSpec, u32, CompiledTable)> = Vec::new();
        for (spec, id, table) in replaced {
            if let Some(l) = self.tables.get_mut(&spec) {
                let old_id = std::mem::replace(&mut l.id, id);
                let old = std::mem::replace(&mut l.table, table);
                retire.push((spec, old_id, old));
            }
        }
        for (spec, l) in created {
            if let Some(old) = self.tables.insert(spec, l) {
                self.garbage.extend([old.space_id, old.id]);
            }
        }

        // Flip endpoints, attach new interfaces.
        let mut soft_errors = Vec::new();
        let mut live: BTreeMap<EndpointKey, Programmed> = BTreeMap::new();
        for (key, p) in plans {
            let lineage = |h: Hook| self.tables.get(p.spec(h));
            let tables = Hook::BOTH.map(|h| lineage(h).map_or(0, |l| l.id));
            let spaces = Hook::BOTH.map(|h| lineage(h).map_or(0, |l| l.space_id));
            let stage = |f: fn(&Lineage) -> u32| {
                p.stages.each_ref().map(|hook| {
                    hook.each_ref()
                        .map(|spec| spec.as_ref().and_then(|s| self.tables.get(s)).map_or(0, f))
                })
            };
            let stage_tables = stage(|l| l.id);
            let stage_spaces = stage(|l| l.space_id);
            let ifindex = nix::net::if_::if_nametoindex(p.interface.as_str()).ok();
            let prog = Programmed {
                interface: p.interface.clone(),
                ifindex,
                tables,
                spaces,
                stage_tables,
                stage_spaces,
            };
            let previous = self.endpoints.get(&key);
            if let Some(old_ix) = previous.and_then(|o| o.ifindex)
                && Some(old_ix) != ifindex
            {
                let _ = self.maps.ep.remove(&old_ix);
            }
            if let Some(ix) = ifindex {
                if previous != Some(&prog) {
                    let value = abi::manul_ep_value {
                        table: tables,
                        space: spaces,
                        flags: if matches!(key, EndpointKey::Host { .. }) {
                            abi::MANUL_EP_HOST
                        } else {
                            0
                        },
                        reserved: 0,
                        stage_table: stage_tables,
                        stage_space: stage_spaces,
                    };
                    if let Err(e) = self.maps.ep.insert(ix, value, 0) {
                        soft_errors.push(BpfError::map("manul_ep", format!("program {key}"), e));
                    }
                }
                if let Err(e) = self.attach(p.interface.clone(), ix) {
                    soft_errors.push(e);
                }
            }
            live.insert(key, prog);
        }
        let removed: Vec<(EndpointKey, Programmed)> = std::mem::take(&mut self.endpoints)
            .into_iter()
            .filter(|(k, _)| !live.contains_key(k))
            .collect();
        self.endpoints = live;
        let in_use: HashSet<u32> = self.endpoints.values().filter_map(|p| p.ifindex).collect();
        for (key, old) in removed {
            let Some(ix) = old.ifindex else { continue };
            // Another endpoint took the interface over (a named host
            // endpoint replacing `*` on it): its entry is already written.
            if in_use.contains(&ix) {
                continue;
            }
            let _ = self.maps.ep.remove(&ix);
            // A workload interface keeps its program (dropping everything)
            // until it disappears; a host interface goes back to normal.
            let gone = nix::net::if_::if_nametoindex(old.interface.as_str()).ok() != Some(ix);
            if matches!(key, EndpointKey::Host { .. }) || gone {
                self.detach(ix);
            }
        }

        // Delete replaced versions (and shrink their spaces to the items
        // the current versions name), then unused lineages.
        for (spec, old_id, old) in retire {
            let Some(l) = self.tables.get_mut(&spec) else {
                continue;
            };
            self.maps.delete_table(old_id, &old);
            for (side, class, _) in l.space.classes() {
                self.maps.delete_class(old_id, side, class);
            }
            l.space.remove_table(&old.addr);
            let delta = l.space.settle();
            if let Err(e) = write_delta(
                &mut self.maps,
                l.space_id,
                &l.space,
                &delta,
                &[(l.id, &l.table)],
            ) {
                l.poisoned = true;
                soft_errors.push(e);
            }
        }
        let needed_specs: HashSet<TableSpec> = self
            .endpoints
            .keys()
            .filter_map(|k| self.plan_of(k))
            .flat_map(|p| p.all_specs().cloned().collect::<Vec<_>>())
            .collect();
        let unused: Vec<TableSpec> = self
            .tables
            .keys()
            .filter(|s| !needed_specs.contains(*s))
            .cloned()
            .collect();
        for spec in unused {
            if let Some(old) = self.tables.remove(&spec) {
                if old.poisoned {
                    self.garbage.extend([old.space_id, old.id]);
                    continue;
                }
                self.maps.delete_table(old.id, &old.table);
                for (side, class, _) in old.space.classes() {
                    self.maps.delete_class(old.id, side, class);
                }
                for (side, entry, _) in old.space.entries() {
                    self.maps.delete_addr(old.space_id, side, &entry);
                }
            }
        }
        self.collect_garbage();

        soft_errors.extend(self.attach_workload_interfaces());
        if touched.in_sync {
            self.remove_stale();
        }
        if let Err(e) = self.maps.store_next_table_id(self.next_table) {
            soft_errors.push(e);
        }
        Ok(soft_errors)
    }

    /// Fails closed after a write that stopped part-way: every endpoint
    /// whose tables read one of `spaces` (which now hold part of the
    /// batch's set changes beside tables of the state before it) loses its
    /// `manul_ep` entry, so its interface drops everything until a later
    /// apply programs it again. The others keep their tables. Nothing reads
    /// those spaces any more: their lineages are dropped and their entries
    /// deleted, which also makes room when the failure was a full map.
    fn unprogram_readers_of(&mut self, spaces: &HashSet<u32>) {
        if spaces.is_empty() {
            return;
        }
        let dead: Vec<TableSpec> = self
            .tables
            .iter()
            .filter(|(_, l)| spaces.contains(&l.space_id))
            .map(|(spec, _)| spec.clone())
            .collect();
        for spec in dead {
            if let Some(l) = self.tables.remove(&spec) {
                self.garbage.extend([l.space_id, l.id]);
            }
        }
        let affected: Vec<EndpointKey> = self
            .endpoints
            .iter()
            .filter(|(_, p)| p.reads_space(spaces))
            .map(|(k, _)| k.clone())
            .collect();
        for key in affected {
            if let Some(p) = self.endpoints.remove(&key)
                && let Some(ix) = p.ifindex
            {
                if let Err(e) = self.maps.ep.remove(&ix)
                    && !matches!(&e, aya::maps::MapError::KeyNotFound)
                {
                    tracing::error!(endpoint = %key, error = %e, "cannot unprogram an endpoint after a failed write");
                }
                tracing::warn!(endpoint = %key, interface = %p.interface, "a failed write left this endpoint's address space half-changed: it drops everything until it is programmed again");
            }
        }
    }

    fn collect_garbage(&mut self) {
        if self.garbage.is_empty() {
            return;
        }
        let garbage = std::mem::take(&mut self.garbage);
        let removed = self.maps.delete_where(|id| garbage.contains(&id));
        tracing::debug!(entries = removed, "deleted abandoned tables and spaces");
    }

    fn plan_of(&self, key: &EndpointKey) -> Option<EndpointPlan> {
        let s = self.desired.state();
        match key {
            EndpointKey::Workload(id) => s.workload_endpoints.get(id).map(EndpointPlan::workload),
            EndpointKey::Host { id, interface } => s
                .host_endpoints
                .get(id)
                .map(|ep| EndpointPlan::host(ep, interface)),
        }
    }

    /// Numeric policy and rule ids of each slot.
    fn labels(&self, table: &CompiledTable) -> Vec<(u32, u32)> {
        let mut s = events::lock(&self.shared);
        table
            .slots
            .iter()
            .map(|slot| {
                let (p, r) = keys::slot_labels(&slot.kind);
                (s.labels.intern(&p), s.labels.intern(&r))
            })
            .collect()
    }

    /// Attaches to every workload-prefixed interface not attached yet: with
    /// no endpoint entry, the programs drop its traffic (fail closed).
    /// Felix may call this when it sees a new interface.
    pub fn attach_workload_interfaces(&mut self) -> Vec<BpfError> {
        if self.config.workload_prefixes.is_empty() {
            return Vec::new();
        }
        let mut errors = Vec::new();
        for (ix, name) in interfaces() {
            if is_workload_interface(&self.config.workload_prefixes, &name)
                && !self.attached.contains(&ix)
                && let Err(e) = self.attach(name, ix)
            {
                errors.push(e);
            }
        }
        errors
    }

    /// After InSync: removes endpoint entries, tables and links that an
    /// earlier run left and this one was not told about again.
    fn remove_stale(&mut self) {
        let ours: HashSet<u32> = self.endpoints.values().filter_map(|p| p.ifindex).collect();
        let stale: Vec<u32> = self
            .maps
            .ep
            .keys()
            .filter_map(Result::ok)
            .filter(|ix| !ours.contains(ix))
            .collect();
        for ix in stale {
            let _ = self.maps.ep.remove(&ix);
        }
        let live: HashSet<u32> = self
            .tables
            .values()
            .flat_map(|l| [l.id, l.space_id])
            .collect();
        let removed = self.maps.delete_where(|id| !live.contains(&id));
        if removed > 0 {
            tracing::info!(
                entries = removed,
                "removed rule tables left by an earlier run"
            );
        }
        for (ix, _, path) in self.dirs.pinned_links() {
            if !self.attached.contains(&ix) {
                loader::unpin(&path);
            }
        }
    }

    /// Collects conntrack entries idle past their timeout at `now`
    /// (CLOCK_MONOTONIC; see [`conntrack::monotonic_now`]). The background
    /// thread also does this every `gc_interval`.
    pub fn gc(&mut self, now: Duration) -> Result<GcStats, BpfError> {
        conntrack::gc(&mut self.maps.ct, &self.config.conntrack_timeouts, now)
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Vec<ConntrackEntry> {
        conntrack::entries(&self.maps.ct)
    }

    /// Per-policy allow and deny counts from flow events so far.
    pub fn flow_counters(&self) -> FlowCounters {
        events::lock(&self.shared).counters.clone()
    }

    /// A handle that changes how often the flow log is written, while the
    /// driver runs (Felix's `flowLogsFlushInterval`).
    pub fn flow_log_interval(&self) -> FlowLogInterval {
        self.flow_log_interval.clone()
    }

    /// Drains pending flow events and writes the flow log now.
    pub fn flush_flow_log(&self) {
        if let Some(r) = &self.reader {
            r.flush();
        }
    }

    pub fn kernel_counters(&self) -> KernelCounters {
        let c = self.maps.counters();
        let at = |i: u32| c.get(i as usize).copied().unwrap_or(0);
        KernelCounters {
            packets: at(abi::MANUL_CNT_PACKETS),
            conntrack_hits: at(abi::MANUL_CNT_CT_HIT),
            new_allowed: at(abi::MANUL_CNT_NEW_ALLOWED),
            new_denied: at(abi::MANUL_CNT_NEW_DENIED),
            denied_cached: at(abi::MANUL_CNT_DENIED_CACHED),
            no_endpoint: at(abi::MANUL_CNT_NO_ENDPOINT),
            no_table: at(abi::MANUL_CNT_NO_TABLE),
            not_ip: at(abi::MANUL_CNT_NOT_IP),
            events_lost: at(abi::MANUL_CNT_EVENTS_LOST),
            neighbour_discovery: at(abi::MANUL_CNT_ND_ALLOWED),
            untracked_allowed: at(abi::MANUL_CNT_UNTRACKED_ALLOWED),
            untracked_denied: at(abi::MANUL_CNT_UNTRACKED_DENIED),
        }
    }

    /// Runs a hook's program on an Ethernet frame with `BPF_PROG_TEST_RUN`,
    /// as if it arrived on (or left by) interface `ifindex`, which must
    /// exist in the calling thread's network namespace. The program uses
    /// the real maps: conntrack entries and events are created as usual.
    pub fn test_run(
        &mut self,
        hook: Hook,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, BpfError> {
        let ctx = skb_context(ifindex);
        let mut out = vec![0u8; frame.len() + 256];
        let prog = loader::program(&mut self.ebpf, hook)?;
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| BpfError::program(hook.program(), "BPF_PROG_TEST_RUN", e))?;
        Ok(TestRunOutcome {
            verdict: r.return_value,
            duration: r.duration,
        })
    }

    /// Removes every pin of a node (maps and links): its dataplane state
    /// ends. For tests and decommissioning; the driver must not be running.
    pub fn purge_node(pin_root: &Path, node: &str) -> std::io::Result<()> {
        let dir = pin_root.join(node);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// The next id of the shared table/space allocator (never 0).
fn next_id(counter: &mut u32) -> u32 {
    let id = *counter;
    *counter = counter.wrapping_add(1).max(1);
    id
}

/// A table's bitmap for every class of its space.
fn write_classes(
    maps: &mut Maps,
    space: &Space,
    id: u32,
    table: &CompiledTable,
) -> Result<(), BpfError> {
    for (side, class, sig) in space.classes() {
        let bitmap = table.addr[usize::from(side)].bitmap(sig);
        maps.write_class(id, side, class, &bitmap)?;
    }
    Ok(())
}

/// Writes one settling of a space, in the order [`Delta`] requires:
/// new classes' bitmaps in every live table of the space, entries, then
/// dropped classes' bitmaps removed.
fn write_delta(
    maps: &mut Maps,
    space_id: u32,
    space: &Space,
    delta: &Delta,
    tables: &[(u32, &CompiledTable)],
) -> Result<(), BpfError> {
    for &(side, class) in &delta.new_classes {
        let Some(sig) = space.sig(side, class) else {
            continue;
        };
        for (id, table) in tables {
            let bitmap = table.addr[usize::from(side)].bitmap(sig);
            maps.write_class(*id, side, class, &bitmap)?;
        }
    }
    for (side, entry, class, new) in &delta.upserts {
        maps.set_addr(space_id, *side, entry, *class, *new)?;
    }
    for (side, entry) in &delta.deletes {
        maps.delete_addr(space_id, *side, entry);
    }
    for &(side, class) in &delta.dropped_classes {
        for (id, _) in tables {
            maps.delete_class(*id, side, class);
        }
    }
    Ok(())
}

/// A `struct __sk_buff` context with only `ifindex` set.
fn skb_context(ifindex: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; std::mem::size_of::<abi::__sk_buff>()];
    let at = std::mem::offset_of!(abi::__sk_buff, ifindex);
    ctx[at..at + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The interfaces of the calling thread's network namespace.
/// Whether `name` starts with one of the workload prefixes.
pub fn is_workload_interface(prefixes: &[String], name: &str) -> bool {
    prefixes
        .iter()
        .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
}

fn interfaces() -> HashMap<u32, String> {
    nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .filter_map(|i| Some((i.index(), i.name().to_str().ok()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
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
    /// endpoint on its old or its new tables.
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        let touched = Touched::of(batch);
        let before = Before::capture(&touched, self.desired.state());
        // A refusal marks the record stale itself.
        self.desired.apply(batch)?;
        let result = match self.program(&touched) {
            Ok(soft) => match soft.into_iter().next() {
                None => Ok(()),
                Some(e) => Err(e.into()),
            },
            Err(e) => {
                let undo = before.undo(self.desired.state());
                if let Err(u) = self.desired.apply(&undo) {
                    tracing::error!(error = %u, "cannot undo a batch the kernel refused in the record; the resync replaces it");
                }
                Err(e.into())
            }
        };
        if result.is_err() {
            self.desired.mark_stale();
        }
        result
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
        events::lock(&self.shared)
            .counters
            .per_policy
            .iter()
            .map(|(policy, c)| PolicyCounter {
                policy: policy.clone(),
                allowed: c.allowed,
                denied: c.denied,
            })
            .collect()
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
}

#[cfg(test)]
mod prefix_tests {
    use super::is_workload_interface;

    #[test]
    fn any_configured_prefix_makes_a_workload_interface() {
        let prefixes = vec!["cali".to_string(), "tap".to_string()];
        for (name, want) in [
            ("cali12ab", true),
            ("tap0", true),
            ("mnl12ab", false),
            ("eth0", false),
            ("ca", false),
        ] {
            assert_eq!(is_workload_interface(&prefixes, name), want, "{name}");
        }
        assert!(!is_workload_interface(&[], "cali0"));
        assert!(!is_workload_interface(&[String::new()], "eth0"));
    }
}
