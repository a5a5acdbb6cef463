//! The Raft node without its thread: the same driver the `typha` process
//! runs ([`super::Node`]), stepped by a caller that owns the clock and the
//! network. The deterministic simulation (`crate::sim`) drives replicas
//! through it; a `typha` process never uses it.
//!
//! Each call is one thing the Raft thread's loop does: hand in a message or
//! a proposal, tick, or handle the Ready (persist, fsync, apply, publish to
//! the fan-out, send through the [`Outbox`]). What is persisted, applied
//! and sent, and when a write is answered, is exactly the thread's.

use std::sync::Arc;

use manul_proto::v1::Command;
use raft::prelude::Message;
use tokio::sync::oneshot;

use super::driver::{Driver, Outbox, RaftMetrics};
use super::{Msg, NodeConfig, NodeError, Shared};
use crate::fanout::Fanout;
use crate::state::Applied;

/// A Raft node stepped by its caller. Dropping it closes its storage, as a
/// stopped process does.
pub struct Core {
    driver: Driver,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Core {
    /// Opens the storage in `config.data_dir` and rebuilds the state as
    /// [`super::Node::start`] does, then handles the first Ready. Request
    /// ids start from `request_base`; `record_applied` keeps every applied
    /// entry for [`Core::take_applied`].
    pub fn open(
        config: NodeConfig,
        fanout: Arc<Fanout>,
        metrics: RaftMetrics,
        outbox: Box<dyn Outbox>,
        request_base: u64,
        record_applied: bool,
    ) -> Result<Core, NodeError> {
        let mut driver = Driver::open(config, fanout, metrics, |_| outbox, request_base)?;
        if record_applied {
            driver.record_applied();
        }
        driver.start()?;
        Ok(Core { driver })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        self.driver.shared()
    }

    /// Proposes a write; the receiver is answered once it is committed and
    /// applied here (or refused: not the leader, stopped).
    pub fn propose(&mut self, command: Command) -> oneshot::Receiver<Result<Applied, NodeError>> {
        let (reply, rx) = oneshot::channel();
        self.driver.handle(Msg::Propose { command, reply });
        rx
    }

    /// A peer's message, judged by the guard first.
    pub fn step(&mut self, m: Message) {
        self.driver.handle(Msg::Raft(Box::new(m)));
    }

    /// The transport could not reach `id`.
    pub fn unreachable(&mut self, id: u64) {
        self.driver.handle(Msg::Unreachable(id));
    }

    /// A snapshot sent to `to` was delivered (or not).
    pub fn snapshot_done(&mut self, to: u64, ok: bool) {
        self.driver.handle(Msg::SnapshotDone { to, ok });
    }

    pub fn tick(&mut self) {
        self.driver.tick();
    }

    /// Handles the Ready as the loop does after each batch of messages. An
    /// error (or a raft-rs panic caught on a message) means the replica
    /// stops.
    pub fn ready(&mut self) -> Result<(), NodeError> {
        if self.driver.is_broken() {
            return Err(NodeError::Dropped("raft-rs panicked".into()));
        }
        self.driver.on_ready()?;
        self.driver.publish_status();
        Ok(())
    }

    /// The entries applied since the last call: (index, term, data).
    pub fn take_applied(&mut self) -> Vec<(u64, u64, bytes::Bytes)> {
        self.driver.take_applied()
    }

    /// Answers every waiting write with `Stopped`, as a stopping thread
    /// does; the storage closes when `self` is dropped.
    pub fn stop(mut self) {
        self.driver.fail_pending();
    }
}
