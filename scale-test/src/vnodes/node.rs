//! One virtual node: Felix's own sync client and agent loop (calculation
//! graph and driver), with the null driver, as tasks on the shared runtime.
//! What it saw goes on the [`Board`]: each hello (replica, snapshot or
//! resume), and when its driver took each change of the probe policy.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use manul_dataplane_api::{NullDriver, Operation};
use manul_felix::agent::{self, AgentOptions, AgentStatus};
use manul_felix::calc::CalcGraph;
use manul_felix::metrics::FelixMetrics;
use manul_felix::observed::{BatchObserver, Observed};
use manul_felix::sync::{Connected, SyncConfig, SyncTransport, Syncer};
use tokio::sync::{mpsc, watch};

use super::workload::{PROBE_POLICY, marker_of_port, node_name};

/// A hello one node's sync client got.
#[derive(Debug, Clone)]
pub struct Connection {
    pub at: Instant,
    pub connected: Connected,
}

#[derive(Debug, Default)]
struct NodeLog {
    /// Each probe change the driver took, in order, with when.
    marks: Vec<(u32, Instant)>,
    connections: Vec<Connection>,
    /// When its agent was first in sync at the cluster's revision with the
    /// driver holding the graph's state.
    in_sync: Option<Instant>,
    /// Operations the driver took.
    operations: u64,
}

/// What every virtual node reports, shared with the run.
#[derive(Debug)]
pub struct Board {
    nodes: Mutex<Vec<NodeLog>>,
}

impl Board {
    pub fn new(nodes: usize) -> Arc<Board> {
        Arc::new(Board {
            nodes: Mutex::new((0..nodes).map(|_| NodeLog::default()).collect()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<NodeLog>> {
        // A panicking node task leaves the log as it was: still readable.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When each node's driver took change `k` (`None`: not yet).
    pub fn seen(&self, k: u32) -> Vec<Option<Instant>> {
        self.lock()
            .iter()
            .map(|n| n.marks.iter().find(|(m, _)| *m == k).map(|(_, at)| *at))
            .collect()
    }

    /// Every node's hellos so far.
    pub fn connections(&self) -> Vec<Vec<Connection>> {
        self.lock().iter().map(|n| n.connections.clone()).collect()
    }

    /// When each node was first in sync at the cluster's revision
    /// (`None`: not yet).
    pub fn in_sync(&self) -> Vec<Option<Instant>> {
        self.lock().iter().map(|n| n.in_sync).collect()
    }

    /// Operations the drivers took, per node.
    pub fn operations(&self) -> Vec<u64> {
        self.lock().iter().map(|n| n.operations).collect()
    }

    fn record_mark(&self, node: usize, k: u32, at: Instant) {
        if let Some(n) = self.lock().get_mut(node) {
            n.marks.push((k, at));
        }
    }

    fn record_in_sync(&self, node: usize, at: Instant) {
        if let Some(n) = self.lock().get_mut(node) {
            n.in_sync.get_or_insert(at);
        }
    }

    fn record_operations(&self, node: usize, count: usize) {
        if let Some(n) = self.lock().get_mut(node) {
            n.operations += count as u64;
        }
    }

    fn record_connection(&self, node: usize, connected: Connected) {
        if let Some(n) = self.lock().get_mut(node) {
            n.connections.push(Connection {
                at: Instant::now(),
                connected,
            });
        }
    }
}

/// The change of the probe policy a batch carries, if any.
pub fn probe_change(batch: &[Operation]) -> Option<u32> {
    batch.iter().rev().find_map(|op| match op {
        Operation::PolicyUpdate { id, policy } if id.name == PROBE_POLICY => policy
            .inbound
            .first()
            .and_then(|rule| rule.dst.ports.first())
            .and_then(|p| marker_of_port(p.first)),
        _ => None,
    })
}

/// Follows the batches one node's null driver takes.
struct Probe {
    node: usize,
    board: Arc<Board>,
    last: Option<u32>,
}

impl BatchObserver for Probe {
    fn applied(&mut self, batch: &[Operation]) {
        self.board.record_operations(self.node, batch.len());
        if let Some(k) = probe_change(batch)
            && self.last.is_none_or(|last| k > last)
        {
            self.last = Some(k);
            self.board.record_mark(self.node, k, Instant::now());
        }
    }

    fn mark_stale(&mut self) {}
}

/// A running virtual node: when it started, and its agent's status.
#[derive(Debug)]
pub struct VirtualNode {
    pub started: Instant,
    pub status: watch::Receiver<AgentStatus>,
}

/// Starts virtual node `index` on the current runtime, following `typhas`
/// in that order (the first is where it connects first) over `transport`;
/// the board records when it is first in sync at `revision` or later.
pub fn start(
    index: usize,
    typhas: Vec<String>,
    transport: SyncTransport,
    revision: u64,
    board: Arc<Board>,
) -> VirtualNode {
    let started = Instant::now();
    let name = node_name(index);
    // Felix's own queue is 1024 events; a virtual node keeps less queued.
    let (events_tx, events_rx) = mpsc::channel(64);
    let (hello_tx, mut hello_rx) = mpsc::unbounded_channel();
    let syncer = Syncer::new(SyncConfig {
        typhas,
        node: name.clone(),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        transport,
    })
    .with_connections(hello_tx);
    tokio::spawn(syncer.run(events_tx));
    let hellos = board.clone();
    let synced = board.clone();
    tokio::spawn(async move {
        while let Some(c) = hello_rx.recv().await {
            hellos.record_connection(index, c);
        }
    });
    let driver = Observed::new(
        Box::new(NullDriver::new()),
        Probe {
            node: index,
            board,
            last: None,
        },
    );
    let (status_tx, status) = watch::channel(AgentStatus::default());
    let mut watched = status.clone();
    tokio::spawn(async move {
        if watched
            .wait_for(|s| s.ready() && s.revision >= revision)
            .await
            .is_ok()
        {
            synced.record_in_sync(index, Instant::now());
        }
    });
    tokio::spawn(agent::run(
        CalcGraph::new(name),
        Box::new(driver),
        events_rx,
        FelixMetrics::default(),
        status_tx,
        AgentOptions::default(),
    ));
    VirtualNode { started, status }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use manul_dataplane_api::{Policy, PolicyId};

    use super::*;

    #[test]
    fn the_probe_change_is_read_from_the_probe_policy_only() {
        let calc = |k| {
            let r = super::super::workload::probe_policy(k).unwrap();
            let mut graph = CalcGraph::new("vnode-00000");
            let ep = super::super::workload::endpoints(&super::super::workload::Shape {
                nodes: 1,
                endpoints_per_node: 1,
                namespaces: 1,
                policies: 0,
            })
            .unwrap();
            let mut updates: Vec<manul_felix::calc::Update> = ep
                .into_iter()
                .map(|e| manul_felix::calc::Update {
                    key: e.key(),
                    value: Some(e),
                })
                .collect();
            updates.push(manul_felix::calc::Update {
                key: r.key(),
                value: Some(r),
            });
            graph.apply(updates)
        };
        assert_eq!(probe_change(&calc(7)), Some(7));
        let other = Operation::PolicyUpdate {
            id: PolicyId {
                tier: "default".into(),
                name: "other".into(),
            },
            policy: Policy::default(),
        };
        assert_eq!(probe_change(&[other]), None);
    }
}
