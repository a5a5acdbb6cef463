//! The driver: keeps the desired state (checked against the contract by
//! the null driver), renders it, and writes the difference to the kernel.

use std::time::{Duration, Instant};

use manul_dataplane_api::{
    DesiredState, Driver, DriverError, NullDriver, Operation, Service, ServiceKey,
};
use tracing::{debug, info, warn};

use crate::flows::Flows;
use crate::nft::{Nft, NftError, Observed};
use crate::render::service_claims::Claims;
use crate::render::{self, NftConfig, Ruleset, service_change};
use crate::{elements, full_write, netlink, script};

/// Counters for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NftStats {
    /// Whole-table transactions (start, first sync, repairs).
    pub full_writes: u64,
    /// Transactions that wrote only what changed.
    pub incremental_writes: u64,
    /// Refreshes that found and repaired an out-of-band change.
    pub repairs: u64,
    /// Batches held because an earlier run's table still enforces.
    pub held_batches: u64,
    /// Of the incremental writes, those sent as element changes over
    /// netlink from this process instead of through `nft`.
    pub netlink_writes: u64,
    /// Of the whole-table writes, those sent as one netlink batch from
    /// this process (`full_write.rs`) rather than through `nft -f`.
    pub netlink_full_writes: u64,
    /// UDP conntrack entries of backends that went away, deleted.
    pub stale_udp_cleared: u64,
}

/// Where the time of the last write went, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteTiming {
    /// Rendering and computing the script.
    pub prepare: Duration,
    /// `nft` (or netlink) applying it.
    pub nft: Duration,
    /// The script's size (of a netlink write: the batch's).
    pub script_bytes: usize,
    /// Whether it was written over netlink rather than through `nft`.
    pub netlink: bool,
    /// The same time by phase, for the writes that go over netlink.
    pub phases: Phases,
}

/// Where a write's time went, phase by phase (zero for a phase the write
/// did not go through); `prepare` and `nft` of [`WriteTiming`] split the
/// same time in two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Rendering: the whole state, or only the changed services.
    pub render: Duration,
    /// Finding what to write: diffing with what the table holds, or
    /// splitting the table into the structure and the elements.
    pub diff: Duration,
    /// `nft --check` compiling the structure (or the changes' script),
    /// and reading its messages back.
    pub compile: Duration,
    /// Encoding the elements into the netlink batch.
    pub encode: Duration,
    /// The kernel taking and committing the batch.
    pub kernel: Duration,
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The kernel holds what was written.
    Clean,
    /// It did not; the table was rewritten. The string says what differed.
    Repaired(String),
    /// Nothing has been written yet (waiting for the first sync).
    NotProgrammed,
}

/// The iptables dataplane: netfilter programmed through `nft`.
#[derive(Debug)]
pub struct NftDriver {
    contract: NullDriver,
    nft: Nft,
    /// What the kernel holds, as last written; `None` when unknown (an
    /// earlier run's table, or a failed write).
    programmed: Option<Ruleset>,
    /// Who claims which service map entries in `programmed` (meaningful
    /// only while `programmed` is known).
    claims: Claims,
    stats: NftStats,
    config: NftConfig,
    last_write: WriteTiming,
    /// The next netlink sequence number.
    seq: u32,
    /// The netlink socket every batch goes through, kept open (see
    /// `netlink.rs`).
    writer: netlink::Writer,
    /// Flow observations, when the configuration turns them on.
    flows: Option<Flows>,
    /// The services changed since stale UDP conntrack entries were last
    /// cleared (`stale_udp`); retried at every batch and refresh until it
    /// works.
    udp_dirty: bool,
}

fn dataplane(context: &str, e: NftError) -> DriverError {
    DriverError::Dataplane {
        driver: "iptables",
        context: context.to_string(),
        source: Box::new(e),
    }
}

impl NftDriver {
    /// Starts on this thread's network namespace. With no table from an
    /// earlier run, it installs the empty table at once, so unknown
    /// workload interfaces are dropped from the start. With one, it leaves
    /// it enforcing and replaces it in one transaction at the first
    /// [`Operation::InSync`]: no gap, and nothing stale survives.
    pub fn new(nft: Nft) -> Result<Self, DriverError> {
        Self::with_config(nft, NftConfig::default())
    }

