//! The sync client against a scripted Sync server over real gRPC: resume
//! revisions, snapshots, deltas, reconnects and synthesised deletions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use manul_felix::sync::{SyncConfig, SyncEvent, Syncer};
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::sync_server::{Sync, SyncServer};
use manul_proto::v1::{
    DeltaBatch, Entry, EntryList, InSync, ResourceKey, ServerHello, SnapshotChunk, SyncMessage,
    SyncRequest,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

fn tier(name: &str, revision: u64) -> Entry {
    let yaml = format!("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: {name}\n");
    let r = manul_model::load("t", yaml.as_bytes())
        .into_result()
        .unwrap()
        .remove(0)
        .resource;
    Entry {
        key: Some(ResourceKey {
            kind: "tier".into(),
            namespace: String::new(),
            name: name.into(),
        }),
        value: Bytes::from(serde_json::to_vec(&r).unwrap()),
        revision,
        deleted: false,
    }
}

fn list(entries: Vec<Entry>) -> Bytes {
    Bytes::from(EntryList { entries }.encode_to_vec())
}

fn msg(m: Message) -> Result<SyncMessage, Status> {
    Ok(SyncMessage { message: Some(m) })
}

/// Answers the first connection with a snapshot of {a, b} at revision 5,
/// one delta (c at 6) and an empty batch (7), then ends the stream; answers the second with a
/// fresh snapshot of {b, c, d} at revision 9 (as if its history no longer
/// held revision 6). Records each request's resume revision.
#[derive(Default, Clone)]
struct Scripted {
    resumes: Arc<Mutex<Vec<u64>>>,
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Sync for Scripted {
    type SyncStream = SyncStream;

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncStream>, Status> {
        let n = {
            let mut r = self.resumes.lock().unwrap();
            r.push(request.get_ref().resume_revision);
            r.len()
        };
        let hello = |revision| {
            msg(Message::Hello(ServerHello {
                server_version: "test".into(),
                replica_id: 1,
                revision,
                snapshot_follows: true,
                compression: "identity".into(),
            }))
        };
        let script = if n == 1 {
            vec![
                hello(5),
                msg(Message::Snapshot(SnapshotChunk {
                    revision: 5,
                    index: 0,
                    count: 1,
                    entries: list(vec![tier("a", 2), tier("b", 5)]),
                })),
                msg(Message::InSync(InSync { revision: 5 })),
                msg(Message::Deltas(DeltaBatch {
                    first_revision: 6,
                    last_revision: 6,
                    entries: list(vec![tier("c", 6)]),
                })),
                // An entry that changed no resource: an empty batch.
                msg(Message::Deltas(DeltaBatch {
                    first_revision: 7,
                    last_revision: 7,
                    entries: list(Vec::new()),
                })),
            ]
        } else {
            vec![
                hello(9),
                msg(Message::Snapshot(SnapshotChunk {
                    revision: 9,
                    index: 0,
                    count: 1,
                    entries: list(vec![tier("b", 5), tier("c", 6), tier("d", 9)]),
                })),
                msg(Message::InSync(InSync { revision: 9 })),
            ]
        };
        // The first stream ends after its script (the client must
        // reconnect); the second stays open.
        let stream: SyncStream = if n == 1 {
            Box::pin(futures::stream::iter(script))
        } else {
            Box::pin(futures::stream::iter(script).chain(futures::stream::pending()))
        };
        Ok(Response::new(stream))
    }
}

#[tokio::test]
async fn resumes_resnapshots_and_synthesises_deletions() {
    let server = Scripted::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = server.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(SyncServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let (tx, mut rx) = mpsc::channel(64);
    let syncer = Syncer::new(SyncConfig {
        typhas: vec![addr.to_string()],
        node: "node1".into(),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        transport: Default::default(),
    });
    tokio::spawn(syncer.run(tx));
    let mut log = Vec::new();
    while log
        .iter()
        .filter(|l: &&String| l.starts_with("in-sync"))
        .count()
        < 2
    {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        match ev {
            SyncEvent::Updates {
                updates: us,
                revision,
            } => {
                if us.is_empty() {
                    log.push(format!("at {revision}"));
                }
                for u in us {
                    let op = if u.value.is_some() { "put" } else { "del" };
                    log.push(format!("{op} {}", u.key.name));
                }
            }
            SyncEvent::InSync { revision } => log.push(format!("in-sync {revision}")),
            SyncEvent::Disconnected { .. } => log.push("disconnected".into()),
        }
    }
    assert_eq!(
        log,
        [
            "put a",
            "put b",
            "in-sync 5",
            "put c",
            "at 7",
            "disconnected",
            "put b",
            "put c",
            "put d",
            "del a",
            "in-sync 9",
        ]
    );
    // The reconnect resumed from the last revision it had applied, the
    // empty batch's.
    assert_eq!(*server.resumes.lock().unwrap(), [0, 7]);
}

#[test]
fn entries_decode_from_the_stored_form_and_bad_ones_name_the_problem() {
    use manul_felix::sync::update_of;
    let good = tier("platform", 1);
    let u = update_of(&good).unwrap();
    assert_eq!(u.key.to_string(), "tier/platform");
    assert!(u.value.is_some());

    // The value is another resource than the key says.
    let mut other = tier("platform", 1);
    other.value = tier("security", 1).value;
    let err = update_of(&other).unwrap_err().to_string();
    assert!(err.contains("the value is tier/security"), "{err}");

    // Not JSON, and a stored resource of another kind.
    let mut garbage = tier("platform", 1);
    garbage.value = Bytes::from_static(b"kind: Tier\n");
    let err = update_of(&garbage).unwrap_err().to_string();
    assert!(err.contains("invalid value for tier/platform"), "{err}");
    let mut wrong = tier("platform", 1);
    wrong.key.as_mut().unwrap().kind = "globalnetworkset".into();
    let err = update_of(&wrong).unwrap_err().to_string();
    assert!(err.contains("expected a GlobalNetworkSet"), "{err}");

    // A deletion needs no value.
    let mut gone = tier("platform", 2);
    gone.value = Bytes::new();
    gone.deleted = true;
    assert!(update_of(&gone).unwrap().value.is_none());
}
