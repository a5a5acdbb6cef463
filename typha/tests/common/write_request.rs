//! Any bytes as a request to Typha's `Resources` service: the first byte
//! picks the method (apply, delete, get), the rest is the request message
//! exactly as it crosses the wire, sent (without re-encoding) to a real
//! single-voter replica on loopback, which decodes, validates, commits
//! through Raft and answers. Nothing may panic, and:
//!
//! - a request the server refuses changes nothing in the store;
//! - an apply is refused (`INVALID_ARGUMENT`) unless every item loads
//!   without an error with the model's loader and the request names each
//!   key once; one that loads and carries no expected revision is stored;
//!   a stored value is exactly what the answer says and decodes with the
//!   stored-form decoder every Felix uses;
//! - a delete that succeeds leaves none of its keys; a get answers the
//!   stored entry or `NOT_FOUND` for an absent one;
//! - every refusal is `INVALID_ARGUMENT`, `FAILED_PRECONDITION` (a
//!   conflict), `NOT_FOUND` or a decoding error: nothing the API should
//!   have refused reaches Raft.
//!
//! Shared by the `write_request` fuzz target and `typha/tests/fuzz_replay.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use manul_proto::v1::{
    ApplyItem, ApplyRequest, ApplyResponse, DeleteRequest, DeleteResponse, GetRequest, GetResponse,
    ResourceKey,
};
use manul_typha::api::normalize_key;
use manul_typha::server::{Running, start_single_loopback};
use manul_typha::state::Key;
use prost::Message as _;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Passes a message's bytes through untouched, both ways.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// One replica for the whole process (a fuzzing run or a test binary).
struct Replica {
    runtime: tokio::runtime::Runtime,
    running: Running,
    channel: Channel,
    _dir: tempfile::TempDir,
}

fn replica() -> &'static Replica {
    static REPLICA: OnceLock<Replica> = OnceLock::new();
    REPLICA.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (running, channel) = runtime.block_on(async {
            let running = start_single_loopback(dir.path().to_path_buf(), Duration::from_secs(20))
                .await
                .expect("a single replica starts");
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", running.local_addr))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
            (running, channel)
        });
        Replica {
            runtime,
            running,
            channel,
            _dir: dir,
        }
    })
}

impl Replica {
    /// The store, but for the sets the threat-feed puller keeps (it may
    /// delete a `threatfeed.*` set a request wrote, at any time).
    fn store(&self) -> Vec<manul_proto::v1::Entry> {
        let mut entries = self
            .running
            .node
            .shared()
            .state
            .read()
            .unwrap()
            .list("", "");
        entries.retain(|e| {
            e.key.as_ref().is_none_or(|k| {
                !(k.kind == "globalnetworkset" && k.name.starts_with("threatfeed."))
            })
        });
        entries
    }

    fn stored(&self, key: &Key) -> Option<manul_proto::v1::Entry> {
        self.running.node.shared().state.read().unwrap().get(key)
    }

    /// Calls `method` with `body` as the request message, as sent.
    fn call(&self, method: &'static str, body: &[u8]) -> Result<Bytes, tonic::Status> {
        let channel = self.channel.clone();
        let body = Bytes::copy_from_slice(body);
        self.runtime.block_on(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let path = http::uri::PathAndQuery::from_static(method);
            let response = grpc.unary(tonic::Request::new(body), path, Raw).await?;
            Ok(response.into_inner())
        })
    }
}

/// The method an input's first byte picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Apply = 0,
    Delete = 1,
    Get = 2,
}

/// Offers `data`; whether the server took it.
pub fn offer_request(data: &[u8]) -> bool {
    let Some((&tag, body)) = data.split_first() else {
        return false;
    };
    let typha = replica();
    let before = typha.store();
    let (method, path) = match tag % 3 {
        0 => (Method::Apply, "/manul.v1.Resources/Apply"),
        1 => (Method::Delete, "/manul.v1.Resources/Delete"),
        _ => (Method::Get, "/manul.v1.Resources/Get"),
    };
    let answer = typha.call(path, body);
    if let Err(status) = &answer {
        assert_eq!(
            typha.store(),
            before,
            "a refused request changed the store: {status:?}"
        );
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::NotFound
                    | Code::Internal
                    | Code::OutOfRange
            ),
            "unexpected refusal: {status:?}"
        );
    }
    match method {
        Method::Apply => check_apply(typha, body, answer),
        Method::Delete => check_delete(typha, body, answer),
        Method::Get => check_get(typha, body, answer),
    }
}