    /// [`NftDriver::new`] with a configuration other than the default.
    pub fn with_config(nft: Nft, config: NftConfig) -> Result<Self, DriverError> {
        let mut driver = Self {
            contract: NullDriver::new(),
            nft,
            programmed: None,
            claims: Claims::default(),
            stats: NftStats::default(),
            flows: None,
            config,
            last_write: WriteTiming::default(),
            seq: 1,
            writer: netlink::Writer::default(),
            udp_dirty: false,
        };
        if let Some(flows) = driver.config.flows {
            driver.flows = Some(Flows::open(flows).map_err(|e| DriverError::Dataplane {
                driver: "iptables",
                context: "opening the flow sockets".into(),
                source: Box::new(e),
            })?);
        }
        let existing = driver
            .nft
            .table_exists()
            .map_err(|e| dataplane("reading the existing table", e))?;
        if existing {
            info!("found a table from an earlier run; it enforces until the first sync");
        } else {
            driver.write_full(render::render_with(
                &DesiredState::default(),
                &driver.config,
            ))?;
        }
        if let Some(flows) = &mut driver.flows {
            flows.state_changed();
        }
        Ok(driver)
    }

    /// The desired state.
    pub fn state(&self) -> &DesiredState {
        self.contract.state()
    }

    pub fn stats(&self) -> NftStats {
        self.stats
    }

    /// Where the time of the last batch that wrote something went.
    pub fn last_write(&self) -> WriteTiming {
        self.last_write
    }

    /// With flows on, where a connection's start finds its Service
    /// frontend on this kernel; `None` with flows off.
    pub fn flow_frontend_source(&self) -> Option<crate::flows::FrontendSource> {
        self.flows.as_ref().map(Flows::frontend_source)
    }

    /// With flows on, whether conntrack accounting is on in the driver's
    /// namespace (flows carry counters); `None` with flows off.
    pub fn flow_accounting(&self) -> Option<bool> {
        self.flows.as_ref().map(Flows::accounting)
    }

    /// Writes the whole table in one transaction: as one netlink batch
    /// (`full_write.rs`), or through `nft -f` when that writer cannot
    /// express the table. Returns what the netlink batch sent, `None`
    /// when it went through `nft -f`.
    fn write_full(&mut self, rs: Ruleset) -> Result<Option<full_write::Written>, DriverError> {
        self.programmed = None;
        let mut sent = None;
        match full_write::write(&self.nft, &mut self.writer, &rs, self.seq) {
            Ok(written) => {
                self.seq = self.seq.wrapping_add(written.messages as u32 + 2);
                self.stats.netlink_full_writes += 1;
                sent = Some(written);
            }
            Err(e) if e.fall_back() => {
                debug!(
                    "writing the whole table through nft -f: {}",
                    manul_dataplane_api::chain(&e)
                );
                self.nft
                    .apply(&script::full(&rs))
                    .map_err(|e| dataplane("writing the whole table", e))?;
            }
            Err(e) => {
                return Err(DriverError::Dataplane {
                    driver: "iptables",
                    context: "writing the whole table".to_string(),
                    source: Box::new(e),
                });
            }
        }
        self.stats.full_writes += 1;
        self.programmed = Some(rs);
        Ok(sent)
    }

    /// Compares the kernel's table with what was written and rewrites it if
    /// they differ (rules or chains added, removed or changed by someone
    /// else, set elements added or removed, the table deleted).
    pub fn refresh(&mut self) -> Result<Refresh, DriverError> {
        let Some(rs) = self.programmed.clone() else {
            if self.contract.state().in_sync {
                let (rs, claims) = render::render_indexed(self.contract.state(), &self.config);
                self.claims = claims;
                self.write_full(rs)?;
                self.stats.repairs += 1;
                return Ok(Refresh::Repaired("the last write had failed".into()));
            }
            return Ok(Refresh::NotProgrammed);
        };
        let observed = self
            .nft
            .list()
            .map_err(|e| dataplane("reading the table back", e))?;
        let difference = match observed {
            None => Some("the table is gone".to_string()),
            Some(o) => difference(&rs, &o),
        };
        match difference {
            None => Ok(Refresh::Clean),
            Some(what) => {
                warn!("out-of-band change to the nftables table: {what}; rewriting it");
                self.write_full(rs)?;
                self.stats.repairs += 1;
                Ok(Refresh::Repaired(what))
            }
        }
    }

