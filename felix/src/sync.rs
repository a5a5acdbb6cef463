//! The Typha sync client: connects to any replica in a list, follows the
//! hello / snapshot / in-sync / delta stream, and turns it into calculation
//! graph updates.
//!
//! It reconnects with backoff, resuming from the last revision it applied,
//! and moves on to the next replica when one fails. When a reconnect needs
//! a fresh snapshot, it replays the snapshot as updates (the graph ignores
//! what did not change) and synthesises deletions for the keys that
//! vanished, so the dataplane is repaired, never reset.
//!
//! FelixConfiguration and Installation updates go to their own channel when
//! one is given ([`Syncer::with_config_updates`]): they configure Felix, not
//! policy. Each connection's hello can be reported too
//! ([`Syncer::with_connections`]): which replica answered, and whether it
//! resumed the stream or sent a snapshot.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use manul_model::{Kind, ResourceKey};
use manul_proto::v1::sync_client::SyncClient;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{Entry, EntryList, SyncRequest};
use manul_proto::wire::{self, WireError};
use prost::Message as _;
use rustc_hash::FxHashSet;
use tokio::sync::mpsc;
use tracing::{Instrument, info, warn};

use crate::sync_backoff::Backoff;

use crate::calc::Update;

/// Largest message accepted from Typha.
const MAX_MESSAGE: usize = 1024 * 1024 * 1024;

/// What the sync client tells the agent.
#[derive(Debug)]
pub enum SyncEvent {
    /// Updates to apply, in revision order; the state is at `revision`
    /// once they are applied (a snapshot chunk: the snapshot's revision).
    Updates { updates: Vec<Update>, revision: u64 },
    /// Everything up to `revision` has been delivered.
    InSync { revision: u64 },
    /// The stream broke; the client is reconnecting.
    Disconnected { error: String },
}

/// One accepted connection to a replica, as its hello described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The address dialled (from [`SyncConfig::typhas`]).
    pub address: String,
    /// The replica's id, from its hello.
    pub replica: u64,
    /// The revision this client asked to resume from (0: none).
    pub resume_from: u64,
    /// The replica's revision when it answered.
    pub revision: u64,
    /// A snapshot follows (the replica could not resume the stream).
    pub snapshot: bool,
}

/// Why an entry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The entry's key or value (the whole chain, as it is logged).
    #[error("{}", manul_model::error::chain(.0))]
    Entry(WireError),
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

/// Sync client configuration.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub typhas: Vec<String>,
    pub node: String,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How the stream is carried (`typhaSyncTransport`).
    pub transport: SyncTransport,
}

/// How the Sync stream reaches Felix (`typhaSyncTransport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncTransport {
    /// The `Sync` gRPC call on Typha's client port (each address as given).
    #[default]
    Grpc,
    /// The lean transport (`manul_proto::frame`) on Typha's sync listener:
    /// each address's host with this port (`typhaSyncPort`).
    Tcp { port: u16 },
}

impl SyncTransport {
    /// `grpc`, or `tcp` on `port`; anything else is refused by name.
    pub fn parse(name: &str, port: u16) -> Result<SyncTransport, String> {
        match name.to_ascii_lowercase().as_str() {
            "grpc" => Ok(SyncTransport::Grpc),
            "tcp" => Ok(SyncTransport::Tcp { port }),
            other => Err(format!(
                "typhaSyncTransport: {other:?} is neither \"grpc\" nor \"tcp\""
            )),
        }
    }
}

/// The host of a Typha address (`HOST:PORT`, `[V6]:PORT`, with or without
/// a scheme).
pub fn address_host(addr: &str) -> Result<&str, String> {
    let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => rest,
    };
    if host.is_empty() {
        return Err(format!("{addr}: no host"));
    }
    Ok(host)
}

/// The messages of one stream, whichever transport carries it.
/// Why a stream was lost, and the server's hint to ask again after a
/// while, when it gave one (a replica that does not serve yet).
#[derive(Debug)]
struct Lost {
    error: String,
    retry_after: Option<Duration>,
}

