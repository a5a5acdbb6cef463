//! Deterministic simulation of a Typha cluster: the real Raft node
//! (`node::core::Core`, the driver a `typha` process runs), on real sled
//! files in a temporary directory per replica, with the real state machine
//! and fan-out, driven by a seeded scheduler instead of threads, clocks
//! and sockets.
//!
//! A seed decides everything: the network's drop, duplication and delay
//! rates (delays reorder), partitions that isolate a replica (both ways or
//! one way) and heal, crashes and restarts from the persisted storage,
//! client writes (batches, deletes, expected revisions) proposed to any
//! replica, and Sync subscribers that read at their own pace, fall behind,
//! lose their replica and resume elsewhere. Raft's election timeouts, which
//! raft-rs draws from the thread's random generator, are fixed per replica
//! by the seed. So a failing seed fails again, the same way, by its number.
//!
//! After every step the invariants of [`checks`] hold; at the end the
//! network heals, every replica restarts, and within a bounded time the
//! cluster must converge: one leader, every replica at the same applied
//! revision with the same state hash, every acknowledged write committed at
//! its revision, and every subscriber in sync at that revision with the
//! same state.
//!
//! It refuses to simulate what it cannot make deterministic: the gRPC
//! transport and the Sync stream's HTTP/2 and timers (pings, the stall
//! cut) are not run; a crash happens between two Ready rounds (never inside
//! one), with everything the round wrote fsynced.

pub mod checks;
pub mod net;
pub mod replica;
pub mod rng;
pub mod subscriber;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use manul_proto::v1::command::Op;
use manul_proto::v1::{Command, DeleteBatch, ResourceKey, Write, WriteBatch};
use raft::prelude::MessageType;
use tokio::sync::oneshot;

use self::checks::{Checks, Violation};
use self::net::{Net, NetFaults, Sent};
use self::replica::{Replica, ReplicaSetup};
use self::rng::Rng;
use self::subscriber::Subscriber;
use crate::node::NodeError;
use crate::state::Applied;

/// Errors that stop a simulation run before any invariant could be judged.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot create the replicas' directory")]
    Dir(#[source] std::io::Error),
    #[error("cannot build the runtime for snapshots")]
    Runtime(#[source] std::io::Error),
}

/// What a run exercised, to show that the seeds do more than idle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub crashes: u64,
    pub partitions: u64,
    /// Raft messages lost (dropped, or on a cut link).
    pub messages_lost: u64,
    /// Raft snapshots delivered to a replica.
    pub raft_snapshots: u64,
    /// Terms with a leader.
    pub leaders: u64,
    /// Sync streams opened with a snapshot, and resumed without one.
    pub sync_snapshots: u64,
    pub sync_resumes: u64,
    /// Sync streams the fan-out ended (the client fell behind the history).
    pub sync_cut: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.crashes += other.crashes;
        self.partitions += other.partitions;
        self.messages_lost += other.messages_lost;
        self.raft_snapshots += other.raft_snapshots;
        self.leaders += other.leaders;
        self.sync_snapshots += other.sync_snapshots;
        self.sync_resumes += other.sync_resumes;
        self.sync_cut += other.sync_cut;
    }
}

/// What one seed's run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub steps: u64,
    pub stats: Stats,
    /// Writes acknowledged, and the final revision.
    pub acknowledged: usize,
    pub revision: u64,
    /// The first broken invariant, and at which step.
    pub failure: Option<(u64, String)>,
}

/// How long a run is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Steps with faults (a step is 10 ms of simulated time).
    pub steps: u64,
    /// Most steps the final, quiet phase may take to converge.
    pub settle_steps: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            steps: 800,
            settle_steps: 3000,
        }
    }
}

const REPLICAS: u64 = 3;
const SUBSCRIBERS: u64 = 3;
const KEYS: u64 = 6;

/// How often things happen, drawn per seed (per million steps).
#[derive(Debug, Clone)]
struct Rates {
    write: u64,
    crash: u64,
    partition: u64,
}

struct Pending {
    rx: oneshot::Receiver<Result<Applied, NodeError>>,
}

struct World {
    rng: Rng,
    now: u64,
    seed: u64,
    replicas: Vec<Replica>,
    subscribers: Vec<Subscriber>,
    peers: BTreeMap<u64, String>,
    net: Net,
    faults: NetFaults,
    rates: Rates,
    heal_at: Option<u64>,
    pending: Vec<Pending>,
    checks: Checks,
    writes: u64,
    quiet: bool,
    runtime: tokio::runtime::Runtime,
    stats: Stats,
}