    /// Deletes the table (uninstall). Traffic on workload interfaces is
    /// then no longer policed.
    pub fn remove_all(&mut self) -> Result<(), DriverError> {
        self.programmed = None;
        self.nft
            .apply(&format!(
                "add table inet {t}\ndelete table inet {t}\n",
                t = crate::names::TABLE
            ))
            .map_err(|e| dataplane("deleting the table", e))
    }
}

/// The phases of a netlink write of a table (or of its changes) rendered
/// in `render`.
fn phases(render: Duration, w: &full_write::Written) -> Phases {
    Phases {
        render,
        diff: w.diff,
        compile: w.compile,
        encode: w.encode,
        kernel: w.kernel,
    }
}

/// How the kernel's table differs from `rs`, if it does.
pub fn difference(rs: &Ruleset, o: &Observed) -> Option<String> {
    let mut want: Vec<(String, Vec<String>)> = rs
        .chains
        .iter()
        .map(|(n, r)| (n.clone(), r.iter().map(|r| r.comment.clone()).collect()))
        .collect();
    for (name, _, rules) in &rs.base {
        want.push((
            name.to_string(),
            rules.iter().map(|r| r.comment.clone()).collect(),
        ));
    }
    if want.len() != o.chains.len() {
        return Some(format!(
            "{} chains instead of {}",
            o.chains.len(),
            want.len()
        ));
    }
    for (name, comments) in &want {
        match o.chains.get(name) {
            None => return Some(format!("chain {name} is missing")),
            Some(got) if got != comments => return Some(format!("chain {name} was changed")),
            Some(_) => {}
        }
    }
    if rs.sets.len() != o.sets.len() {
        return Some(format!(
            "{} sets instead of {}",
            o.sets.len(),
            rs.sets.len()
        ));
    }
    for (name, def) in &rs.sets {
        match o.sets.get(name) {
            None => return Some(format!("set {name} is missing")),
            // The packet path fills sets with a timeout (affinity).
            Some(&n) if def.timeout.is_none() && n != def.elements.len() => {
                return Some(format!(
                    "set {name} has {n} elements instead of {}",
                    def.elements.len()
                ));
            }
            Some(_) => {}
        }
    }
    None
}

impl NftDriver {
    /// Once the services written hold, clears the UDP conntrack entries
    /// of backends that went away (as kube-proxy does after its syncs); a
    /// failure is logged and retried at the next batch or refresh.
    fn clear_stale_udp(&mut self) {
        if !self.udp_dirty || self.programmed.is_none() {
            return;
        }
        let frontends = crate::stale_udp::UdpFrontends::of(&self.contract.state().services);
        if frontends.is_empty() {
            self.udp_dirty = false;
            return;
        }
        let cleared = match self.writer.socket() {
            Ok(socket) => crate::stale_udp::netlink::clear_on(socket, &frontends)
                .map_err(|e| manul_dataplane_api::chain(&e)),
            Err(e) => Err(manul_dataplane_api::chain(&e)),
        };
        if cleared.is_err() {
            // Answers of a failed exchange may still be queued.
            self.writer.reset();
        }
        match cleared {
            Ok(cleared) => {
                self.udp_dirty = false;
                self.stats.stale_udp_cleared += cleared as u64;
                if cleared > 0 {
                    debug!(cleared, "cleared stale UDP conntrack entries");
                }
            }
            Err(error) => warn!(
                %error,
                "could not clear stale UDP conntrack entries; retrying later"
            ),
        }
    }

