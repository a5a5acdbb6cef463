//! Fan-out tests: the history and snapshot cores directly, then the whole
//! service over real gRPC on loopback sockets.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use manul_proto::v1::sync_client::SyncClient;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{
    DeltaBatch, Entry, EntryList, ResourceKey, ServerHello, SyncMessage, SyncRequest,
};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status, Streaming};

use super::history::{EncodedEntries, History, Next, Published};
use super::metrics::DropReason;
use super::service::validate;
use super::snapshot::{EncodedSnapshot, SnapshotCache};
use super::{Compression, Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};

const WAIT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------ helpers

fn key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: "networkpolicy".to_owned(),
        namespace: "default".to_owned(),
        name: name.to_owned(),
    }
}

fn entry(name: &str, value: &str, revision: u64) -> Entry {
    Entry {
        key: Some(key(name)),
        value: Bytes::from(value.to_owned()),
        revision,
        deleted: false,
    }
}

fn decode(bytes: &Bytes, gzip: bool) -> Vec<Entry> {
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_ref())
            .read_to_end(&mut out)
            .expect("gunzip");
        Bytes::from(out)
    } else {
        bytes.clone()
    };
    EntryList::decode(raw).expect("EntryList").entries
}

/// The state machine stand-in: a map the test mutates, then publishes.
#[derive(Default)]
struct TestSource {
    state: Mutex<(u64, BTreeMap<String, Entry>)>,
    taken: AtomicUsize,
}

impl SnapshotSource for TestSource {
    fn snapshot(&self) -> (u64, Vec<Entry>) {
        self.taken.fetch_add(1, Ordering::SeqCst);
        let state = self.state.lock().unwrap();
        (state.0, state.1.values().cloned().collect())
    }
}

