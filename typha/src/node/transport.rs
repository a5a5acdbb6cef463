//! Raft messages between replicas, over the `Peer` gRPC service.
//!
//! Sending: one Tokio task per peer drains a bounded queue and sends batches;
//! a full queue drops messages (Raft retransmits), an unreachable peer is
//! reported to Raft, and a snapshot's delivery is reported back so Raft can
//! resume replication. Every call carries the cluster's peer token, over
//! mutual TLS when the replica has it.
//!
//! A call has a deadline sized to its batch (`batch_deadline`), and a
//! failed call drops the connection: the next batch dials afresh. A peer
//! cut off by a partition (packets dropped, not refused) would otherwise
//! hold its queue behind one call for the whole request timeout, and after
//! the heal the old connection recovers only at TCP's next backed-off
//! retransmission: a healed replica could hear no heartbeat for ten
//! seconds and more.
//!
//! Receiving: a batch is decoded whole before any of it is stepped, so a
//! corrupt batch changes nothing; every message must name the batch's
//! sender. The Raft thread then judges each message (`guard::admit`). A
//! batch's `from_address` is used only by a replica that knows no members
//! yet (started with `--join`, waiting for the leader's first snapshot),
//! and only for a sender it has no address for: once a replica knows its
//! configuration, peer addresses come from membership alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use bytes::Bytes;
use manul_proto::v1::peer_client::PeerClient;
use manul_proto::v1::peer_server::{Peer, PeerServer};
use manul_proto::v1::{RaftAck, RaftBatch};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use super::{Msg, Node, Shared};
use crate::peer_auth::PeerToken;

/// Largest gRPC message between replicas: a snapshot of the whole state.
pub const MAX_PEER_MESSAGE: usize = 1024 * 1024 * 1024;
const QUEUE: usize = 4096;
const BATCH: usize = 256;
/// Every call's deadline starts here: a heartbeat's round trip never needs
/// more, and a call to a peer that stopped answering is given up after
/// about one election timeout (ten 100 ms ticks).
const CALL_BASE: Duration = Duration::from_secs(1);
/// ... plus this long per MiB in the batch (an append of large entries or
/// a snapshot at 16 MiB/s at the least, a loaded replica's pace).
const CALL_PER_MIB: Duration = Duration::from_millis(64);

/// How long a call carrying `bytes` of Raft messages may take.
fn batch_deadline(bytes: usize) -> Duration {
    let mib = bytes.div_ceil(1024 * 1024);
    CALL_BASE + CALL_PER_MIB.saturating_mul(u32::try_from(mib).unwrap_or(u32::MAX))
}

pub(super) struct Transport {
    id: u64,
    shared: Arc<Shared>,
    node_tx: Sender<Msg>,
    token: Option<PeerToken>,
    dial: manul_tls::connect::Transport,
    peers: HashMap<u64, mpsc::Sender<Message>>,
    runtime: tokio::runtime::Handle,
}