impl From<String> for Lost {
    fn from(error: String) -> Lost {
        Lost {
            error,
            retry_after: None,
        }
    }
}

impl Lost {
    fn status(s: &tonic::Status) -> Lost {
        let retry_after = s
            .metadata()
            .get(RETRY_PUSHBACK)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        Lost {
            error: format!("{} ({:?})", s.message(), s.code()),
            retry_after,
        }
    }

    fn frame(e: &manul_proto::frame::FrameError) -> Lost {
        let mut error = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            error.push_str(": ");
            error.push_str(&s.to_string());
            source = s.source();
        }
        let retry_after = match e {
            manul_proto::frame::FrameError::Ended { retry_after_ms, .. } if *retry_after_ms > 0 => {
                Some(Duration::from_millis(u64::from(*retry_after_ms)))
            }
            _ => None,
        };
        Lost { error, retry_after }
    }
}

/// The gRPC trailer of a server's retry hint (gRPC's retry design, A6).
const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

enum Incoming {
    Grpc(tonic::Streaming<manul_proto::v1::SyncMessage>),
    Tcp(manul_proto::frame::LeanStream<manul_tls::connect::Stream>),
}

impl Incoming {
    async fn message(&mut self) -> Result<Option<manul_proto::v1::SyncMessage>, Lost> {
        match self {
            Incoming::Grpc(s) => s.message().await.map_err(|s| Lost::status(&s)),
            Incoming::Tcp(s) => s.message().await.map_err(|e| Lost::frame(&e)),
        }
    }
}

/// The kinds that configure Felix rather than policy.
fn is_config(kind: Kind) -> bool {
    matches!(kind, Kind::FelixConfiguration | Kind::Installation)
}

/// Turns one stream entry into an update.
pub fn update_of(e: &Entry) -> Result<Update, SyncError> {
    let key = wire::entry_key(e).map_err(SyncError::Entry)?;
    value_update(key, e)
}

/// [`update_of`] taking the entry: its key's namespace and name move into
/// the update instead of being copied.
pub fn update_from(mut e: Entry) -> Result<Update, SyncError> {
    let key = e
        .key
        .take()
        .ok_or(WireError::NoKey)
        .and_then(wire::key_from_proto_owned)
        .map_err(SyncError::Entry)?;
    value_update(key, &e)
}

fn value_update(key: ResourceKey, e: &Entry) -> Result<Update, SyncError> {
    if e.deleted {
        return Ok(Update { key, value: None });
    }
    // Typha streams each resource in its stored (JSON) form.
    let value = wire::decode_value(&key, &e.value).map_err(SyncError::Entry)?;
    Ok(Update {
        key,
        value: Some(value),
    })
}

/// deflate expands at most about 1032:1; a gzip trailer claiming more is
/// not believed when sizing the output.
const DEFLATE_MAX_RATIO: usize = 1032;

/// Decompresses one gzip member of at most `limit` bytes. The output is
/// allocated once, at the size the trailer gives (ISIZE: the input's
/// length mod 2^32), bounded by what the compressed length can expand to
/// and by `limit`: no regrowth and no copying while it fills.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let trailer = data
        .len()
        .checked_sub(4)
        .and_then(|at| data.get(at..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, u32::from_le_bytes);
    let hint = usize::try_from(trailer)
        .unwrap_or(usize::MAX)
        .min(data.len().saturating_mul(DEFLATE_MAX_RATIO))
        .min(limit);
    let mut out = Vec::with_capacity(hint);
    // `bufread` reads the slice in place (no intermediate buffer); one
    // byte past the limit tells a too-large message from one at it.
    let read = flate2::bufread::GzDecoder::new(data)
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if read > limit {
        return Err(format!("decompresses to more than {limit} bytes"));
    }
    Ok(out)
}

/// The entries of a snapshot chunk or delta batch (gzip when `gzip`).
/// Entry values are slices of the (decompressed) message, not copies.
pub fn decode(bytes: &Bytes, gzip: bool, what: &'static str) -> Result<Vec<Entry>, SyncError> {
    let corrupt = |e: String| SyncError::Corrupt { what, reason: e };
    let raw = if gzip {
        Bytes::from(gunzip(bytes, MAX_MESSAGE).map_err(corrupt)?)
    } else {
        bytes.clone()
    };
    EntryList::decode(raw)
        .map(|l| l.entries)
        .map_err(|e| corrupt(e.to_string()))
}

