//! One simulated replica: the real Raft node ([`Core`]) on real sled files
//! in its own directory, the real state machine and the real fan-out. A
//! crash drops all of it but the directory; a restart opens it again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use raft::prelude::Message;

use crate::fanout::{Fanout, FanoutConfig, FanoutMetrics};
use crate::node::core::Core;
use crate::node::{NodeConfig, NodeError, Outbox, RaftMetrics};
use crate::server::StateSource;

/// Collects what the node sends; the world hands it to the network.
#[derive(Debug, Clone, Default)]
pub struct Mailbox(Arc<Mutex<Vec<Message>>>);

impl Mailbox {
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Outbox for Mailbox {
    fn send(&mut self, m: Message) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(m);
    }
}

/// How a replica is set up, drawn per seed.
#[derive(Debug, Clone)]
pub struct ReplicaSetup {
    pub election_ticks: usize,
    /// Steps between ticks, and this replica's offset in them.
    pub tick_every: u64,
    pub tick_phase: u64,
    pub snapshot_every: u64,
    pub history: usize,
    pub chunk_entries: usize,
}

/// A running replica.
#[derive(Debug)]
pub struct Live {
    pub core: Core,
    pub fanout: Arc<Fanout>,
    pub mailbox: Mailbox,
}

#[derive(Debug)]
pub struct Replica {
    pub id: u64,
    pub dir: PathBuf,
    pub setup: ReplicaSetup,
    pub live: Option<Live>,
    /// Counts starts: a subscriber's stream belongs to one run.
    pub run: u64,
    /// When a crashed replica comes back.
    pub restart_at: Option<u64>,
}

impl Replica {
    pub fn new(id: u64, dir: PathBuf, setup: ReplicaSetup) -> Replica {
        Replica {
            id,
            dir,
            setup,
            live: None,
            run: 0,
            restart_at: None,
        }
    }

    /// Starts (or restarts) the replica from its directory.
    pub fn start(&mut self, peers: &BTreeMap<u64, String>, seed: u64) -> Result<(), NodeError> {
        let mut config = NodeConfig::new(self.id, self.dir.clone(), peers.clone());
        config.election_ticks = self.setup.election_ticks;
        config.max_election_ticks = self.setup.election_ticks + 1;
        config.heartbeat_ticks = 1;
        config.snapshot_every = self.setup.snapshot_every;
        let source = Arc::new(StateSource(OnceLock::new()));
        let fanout = Fanout::new(
            FanoutConfig {
                replica_id: self.id,
                max_history_revisions: self.setup.history,
                snapshot_chunk_entries: self.setup.chunk_entries,
                ..FanoutConfig::default()
            },
            source.clone(),
            FanoutMetrics::default(),
        );
        let mailbox = Mailbox::default();
        self.run += 1;
        let request_base = seed.wrapping_mul(31).wrapping_add(self.run << 32);
        // The previous run's sled may still be closing on its background
        // thread (a crashed process would have released its lock at
        // once): a storage error is retried for up to a second before it
        // counts.
        let mut tries = 0;
        let core = loop {
            match Core::open(
                config.clone(),
                fanout.clone(),
                RaftMetrics::default(),
                Box::new(mailbox.clone()),
                request_base,
                true,
            ) {
                Err(NodeError::Storage(_)) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let _ = source.0.set(core.shared().clone());
        self.live = Some(Live {
            core,
            fanout,
            mailbox,
        });
        self.restart_at = None;
        Ok(())
    }

    /// Stops the replica as a crash does: pending writes fail, the storage
    /// closes with what was flushed.
    pub fn crash(&mut self, restart_at: u64) {
        if let Some(live) = self.live.take() {
            live.core.stop();
        }
        self.restart_at = Some(restart_at);
    }

    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }
}
