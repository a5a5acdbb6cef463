//! Virtual nodes: many simulated Felix in one process against real Typha
//! replicas on loopback.
//!
//! Each virtual node is Felix's own sync client and agent loop (the
//! calculation graph) with the null driver, which checks every batch
//! against the dataplane contract and records the desired state; the
//! nodes share one Tokio runtime with few threads. The run writes a
//! cluster (a few endpoints per node, standing policies whose rules select
//! endpoints across the cluster), starts the nodes, then measures:
//!
//! - propagation: from a probe-policy write's acknowledgement until each
//!   node's driver took the change, over several changes;
//! - Typha's CPU and memory per replica (from `/proc`), and per client;
//! - this process's memory per virtual node;
//! - a reconnect storm: one replica SIGKILLed, a change written at once;
//!   every client that followed it must come back on another replica by
//!   resuming from its revision (no snapshot), and every node must take
//!   the change.
//!
//! It touches no network but loopback and starts no process but `typha`.

pub mod node;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manul_client::Client;
use manul_local_cluster::procs::usage;
use manul_model::Resource;

use manul_typha::replicas::{Options, Replicas, SyncListen, metric};
use node::{Board, VirtualNode};
use report::{
    Memory, Propagation, ReplicaFigures, Report, Startup, Storm, VirtualNodesCpu, ms, summary,
};
use workload::Shape;

/// Which replica the reconnect storm kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kill {
    /// No storm.
    None,
    /// A replica that does not lead (writes go on meanwhile).
    Follower,
    /// The leader (writes wait for an election).
    Leader,
}

impl Kill {
    pub fn parse(word: &str) -> Result<Kill, String> {
        match word {
            "none" => Ok(Kill::None),
            "follower" => Ok(Kill::Follower),
            "leader" => Ok(Kill::Leader),
            other => Err(format!(
                "--kill takes none, follower or leader, not {other:?}"
            )),
        }
    }
}

/// How the virtual nodes' sync clients reach Typha (`typhaSyncTransport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The `Sync` gRPC call on each replica's API port.
    Grpc,
    /// The lean transport on each replica's sync listener (`--sync-listen`).
    Tcp,
}

impl Transport {
    pub fn parse(word: &str) -> Result<Transport, String> {
        match word {
            "grpc" => Ok(Transport::Grpc),
            "tcp" => Ok(Transport::Tcp),
            other => Err(format!("--transport takes grpc or tcp, not {other:?}")),
        }
    }
}

/// A run's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub nodes: usize,
    pub replicas: usize,
    pub changes: u32,
    pub endpoints_per_node: usize,
    pub namespaces: usize,
    pub policies: usize,
    /// Worker threads of the runtime every virtual node shares.
    pub threads: usize,
    pub kill: Kill,
    pub transport: Transport,
    /// Nodes started per second, as a DaemonSet rollout brings agents up
    /// over time; 0: all at once.
    pub start_per_s: f64,
    /// Pause between two probe changes.
    pub change_pause_ms: u64,
    /// How long every node has to take one change (and the storm to end).
    pub timeout_s: u64,
    #[serde(skip)]
    pub typha: PathBuf,
}

impl Config {
    fn shape(&self) -> Shape {
        Shape {
            nodes: self.nodes,
            endpoints_per_node: self.endpoints_per_node,
            namespaces: self.namespaces,
            policies: self.policies,
        }
    }
}