/// The updates of one snapshot chunk, recording their keys in `seen` (so
/// that keys missing from the whole snapshot can be deleted at in-sync).
/// An entry that does not decode is skipped with a warning; a chunk that
/// does not decode is an error.
pub fn snapshot_updates(
    chunk: &Bytes,
    gzip: bool,
    mut seen: Option<&mut FxHashSet<ResourceKey>>,
) -> Result<Vec<Update>, SyncError> {
    let entries = decode(chunk, gzip, "snapshot chunk")?;
    let mut batch = Vec::with_capacity(entries.len());
    for e in entries {
        match update_from(e) {
            Ok(u) => {
                if let Some(seen) = seen.as_deref_mut() {
                    seen.insert(u.key.clone());
                }
                batch.push(u);
            }
            Err(err) => warn!("skipping a snapshot entry: {err}"),
        }
    }
    Ok(batch)
}

/// Follows Typha until `events` is closed.
#[derive(Debug)]
pub struct Syncer {
    config: SyncConfig,
    revision: u64,
    known: FxHashSet<ResourceKey>,
    felix_config: Option<mpsc::UnboundedSender<Update>>,
    connections: Option<mpsc::UnboundedSender<Connected>>,
    transport: manul_tls::connect::Transport,
}

impl Syncer {
    pub fn new(config: SyncConfig) -> Syncer {
        Syncer {
            config,
            revision: 0,
            known: FxHashSet::default(),
            felix_config: None,
            connections: None,
            transport: manul_tls::connect::Transport::Plain,
        }
    }

    /// Connects over TLS (or plaintext) as `transport` says
    /// ([`crate::typha_tls`]).
    pub fn with_transport(mut self, transport: manul_tls::connect::Transport) -> Syncer {
        self.transport = transport;
        self
    }

    /// Sends FelixConfiguration and Installation updates to `tx` instead of
    /// the agent.
    pub fn with_config_updates(mut self, tx: mpsc::UnboundedSender<Update>) -> Syncer {
        self.felix_config = Some(tx);
        self
    }

    /// Reports every accepted connection's hello to `tx`.
    pub fn with_connections(mut self, tx: mpsc::UnboundedSender<Connected>) -> Syncer {
        self.connections = Some(tx);
        self
    }

    /// After a snapshot: tells the configuration channel that this node's
    /// FelixConfigurations (and the Installation) the snapshot did not hold
    /// are absent, even if
    /// this client never saw them (Felix read them separately at start).
    fn confirm_config_absent(&self, seen: &FxHashSet<ResourceKey>) {
        let Some(tx) = &self.felix_config else {
            return;
        };
        for (kind, name) in [
            (Kind::FelixConfiguration, "default".to_string()),
            (
                Kind::FelixConfiguration,
                format!("node.{}", self.config.node),
            ),
            (Kind::Installation, "default".to_string()),
        ] {
            let key = ResourceKey {
                kind,
                namespace: None,
                name,
            };
            if !seen.contains(&key) && !self.known.contains(&key) {
                let _ = tx.send(Update { key, value: None });
            }
        }
    }

    /// Takes the FelixConfiguration and Installation updates out of `batch`
    /// and sends them on their channel, if there is one.
    fn divert(&self, batch: &mut Vec<Update>) {
        let Some(tx) = &self.felix_config else {
            return;
        };
        if !batch.iter().any(|u| is_config(u.key.kind)) {
            return;
        }
        batch.retain(|u| {
            if !is_config(u.key.kind) {
                return true;
            }
            // A closed channel means Felix is stopping; nothing to do.
            let _ = tx.send(u.clone());
            false
        });
    }

