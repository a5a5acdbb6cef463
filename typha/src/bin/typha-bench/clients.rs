//! Clients: one connection per simulated Felix (HTTP/2 for gRPC, or a
//! plain or TLS TCP connection for the lean transport), the Sync stream
//! reader, and the resource documents the benchmarks write.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::sync_client::SyncClient;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{ApplyItem, ApplyRequest, EntryList, StatusRequest, SyncRequest};
use manul_typha::peer_auth::{AttachToken, PeerToken};
use prost::Message as _;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// Largest message a client accepts.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// How every client of this process connects (set once, by `--tls`).
static TRANSPORT: std::sync::OnceLock<manul_tls::connect::Transport> = std::sync::OnceLock::new();

/// Connect over `t` from now on (the first call wins).
pub fn use_transport(t: manul_tls::connect::Transport) {
    let _ = TRANSPORT.set(t);
}

/// A new HTTP/2 connection (its own `Channel`), retried a few times: a
/// burst of connects can overflow the server's accept backlog.
pub async fn channel(addr: SocketAddr) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let transport = TRANSPORT.get().cloned().unwrap_or_default();
    let mut attempt = 0;
    loop {
        match transport.connect(endpoint.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt >= 5 => {
                return Err(e).with_context(|| format!("cannot connect to {addr}"));
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
}

/// `n` connections, at most `concurrency` being set up at once.
pub async fn channels(addr: SocketAddr, n: usize, concurrency: usize) -> Result<Vec<Channel>> {
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let done = &done;
    futures::stream::iter(0..n)
        .map(|_| async move {
            let c = channel(addr).await;
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if d.is_multiple_of(1000) || d == n {
                eprintln!(
                    "  connected {d}/{n} in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            c
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Which transport the Sync clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncTransport {
    Grpc,
    Tcp,
}

impl SyncTransport {
    pub fn name(self) -> &'static str {
        match self {
            SyncTransport::Grpc => "grpc",
            SyncTransport::Tcp => "tcp",
        }
    }
}

/// One simulated Felix's connection.
#[derive(Debug)]
pub enum Conn {
    Grpc(Channel),
    Tcp(manul_tls::connect::Stream),
}

/// A lean-transport connection to `addr`, retried a few times.
pub async fn stream(addr: SocketAddr) -> Result<manul_tls::connect::Stream> {
    let transport = TRANSPORT.get().cloned().unwrap_or_default();
    let host = addr.ip().to_string();
    let mut attempt = 0;
    loop {
        let connect = transport.connect_stream(&host, addr.port(), manul_proto::frame::ALPN);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) if attempt >= 5 => {
                return Err(e).with_context(|| format!("cannot connect to {addr}"));
            }
            Err(_) if attempt >= 5 => bail!("cannot connect to {addr}: timed out"),
            _ => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
}

/// `n` connections of `transport`, at most `concurrency` being set up at
/// once.
pub async fn conns(
    transport: SyncTransport,
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Conn>> {
    if transport == SyncTransport::Grpc {
        return Ok(channels(addr, n, concurrency)
            .await?
            .into_iter()
            .map(Conn::Grpc)
            .collect());
    }
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let done = &done;
    futures::stream::iter(0..n)
        .map(|_| async move {
            let c = stream(addr).await.map(Conn::Tcp);
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if d.is_multiple_of(1000) || d == n {
                eprintln!(
                    "  connected {d}/{n} in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            c
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// A Sync stream on either transport.
enum Incoming {
    Grpc(tonic::Streaming<manul_proto::v1::SyncMessage>),
    Tcp(manul_proto::frame::LeanStream<manul_tls::connect::Stream>),
}

impl Incoming {
    async fn open(conn: Conn, request: SyncRequest) -> Result<Incoming, String> {
        match conn {
            Conn::Grpc(channel) => {
                let mut client = SyncClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
                client
                    .sync(request)
                    .await
                    .map(|r| Incoming::Grpc(r.into_inner()))
                    .map_err(|s| format!("{} ({:?})", s.message(), s.code()))
            }
            Conn::Tcp(io) => manul_proto::frame::open(io, &request, MAX_MESSAGE)
                .await
                .map(Incoming::Tcp)
                .map_err(|e| e.to_string()),
        }
    }

    async fn message(&mut self) -> Result<Option<manul_proto::v1::SyncMessage>, String> {
        match self {
            Incoming::Grpc(s) => s
                .message()
                .await
                .map_err(|s| format!("{} ({:?})", s.message(), s.code())),
            Incoming::Tcp(s) => s.message().await.map_err(|e| e.to_string()),
        }
    }
}

pub fn resources(channel: Channel) -> ResourcesClient<Channel> {
    ResourcesClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn apply_request(docs: impl IntoIterator<Item = String>) -> ApplyRequest {
    ApplyRequest {
        items: docs
            .into_iter()
            .map(|d| ApplyItem {
                document: d.into_bytes().into(),
                origin: "typha-bench".into(),
                expected_revision: None,
            })
            .collect(),
        deletes: Vec::new(),
        origin: None,
    }
}

/// A GlobalNetworkSet with three labels and `nets` networks (1 to 3).
pub fn network_set(name: &str, i: usize, nets: usize) -> String {
    let (a, b) = ((i >> 8) & 0xff, i & 0xff);
    let all = [
        format!("10.{a}.{b}.0/24"),
        format!("172.16.{b}.{}/32", a % 256),
        format!("\"fd00::{a:x}:{b:x}00/120\""),
    ];
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: {name}\n  labels:\n    bench: \"true\"\n    group: g-{}\n    zone: z-{}\nspec:\n  nets: [{}]\n",
        i % 100,
        i % 7,
        all[..nets.clamp(1, 3)].join(", ")
    )
}

/// A namespaced NetworkPolicy with one ingress rule.
pub fn network_policy(name: &str, i: usize) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: ns-{}\nspec:\n  selector: app == \"web-{}\"\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      selector: role == \"frontend\" && group == \"g-{}\"\n    destination:\n      ports: [80, 443, {}]\n",
        i % 50,
        i % 1000,
        i % 100,
        8000 + i % 1000
    )
}

/// The leader's id, as seen by the replica whose peer listener is at
/// `addr`; waits for one.
pub async fn leader(addr: SocketAddr, token: &PeerToken) -> Result<u64> {
    let mut client =
        ClusterClient::with_interceptor(channel(addr).await?, AttachToken(token.clone()));
    let started = Instant::now();
    loop {
        let status = client.status(StatusRequest {}).await?.into_inner();
        let id = status.replicas.first().map_or(0, |r| r.leader_id);
        if id != 0 {
            return Ok(id);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("no leader after 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counters shared by every client task.
#[derive(Debug, Default)]
pub struct Progress {
    pub in_sync: AtomicUsize,
    /// Non-empty delta batches received, over all clients.
    pub deltas: AtomicUsize,
    pub failed: AtomicUsize,
    pub errors: Mutex<Vec<String>>,
}

impl Progress {
    fn fail(&self, idx: usize, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.errors.lock()
            && e.len() < 5
        {
            e.push(format!("client {idx}: {what}"));
        }
    }

    pub fn check(&self) -> Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let errors = self.errors.lock().map(|e| e.join("; ")).unwrap_or_default();
            bail!("{failed} client stream(s) failed: {errors}");
        }
        Ok(())
    }

    /// Waits until `get()` reaches `target`, failing on a client error or
    /// after `limit`; prints progress every few seconds when `label` is set.
    pub async fn wait(
        &self,
        get: impl Fn(&Progress) -> usize,
        target: usize,
        limit: Duration,
        label: Option<&str>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            self.check()?;
            let now = get(self);
            if now >= target {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!("only {now}/{target} after {limit:?}");
            }
            if let Some(label) = label
                && last_report.elapsed() > Duration::from_secs(2)
            {
                eprintln!(
                    "  {label}: {now}/{target} after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// What one client task saw.
#[derive(Debug, Default)]
pub struct ClientResult {
    pub in_sync_at: Option<Instant>,
    pub snapshot_chunks: u32,
    pub snapshot_bytes: u64,
    /// Entries in the snapshot, when the client was asked to decode it.
    pub snapshot_entries: Option<u64>,
    /// (revision, receive time) of non-empty delta batches, at most the
    /// capacity asked for.
    pub deltas: Vec<(u64, Instant)>,
}

/// How a client task behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// "identity" or "gzip".
    pub compression: String,
    /// Delta receive times to keep.
    pub delta_capacity: usize,
    /// Decode (and decompress) snapshot chunks to count entries.
    pub decode_snapshot: bool,
}

fn count_entries(bytes: &[u8], gzip: bool) -> Result<u64> {
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        out
    } else {
        bytes.to_vec()
    };
    Ok(EntryList::decode(raw.as_slice())?.entries.len() as u64)
}

/// One simulated Felix: opens a Sync stream on its own connection and
/// reads it until `stop` changes, recording when it got in sync and when
/// each delta arrived.
pub async fn run_client(
    idx: usize,
    conn: Conn,
    opts: ClientOptions,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> ClientResult {
    let mut out = ClientResult {
        deltas: Vec::with_capacity(opts.delta_capacity),
        ..ClientResult::default()
    };
    let request = SyncRequest {
        node_name: format!("bench-node-{idx}"),
        client_version: manul_proto::PROTOCOL_VERSION.into(),
        resume_revision: 0,
        accepted_compression: vec![opts.compression.clone()],
    };
    let mut stream = tokio::select! {
        _ = stop.changed() => return out,
        r = Incoming::open(conn, request) => match r {
            Ok(r) => r,
            Err(e) => {
                progress.fail(idx, e);
                return out;
            }
        },
    };
    let mut gzip = false;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = stream.message() => m,
        };
        match msg {
            Ok(Some(m)) => match m.message {
                Some(Message::Hello(h)) => gzip = h.compression == "gzip",
                Some(Message::Snapshot(c)) => {
                    out.snapshot_chunks += 1;
                    out.snapshot_bytes += c.entries.len() as u64;
                    if opts.decode_snapshot {
                        match count_entries(&c.entries, gzip) {
                            Ok(n) => *out.snapshot_entries.get_or_insert(0) += n,
                            Err(e) => {
                                progress.fail(idx, format!("bad snapshot chunk: {e}"));
                                break;
                            }
                        }
                    }
                }
                Some(Message::InSync(_)) => {
                    out.in_sync_at = Some(Instant::now());
                    progress.in_sync.fetch_add(1, Ordering::Relaxed);
                }
                Some(Message::Deltas(b)) if !b.entries.is_empty() => {
                    if out.deltas.len() < opts.delta_capacity {
                        out.deltas.push((b.last_revision, Instant::now()));
                    }
                    progress.deltas.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            },
            Ok(None) => {
                progress.fail(idx, "the server ended the stream".into());
                break;
            }
            Err(e) => {
                progress.fail(idx, e);
                break;
            }
        }
    }
    out
}
