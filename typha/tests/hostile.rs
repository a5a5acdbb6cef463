//! Hostile clients against a real `typha` process, each forged message
//! built from `manul.proto` and raft's `eraftpb` as a raw gRPC client would
//! send it: Raft peer traffic and cluster administration are not on the
//! client listener, the peer listener refuses callers without the token,
//! and what a token holder forges is dropped or refused. Afterwards the
//! store, the leader and `/healthz`, `/readyz` are as before, also after a
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, SERIAL, apply, connect, free_port};
use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::command::Op;
use manul_proto::v1::peer_client::PeerClient;
use manul_proto::v1::{
    AddLearnerRequest, Command, Entry as StoredEntry, Member, MemberRequest, RaftBatch,
    ResourceKey, StateSnapshot, Write, WriteBatch,
};
use manul_typha::peer_auth::{AttachToken, PeerToken};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{Entry, Message, MessageType, Snapshot};

fn raft_msg(kind: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = 1;
    m.term = term;
    m
}

fn heartbeat(from: u64) -> Message {
    let mut m = raft_msg(MessageType::MsgHeartbeat, from, 100);
    m.commit = 1_000_000;
    m
}

fn batch(from: u64, msgs: &[Message]) -> RaftBatch {
    RaftBatch {
        messages: msgs
            .iter()
            .map(|m| Bytes::from(m.write_to_bytes().unwrap()))
            .collect(),
        from,
        from_address: "127.0.0.1:9".into(),
    }
}