/// Runs the whole measurement on its own runtime.
pub fn run(config: &Config, interrupted: &AtomicBool) -> Result<Report> {
    if config.nodes == 0 || config.replicas == 0 || config.threads == 0 {
        bail!("--nodes, --replicas and --threads must be at least 1");
    }
    if config.kill != Kill::None && config.replicas < 3 {
        bail!("a replica can be killed only with 3 or more replicas (a quorum must remain)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
        .context("cannot build the runtime")?;
    let result = runtime.block_on(run_async(config, interrupted));
    // Every virtual node's tasks end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn own_usage() -> (f64, u64) {
    usage(std::process::id()).unwrap_or((0.0, 0))
}

/// CPU seconds and RSS of each replica (a killed one: zeros).
fn replica_usage(replicas: &Replicas) -> Vec<(f64, u64)> {
    replicas
        .replicas
        .iter()
        .map(|r| r.pid().and_then(usage).unwrap_or((0.0, 0)))
        .collect()
}

/// The node's current replica id, from its last hello.
fn current_replicas(board: &Board) -> Vec<Option<u64>> {
    board
        .connections()
        .iter()
        .map(|c| c.last().map(|c| c.connected.replica))
        .collect()
}

/// Writes `resources` in batches of at most `batch`; returns the last
/// revision.
async fn write_all(client: &Client, resources: &[Resource], batch: usize) -> Result<u64> {
    let mut revision = 0;
    for chunk in resources.chunks(batch.max(1)) {
        let revs = client
            .apply(chunk)
            .await
            .context("cannot write the cluster")?;
        revision = revision.max(revs.into_iter().max().unwrap_or(0));
    }
    Ok(revision)
}

/// Writes probe change `k`, again while the cluster has no leader or the
/// outcome is unknown (the write is idempotent); returns its revision.
async fn write_change(client: &Client, k: u32, limit: Duration) -> Result<u64> {
    let probe = workload::probe_policy(k)?;
    let deadline = Instant::now() + limit;
    loop {
        match client.apply(std::slice::from_ref(&probe)).await {
            Ok(revs) => return Ok(revs.into_iter().max().unwrap_or(0)),
            Err(e)
                if (e.is_outcome_unknown() || e.is_unavailable() || e.is_no_leader())
                    && Instant::now() < deadline =>
            {
                tracing::debug!("change {k} not written yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot write change {k}")),
        }
    }
}

/// Waits until every node's driver took change `k`; `Err` after `limit`
/// (naming how many did not).
async fn wait_change(
    board: &Board,
    k: u32,
    limit: Duration,
    interrupted: &AtomicBool,
) -> Result<Vec<Instant>> {
    let deadline = Instant::now() + limit;
    loop {
        let seen = board.seen(k);
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            let missing = seen.iter().filter(|s| s.is_none()).count();
            bail!(
                "{missing} of {} nodes did not take change {k} within {limit:?}",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether every node's agent is in sync at `revision` or later with its
/// driver holding the graph's state.
fn all_in_sync(nodes: &[VirtualNode], revision: u64) -> bool {
    nodes.iter().all(|n| {
        let s = *n.status.borrow();
        s.ready() && s.revision >= revision
    })
}

async fn wait_in_sync(
    nodes: &[VirtualNode],
    revision: u64,
    limit: Duration,
    interrupted: &AtomicBool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !all_in_sync(nodes, revision) {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            let behind = nodes
                .iter()
                .filter(|n| {
                    let s = *n.status.borrow();
                    !(s.ready() && s.revision >= revision)
                })
                .count();
            bail!(
                "{behind} of {} nodes not in sync at revision {revision} within {limit:?}",
                nodes.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn run_async(config: &Config, interrupted: &AtomicBool) -> Result<Report> {
    let timeout = Duration::from_secs(config.timeout_s.max(1));
    let shape = config.shape();
    // Replica i on 127.0.0.(i+1), so that with the lean transport every
    // replica's sync listener can use the one port a client is configured
    // with (`typhaSyncPort`), as on real nodes where each replica has its
    // own address.
    let mut options = Options::new(&config.typha, config.replicas, config.nodes + 64);
    options.own_addresses = true;
    options.sync = match config.transport {
        Transport::Tcp => SyncListen::Shared,
        Transport::Grpc => SyncListen::None,
    };
    options.log_filter = std::env::var("TYPHA_LOG").unwrap_or_else(|_| "warn".into());
    let mut replicas = Replicas::start(&options).await.with_context(|| {
        format!(
            "cannot run typha (build it with `cargo build -p manul-typha --bin typha`): {}",
            config.typha.display()
        )
    })?;
    let addresses = replicas.addresses();
    let transport = match replicas.sync_port() {
        Some(port) => manul_felix::sync::SyncTransport::Tcp { port },
        None => manul_felix::sync::SyncTransport::Grpc,
    };
    let client = Client::connect(&addresses)
        .await
        .context("cannot reach Typha")?;

    // The cluster, before any node connects: all share one snapshot.
    let setup_started = Instant::now();
    let policies = workload::policies(&shape)?;
    let endpoints = workload::endpoints(&shape)?;
    write_all(&client, &policies, 500).await?;
    let setup_revision = write_all(&client, &endpoints, 500).await?;
    let write_s = setup_started.elapsed().as_secs_f64();
    let typha_idle = replica_usage(&replicas);
    let (_, rss_before) = own_usage();

    // The nodes: node i dials replica i mod R first, then the others in
    // turn; at `start_per_s`, node i starts i / start_per_s seconds in.
    let board = Board::new(config.nodes);
    let started = Instant::now();
    let cpu_before_nodes = own_usage().0;
    let mut nodes: Vec<VirtualNode> = Vec::with_capacity(config.nodes);
    for i in 0..config.nodes {
        if config.start_per_s > 0.0 {
            let at = started + Duration::from_secs_f64(i as f64 / config.start_per_s);
            tokio::time::sleep_until(at.into()).await;
        }
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let r = addresses.len();
        let order = (0..r).map(|k| addresses[(i + k) % r].clone()).collect();
        nodes.push(node::start(
            i,
            order,
            transport,
            setup_revision,
            board.clone(),
        ));
    }
    let startup_limit = timeout + Duration::from_millis(100 * config.nodes as u64);
    wait_in_sync(&nodes, setup_revision, startup_limit, interrupted).await?;
    wait_change(&board, 0, timeout, interrupted).await?;
    // Each node's watcher records the moment its status changed; give the
    // last ones' tasks their turn.
    let recorded_by = Instant::now() + Duration::from_secs(1);
    while board.in_sync().iter().any(Option::is_none) && Instant::now() < recorded_by {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let startup = Startup {
        all_in_sync_s: started.elapsed().as_secs_f64(),
        node_in_sync_ms: summary(
            board
                .in_sync()
                .iter()
                .zip(&nodes)
                .filter_map(|(at, n)| at.map(|at| ms(at.saturating_duration_since(n.started)))),
        ),
        cpu_s: own_usage().0 - cpu_before_nodes,
        snapshots: board
            .connections()
            .iter()
            .filter(|c| c.first().is_some_and(|c| c.connected.snapshot))
            .count(),
        operations_per_node: summary(board.operations().iter().map(|&o| o as f64)),
    };
    let (_, rss_in_sync) = own_usage();
    let typha_in_sync = replica_usage(&replicas);
    let clients_per_replica: Vec<usize> = {
        let current = current_replicas(&board);
        replicas
            .replicas
            .iter()
            .map(|r| current.iter().filter(|c| **c == Some(r.id)).count())
            .collect()
    };

    // Policy changes, one at a time.
    let typha_before = replica_usage(&replicas);
    let (cpu_before, _) = own_usage();
    let changes_started = Instant::now();
    let mut per_node = Vec::new();
    let mut to_all = Vec::new();
    let mut acks = Vec::new();
    let mut before_ack = 0usize;
    for k in 1..=config.changes {
        replicas.check_alive()?;
        let sent = Instant::now();
        let revision = write_change(&client, k, timeout).await?;
        let acked = Instant::now();
        acks.push(ms(acked - sent));
        let seen = wait_change(&board, k, timeout, interrupted).await?;
        let latest = seen.iter().max().copied().unwrap_or(acked);
        for at in &seen {
            if *at < acked {
                before_ack += 1;
            }
            per_node.push(ms(at.saturating_duration_since(acked)));
        }
        to_all.push(ms(latest.saturating_duration_since(acked)));
        tracing::debug!(k, revision, "change taken everywhere");
        tokio::time::sleep(Duration::from_millis(config.change_pause_ms)).await;
    }
    let changes_wall = changes_started.elapsed().as_secs_f64();
    let typha_after = replica_usage(&replicas);
    let (cpu_after, rss_after_changes) = own_usage();
    let changes = f64::from(config.changes.max(1));
    let propagation = Propagation {
        changes: config.changes,
        ack_to_node_ms: summary(per_node.iter().copied()),
        ack_to_all_nodes_ms: summary(to_all.iter().copied()),
        write_ack_ms: summary(acks.iter().copied()),
        nodes_before_ack: before_ack,
    };
    let replica_figures: Vec<ReplicaFigures> = replicas
        .replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let clients = clients_per_replica[i];
            let cpu = typha_after[i].0 - typha_before[i].0;
            ReplicaFigures {
                replica: r.id,
                clients,
                rss_before_clients_bytes: typha_idle[i].1,
                rss_in_sync_bytes: typha_in_sync[i].1,
                rss_per_client_bytes: (clients > 0).then(|| {
                    typha_in_sync[i].1.saturating_sub(typha_idle[i].1) as f64 / clients as f64
                }),
                startup_cpu_s: typha_in_sync[i].0 - typha_idle[i].0,
                changes_cpu_s: cpu,
                changes_cpu_percent: cpu / changes_wall.max(1e-9) * 100.0,
                cpu_per_client_per_change_us: (clients > 0)
                    .then(|| cpu * 1e6 / (clients as f64 * changes)),
            }
        })
        .collect();
    let nodes_cpu = VirtualNodesCpu {
        changes_cpu_s: cpu_after - cpu_before,
        per_node_per_change_us: (cpu_after - cpu_before) * 1e6 / (config.nodes as f64 * changes),
    };
    let n = config.nodes as f64;
    let memory = Memory {
        rss_before_nodes_bytes: rss_before,
        rss_in_sync_bytes: rss_in_sync,
        rss_after_changes_bytes: rss_after_changes,
        peak_rss_bytes: peak_rss(),
        per_node_bytes: rss_after_changes.saturating_sub(rss_before) as f64 / n,
        per_node_in_sync_bytes: rss_in_sync.saturating_sub(rss_before) as f64 / n,
    };

    let storm = match config.kill {
        Kill::None => None,
        kill => Some(
            storm(
                config,
                kill,
                &mut replicas,
                &board,
                &nodes,
                timeout,
                interrupted,
            )
            .await?,
        ),
    };
    let failures: u64 = nodes
        .iter()
        .map(|n| n.status.borrow().driver_failures)
        .sum();
    Ok(Report {
        config: config.clone(),
        machine: crate::report::Machine::detect(),
        setup: report::Setup {
            resources: policies.len() + endpoints.len(),
            endpoints: endpoints.len(),
            write_s,
            revision: setup_revision,
        },
        startup,
        propagation,
        typha: replica_figures,
        virtual_nodes_cpu: nodes_cpu,
        memory,
        storm,
        driver_failures: failures,
    })
}

/// Kills one replica and writes a change at once; waits until every node
/// took it and every client of the dead replica is back on another.
#[allow(clippy::too_many_arguments)]
async fn storm(
    config: &Config,
    kill: Kill,
    replicas: &mut Replicas,
    board: &Arc<Board>,
    nodes: &[VirtualNode],
    timeout: Duration,
    interrupted: &AtomicBool,
) -> Result<Storm> {
    let leader = replicas.leader(timeout).await?;
    let current = current_replicas(board);
    let victim = match kill {
        Kill::Leader => leader,
        _ => (0..replicas.replicas.len())
            .filter(|&i| i != leader)
            .max_by_key(|&i| {
                let id = replicas.replicas[i].id;
                current.iter().filter(|c| **c == Some(id)).count()
            })
            .context("no follower to kill")?,
    };
    let victim_id = replicas.replicas[victim].id;
    let moved: Vec<usize> = (0..current.len())
        .filter(|&i| current[i] == Some(victim_id))
        .collect();
    let hellos_before: Vec<usize> = board.connections().iter().map(Vec::len).collect();
    let mut server_snapshots_before = 0.0;
    for (i, r) in replicas.replicas.iter().enumerate() {
        if i != victim {
            let text = r.metrics_text().await?;
            server_snapshots_before +=
                metric(&text, "typha_client_snapshot_send_secs_count").unwrap_or(0.0);
        }
    }
    // The writer talks to the survivors only, so that the kill does not
    // leave the write's outcome unknown.
    let survivors: Vec<String> = (0..replicas.replicas.len())
        .filter(|&i| i != victim)
        .map(|i| replicas.replicas[i].address())
        .collect();
    let writer = Client::connect(&survivors)
        .await
        .context("cannot reach the surviving replicas")?;
    let k = config.changes + 1;
    let killed = Instant::now();
    replicas.kill(victim)?;
    let revision = write_change(&writer, k, timeout)
        .await
        .context("after the kill")?;
    let acked = Instant::now();
    let seen = wait_change(board, k, timeout, interrupted).await?;
    // Every moved client has a hello from a live replica.
    let deadline = Instant::now() + timeout;
    let back = loop {
        let conns = board.connections();
        let back: Vec<Option<&node::Connection>> = moved
            .iter()
            .map(|&i| {
                conns[i][hellos_before[i]..]
                    .iter()
                    .find(|c| c.connected.replica != victim_id)
            })
            .collect();
        if back.iter().all(Option::is_some) {
            break back
                .into_iter()
                .flatten()
                .map(|c| ms(c.at.saturating_duration_since(killed)))
                .collect::<Vec<f64>>();
        }
        if Instant::now() > deadline {
            let missing = back.iter().filter(|b| b.is_none()).count();
            bail!(
                "{missing} of {} clients of the killed replica not back within {timeout:?}",
                moved.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    wait_in_sync(nodes, revision, timeout, interrupted).await?;
    let converged = Instant::now();
    let conns = board.connections();
    let after: Vec<&node::Connection> = conns
        .iter()
        .zip(&hellos_before)
        .flat_map(|(c, &before)| c[before..].iter())
        .collect();
    let mut server_snapshots_after = 0.0;
    for (i, r) in replicas.replicas.iter().enumerate() {
        if i != victim {
            let text = r.metrics_text().await?;
            server_snapshots_after +=
                metric(&text, "typha_client_snapshot_send_secs_count").unwrap_or(0.0);
        }
    }
    Ok(Storm {
        killed_replica: victim_id,
        killed_leader: victim == leader,
        clients_moved: moved.len(),
        reconnects: after.len(),
        resumed: after.iter().filter(|c| !c.connected.snapshot).count(),
        snapshots: after.iter().filter(|c| c.connected.snapshot).count(),
        server_snapshots: (server_snapshots_after - server_snapshots_before).max(0.0) as u64,
        write_ack_ms: ms(acked - killed),
        reconnect_ms: summary(back.iter().copied()),
        all_back_ms: back.iter().copied().fold(0.0, f64::max),
        change_to_every_node_ms: ms(seen
            .iter()
            .max()
            .copied()
            .unwrap_or(acked)
            .saturating_duration_since(killed)),
        converged_ms: ms(converged - killed),
    })
}