struct Harness {
    fanout: Arc<Fanout>,
    source: Arc<TestSource>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    async fn start(config: FanoutConfig) -> Harness {
        let source = Arc::new(TestSource::default());
        let fanout = Fanout::new(config, source.clone(), FanoutMetrics::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = fanout.service();
        let server = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Harness {
            fanout,
            source,
            addr,
            server,
        }
    }

    /// Applies one revision (puts and deletes) to the source, then
    /// publishes its changes, as the apply loop would.
    fn apply(&self, changes: &[(&str, Option<&str>)]) -> u64 {
        let (revision, entries) = {
            let mut state = self.source.state.lock().unwrap();
            state.0 += 1;
            let revision = state.0;
            let mut entries = Vec::new();
            for (name, value) in changes {
                match value {
                    Some(value) => {
                        let entry = entry(name, value, revision);
                        state.1.insert((*name).to_owned(), entry.clone());
                        entries.push(entry);
                    }
                    None => {
                        if state.1.remove(*name).is_some() {
                            entries.push(Entry {
                                key: Some(key(name)),
                                value: Bytes::new(),
                                revision,
                                deleted: true,
                            });
                        }
                    }
                }
            }
            (revision, entries)
        };
        self.fanout.publish(revision, entries);
        revision
    }

    fn put(&self, name: &str, value: &str) -> u64 {
        self.apply(&[(name, Some(value))])
    }

    fn state(&self) -> BTreeMap<String, Entry> {
        self.source.state.lock().unwrap().1.clone()
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    async fn open(&self, request: SyncRequest) -> Result<Streaming<SyncMessage>, Status> {
        let mut client = SyncClient::new(self.channel().await);
        client.sync(request).await.map(tonic::Response::into_inner)
    }

    async fn reader(&self, node: &str, resume: u64) -> Reader {
        Reader::new(self.open(request(node, resume)).await.unwrap())
    }

    fn metrics(&self) -> &FanoutMetrics {
        self.fanout.metrics()
    }
}

fn config() -> FanoutConfig {
    FanoutConfig {
        replica_id: 7,
        ping_interval: Duration::from_secs(60),
        ..FanoutConfig::default()
    }
}

fn request(node: &str, resume: u64) -> SyncRequest {
    SyncRequest {
        node_name: node.to_owned(),
        client_version: "test".to_owned(),
        resume_revision: resume,
        accepted_compression: Vec::new(),
    }
}

/// What a client made of its stream so far.
struct Reader {
    stream: Streaming<SyncMessage>,
    gzip: bool,
    hello: Option<ServerHello>,
    /// The last snapshot received (its entries).
    snapshot: Option<Vec<Entry>>,
    state: BTreeMap<String, Entry>,
    revision: u64,
    pings: Vec<(u64, u64)>,
}

impl Reader {
    fn new(stream: Streaming<SyncMessage>) -> Reader {
        Reader {
            stream,
            gzip: false,
            hello: None,
            snapshot: None,
            state: BTreeMap::new(),
            revision: 0,
            pings: Vec::new(),
        }
    }

    /// The next message; `None` when the stream ended cleanly.
    async fn raw(&mut self) -> Result<Option<Message>, Status> {
        let next = timeout(WAIT, self.stream.message())
            .await
            .expect("timed out waiting for a message")?;
        Ok(next.map(|message| message.message.expect("empty SyncMessage")))
    }

    /// The next message that is not a ping (pings are recorded).
    async fn next(&mut self) -> Result<Message, Status> {
        loop {
            match self.raw().await?.expect("stream ended") {
                Message::Ping(ping) => self.pings.push((ping.unix_millis, ping.revision)),
                message => return Ok(message),
            }
        }
    }

    /// Hello, snapshot (if any) and in-sync; returns the hello.
    async fn sync(&mut self) -> ServerHello {
        let Message::Hello(hello) = self.next().await.unwrap() else {
            panic!("expected a hello first");
        };
        self.gzip = hello.compression == "gzip";
        if hello.snapshot_follows {
            let mut entries = Vec::new();
            let mut expected = 0;
            loop {
                match self.next().await.unwrap() {
                    Message::Snapshot(chunk) => {
                        assert_eq!(chunk.revision, hello.revision);
                        assert_eq!(chunk.index, expected, "chunks in order");
                        assert!(chunk.index < chunk.count);
                        expected += 1;
                        entries.extend(decode(&chunk.entries, self.gzip));
                        if chunk.index + 1 == chunk.count {
                            break;
                        }
                    }
                    other => panic!("expected a snapshot chunk, got {other:?}"),
                }
            }
            self.state = entries
                .iter()
                .map(|e| (e.key.as_ref().unwrap().name.clone(), e.clone()))
                .collect();
            self.snapshot = Some(entries);
        } else {
            self.snapshot = None;
        }
        let Message::InSync(in_sync) = self.next().await.unwrap() else {
            panic!("expected in-sync after the snapshot");
        };
        assert_eq!(in_sync.revision, hello.revision);
        self.revision = hello.revision;
        self.hello = Some(hello.clone());
        hello
    }

    /// One delta batch, checked contiguous and applied; returns it with its
    /// decoded entries.
    async fn delta(&mut self) -> Result<(DeltaBatch, Vec<Entry>), Status> {
        match self.next().await? {
            Message::Deltas(batch) => {
                assert_eq!(
                    batch.first_revision,
                    self.revision + 1,
                    "delta batches are contiguous"
                );
                assert!(batch.last_revision >= batch.first_revision);
                let entries = decode(&batch.entries, self.gzip);
                for entry in &entries {
                    assert!(entry.revision > self.revision, "no entry sent twice");
                    assert!(entry.revision <= batch.last_revision);
                    let name = entry.key.as_ref().unwrap().name.clone();
                    if entry.deleted {
                        self.state.remove(&name);
                    } else {
                        self.state.insert(name, entry.clone());
                    }
                }
                self.revision = batch.last_revision;
                Ok((batch, entries))
            }
            other => panic!("expected deltas, got {other:?}"),
        }
    }

    /// Reads deltas until `revision`; returns the batches' last revisions.
    async fn until(&mut self, revision: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while self.revision < revision {
            let (batch, _) = self.delta().await.unwrap();
            seen.push(batch.last_revision);
        }
        seen
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------------------------ history core

fn encoded(entries: Vec<Entry>) -> EncodedEntries {
    EncodedEntries::encode(entries)
}

#[test]
fn history_trims_by_count_and_serves_contiguous_crumbs() {
    let mut history = History::new(3, usize::MAX);
    history.reset(10);
    for revision in 11..=15 {
        assert_eq!(
            history.publish(revision, encoded(vec![entry("a", "v", revision)])),
            Published::Appended
        );
    }
    assert_eq!(history.len(), 3);
    assert_eq!(history.current(), 15);
    assert_eq!(history.oldest(), 12);
    assert!(history.can_resume(12) && history.can_resume(15));
    assert!(!history.can_resume(11) && !history.can_resume(16));
    let Next::Crumb(crumb) = history.next_after(12) else {
        panic!("expected a crumb")
    };
    assert_eq!((crumb.first, crumb.last), (13, 13));
    assert!(matches!(history.next_after(15), Next::UpToDate));
    assert!(matches!(
        history.next_after(11),
        Next::Gone {
            oldest: 12,
            by_reset: false
        }
    ));
}

#[test]
fn history_trims_by_bytes_but_keeps_the_newest_crumb() {
    let big = "x".repeat(1000);
    let mut history = History::new(100, 2500);
    history.reset(0);
    for revision in 1..=5 {
        history.publish(revision, encoded(vec![entry("a", &big, revision)]));
    }
    assert_eq!(history.len(), 2, "two ~1 KB crumbs fit in 2500 bytes");
    assert!(history.bytes() <= 2500);
    assert_eq!(history.oldest(), 3);

    let mut tiny = History::new(100, 10);
    tiny.reset(0);
    tiny.publish(1, encoded(vec![entry("a", &big, 1)]));
    tiny.publish(2, encoded(vec![entry("a", &big, 2)]));
    assert_eq!(tiny.len(), 1, "the newest crumb stays whatever its size");
    assert!(matches!(tiny.next_after(1), Next::Crumb(_)));
}

#[test]
fn history_gaps_first_publish_out_of_order_and_reset() {
    let mut history = History::new(10, usize::MAX);
    // A history never reset starts at its first publish.
    history.publish(42, encoded(vec![entry("a", "v", 42)]));
    assert_eq!((history.oldest(), history.current()), (41, 42));
    // A gap (indexes without changes) is covered by the next crumb.
    history.publish(45, encoded(Vec::new()));
    let Next::Crumb(crumb) = history.next_after(42) else {
        panic!("expected a crumb")
    };
    assert_eq!((crumb.first, crumb.last, crumb.entries), (43, 45, 0));
    assert_eq!(
        history.publish(45, encoded(Vec::new())),
        Published::Unchanged
    );
    assert_eq!(
        history.publish(44, encoded(vec![entry("b", "v", 44)])),
        Published::OutOfOrder
    );
    assert_eq!(history.current(), 45);
    history.reset(100);
    assert_eq!(
        (history.oldest(), history.current(), history.bytes()),
        (100, 100, 0)
    );
    assert!(matches!(
        history.next_after(45),
        Next::Gone {
            oldest: 100,
            by_reset: true
        }
    ));
}

#[test]
fn crumb_payloads_gzip_and_partial_ranges() {
    let mut history = History::new(10, usize::MAX);
    history.reset(10);
    history.publish(
        12,
        encoded(vec![entry("a", "one", 11), entry("b", "two", 12)]),
    );
    let Next::Crumb(crumb) = history.next_after(10) else {
        panic!("expected a crumb")
    };
    let identity = crumb.payload(Compression::Identity).unwrap();
    let gzip = crumb.payload(Compression::Gzip).unwrap();
    assert_eq!(decode(&identity, false), decode(&gzip, true));
    assert_eq!(decode(&identity, false).len(), 2);
    // Shared: the gzip form is made once.
    assert_eq!(
        gzip.as_ptr(),
        crumb.payload(Compression::Gzip).unwrap().as_ptr()
    );
    // A snapshot taken at 11 needs only the entries after it.
    let after = crumb.payload_after(11, Compression::Identity).unwrap();
    let names: Vec<_> = decode(&after, false)
        .into_iter()
        .map(|e| e.key.unwrap().name)
        .collect();
    assert_eq!(names, ["b"]);
}

#[test]
fn snapshots_chunk_and_the_cache_reuses_while_current() {
    let entries: Vec<_> = (0..5).map(|i| entry(&format!("p{i}"), "v", 3)).collect();
    let snapshot = EncodedSnapshot::encode(3, entries.clone(), 2);
    assert_eq!(snapshot.chunks.len(), 3);
    let decoded: Vec<_> = snapshot
        .chunks
        .iter()
        .flat_map(|c| decode(c, false))
        .collect();
    assert_eq!(decoded, entries);
    let gzip = snapshot.gzip().unwrap();
    let decoded: Vec<_> = gzip.chunks.iter().flat_map(|c| decode(c, true)).collect();
    assert_eq!(decoded, entries);
    let empty = EncodedSnapshot::encode(0, Vec::new(), 2);
    assert_eq!(empty.chunks.len(), 1, "an empty state is one empty chunk");
    assert!(decode(&empty.chunks[0], false).is_empty());

    let cache = SnapshotCache::default();
    let first = cache.slot_for(5);
    assert!(Arc::ptr_eq(&first, &cache.slot_for(5)));
    assert!(!Arc::ptr_eq(&first, &cache.slot_for(6)));
    cache.clear();
    assert!(!Arc::ptr_eq(&first, &cache.slot_for(5)));
}

#[test]
fn validation_names_the_field_and_ignores_unknown_compression() {
    let check = |request: SyncRequest, field: &str| {
        let status = validate(&request).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    };
    check(request("", 0), "node_name");
    check(request(&"n".repeat(254), 0), "node_name");
    check(request("node 1", 0), "node_name");
    check(request("node\u{7}", 0), "node_name");
    let mut bad = request("node", 0);
    bad.client_version = "v\n1".to_owned();
    check(bad, "client_version");
    let mut bad = request("node", 0);
    bad.accepted_compression = vec!["x".to_owned(); 17];
    check(bad, "accepted_compression");

    let mut ok = request(&"n".repeat(253), 9);
    ok.accepted_compression = vec!["zstd".to_owned(), "GZIP".to_owned()];
    let valid = validate(&ok).unwrap();
    assert_eq!(valid.compression, Compression::Gzip);
    assert_eq!(valid.resume_revision, 9);
    ok.accepted_compression = vec!["br".to_owned()];
    assert_eq!(validate(&ok).unwrap().compression, Compression::Identity);
}

#[test]
fn metrics_expose_the_documented_names() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = FanoutMetrics::register(&mut registry);
    metrics.dropped(DropReason::FellBehind);
    metrics.client_snapshot_send_secs.observe(0.01);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for name in [
        "typha_connections_active ",
        "typha_connections_accepted_total ",
        "typha_connections_dropped_total{reason=\"fell_behind\"} 1",
        // Every reason is exported from the start.
        "typha_connections_dropped_total{reason=\"limit\"} 0",
        "typha_updates_total ",
        "typha_breadcrumb_seq_number ",
        "typha_client_snapshot_send_secs_count 1",
        "typha_snapshots_generated_total ",
        "typha_snapshots_reused_total ",
        "typha_history_bytes ",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

// ----------------------------------------------------------- over the wire

#[tokio::test]
async fn new_client_gets_snapshot_then_in_sync_then_ordered_deltas() {
    let h = Harness::start(FanoutConfig {
        snapshot_chunk_entries: 2,
        ..config()
    })
    .await;
    h.fanout.reset(0);
    h.put("a", "a1");
    h.put("b", "b1");
    let third = h.put("c", "c1");

    let mut client = h.reader("node-1", 0).await;
    let hello = client.sync().await;
    assert!(hello.snapshot_follows);
    assert_eq!(hello.revision, third);
    assert_eq!(hello.replica_id, 7);
    assert_eq!(hello.compression, "identity");
    assert_eq!(hello.server_version, manul_proto::PROTOCOL_VERSION);
    let snapshot = client.snapshot.clone().unwrap();
    let expected: Vec<Entry> = h.state().into_values().collect();
    assert_eq!(snapshot, expected);
    assert_eq!(
        snapshot.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    let d = h.put("d", "d1");
    let gone = h.apply(&[("a", None)]);
    let both = h.apply(&[("b", Some("b2")), ("d", None)]);
    let (batch, entries) = client.delta().await.unwrap();
    assert_eq!((batch.first_revision, batch.last_revision), (d, d));
    assert_eq!(entries, [entry("d", "d1", d)]);
    let (batch, entries) = client.delta().await.unwrap();
    assert_eq!(batch.last_revision, gone);
    assert_eq!(entries.len(), 1);
    assert!(entries[0].deleted);
    assert!(entries[0].value.is_empty());
    assert_eq!(entries[0].key.as_ref().unwrap().name, "a");
    assert_eq!(entries[0].revision, gone);
    let (batch, entries) = client.delta().await.unwrap();
    assert_eq!(batch.last_revision, both);
    assert_eq!(entries.len(), 2);
    assert_eq!(client.state, h.state());
    assert_eq!(h.metrics().updates.get(), 7);
    assert_eq!(h.metrics().breadcrumb_seq_number.get(), 6);
    assert_eq!(h.fanout.connections(), 1);
    assert_eq!(h.metrics().connections_active.get(), 1);
}

#[tokio::test]
async fn clients_at_the_same_revision_share_one_snapshot() {
    let h = Harness::start(config()).await;
    h.fanout.reset(0);
    for i in 0..10 {
        h.put(&format!("p{i}"), "v");
    }
    let mut first = h.reader("node-1", 0).await;
    let mut second = h.reader("node-2", 0).await;
    first.sync().await;
    second.sync().await;
    assert_eq!(first.snapshot, second.snapshot);
    assert_eq!(h.metrics().snapshots_generated.get(), 1);
    assert_eq!(h.metrics().snapshots_reused.get(), 1);
    assert_eq!(h.source.taken.load(Ordering::SeqCst), 1);

    // A publish makes the cached snapshot stale: the next client gets a
    // new one; concurrent ones share it.
    let latest = h.put("p0", "v2");
    let (mut a, mut b) = tokio::join!(h.reader("node-3", 0), h.reader("node-4", 0));
    let (hello_a, hello_b) = tokio::join!(a.sync(), b.sync());
    assert_eq!((hello_a.revision, hello_b.revision), (latest, latest));
    assert_eq!(h.metrics().snapshots_generated.get(), 2);
    assert_eq!(h.metrics().snapshots_reused.get(), 2);
    assert_eq!(h.source.taken.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn resume_with_a_retained_revision_sends_only_later_deltas() {
    let h = Harness::start(FanoutConfig {
        max_history_revisions: 5,
        ..config()
    })
    .await;
    h.fanout.reset(0);
    for i in 1..=10 {
        h.put(&format!("p{i}"), "v");
    }
    assert_eq!(h.fanout.oldest_resumable_revision(), 5);
    assert_eq!(h.fanout.current_revision(), 10);

    let mut client = h.reader("node-1", 7).await;
    let hello = client.sync().await;
    assert!(!hello.snapshot_follows);
    assert_eq!(hello.revision, 7);
    assert_eq!(client.until(10).await, [8, 9, 10]);

    // The boundaries: the oldest and the current revision resume too.
    let mut oldest = h.reader("node-2", 5).await;
    assert!(!oldest.sync().await.snapshot_follows);
    assert_eq!(oldest.until(10).await, [6, 7, 8, 9, 10]);
    let mut current = h.reader("node-3", 10).await;
    assert!(!current.sync().await.snapshot_follows);

    let next = h.put("p11", "v");
    for reader in [&mut client, &mut oldest, &mut current] {
        assert_eq!(reader.until(next).await, [next]);
    }
    assert_eq!(h.metrics().snapshots_generated.get(), 0);
    assert_eq!(h.source.taken.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn resume_with_a_trimmed_revision_gets_a_fresh_snapshot() {
    let h = Harness::start(FanoutConfig {
        max_history_revisions: 5,
        ..config()
    })
    .await;
    h.fanout.reset(0);
    for i in 1..=10 {
        h.put(&format!("p{i}"), "v");
    }
    let mut client = h.reader("node-1", 4).await;
    let hello = client.sync().await;
    assert!(hello.snapshot_follows);
    assert_eq!(hello.revision, 10);
    assert_eq!(client.state, h.state());
    assert_eq!(h.metrics().snapshots_generated.get(), 1);
    let next = h.put("p1", "v2");
    assert_eq!(client.until(next).await, [next]);
    assert_eq!(client.state, h.state());
}

#[tokio::test]
async fn resume_ahead_waits_for_the_replica_then_falls_back_to_a_snapshot() {
    let h = Harness::start(FanoutConfig {
        resume_ahead_wait: Duration::from_secs(3),
        ..config()
    })
    .await;
    h.fanout.reset(0);
    for i in 1..=5 {
        h.put(&format!("p{i}"), "v");
    }
    // The client applied up to 7 elsewhere; this replica gets there soon.
    let stream = h.open(request("node-1", 7)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.put("p6", "v");
    h.put("p7", "v");
    let mut client = Reader::new(stream);
    let hello = client.sync().await;
    assert!(!hello.snapshot_follows);
    assert_eq!(hello.revision, 7);
    let next = h.put("p8", "v");
    assert_eq!(client.until(next).await, [next]);

    // A replica that does not catch up in time sends a snapshot instead.
    let h = Harness::start(FanoutConfig {
        resume_ahead_wait: Duration::from_millis(100),
        ..config()
    })
    .await;
    h.fanout.reset(0);
    h.put("a", "v");
    let started = Instant::now();
    let mut client = h.reader("node-1", 50).await;
    let hello = client.sync().await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(hello.snapshot_follows);
    assert_eq!(hello.revision, 1);
    assert_eq!(client.state, h.state());
}

#[tokio::test]
async fn gzip_clients_get_compressed_chunks_and_deltas() {
    let h = Harness::start(FanoutConfig {
        snapshot_chunk_entries: 3,
        ..config()
    })
    .await;
    h.fanout.reset(0);
    for i in 0..10 {
        h.put(&format!("p{i}"), &"compressible ".repeat(20));
    }
    let mut plain = h.reader("node-1", 0).await;
    let mut gzip_request = request("node-2", 0);
    gzip_request.accepted_compression = vec!["br".to_owned(), "gzip".to_owned()];
    let mut zipped = Reader::new(h.open(gzip_request).await.unwrap());
    assert_eq!(plain.sync().await.compression, "identity");
    assert_eq!(zipped.sync().await.compression, "gzip");
    assert_eq!(zipped.snapshot, plain.snapshot);
    assert_eq!(zipped.snapshot.as_ref().unwrap().len(), 10);

    let next = h.apply(&[("p1", Some("changed")), ("p2", None)]);
    let (plain_batch, plain_entries) = plain.delta().await.unwrap();
    let (zipped_batch, zipped_entries) = zipped.delta().await.unwrap();
    assert_eq!(zipped_batch.last_revision, next);
    assert_eq!(zipped_entries, plain_entries);
    assert_ne!(zipped_batch.entries, plain_batch.entries, "really gzipped");
    assert_eq!(&zipped_batch.entries[..2], &[0x1f, 0x8b]);
    assert_eq!(zipped.state, h.state());
}

#[tokio::test]
async fn a_slow_client_is_dropped_and_resumes_while_a_fast_one_keeps_up() {
    let h = Harness::start(FanoutConfig {
        client_queue: 4,
        max_history_revisions: 16,
        ..config()
    })
    .await;
    h.fanout.reset(0);
    let start = h.put("seed", "v");

    // The slow client's connection has a small HTTP/2 window so that
    // transport buffers fill quickly once it stops reading.
    let slow_channel = h
        .endpoint()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let slow_stream = SyncClient::new(slow_channel)
        .sync(request("slow", 0))
        .await
        .unwrap()
        .into_inner();
    let mut slow = Reader::new(slow_stream);
    slow.sync().await;

    let mut fast = h.reader("fast", 0).await;
    fast.sync().await;
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(start);
    let fast_task = tokio::spawn(async move {
        let mut revisions = Vec::new();
        loop {
            match fast.delta().await {
                Ok((batch, _)) => {
                    revisions.push(batch.last_revision);
                    let _ = seen_tx.send(batch.last_revision);
                }
                Err(status) => panic!("fast client ended: {status}"),
            }
            if fast.revision >= 1000 {
                return (revisions, fast);
            }
        }
    });

    let value = "x".repeat(2048);
    let mut last = start;
    while h.metrics().dropped_count(DropReason::FellBehind) == 0 {
        assert!(last < 800, "the slow client was never dropped");
        last = h.put(&format!("p{}", last % 50), &value);
        timeout(WAIT, seen_rx.wait_for(|seen| *seen >= last))
            .await
            .expect("the fast client keeps up")
            .unwrap();
    }
    // Publish a few more after the drop; the fast client still gets them.
    for _ in 0..5 {
        last = h.put("after", &value);
    }
    assert!(h.fanout.oldest_resumable_revision() > slow.revision);

    // The slow client reads what was queued, then the verdict.
    let status = loop {
        match slow.delta().await {
            Ok(_) => {}
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("fell behind"), "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("resume from revision {}", slow.revision)),
        "the status names the last revision the client got ({}): {status:?}",
        slow.revision
    );
    assert_eq!(h.metrics().dropped_count(DropReason::FellBehind), 1);

    // It resumes with its last revision: too old, so a snapshot.
    let mut resumed = h.reader("slow", slow.revision).await;
    let hello = resumed.sync().await;
    assert!(hello.snapshot_follows);
    assert_eq!(resumed.state, h.state());
    let end = h.put("final", "v");
    resumed.until(end).await;
    assert_eq!(resumed.state, h.state());

    // The fast client saw every revision, in order, and nothing else.
    h.fanout.publish(1000, Vec::new());
    let (revisions, fast) = timeout(WAIT, fast_task).await.unwrap().unwrap();
    let expected: Vec<u64> = (start + 1..=end).chain([1000]).collect();
    assert_eq!(revisions, expected);
    assert_eq!(fast.state, h.state());
    assert!(last < end);
    eventually("the dropped stream is closed", || {
        h.fanout.connections() == 2
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let h = Harness::start(FanoutConfig {
        max_connections: 2,
        ..config()
    })
    .await;
    h.fanout.reset(0);
    h.put("a", "v");
    let mut first = h.reader("node-1", 0).await;
    let mut second = h.reader("node-2", 0).await;
    first.sync().await;
    second.sync().await;
    assert_eq!(h.fanout.connections(), 2);

    let status = h.open(request("node-3", 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("limit of 2") && status.message().contains("replica 7"),
        "{status:?}"
    );
    assert_eq!(h.metrics().dropped_count(DropReason::Limit), 1);
    assert_eq!(h.metrics().connections_accepted.get(), 2);

    drop(first);
    eventually("the closed stream is released", || {
        h.fanout.connections() == 1
    })
    .await;
    assert_eq!(h.metrics().connections_active.get(), 1);
    let mut third = h.reader("node-3", 0).await;
    third.sync().await;
    assert_eq!(h.fanout.connections(), 2);
    let next = h.put("b", "v");
    assert_eq!(second.until(next).await, [next]);
    assert_eq!(third.until(next).await, [next]);
}

#[tokio::test]
async fn an_invalid_request_is_refused_without_affecting_others() {
    let h = Harness::start(config()).await;
    h.fanout.reset(0);
    h.put("a", "v");
    let mut client = h.reader("node-1", 0).await;
    client.sync().await;

    let status = h.open(request("", 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("node_name"), "{status:?}");
    let mut bad = request("node-2", 0);
    bad.accepted_compression = vec!["gzip".to_owned(); 100];
    let status = h.open(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("accepted_compression"));

    assert_eq!(h.fanout.connections(), 1);
    assert_eq!(h.metrics().connections_accepted.get(), 1);
    let next = h.put("b", "v");
    assert_eq!(client.until(next).await, [next]);
}

#[tokio::test]
async fn shutdown_spreads_disconnects_over_the_interval() {
    let h = Harness::start(config()).await;
    h.fanout.reset(0);
    h.put("a", "v");
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut client = h.reader(&format!("node-{i}"), 0).await;
        client.sync().await;
        tasks.push(tokio::spawn(async move {
            let status = match client.next().await {
                Err(status) => status,
                Ok(message) => panic!("expected the end, got {message:?}"),
            };
            (Instant::now(), status)
        }));
    }
    assert_eq!(h.fanout.connections(), 4);
    let started = Instant::now();
    h.fanout.shutdown(Duration::from_millis(400)).await;
    let returned = started.elapsed();
    assert!(
        returned >= Duration::from_millis(280) && returned < Duration::from_secs(2),
        "{returned:?}"
    );
    let mut times = Vec::new();
    for task in tasks {
        let (at, status) = timeout(WAIT, task).await.unwrap().unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("shutting down"), "{status:?}");
        assert!(
            status.message().contains("resume from revision 1"),
            "{status:?}"
        );
        times.push(at);
    }
    times.sort();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(50),
            "disconnects too close: {gap:?}"
        );
    }
    assert!(times[3] - times[0] >= Duration::from_millis(250));
    assert_eq!(h.metrics().dropped_count(DropReason::Shutdown), 4);
    eventually("every stream is closed", || h.fanout.connections() == 0).await;

    let status = h.open(request("late", 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn an_idle_stream_gets_pings() {
    let h = Harness::start(FanoutConfig {
        ping_interval: Duration::from_millis(50),
        ..config()
    })
    .await;
    h.fanout.reset(0);
    let revision = h.put("a", "v");
    let mut client = h.reader("node-1", 0).await;
    client.sync().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut pings = 0;
    while pings < 4 {
        match client.raw().await.unwrap().unwrap() {
            Message::Ping(ping) => {
                assert_eq!(ping.revision, revision);
                assert!(ping.unix_millis + 1000 >= before);
                pings += 1;
            }
            other => panic!("only pings on an idle stream, got {other:?}"),
        }
    }
    let next = h.put("b", "v");
    assert_eq!(client.until(next).await, [next]);
    // Pings now carry the new revision.
    loop {
        if let Message::Ping(ping) = client.raw().await.unwrap().unwrap() {
            assert_eq!(ping.revision, next);
            break;
        }
    }
}

#[tokio::test]
async fn reset_ends_clients_behind_it_and_they_resync() {
    let h = Harness::start(config()).await;
    h.fanout.reset(0);
    h.put("a", "v");
    let at = h.put("b", "v");
    let mut client = h.reader("node-1", 0).await;
    client.sync().await;

    // A Raft snapshot replaces the state machine at revision 100.
    {
        let mut state = h.source.state.lock().unwrap();
        state.0 = 100;
        state.1.clear();
        state.1.insert("z".to_owned(), entry("z", "v", 90));
    }
    h.fanout.reset(100);
    assert_eq!(h.fanout.current_revision(), 100);
    assert_eq!(h.fanout.oldest_resumable_revision(), 100);
    let status = client.delta().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        status.message().contains("restarted at revision 100"),
        "{status:?}"
    );
    assert!(
        status
            .message()
            .contains(&format!("resume from revision {at}"))
    );
    assert_eq!(h.metrics().dropped_count(DropReason::HistoryReset), 1);

    let mut client = h.reader("node-1", at).await;
    let hello = client.sync().await;
    assert!(hello.snapshot_follows);
    assert_eq!(hello.revision, 100);
    assert_eq!(client.state, h.state());
    let next = h.put("c", "v");
    assert_eq!(next, 101);
    assert_eq!(client.until(next).await, [next]);
}

#[tokio::test]
async fn a_replica_that_stops_serving_ends_its_streams_and_refuses_until_it_resumes() {
    let h = Harness::start(config()).await;
    h.fanout.reset(0);
    h.put("a", "v");
    let mut client = h.reader("node-1", 0).await;
    client.sync().await;
    assert!(h.fanout.serving());
    assert_eq!(
        h.fanout
            .stop_serving("it has known no Raft leader for 1.0 s (at revision 1)"),
        1
    );
    // Stopping again ends nothing more.
    assert_eq!(h.fanout.stop_serving("again"), 0);
    let status = client.next().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("replica 7 stopped serving")
            && status.message().contains("no Raft leader")
            && status.message().contains("resume from revision 1"),
        "{status:?}"
    );
    // With the hint to ask again soon, as a trailer across the wire.
    let hint = |s: &Status| {
        s.metadata()
            .get(super::RETRY_PUSHBACK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(hint(&status).as_deref(), Some("200"), "{status:?}");
    // A new stream is refused, saying why.
    let refused = h.open(request("node-2", 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(
        refused.message().contains("does not serve")
            && refused.message().contains("no Raft leader"),
        "{refused:?}"
    );
    assert_eq!(hint(&refused).as_deref(), Some("200"), "{refused:?}");
    assert_eq!(h.metrics().dropped_count(DropReason::NotServing), 2);
    // On the lean transport, the refusal's StreamEnd carries the hint.
    let (client_io, server_io) = tokio::io::duplex(4096);
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    tokio::spawn(super::lean::serve_connection(
        h.fanout.clone(),
        server_io,
        peer,
        Duration::from_secs(5),
    ));
    let mut lean = manul_proto::frame::open(client_io, &request("node-3", 1), 1 << 20)
        .await
        .unwrap();
    let end = lean.message().await.unwrap_err();
    assert!(
        matches!(
            &end,
            manul_proto::frame::FrameError::Ended { code: 14, message, retry_after_ms: 200 }
                if message.contains("does not serve")
        ),
        "{end:?}"
    );
    assert_eq!(h.metrics().dropped_count(DropReason::NotServing), 3);
    // Serving again: a client resumes where it was, without a snapshot.
    h.fanout.resume_serving();
    assert!(h.fanout.serving());
    let next = h.put("b", "w");
    let mut client = h.reader("node-1", 1).await;
    let hello = client.sync().await;
    assert!(!hello.snapshot_follows);
    assert_eq!(client.until(next).await, [next]);
}
