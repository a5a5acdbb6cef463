//! Any bytes as the one request message of a `Sync` stream (a Felix's
//! hello, `SyncRequest`), sent as a gRPC frame to the real Sync service
//! (`Fanout::service()`, the tower service Typha's client listener serves:
//! tonic's decoding with its size limit, then the fan-out's validation and
//! admission). Nothing may panic; a request that is not a `SyncRequest`, or
//! that the fan-out's documented rules refuse (`node_name` empty, over 253
//! bytes or not printable ASCII; `client_version` over 256 bytes or with a
//! control character; more than 16 `accepted_compression` names or one
//! over 64 bytes) gets an error status and opens no stream; any other
//! opens exactly one stream whose first message is the `ServerHello` the
//! request asked for (resumed or with a snapshot, the negotiated
//! compression), and closes it when the client goes. Shared by the
//! `sync_hello` fuzz target and `typha/tests/fuzz_replay.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{Entry, ResourceKey, SyncMessage, SyncRequest};
use manul_typha::fanout::{Fanout, FanoutConfig, FanoutMetrics, SnapshotSource};
use prost::Message as _;
use tonic::codegen::Service as _;

/// The revisions the fan-out under test has published.
const PUBLISHED: std::ops::RangeInclusive<u64> = 5..=7;

/// A state of one entry at the last published revision.
#[derive(Debug)]
struct OneEntry;

impl SnapshotSource for OneEntry {
    fn snapshot(&self) -> (u64, Vec<Entry>) {
        (*PUBLISHED.end(), vec![entry(*PUBLISHED.end())])
    }
}

fn entry(revision: u64) -> Entry {
    Entry {
        key: Some(ResourceKey {
            kind: "globalnetworkset".into(),
            namespace: String::new(),
            name: format!("set-{revision}"),
        }),
        value: Bytes::from_static(b"{}"),
        revision,
        deleted: false,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Whether the fan-out's documented rules accept the request.
fn acceptable(r: &SyncRequest) -> bool {
    !r.node_name.is_empty()
        && r.node_name.len() <= 253
        && r.node_name.bytes().all(|b| b.is_ascii_graphic())
        && r.client_version.len() <= 256
        && !r.client_version.chars().any(char::is_control)
        && r.accepted_compression.len() <= 16
        && r.accepted_compression.iter().all(|c| c.len() <= 64)
}

/// The compression the request negotiates: its first known name.
fn negotiated(r: &SyncRequest) -> &'static str {
    r.accepted_compression
        .iter()
        .find_map(|c| {
            if c.eq_ignore_ascii_case("gzip") {
                Some("gzip")
            } else if c.eq_ignore_ascii_case("identity") {
                Some("identity")
            } else {
                None
            }
        })
        .unwrap_or("identity")
}

/// A gRPC frame: uncompressed, length-prefixed.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// Offers `data` as a Sync request; whether a stream was opened.
pub fn offer_hello(data: &[u8]) -> bool {
    runtime().block_on(hello(data))
}

async fn hello(data: &[u8]) -> bool {
    let mut registry = prometheus_client::registry::Registry::default();
    let config = FanoutConfig {
        replica_id: 3,
        resume_ahead_wait: Duration::ZERO,
        ..FanoutConfig::default()
    };
    let fanout = Fanout::new(
        config,
        Arc::new(OneEntry),
        FanoutMetrics::register(&mut registry),
    );
    for revision in PUBLISHED {
        fanout.publish(revision, vec![entry(revision)]);
    }
    let request = http::Request::builder()
        .method("POST")
        .uri("/manul.v1.Sync/Sync")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(frame(data)))
        .unwrap();
    let response = fanout.service().call(request).await.unwrap();
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().parse::<i32>().unwrap());
    let decoded = SyncRequest::decode(data).ok();
    let is_request = decoded.is_some();
    let Some(request) = decoded.filter(acceptable) else {
        // Refused: an error status at once, no stream admitted.
        let code = status.expect("a refused request gets an error status");
        assert_ne!(code, 0, "a refused request gets an error status");
        if is_request {
            assert_eq!(code, tonic::Code::InvalidArgument as i32);
        }
        assert_eq!(fanout.connections(), 0, "a refused request opened a stream");
        return false;
    };
    assert_eq!(status, None, "an acceptable request was refused");
    assert_eq!(fanout.connections(), 1);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the hello comes at once")
        .expect("the stream has a first frame")
        .expect("the first frame is not an error")
        .into_data()
        .expect("the first frame is data");
    assert!(
        first.len() >= 5 && first[0] == 0,
        "an uncompressed gRPC frame"
    );
    let len = u32::from_be_bytes(first[1..5].try_into().unwrap()) as usize;
    let message = SyncMessage::decode(&first[5..5 + len]).unwrap();
    let Some(Message::Hello(hello)) = message.message else {
        panic!("the first message is not a hello: {message:?}");
    };
    let resume = request.resume_revision;
    let resumed = resume > 0
        && (fanout.oldest_resumable_revision()..=fanout.current_revision()).contains(&resume);
    assert_eq!(hello.snapshot_follows, !resumed, "{request:?} {hello:?}");
    let at = if resumed { resume } else { *PUBLISHED.end() };
    assert_eq!(hello.revision, at, "{request:?} {hello:?}");
    assert_eq!(hello.replica_id, 3);
    assert_eq!(hello.compression, negotiated(&request));
    drop(body);
    // The client went away: its stream is closed.
    assert_eq!(fanout.connections(), 0, "a closed stream still counts");
    true
}

/// Real hellos: Felix's (fresh and resuming), `manulctl sync`'s, the
/// benchmark's, and edge cases of each field.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let request = |node: &str, version: &str, resume: u64, compression: &[&str]| SyncRequest {
        node_name: node.into(),
        client_version: version.into(),
        resume_revision: resume,
        accepted_compression: compression.iter().map(|c| (*c).to_owned()).collect(),
    };
    let version = manul_proto::PROTOCOL_VERSION;
    [
        ("felix", request("node1", version, 0, &["gzip"])),
        ("felix-resuming", request("node1", version, 6, &["gzip"])),
        ("felix-ahead", request("node1", version, 900, &["gzip"])),
        ("manulctl", request("manulctl", version, 0, &["gzip"])),
        (
            "identity",
            request("bench-0001", version, 7, &["br", "IDENTITY"]),
        ),
        (
            "longest",
            request(&"n".repeat(253), &"v".repeat(256), u64::MAX, &["x"; 16]),
        ),
        ("no-name", request("", version, 0, &[])),
        ("space-in-name", request("node 1", version, 0, &[])),
    ]
    .into_iter()
    .map(|(name, r)| (format!("seed-{name}"), r.encode_to_vec()))
    .collect()
}