    /// Runs forever (until the receiver is dropped).
    pub async fn run(mut self, events: mpsc::Sender<SyncEvent>) {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        let mut next = 0usize;
        loop {
            if events.is_closed() || self.config.typhas.is_empty() {
                return;
            }
            let addr = self.config.typhas[next % self.config.typhas.len()].clone();
            next += 1;
            let span = tracing::info_span!("typha", %addr, node = %self.config.node);
            let result = self
                .follow(&addr, &events, &mut backoff)
                .instrument(span)
                .await;
            let (error, hint) = match result {
                Ok(()) => ("the stream ended".to_string(), None),
                Err(lost) => (lost.error, lost.retry_after),
            };
            let wait = backoff.after_failure(hint);
            warn!(%addr, revision = self.revision, "sync stream lost: {error}; reconnecting in {wait:?}");
            if events
                .send(SyncEvent::Disconnected { error })
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn follow(
        &mut self,
        addr: &str,
        events: &mpsc::Sender<SyncEvent>,
        backoff: &mut Backoff,
    ) -> Result<(), Lost> {
        let request = SyncRequest {
            node_name: self.config.node.clone(),
            client_version: manul_proto::PROTOCOL_VERSION.into(),
            resume_revision: self.revision,
            accepted_compression: vec!["gzip".into()],
        };
        let mut stream = match self.config.transport {
            SyncTransport::Grpc => Incoming::Grpc(self.open_grpc(addr, request).await?),
            SyncTransport::Tcp { port } => Incoming::Tcp(self.open_tcp(addr, port, request).await?),
        };
        let mut gzip = false;
        let mut snapshot: Option<FxHashSet<ResourceKey>> = None;
        let mut snapshot_revision = 0;
        let send = |updates: Vec<Update>, revision: u64| async move {
            if updates.is_empty() {
                return Ok(());
            }
            events
                .send(SyncEvent::Updates { updates, revision })
                .await
                .map_err(|_| "agent stopped".to_string())
        };
        while let Some(msg) = stream.message().await? {
            match msg.message {
                Some(Message::Hello(h)) => {
                    gzip = h.compression == "gzip";
                    info!(
                        replica = h.replica_id,
                        revision = h.revision,
                        snapshot = h.snapshot_follows,
                        "connected"
                    );
                    if let Some(tx) = &self.connections {
                        // A closed channel: nobody follows connections any more.
                        let _ = tx.send(Connected {
                            address: addr.to_string(),
                            replica: h.replica_id,
                            resume_from: self.revision,
                            revision: h.revision,
                            snapshot: h.snapshot_follows,
                        });
                    }
                    if h.snapshot_follows {
                        snapshot = Some(FxHashSet::default());
                        snapshot_revision = h.revision;
                    }
                }
                Some(Message::Snapshot(chunk)) => {
                    let mut batch = snapshot_updates(&chunk.entries, gzip, snapshot.as_mut())
                        .map_err(|e| e.to_string())?;
                    self.divert(&mut batch);
                    send(batch, snapshot_revision).await?;
                }
                Some(Message::InSync(s)) => {
                    if let Some(seen) = snapshot.take() {
                        // Keys that vanished while we were away, in key
                        // order.
                        let mut gone: Vec<Update> = self
                            .known
                            .difference(&seen)
                            .map(|k| Update {
                                key: k.clone(),
                                value: None,
                            })
                            .collect();
                        gone.sort_by(|a, b| a.key.cmp(&b.key));
                        self.confirm_config_absent(&seen);
                        self.known = seen;
                        self.divert(&mut gone);
                        send(gone, s.revision).await?;
                    }
                    self.revision = s.revision;
                    backoff.in_sync();
                    events
                        .send(SyncEvent::InSync {
                            revision: s.revision,
                        })
                        .await
                        .map_err(|_| "agent stopped".to_string())?;
                }
                Some(Message::Deltas(d)) => {
                    let mut batch = Vec::new();
                    for e in decode(&d.entries, gzip, "delta batch").map_err(|e| e.to_string())? {
                        if e.revision <= self.revision {
                            continue;
                        }
                        match update_from(e) {
                            Ok(u) => {
                                if u.value.is_some() {
                                    self.known.insert(u.key.clone());
                                } else {
                                    self.known.remove(&u.key);
                                }
                                batch.push(u);
                            }
                            Err(err) => warn!("skipping a delta: {err}"),
                        }
                    }
                    self.divert(&mut batch);
                    // A batch that changes nothing (Raft entries that touch
                    // no resource) still moves the revision on: the agent
                    // reports the revision Typha's stream is at.
                    events
                        .send(SyncEvent::Updates {
                            updates: batch,
                            revision: d.last_revision,
                        })
                        .await
                        .map_err(|_| "agent stopped".to_string())?;
                    self.revision = self.revision.max(d.last_revision);
                }
                Some(Message::Ping(_) | Message::End(_)) | None => {}
            }
        }
        Ok(())
    }

    async fn open_grpc(
        &self,
        addr: &str,
        request: SyncRequest,
    ) -> Result<tonic::Streaming<manul_proto::v1::SyncMessage>, Lost> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = self
            .transport
            .connect(endpoint)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut client = SyncClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        Ok(client
            .sync(request)
            .await
            .map_err(|s| Lost::status(&s))?
            .into_inner())
    }

    async fn open_tcp(
        &self,
        addr: &str,
        port: u16,
        request: SyncRequest,
    ) -> Result<manul_proto::frame::LeanStream<manul_tls::connect::Stream>, Lost> {
        let host = address_host(addr)?;
        let connect = self
            .transport
            .connect_stream(host, port, manul_proto::frame::ALPN);
        let io = tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .map_err(|_| format!("cannot connect to {host}:{port}: timed out"))?
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        manul_proto::frame::open(io, &request, MAX_MESSAGE)
            .await
            .map_err(|e| Lost::from(format!("cannot send the hello to {host}:{port}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use manul_model::Resource;

    use super::*;

    fn update(kind: Kind, name: &str, value: Option<Resource>) -> Update {
        Update {
            key: ResourceKey {
                kind,
                namespace: None,
                name: name.into(),
            },
            value,
        }
    }

    fn gzipped(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_sizes_its_output_from_the_trailer_and_keeps_to_the_limit() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let z = gzipped(&data);
        let out = gunzip(&z, MAX_MESSAGE).unwrap();
        assert_eq!(out, data);
        assert_eq!(
            out.capacity(),
            data.len(),
            "one allocation of the trailer's size"
        );
        assert_eq!(gunzip(&z, data.len()).unwrap(), data);
        let err = gunzip(&z, data.len() - 1).unwrap_err();
        assert!(err.contains("more than"), "{err}");

        // A trailer that lies only sizes the buffer: a small claim grows
        // it, a huge one is capped by what the input can expand to, and
        // the checksum still refuses the member.
        for claim in [1u32, u32::MAX] {
            let mut lying = z.clone();
            let at = lying.len() - 4;
            lying[at..].copy_from_slice(&claim.to_le_bytes());
            let err = gunzip(&lying, MAX_MESSAGE).unwrap_err();
            assert!(!err.is_empty());
        }
        assert!(gunzip(b"not gzip", MAX_MESSAGE).is_err());
    }

    #[test]
    fn a_chunk_decodes_to_updates_with_keys_moved_and_bad_entries_skipped() {
        let set = |name: &str| {
            format!(
                r#"{{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {{"name": "{name}"}}, "spec": {{"nets": ["10.0.0.0/8"]}}}}"#
            )
        };
        let entry = |name: &str, value: String, deleted: bool| Entry {
            key: Some(manul_proto::v1::ResourceKey {
                kind: "globalnetworkset".into(),
                namespace: String::new(),
                name: name.into(),
            }),
            value: value.into_bytes().into(),
            revision: 1,
            deleted,
        };
        let list = EntryList {
            entries: vec![
                entry("a", set("a"), false),
                entry("b", set("not-b"), false),
                entry("c", String::new(), true),
            ],
        };
        let plain = Bytes::from(list.encode_to_vec());
        let zipped = Bytes::from(gzipped(&plain));
        for (bytes, gzip) in [(&plain, false), (&zipped, true)] {
            let mut seen = FxHashSet::default();
            let batch = snapshot_updates(bytes, gzip, Some(&mut seen)).unwrap();
            let got: Vec<(String, bool)> = batch
                .iter()
                .map(|u| (u.key.to_string(), u.value.is_some()))
                .collect();
            assert_eq!(
                got,
                [
                    ("globalnetworkset/a".to_string(), true),
                    ("globalnetworkset/c".to_string(), false)
                ]
            );
            assert_eq!(seen.len(), 2);
            // The owned and borrowed conversions agree.
            for e in &list.entries[..1] {
                assert_eq!(
                    update_of(e).unwrap().key,
                    update_from(e.clone()).unwrap().key
                );
            }
        }
        let err = snapshot_updates(&Bytes::from_static(b"\x1f\x8bjunk"), true, None).unwrap_err();
        assert!(
            err.to_string().starts_with("corrupt snapshot chunk"),
            "{err}"
        );
    }

    #[test]
    fn transports_and_hosts_parse_and_bad_ones_are_named() {
        assert_eq!(
            SyncTransport::parse("TCP", 5475),
            Ok(SyncTransport::Tcp { port: 5475 })
        );
        assert_eq!(SyncTransport::parse("grpc", 5475), Ok(SyncTransport::Grpc));
        let err = SyncTransport::parse("quic", 5475).unwrap_err();
        assert!(
            err.contains("typhaSyncTransport") && err.contains("quic"),
            "{err}"
        );
        assert_eq!(address_host("10.0.0.1:5473"), Ok("10.0.0.1"));
        assert_eq!(address_host("http://typha.svc:5473"), Ok("typha.svc"));
        assert_eq!(address_host("[fd00::1]:5473"), Ok("[fd00::1]"));
        assert_eq!(address_host("typha"), Ok("typha"));
        assert!(address_host("http://:5473").is_err());
    }

    #[test]
    fn felix_configuration_goes_to_its_own_channel_not_the_graph() {
        let config = SyncConfig {
            typhas: vec![],
            node: "node1".into(),
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            transport: SyncTransport::Grpc,
        };
        let fc = manul_model::load(
            "test",
            b"apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {interfacePrefix: cali}\n",
        )
        .into_result()
        .unwrap()
        .remove(0)
        .resource;
        let mut batch = vec![
            update(Kind::Tier, "a", None),
            update(Kind::FelixConfiguration, "default", Some(fc)),
            update(Kind::Tier, "b", None),
            update(Kind::FelixConfiguration, "node.node1", None),
            update(Kind::Installation, "default", None),
        ];
        // Without a channel, everything goes on (the graph ignores it).
        Syncer::new(config.clone()).divert(&mut batch);
        assert_eq!(batch.len(), 5);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let syncer = Syncer::new(config).with_config_updates(tx);
        syncer.divert(&mut batch);
        let names: Vec<&str> = batch.iter().map(|u| u.key.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let routed: Vec<(String, bool)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|u| (u.key.name, u.value.is_some()))
            .collect();
        assert_eq!(
            routed,
            [
                ("default".to_string(), true),
                ("node.node1".to_string(), false),
                ("default".to_string(), false)
            ]
        );

        // A snapshot without this node's resources confirms them absent
        // (those the client knew are deleted the ordinary way).
        let mut seen = FxHashSet::default();
        seen.insert(update(Kind::FelixConfiguration, "default", None).key);
        syncer.confirm_config_absent(&seen);
        let absent_keys: Vec<(Kind, Update)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|u| (u.key.kind, u))
            .collect();
        let absent: Vec<(String, bool)> = absent_keys
            .iter()
            .map(|(_, u)| (u.key.name.clone(), u.value.is_some()))
            .collect();
        let absent_kinds: Vec<Kind> = absent_keys.iter().map(|(k, _)| *k).collect();
        assert_eq!(absent_kinds, [Kind::FelixConfiguration, Kind::Installation]);
        assert_eq!(
            absent,
            [
                ("node.node1".to_string(), false),
                ("default".to_string(), false)
            ]
        );
    }
}