/// Whether the model's loader takes every item and the request names
/// each key once; whether any item carries an expected revision.
fn loads(request: &ApplyRequest) -> (bool, bool) {
    let mut keys = BTreeSet::new();
    let mut clean = !request.items.is_empty();
    for item in &request.items {
        let outcome = manul_model::load("fuzz", &item.document);
        clean &= outcome.errors.is_empty();
        for loaded in outcome.resources {
            clean &= keys.insert(loaded.resource.key());
        }
    }
    let conditional = request.items.iter().any(|i| i.expected_revision.is_some());
    (clean && !keys.is_empty(), conditional)
}

fn check_apply(typha: &Replica, body: &[u8], answer: Result<Bytes, tonic::Status>) -> bool {
    let Ok(request) = ApplyRequest::decode(body) else {
        assert!(answer.is_err(), "an undecodable apply was taken");
        return false;
    };
    let (clean, conditional) = loads(&request);
    let answer = match answer {
        Ok(bytes) => ApplyResponse::decode(bytes).unwrap(),
        Err(status) => {
            if clean {
                assert!(
                    conditional && status.code() == Code::FailedPrecondition,
                    "a valid apply was refused: {status:?}"
                );
            } else {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            }
            return false;
        }
    };
    assert!(clean, "an apply the model refuses was stored: {request:?}");
    assert!(!answer.entries.is_empty());
    for entry in &answer.entries {
        let key = Key::from_proto(entry.key.as_ref().unwrap());
        let stored = typha.stored(&key).expect("an applied entry is stored");
        assert_eq!(&stored, entry);
        manul_model::stored::decode(&stored.value)
            .expect("every stored value decodes as Felix decodes it");
    }
    true
}

fn check_delete(typha: &Replica, body: &[u8], answer: Result<Bytes, tonic::Status>) -> bool {
    let Ok(request) = DeleteRequest::decode(body) else {
        assert!(answer.is_err(), "an undecodable delete was taken");
        return false;
    };
    let keys: Result<Vec<Key>, _> = request
        .keys
        .iter()
        .map(|k| normalize_key(k, "key"))
        .collect();
    let answer = match answer {
        Ok(bytes) => DeleteResponse::decode(bytes).unwrap(),
        Err(status) => {
            if keys.is_err() || request.keys.is_empty() {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            } else {
                assert!(
                    request.expected_revision.is_some()
                        && status.code() == Code::FailedPrecondition,
                    "a valid delete was refused: {status:?}"
                );
            }
            return false;
        }
    };
    let keys = keys.expect("a delete with an invalid key was taken");
    for key in &keys {
        assert!(typha.stored(key).is_none(), "{key:?} survived its delete");
    }
    for deleted in &answer.deleted {
        assert!(keys.contains(&Key::from_proto(deleted)), "{deleted:?}");
    }
    true
}

fn check_get(typha: &Replica, body: &[u8], answer: Result<Bytes, tonic::Status>) -> bool {
    let Ok(request) = GetRequest::decode(body) else {
        assert!(answer.is_err(), "an undecodable get was answered");
        return false;
    };
    let key = request.key.as_ref().map(|k| normalize_key(k, "key"));
    match (answer, key) {
        (Ok(bytes), Some(Ok(key))) => {
            let entry = GetResponse::decode(bytes).unwrap().entry.unwrap();
            assert_eq!(Key::from_proto(entry.key.as_ref().unwrap()), key);
            true
        }
        (Err(status), Some(Ok(key))) => {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert!(typha.stored(&key).is_none());
            false
        }
        (Err(status), _) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            false
        }
        (Ok(_), key) => panic!("a get of an invalid key was answered: {key:?}"),
    }
}