    /// Checks the batch, records it and writes it; see [`Driver::apply`]
    /// for what happens after an error.
    fn apply_batch(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        let before = self.services_before(batch);
        self.contract.apply(batch)?;
        if self.programmed.is_none() && !self.contract.state().in_sync {
            self.stats.held_batches += 1;
            return Ok(());
        }
        let started = Instant::now();
        if let Some(before) = before
            && self.programmed.is_some()
        {
            return self.write_services(&before, started);
        }
        let (new, claims) = render::render_indexed(self.contract.state(), &self.config);
        self.claims = claims;
        match self.programmed.take() {
            None => {
                let prepare = started.elapsed();
                let written = self.write_full(new)?;
                self.last_write = WriteTiming {
                    prepare,
                    nft: started.elapsed() - prepare,
                    script_bytes: written.map_or(0, |w| w.bytes),
                    netlink: written.is_some(),
                    phases: written.map_or_else(Phases::default, |w| phases(prepare, &w)),
                };
            }
            Some(old) => {
                self.write_changes(&old, &new, started)?;
                self.programmed = Some(new);
            }
        }
        debug!(ops = batch.len(), elapsed = ?started.elapsed(), "programmed");
        Ok(())
    }

    /// When the batch changes services only: each changed service and what
    /// it was before the batch. `None` for any other batch.
    fn services_before(&self, batch: &[Operation]) -> Option<Vec<(ServiceKey, Option<Service>)>> {
        let mut keys = std::collections::BTreeSet::new();
        for op in batch {
            match op {
                Operation::ServiceUpdate(svc) => {
                    keys.insert((svc.namespace.clone(), svc.name.clone()));
                }
                Operation::ServiceRemove { namespace, name } => {
                    keys.insert((namespace.clone(), name.clone()));
                }
                _ => return None,
            }
        }
        if keys.is_empty() {
            return None;
        }
        let state = self.contract.state();
        Some(
            keys.into_iter()
                .map(|k| {
                    let svc = state.services.get(&k).cloned();
                    (k, svc)
                })
                .collect(),
        )
    }

    /// Renders and writes only the services a batch changed.
    fn write_services(
        &mut self,
        before: &[(ServiceKey, Option<Service>)],
        started: Instant,
    ) -> Result<(), DriverError> {
        let Some(mut programmed) = self.programmed.take() else {
            return Ok(());
        };
        let state = self.contract.state();
        let changes: Vec<service_change::Change<'_>> = before
            .iter()
            .map(|(k, old)| (k, old.as_ref(), state.services.get(k)))
            .collect();
        let change = service_change::render_changes(
            &programmed,
            &mut self.claims,
            &changes,
            &self.config,
            &state.local_addresses,
        );
        let render = started.elapsed();
        // Element changes alone (a backend moved, a service added or
        // removed whose pick chains exist) go over netlink: `nft` would
        // list the table first.
        let sets = script::element_changes(&programmed, &change.old, &change.new);
        let diff = started.elapsed() - render;
        let batch = sets.map(|sets| elements::batch(&sets, self.seq));
        match batch {
            Some(Ok(batch)) => {
                self.seq = self.seq.wrapping_add(batch.acked.len() as u32 + 2);
                let phases = Phases {
                    render,
                    diff,
                    encode: started.elapsed() - render - diff,
                    ..Phases::default()
                };
                self.write_netlink(&batch, started, phases)?;
            }
            other => {
                if let Some(Err(e)) = other {
                    debug!("writing through nft: {}", manul_dataplane_api::chain(&e));
                }
                let script = script::incremental(&change.old, &change.new);
                self.write_script(&script, started)?;
            }
        }
        service_change::fold(&mut programmed, change);
        self.programmed = Some(programmed);
        debug!(services = before.len(), elapsed = ?started.elapsed(), "programmed services");
        Ok(())
    }

    /// Writes an element batch over netlink (nothing when it is empty).
    /// `phases`: those before the kernel's.
    fn write_netlink(
        &mut self,
        batch: &elements::Batch,
        started: Instant,
        phases: Phases,
    ) -> Result<(), DriverError> {
        if batch.acked.is_empty() {
            return Ok(());
        }
        let prepare = started.elapsed();
        self.writer
            .apply(batch)
            .map_err(|e| dataplane("writing changes", e))?;
        self.stats.incremental_writes += 1;
        self.stats.netlink_writes += 1;
        let nft = started.elapsed() - prepare;
        self.last_write = WriteTiming {
            prepare,
            nft,
            script_bytes: batch.bytes.len(),
            netlink: true,
            phases: Phases {
                kernel: nft,
                ..phases
            },
        };
        Ok(())
    }