/// Runs one seed in a fresh directory under `dir`.
pub fn run(seed: u64, config: &SimConfig, dir: &Path) -> Result<Outcome, SimError> {
    let tmp = tempfile::Builder::new()
        .prefix("typha-sim-")
        .tempdir_in(dir)
        .map_err(SimError::Dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(SimError::Runtime)?;
    let mut rng = Rng::new(seed);
    let faults = NetFaults::draw(&mut rng);
    let rates = Rates {
        write: rng.between(20_000, 300_000),
        crash: rng.below(4_000),
        partition: rng.below(6_000),
    };
    let peers: BTreeMap<u64, String> = (1..=REPLICAS)
        .map(|id| (id, format!("sim-{id}:1")))
        .collect();
    let mut replicas = Vec::new();
    for id in 1..=REPLICAS {
        let setup = ReplicaSetup {
            election_ticks: usize::try_from(rng.between(10, 20)).unwrap_or(10),
            tick_every: 10,
            tick_phase: rng.below(10),
            snapshot_every: rng.between(5, 80),
            history: usize::try_from(rng.between(2, 64)).unwrap_or(8),
            chunk_entries: usize::try_from(rng.between(1, 8)).unwrap_or(1),
        };
        let dir = tmp.path().join(format!("replica-{id}"));
        std::fs::create_dir_all(&dir).map_err(SimError::Dir)?;
        replicas.push(Replica::new(id, dir, setup));
    }
    let subscribers = (1..=SUBSCRIBERS)
        .map(|id| {
            let queue = usize::try_from(rng.between(1, 16)).unwrap_or(4);
            Subscriber::new(id, queue, 500)
        })
        .collect();
    let mut world = World {
        rng,
        now: 0,
        seed,
        replicas,
        subscribers,
        peers,
        net: Net::default(),
        faults,
        rates,
        heal_at: None,
        pending: Vec::new(),
        checks: Checks::default(),
        writes: 0,
        quiet: false,
        runtime,
        stats: Stats::default(),
    };
    let failure = world.run(config).err().map(|v| (world.now, v.0));
    // Close every store before the directory goes.
    for r in &mut world.replicas {
        r.crash(0);
    }
    world.stats.leaders = world.checks.terms_led();
    for s in &world.subscribers {
        let (snapshots, resumes, cut) = s.streams();
        world.stats.sync_snapshots += snapshots;
        world.stats.sync_resumes += resumes;
        world.stats.sync_cut += cut;
    }
    Ok(Outcome {
        seed,
        steps: world.now,
        stats: world.stats.clone(),
        acknowledged: world.checks.acknowledged.len(),
        revision: world.final_revision(),
        failure,
    })
}

impl World {
    fn run(&mut self, config: &SimConfig) -> Result<(), Violation> {
        for i in 0..self.replicas.len() {
            self.start(i)?;
        }
        for _ in 0..config.steps {
            self.step()?;
        }
        self.settle(config.settle_steps)
    }

    fn start(&mut self, i: usize) -> Result<(), Violation> {
        let (peers, seed) = (self.peers.clone(), self.seed);
        let r = &mut self.replicas[i];
        self.checks.restarted(r.id);
        r.start(&peers, seed)
            .map_err(|e| Violation(format!("replica {} cannot start: {e}", r.id)))
    }

    fn final_revision(&self) -> u64 {
        self.replicas
            .iter()
            .filter_map(|r| r.live.as_ref())
            .filter_map(|l| l.core.shared().state.read().ok().map(|s| s.revision()))
            .max()
            .unwrap_or(0)
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.now += 1;
        if !self.quiet {
            self.faults_step();
        }
        self.restarts()?;
        self.deliver();
        self.ticks();
        if !self.quiet && self.rng.chance(self.rates.write) {
            self.propose();
        }
        self.readies()?;
        self.answers()?;
        self.observe()?;
        self.subscribers_step()
    }

    fn faults_step(&mut self) {
        if self.heal_at.is_some_and(|at| self.now >= at) {
            self.net.heal();
            self.heal_at = None;
        }
        if self.heal_at.is_none() && self.rng.chance(self.rates.partition) {
            let victim = self.rng.between(1, REPLICAS);
            let one_way = self.rng.chance(300_000);
            for other in (1..=REPLICAS).filter(|o| *o != victim) {
                self.net.cut(victim, other);
                if !one_way {
                    self.net.cut(other, victim);
                }
            }
            self.heal_at = Some(self.now + self.rng.between(30, 400));
            self.stats.partitions += 1;
        }
        if self.rng.chance(self.rates.crash) {
            let i = usize::try_from(self.rng.below(REPLICAS)).unwrap_or(0);
            let back = self.now + self.rng.between(1, 300);
            if self.replicas[i].is_live() {
                self.replicas[i].crash(back);
                self.stats.crashes += 1;
            }
        }
    }

    fn restarts(&mut self) -> Result<(), Violation> {
        for i in 0..self.replicas.len() {
            let r = &self.replicas[i];
            if !r.is_live() && r.restart_at.is_some_and(|at| self.now >= at || self.quiet) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    fn live_mut(&mut self, id: u64) -> Option<&mut replica::Live> {
        self.replicas
            .iter_mut()
            .find(|r| r.id == id)
            .and_then(|r| r.live.as_mut())
    }

    fn deliver(&mut self) {
        let (delivered, lost) = self.net.due(self.now);
        self.stats.messages_lost += lost.len() as u64;
        for m in lost {
            if m.get_msg_type() == MessageType::MsgSnapshot
                && let Some(from) = self.live_mut(m.from)
            {
                from.core.snapshot_done(m.to, false);
            }
        }
        for m in delivered {
            let (from, to) = (m.from, m.to);
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let delivered = match self.live_mut(to) {
                Some(live) => {
                    live.core.step(m);
                    true
                }
                None => false,
            };
            if delivered && snapshot {
                self.stats.raft_snapshots += 1;
            }
            if !delivered {
                self.stats.messages_lost += 1;
            }
            if let Some(sender) = self.live_mut(from) {
                if !delivered {
                    sender.core.unreachable(to);
                }
                if snapshot {
                    sender.core.snapshot_done(to, delivered);
                }
            }
        }
    }

    fn ticks(&mut self) {
        let now = self.now;
        for r in &mut self.replicas {
            let (every, phase) = (r.setup.tick_every, r.setup.tick_phase);
            if let Some(live) = r.live.as_mut()
                && (now + phase).is_multiple_of(every)
            {
                live.core.tick();
            }
        }
    }

    fn command(&mut self) -> Command {
        self.writes += 1;
        let key = |n: u64| ResourceKey {
            kind: manul_model::Kind::GlobalNetworkSet.key_name().into(),
            namespace: String::new(),
            name: format!("set-{n}"),
        };
        let op = if self.rng.chance(150_000) {
            Op::Deletes(DeleteBatch {
                keys: vec![key(self.rng.below(KEYS))],
                ..Default::default()
            })
        } else {
            let count = self.rng.between(1, 3);
            let writes = (0..count)
                .map(|_| {
                    let n = self.rng.below(KEYS);
                    let w = self.writes;
                    let value = format!(
                        r#"{{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{{"name":"set-{n}"}},"spec":{{"nets":["10.{}.{}.0/24"]}}}}"#,
                        (w >> 8) & 0xFF,
                        w & 0xFF
                    );
                    let expected_revision = self
                        .rng
                        .chance(100_000)
                        .then(|| self.rng.below(self.now.max(1)));
                    Write {
                        key: Some(key(n)),
                        value: Bytes::from(value),
                        expected_revision,
                    }
                })
                .collect();
            Op::Writes(WriteBatch {
                writes,
                ..Default::default()
            })
        };
        Command {
            request_id: 0,
            op: Some(op),
            ..Default::default()
        }
    }

    /// A client write to any replica; only the leader takes it.
    fn propose(&mut self) {
        let command = self.command();
        let id = self.rng.between(1, REPLICAS);
        if let Some(live) = self.live_mut(id) {
            let rx = live.core.propose(command);
            self.pending.push(Pending { rx });
        }
    }

    fn readies(&mut self) -> Result<(), Violation> {
        for i in 0..self.replicas.len() {
            let id = self.replicas[i].id;
            let Some(live) = self.replicas[i].live.as_mut() else {
                continue;
            };
            live.core
                .ready()
                .map_err(|e| Violation(format!("replica {id} stopped: {e}")))?;
            let applied = live.core.take_applied();
            let outgoing = live.mailbox.take();
            self.checks.applied(id, applied)?;
            for m in outgoing {
                let to = m.to;
                let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
                let sent = self.net.send(self.now, m, &self.faults, &mut self.rng);
                if sent == Sent::Dropped {
                    self.stats.messages_lost += 1;
                }
                if sent == Sent::Dropped
                    && let Some(live) = self.replicas[i].live.as_mut()
                {
                    // The transport reports what it could not deliver.
                    if self.net.is_cut(id, to) {
                        live.core.unreachable(to);
                    }
                    if snapshot {
                        live.core.snapshot_done(to, false);
                    }
                }
            }
        }
        Ok(())
    }

    fn answers(&mut self) -> Result<(), Violation> {
        let mut still = Vec::with_capacity(self.pending.len());
        for mut p in std::mem::take(&mut self.pending) {
            match p.rx.try_recv() {
                Ok(Ok(applied)) => self
                    .checks
                    .acknowledged(applied.request_id, applied.revision)?,
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {}
                Err(oneshot::error::TryRecvError::Empty) => still.push(p),
            }
        }
        self.pending = still;
        Ok(())
    }

    fn observe(&mut self) -> Result<(), Violation> {
        for r in &self.replicas {
            let Some(live) = r.live.as_ref() else {
                continue;
            };
            let shared = live.core.shared();
            let status = shared.status.read().map(|s| s.clone()).unwrap_or_default();
            if status.role == "leader" {
                self.checks.leader(status.term, r.id)?;
            }
            let (revision, hash) = shared
                .state
                .read()
                .map(|s| (s.revision(), s.state_hash()))
                .unwrap_or_default();
            self.checks
                .state(&format!("replica {}", r.id), revision, &hash)?;
            let published = live.fanout.current_revision();
            if published != revision {
                return Err(Violation(format!(
                    "replica {}: the fan-out is at revision {published}, the state machine at {revision}",
                    r.id
                )));
            }
        }
        Ok(())
    }

    fn subscribers_step(&mut self) -> Result<(), Violation> {
        for s in &mut self.subscribers {
            if s.connected_to().is_none() && (self.quiet || self.rng.chance(200_000)) {
                let live: Vec<usize> = (0..self.replicas.len())
                    .filter(|i| self.replicas[*i].is_live())
                    .collect();
                if let Some(i) = self.rng.pick(&live) {
                    s.connect(&self.replicas[*i], self.now);
                }
            }
            s.serve(&self.replicas, self.now, &self.runtime)?;
            let take = if self.quiet {
                64
            } else {
                usize::try_from(self.rng.below(6)).unwrap_or(0)
            };
            s.read(take, &mut self.checks)?;
            if !self.quiet && self.rng.chance(2_000) {
                s.disconnect();
            }
        }
        Ok(())
    }

    /// Heals the network, restarts every replica, stops faults and writes,
    /// and waits for convergence; then the final checks.
    fn settle(&mut self, steps: u64) -> Result<(), Violation> {
        self.quiet = true;
        self.net.heal();
        self.heal_at = None;
        self.faults = NetFaults::quiet();
        for _ in 0..steps {
            self.step()?;
            if self.converged() {
                return self.final_checks();
            }
        }
        let status: Vec<String> = self
            .replicas
            .iter()
            .filter_map(|r| r.live.as_ref())
            .map(|l| {
                let s = l
                    .core
                    .shared()
                    .status
                    .read()
                    .map(|s| s.clone())
                    .unwrap_or_default();
                format!(
                    "{}: {} term {} commit {} applied {}",
                    s.id, s.role, s.term, s.commit_index, s.applied_index
                )
            })
            .collect();
        let subs: Vec<String> = self
            .subscribers
            .iter()
            .map(|s| format!("{}: {:?} at {}", s.id, s.connected_to(), s.revision()))
            .collect();
        Err(Violation(format!(
            "no convergence within {steps} quiet steps (replicas {}; subscribers {})",
            status.join(", "),
            subs.join(", ")
        )))
    }

    fn converged(&self) -> bool {
        let statuses: Vec<_> = self
            .replicas
            .iter()
            .filter_map(|r| r.live.as_ref())
            .map(|l| {
                l.core
                    .shared()
                    .status
                    .read()
                    .map(|s| s.clone())
                    .unwrap_or_default()
            })
            .collect();
        // Writes still unanswered are in doubt (their entry may have been
        // replaced by another leader's): they need not finish.
        if statuses.len() != self.replicas.len() {
            return false;
        }
        let Some(leader) = statuses.iter().find(|s| s.role == "leader") else {
            return false;
        };
        let revision = leader.commit_index;
        statuses.iter().all(|s| {
            s.leader_id == leader.id
                && s.term == leader.term
                && s.commit_index == revision
                && s.applied_index == revision
        }) && self
            .subscribers
            .iter()
            .all(|s| s.in_sync() && s.revision() == revision)
    }

    fn final_checks(&mut self) -> Result<(), Violation> {
        let revision = self.final_revision();
        let mut hashes = Vec::new();
        for r in &self.replicas {
            if let Some(live) = r.live.as_ref() {
                let sm = live
                    .core
                    .shared()
                    .state
                    .read()
                    .map_err(|_| Violation("state lock poisoned".into()))?;
                hashes.push((r.id, sm.revision(), sm.state_hash()));
            }
        }
        if let Some((id, rev, hash)) = hashes.iter().find(|(_, rev, hash)| {
            *rev != revision || Some(hash.as_str()) != self.checks.hash_at(revision)
        }) {
            return Err(Violation(format!(
                "replica {id} ends at revision {rev} with state {hash}; expected revision {revision} with state {:?}",
                self.checks.hash_at(revision)
            )));
        }
        self.checks.every_ack_committed(revision)
    }
}