fn write(kind: &str, name: &str, value: &[u8]) -> Vec<u8> {
    Command {
        request_id: 0,
        op: Some(Op::Writes(WriteBatch {
            writes: vec![Write {
                key: Some(ResourceKey {
                    kind: kind.into(),
                    namespace: String::new(),
                    name: name.into(),
                }),
                value: value.to_vec().into(),
                expected_revision: None,
            }],
            deletes: Vec::new(),
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Proposals of entries the API would refuse: a value that is not JSON,
/// an unknown kind, a NUL in a name.
fn propose(from: u64) -> Message {
    let set = br#"{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"x"},"spec":{}}"#;
    let mut m = raft_msg(MessageType::MsgPropose, from, 0);
    m.entries = [
        write("globalnetworkset", "evil", b"not json"),
        write("frobnicator", "evil", set),
        write("globalnetworkset", "ev\0il", set),
    ]
    .into_iter()
    .map(|data| Entry {
        data: data.into(),
        ..Entry::default()
    })
    .collect::<Vec<_>>()
    .into();
    m
}

/// A snapshot that would replace the whole store.
fn snapshot(from: u64) -> Message {
    let data = StateSnapshot {
        revision: 1000,
        entries: vec![StoredEntry {
            key: Some(ResourceKey {
                kind: "globalnetworkset".into(),
                namespace: String::new(),
                name: "evil".into(),
            }),
            value: b"{}".to_vec().into(),
            revision: 1000,
            deleted: false,
        }],
        members: vec![Member {
            id: from,
            address: "127.0.0.1:9".into(),
            learner: false,
        }],
        ..Default::default()
    };
    let mut snap = Snapshot {
        data: data.encode_to_vec().into(),
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = 1000;
    meta.term = 100;
    meta.mut_conf_state().voters = vec![1, from];
    let mut m = raft_msg(MessageType::MsgSnapshot, from, 100);
    m.snapshot = Some(snap).into();
    m
}

async fn names(c: &Cluster) -> Vec<String> {
    let mut n = c.names(0).await;
    n.sort();
    n
}

/// Store, leader and health as expected.
async fn check(c: &Cluster, want: &[&str]) {
    assert_eq!(names(c).await, want);
    let st = c.status(0).await.unwrap();
    assert_eq!(st.leader_id, 1, "{st:?}");
    assert_eq!(st.role, "leader", "{st:?}");
    assert_eq!(c.http(0, "/healthz").await.unwrap().0, 200);
    let (code, body) = c.http(0, "/readyz").await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ready: leader 1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_and_admin_messages_change_nothing() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(1, 10_000).await;
    apply(&c, 0, &["kept".to_string()]).await.unwrap();
    let before = c.status(0).await.unwrap();
    let peer_addr = c.replicas[0].peer_addr();

    // The client listener serves neither Raft nor administration.
    let err = PeerClient::new(c.channel(0).await)
        .raft(batch(77, &[heartbeat(77)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let err = ClusterClient::new(c.channel(0).await)
        .remove(MemberRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // The peer listener refuses callers without the token or with another.
    let err = PeerClient::new(connect(&peer_addr).await)
        .raft(batch(77, &[heartbeat(77)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = ClusterClient::new(connect(&peer_addr).await)
        .remove(MemberRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let wrong = AttachToken(PeerToken::new("not-the-cluster-token-0123").unwrap());
    let err = PeerClient::with_interceptor(connect(&peer_addr).await, wrong)
        .raft(batch(77, &[heartbeat(77)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // A token holder's forgeries: accepted on the wire, dropped by the
    // Raft thread.
    let mut peer = c.peer(0).await;
    for (from, m) in [
        (77, heartbeat(77)),
        (1, heartbeat(1)),
        (77, propose(77)),
        (1, propose(1)),
        (77, snapshot(77)),
    ] {
        peer.raft(batch(from, &[m])).await.unwrap();
    }
    // A batch whose message names another sender is refused whole.
    let err = peer.raft(batch(2, &[heartbeat(77)])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Membership changes raft would refuse are refused before proposing.
    let mut admin = c.admin(0).await;
    let err = admin.remove(MemberRequest { id: 1 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("last voter"), "{}", err.message());
    let err = admin
        .add_learner(AddLearnerRequest {
            id: 1,
            address: peer_addr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("already a voter"),
        "{}",
        err.message()
    );
    // A learner nobody runs never catches up: it cannot be promoted.
    admin
        .add_learner(AddLearnerRequest {
            id: 2,
            address: format!("127.0.0.1:{}", free_port()),
        })
        .await
        .unwrap();
    let err = admin.promote(MemberRequest { id: 2 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("has not caught up"),
        "{}",
        err.message()
    );
    // A learner may not lead: its heartbeat is dropped too.
    peer.raft(batch(2, &[heartbeat(2)])).await.unwrap();
    admin.remove(MemberRequest { id: 2 }).await.unwrap();

    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&c, &["kept"]).await;
    let after = c.status(0).await.unwrap();
    assert_eq!(after.term, before.term, "no forged term was taken");
    assert_eq!(after.state_hash, before.state_hash, "nothing forged stored");
    let refused = c
        .metric(0, "typha_raft_refused_messages_total")
        .await
        .unwrap();
    assert!(refused >= 6.0, "{refused}");
    assert_eq!(
        c.metric(0, "typha_raft_apply_errors_total").await,
        Some(0.0)
    );

    // Writes through the API still work and are stored here.
    apply(&c, 0, &["after".to_string()]).await.unwrap();
    check(&c, &["after", "kept"]).await;

    // Nothing forged replays at the next start.
    c.kill(0);
    c.spawn(0);
    c.wait_for_leader(Duration::from_secs(15)).await;
    check(&c, &["after", "kept"]).await;
    assert_eq!(
        c.metric(0, "typha_raft_apply_errors_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_once_the_raft_thread_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = manul_typha::server::TyphaConfig::single(dir.path().to_path_buf(), addr);
    config.metrics = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let typha = manul_typha::server::start(config).await.unwrap();
    let metrics = typha.metrics_addr.unwrap();
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(metrics).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get("/readyz").await.starts_with("HTTP/1.1 200") {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    typha.node.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("the Raft thread has stopped"), "{health}");
    assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
    typha.shutdown().await;
}