    /// Writes the changes from `old` to `new` in one transaction: as one
    /// netlink batch with the service maps' elements encoded here
    /// (`full_write::write_incremental`), or through `nft -f` when that
    /// writer does not take the change.
    fn write_changes(
        &mut self,
        old: &Ruleset,
        new: &Ruleset,
        started: Instant,
    ) -> Result<(), DriverError> {
        let prepare = started.elapsed();
        match full_write::write_incremental(&self.nft, &mut self.writer, old, new, self.seq) {
            Ok(Some(written)) => {
                self.seq = self.seq.wrapping_add(written.messages as u32 + 2);
                if written.messages > 0 {
                    self.stats.incremental_writes += 1;
                    self.stats.netlink_writes += 1;
                    self.last_write = WriteTiming {
                        prepare,
                        nft: started.elapsed() - prepare,
                        script_bytes: written.bytes,
                        netlink: true,
                        phases: phases(prepare, &written),
                    };
                }
                return Ok(());
            }
            Ok(None) => {}
            Err(e) if e.fall_back() => {
                debug!("writing through nft -f: {}", manul_dataplane_api::chain(&e));
            }
            Err(e) => {
                return Err(DriverError::Dataplane {
                    driver: "iptables",
                    context: "writing changes".to_string(),
                    source: Box::new(e),
                });
            }
        }
        let script = script::incremental(old, new);
        self.write_script(&script, started)
    }

    /// Writes an incremental script (nothing when it is empty).
    fn write_script(&mut self, script: &str, started: Instant) -> Result<(), DriverError> {
        if script.is_empty() {
            return Ok(());
        }
        let prepare = started.elapsed();
        self.nft
            .apply(script)
            .map_err(|e| dataplane("writing changes", e))?;
        self.stats.incremental_writes += 1;
        self.last_write = WriteTiming {
            prepare,
            nft: started.elapsed() - prepare,
            script_bytes: script.len(),
            netlink: false,
            phases: Phases::default(),
        };
        Ok(())
    }
}

impl Driver for NftDriver {
    /// Writes the batch as one `nft` transaction (before the first sync of
    /// a run that found an earlier table, or while out of sync, batches are
    /// only recorded, and `InSync` writes the whole table in one
    /// transaction). After an error the driver is out of sync: the kernel
    /// keeps the table as it was before the failed batch (a transaction is
    /// applied whole or not at all), everything recorded is stale, later
    /// batches are held, and the resync's `InSync` replaces the whole table
    /// in one transaction.
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        // Only a change of a service with a UDP port can leave UDP entries
        // stale: the clearing walks every service, which a TCP backend
        // change should not pay.
        self.udp_dirty |= crate::stale_udp::touched(&self.contract.state().services, batch);
        let result = self.apply_batch(batch);
        if result.is_ok() {
            self.clear_stale_udp();
        }
        if let Some(flows) = &mut self.flows {
            flows.state_changed();
        }
        if result.is_err() {
            self.mark_stale();
        }
        result
    }

    fn mark_stale(&mut self) {
        self.contract.mark_stale();
        self.programmed = None;
    }

    fn name(&self) -> &'static str {
        "iptables"
    }

    fn refresh(&mut self) -> Result<bool, DriverError> {
        let result = NftDriver::refresh(self).map(|r| matches!(r, Refresh::Repaired(_)));
        self.clear_stale_udp();
        result
    }

    /// With flows on: nflog records of the deciding rules and conntrack's
    /// counters and ends (see [`crate::flows`]); nothing otherwise.
    fn take_flows(&mut self) -> Vec<manul_dataplane_api::FlowObservation> {
        match &mut self.flows {
            Some(flows) => flows.take(self.contract.state()),
            None => Vec::new(),
        }
    }

    fn flows_dropped(&self) -> u64 {
        self.flows.as_ref().map_or(0, Flows::dropped)
    }
}