fn input(method: Method, message: &impl prost::Message) -> Vec<u8> {
    let mut bytes = vec![method as u8];
    bytes.extend(message.encode_to_vec());
    bytes
}

/// Real requests: `manulctl apply` of every example (each resource as
/// JSON, as it sends them) and of the bad examples (YAML as written), the
/// typed client's conditional writes (create-only, and a stale revision),
/// deletes with and without an expected revision, and gets.
pub fn seeds(examples: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(examples)
        .unwrap()
        .chain(std::fs::read_dir(examples.join("bad")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut keys = Vec::new();
    for path in files {
        let text = std::fs::read(&path).unwrap();
        let file = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bad = path.parent().is_some_and(|d| d.ends_with("bad"));
        let outcome = manul_model::load(&file, &text);
        let items: Vec<ApplyItem> = if bad || outcome.resources.is_empty() {
            vec![ApplyItem {
                document: text.into(),
                origin: file.clone(),
                expected_revision: None,
            }]
        } else {
            outcome
                .resources
                .iter()
                .map(|loaded| {
                    keys.push(loaded.resource.key());
                    ApplyItem {
                        document: serde_json::to_vec(&loaded.resource).unwrap().into(),
                        origin: format!("{file} (document {})", loaded.document),
                        expected_revision: None,
                    }
                })
                .collect()
        };
        let name = if bad { "bad" } else { "apply" };
        seeds.push((
            format!("seed-{name}-{file}"),
            input(
                Method::Apply,
                &ApplyRequest {
                    items,
                    deletes: vec![],
                    ..Default::default()
                },
            ),
        ));
    }
    let proto = |k: &manul_model::ResourceKey| ResourceKey {
        kind: k.kind.key_name().to_owned(),
        namespace: k.namespace.clone().unwrap_or_default(),
        name: k.name.clone(),
    };
    let set = |name: &str, revision: Option<u64>| {
        ApplyItem {
        document: format!(
            "{{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"GlobalNetworkSet\",\"metadata\":{{\"name\":\"{name}\",\"labels\":{{\"threat-feed\":\"true\"}}}},\"spec\":{{\"nets\":[\"10.1.2.0/24\",\"fd00::1/128\"]}}}}"
        )
        .into_bytes()
        .into(),
        origin: name.to_owned(),
        expected_revision: revision,
    }
    };
    seeds.push((
        "seed-apply-create-only".to_owned(),
        input(
            Method::Apply,
            &ApplyRequest {
                items: vec![set("created", Some(0)), set("also-created", Some(0))],
                deletes: Vec::new(),
                ..Default::default()
            },
        ),
    ));
    seeds.push((
        "seed-apply-stale-revision".to_owned(),
        input(
            Method::Apply,
            &ApplyRequest {
                items: vec![set("created", Some(1))],
                deletes: Vec::new(),
                ..Default::default()
            },
        ),
    ));
    let set_key = ResourceKey {
        kind: "GlobalNetworkSet".to_owned(),
        namespace: String::new(),
        name: "created".to_owned(),
    };
    seeds.push((
        "seed-get-set".to_owned(),
        input(
            Method::Get,
            &GetRequest {
                key: Some(set_key.clone()),
            },
        ),
    ));
    if let Some(first) = keys.first() {
        seeds.push((
            "seed-get-example".to_owned(),
            input(
                Method::Get,
                &GetRequest {
                    key: Some(proto(first)),
                },
            ),
        ));
    }
    // Deleting only what was never created (its revision is 0).
    seeds.push((
        "seed-delete-conditional".to_owned(),
        input(
            Method::Delete,
            &DeleteRequest {
                keys: vec![ResourceKey {
                    name: "never-created".to_owned(),
                    ..set_key
                }],
                expected_revision: Some(0),
                origin: None,
            },
        ),
    ));
    seeds.push((
        "seed-delete-examples".to_owned(),
        input(
            Method::Delete,
            &DeleteRequest {
                keys: keys.iter().map(proto).collect(),
                expected_revision: None,
                ..Default::default()
            },
        ),
    ));
    seeds
}