impl Transport {
    pub(super) fn new(
        id: u64,
        shared: Arc<Shared>,
        node_tx: Sender<Msg>,
        token: Option<PeerToken>,
        dial: manul_tls::connect::Transport,
    ) -> Transport {
        Transport {
            id,
            shared,
            node_tx,
            token,
            dial,
            peers: HashMap::new(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    pub(super) fn send(&mut self, m: Message) {
        let to = m.to;
        let tx = self.peers.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            self.runtime.spawn(peer_loop(
                self.id,
                to,
                rx,
                self.shared.clone(),
                self.node_tx.clone(),
                self.token.clone(),
                self.dial.clone(),
            ));
            tx
        });
        if tx.try_send(m).is_err() {
            debug!(to, "peer queue full; dropping a Raft message");
        }
    }
}

fn channel(
    addr: &str,
    dial: &manul_tls::connect::Transport,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    Ok(dial.connect_lazy(endpoint))
}

async fn peer_loop(
    from: u64,
    to: u64,
    mut rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    node_tx: Sender<Msg>,
    token: Option<PeerToken>,
    dial: manul_tls::connect::Transport,
) {
    let mut client: Option<(String, PeerClient<Channel>)> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let has_snapshot = batch
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        let addr = shared
            .addresses
            .read()
            .ok()
            .and_then(|a| a.get(&to).cloned());
        let Some(addr) = addr.filter(|a| !a.is_empty()) else {
            let _ = node_tx.send(Msg::Unreachable(to));
            continue;
        };
        if client.as_ref().is_none_or(|(a, _)| *a != addr) {
            match channel(&addr, &dial) {
                Ok(ch) => {
                    let c = PeerClient::new(ch)
                        .max_encoding_message_size(MAX_PEER_MESSAGE)
                        .max_decoding_message_size(MAX_PEER_MESSAGE);
                    client = Some((addr.clone(), c));
                }
                Err(e) => {
                    warn!(to, %addr, "bad peer address: {e}");
                    let _ = node_tx.send(Msg::Unreachable(to));
                    continue;
                }
            }
        }
        let Some((_, c)) = client.as_mut() else {
            continue;
        };
        let messages: Vec<Bytes> = batch
            .iter()
            .filter_map(|m| m.write_to_bytes().ok().map(Bytes::from))
            .collect();
        let from_address = shared
            .addresses
            .read()
            .ok()
            .and_then(|a| a.get(&from).cloned())
            .unwrap_or_default();
        let bytes: usize = messages.iter().map(Bytes::len).sum();
        let mut request = tonic::Request::new(RaftBatch {
            messages,
            from,
            from_address,
        });
        request.set_timeout(batch_deadline(bytes));
        if let Some(t) = &token {
            t.attach(&mut request);
        }
        let result = c.raft(request).await;
        let ok = result.is_ok();
        if let Err(e) = result {
            debug!(to, %addr, "cannot reach peer: {}", e.message());
            let _ = node_tx.send(Msg::Unreachable(to));
            // A fresh connection for the next batch: the old one may sit
            // in TCP's retransmission back-off long after the peer is
            // reachable again.
            client = None;
        }
        if has_snapshot {
            let _ = node_tx.send(Msg::SnapshotDone { to, ok });
        }
        if !ok {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The receiving side: hands decoded messages to the local node.
#[derive(Debug, Clone)]
pub struct PeerService {
    node: Node,
}

impl PeerService {
    pub fn new(node: Node) -> PeerServer<PeerService> {
        PeerServer::new(PeerService { node })
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        let batch = request.into_inner();
        let mut msgs = Vec::with_capacity(batch.messages.len());
        for (i, bytes) in batch.messages.iter().enumerate() {
            let m = Message::parse_from_bytes(bytes).map_err(|e| {
                Status::invalid_argument(format!("messages[{i}]: not a Raft message: {e}"))
            })?;
            if m.from != batch.from {
                return Err(Status::invalid_argument(format!(
                    "messages[{i}]: from replica {}, in a batch from replica {}",
                    m.from, batch.from
                )));
            }
            msgs.push(m);
        }
        let status = self.node.status();
        if status.voters.is_empty()
            && status.learners.is_empty()
            && batch.from != 0
            && batch.from != self.node.id()
            && batch.from_address.parse::<std::net::SocketAddr>().is_ok()
            && let Ok(mut a) = self.node.shared().addresses.write()
        {
            a.entry(batch.from).or_insert(batch.from_address.clone());
        }
        for m in msgs {
            self.node
                .step(m)
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Response::new(RaftAck {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_given_time_for_its_size() {
        let cases = [
            (0, Duration::from_secs(1)),
            (300, Duration::from_secs(1) + CALL_PER_MIB),
            (1024 * 1024, Duration::from_secs(1) + CALL_PER_MIB),
            (60 * 1024 * 1024, Duration::from_millis(1000 + 60 * 64)),
            (MAX_PEER_MESSAGE, Duration::from_millis(1000 + 1024 * 64)),
        ];
        for (bytes, want) in cases {
            assert_eq!(batch_deadline(bytes), want, "{bytes} bytes");
        }
    }
}
