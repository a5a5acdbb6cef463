//! Typha as users run it: real `typha` processes on loopback, killed and
//! restarted, with real gRPC clients. Each test holds `SERIAL` so that one
//! cluster at a time competes for the machine's cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use common::{Cluster, SERIAL, apply, set_yaml};
use manul_proto::v1::peer_client::PeerClient;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{
    AddLearnerRequest, ApplyItem, ApplyRequest, EntryList, MemberRequest, RaftBatch, SyncMessage,
    SyncRequest,
};
use prost::Message as _;
use tonic::Streaming;

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Writes one resource at a time through any live replica until `deadline`,
/// returning the names that were acknowledged.
async fn write_each(c: &Cluster, names: &[String]) -> Vec<String> {
    let mut acked = Vec::new();
    for n in names {
        let i = c.alive().next().unwrap();
        if apply(c, i, std::slice::from_ref(n)).await.is_ok() {
            acked.push(n.clone());
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_elects_a_new_leader_within_3s_and_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(3, 10_000).await;
    let before = names("before", 30);
    let acked = write_each(&c, &before).await;
    assert_eq!(
        acked.len(),
        before.len(),
        "a healthy cluster acknowledges every write"
    );

    let leader = c.wait_for_leader(Duration::from_secs(5)).await;
    c.kill(leader);
    let killed_at = Instant::now();
    let survivor = c.alive().next().unwrap();
    // Retry one write until the new leader commits it.
    let probe = vec!["after-failover".to_string()];
    let committed_after = loop {
        if apply(&c, survivor, &probe).await.is_ok() {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "no new leader in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        committed_after < Duration::from_secs(3),
        "a new leader committed only after {committed_after:?}"
    );
    let more = write_each(&c, &names("after", 20)).await;
    assert_eq!(more.len(), 20);

    let leader_now = c.wait_for_leader(Duration::from_secs(5)).await;
    let rev = c.status(leader_now).await.unwrap().applied_revision;
    let statuses = c.wait_applied(rev, Duration::from_secs(5)).await;
    assert!(
        statuses
            .windows(2)
            .all(|w| w[0].state_hash == w[1].state_hash),
        "{statuses:?}"
    );
    for i in c.alive().collect::<Vec<_>>() {
        let stored = c.names(i).await;
        for n in acked.iter().chain(&more).chain(&probe) {
            assert!(
                stored.contains(n),
                "replica {i} lost acknowledged write {n}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_replica_catches_up_by_log_and_by_snapshot() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(3, 40).await;
    assert_eq!(write_each(&c, &names("a", 5)).await.len(), 5);
    let leader = c.wait_for_leader(Duration::from_secs(5)).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();

    // Log path: a few writes while it is down, far fewer than a snapshot.
    let bootstrap_snapshot = c
        .metric(follower, "typha_raft_snapshot_index")
        .await
        .unwrap();
    c.kill(follower);
    assert_eq!(write_each(&c, &names("b", 5)).await.len(), 5);
    c.spawn(follower);
    let rev = c.status(leader).await.unwrap().applied_revision;
    let s = c.wait_applied(rev, Duration::from_secs(10)).await;
    assert!(
        s.windows(2).all(|w| w[0].state_hash == w[1].state_hash),
        "{s:?}"
    );
    let snap_index = c
        .metric(follower, "typha_raft_snapshot_index")
        .await
        .unwrap();
    assert_eq!(
        snap_index, bootstrap_snapshot,
        "caught up from the log, without a snapshot"
    );

    // Snapshot path: enough writes that the leader compacts past its log.
    c.kill(follower);
    let down_at = c.status(leader).await.unwrap().applied_revision;
    assert_eq!(write_each(&c, &names("c", 100)).await.len(), 100);
    let leader_snap = c.metric(leader, "typha_raft_snapshot_index").await.unwrap();
    assert!(leader_snap > down_at as f64, "the leader compacted its log");
    c.spawn(follower);
    let rev = c.status(leader).await.unwrap().applied_revision;
    let s = c.wait_applied(rev, Duration::from_secs(15)).await;
    assert!(
        s.windows(2).all(|w| w[0].state_hash == w[1].state_hash),
        "{s:?}"
    );
    let snap_index = c
        .metric(follower, "typha_raft_snapshot_index")
        .await
        .unwrap();
    assert!(
        snap_index > down_at as f64,
        "the follower installed a snapshot"
    );
    assert_eq!(c.names(follower).await.len(), 110);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_replica_joins_at_run_time() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(3, 10_000).await;
    assert_eq!(write_each(&c, &names("x", 10)).await.len(), 10);
    let joiner = c.spawn_joiner(4);
    let addr = c.replicas[joiner].peer_addr();
    let mut admin = c.admin(0).await;
    let members = admin
        .add_learner(AddLearnerRequest {
            id: 4,
            address: addr,
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(
        members.iter().any(|m| m.id == 4 && m.learner),
        "{members:?}"
    );
    let leader = c.wait_for_leader(Duration::from_secs(5)).await;
    let rev = c.status(leader).await.unwrap().applied_revision;
    c.wait_applied(rev, Duration::from_secs(10)).await;
    assert_eq!(c.names(joiner).await.len(), 10, "the learner caught up");

    let members = admin
        .promote(MemberRequest { id: 4 })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(
        members.iter().filter(|m| !m.learner).count(),
        4,
        "{members:?}"
    );
    // With 4 voters, losing one original still leaves a quorum of 3.
    let victim = (0..3).find(|i| *i != leader).unwrap();
    c.kill(victim);
    assert_eq!(write_each(&c, &names("y", 5)).await.len(), 5);
    let rev = c.status(leader).await.unwrap().applied_revision;
    let s = c.wait_applied(rev, Duration::from_secs(10)).await;
    assert!(
        s.windows(2).all(|w| w[0].state_hash == w[1].state_hash),
        "{s:?}"
    );

    // Remove the dead member through a follower (forwarded to the leader).
    let follower = c.alive().find(|i| *i != leader).unwrap();
    let mut admin = c.admin(follower).await;
    let victim_id = c.replicas[victim].id;
    let members = admin
        .remove(MemberRequest { id: victim_id })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(!members.iter().any(|m| m.id == victim_id), "{members:?}");
    assert_eq!(members.len(), 3);
    assert_eq!(write_each(&c, &names("z", 3)).await.len(), 3);

    let bad = admin
        .add_learner(AddLearnerRequest {
            id: 0,
            address: "x".into(),
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
}

async fn sync_request(node: &str, resume: u64) -> SyncRequest {
    SyncRequest {
        node_name: node.into(),
        client_version: "test".into(),
        resume_revision: resume,
        accepted_compression: vec![],
    }
}

/// Reads until in-sync; returns (snapshot_follows, in-sync revision).
async fn until_in_sync(s: &mut Streaming<SyncMessage>) -> (bool, u64) {
    let mut follows = None;
    loop {
        match s.message().await.unwrap().unwrap().message {
            Some(Message::Hello(h)) => follows = Some(h.snapshot_follows),
            Some(Message::InSync(i)) => return (follows.unwrap(), i.revision),
            _ => {}
        }
    }
}

/// Opens a Sync stream on replica `i` as a client does: a replica that does
/// not serve yet (it has not known a leader since it started, or it is
/// still applying what it knows committed) answers UNAVAILABLE, and the
/// client asks again.
async fn open_sync(
    c: &Cluster,
    i: usize,
    request: SyncRequest,
) -> Result<tonic::Response<Streaming<SyncMessage>>, tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.sync(i).await.sync(request.clone()).await {
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

/// Reads delta entries until `n` arrived; returns their (revision, name).
async fn deltas(s: &mut Streaming<SyncMessage>, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("deltas in time")
            .unwrap()
            .unwrap();
        if let Some(Message::Deltas(b)) = m.message {
            for e in EntryList::decode(b.entries).unwrap().entries {
                out.push((e.revision, e.key.unwrap().name));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_client_resumes_on_another_replica_without_a_snapshot() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(3, 10_000).await;
    assert_eq!(write_each(&c, &names("r", 5)).await.len(), 5);
    let mut first = open_sync(&c, 0, sync_request("node-a", 0).await)
        .await
        .unwrap()
        .into_inner();
    let (follows, at) = until_in_sync(&mut first).await;
    assert!(follows);
    drop(first);

    // Written through a follower: forwarded to the leader.
    let later = names("later", 3);
    let leader = c.wait_for_leader(Duration::from_secs(5)).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let r = apply(&c, follower, &later).await.unwrap();
    assert_eq!(r.entries.len(), 3);
    let mut second = open_sync(&c, 1, sync_request("node-a", at).await)
        .await
        .unwrap()
        .into_inner();
    let (follows, resumed_at) = until_in_sync(&mut second).await;
    assert!(
        !follows,
        "no snapshot: the other replica retains the deltas after {at}"
    );
    assert_eq!(resumed_at, at);
    let got = deltas(&mut second, 3).await;
    assert_eq!(
        got.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>(),
        later
    );
    assert!(got.iter().all(|(r, _)| *r > at));
}

/// Sends raw bytes as a gRPC message, to test what a corrupt client does.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_corrupt_requests_are_rejected_without_affecting_others() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(3, 10_000).await;
    assert_eq!(write_each(&c, &names("ok", 2)).await.len(), 2);
    // The replica that acknowledged the writes has applied them: wait for
    // replica 0 too, so both are in the snapshot the sync client gets, not
    // a delta after it.
    let mut written = 0;
    for i in 0..3 {
        written = written.max(c.status(i).await.unwrap().applied_revision);
    }
    c.wait_applied(written, Duration::from_secs(5)).await;
    let mut good = open_sync(&c, 0, sync_request("good", 0).await)
        .await
        .unwrap()
        .into_inner();
    let (_, at) = until_in_sync(&mut good).await;
    let hash = c.status(0).await.unwrap().state_hash;

    // Invalid resources: INVALID_ARGUMENT naming the problem, nothing written.
    let mut res = c.resources(1).await;
    let bad = ApplyRequest {
        items: vec![
            ApplyItem {
                document: set_yaml("fine").into_bytes().into(),
                origin: "a.yaml".into(),
                expected_revision: None,
            },
            ApplyItem {
                document: set_yaml("broken")
                    .replace("10.1.2.0/24", "10.0.0.300/8")
                    .into_bytes()
                    .into(),
                origin: "b.yaml".into(),
                expected_revision: None,
            },
        ],
        deletes: Vec::new(),
        origin: None,
    };
    let err = res.apply(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("b.yaml") && err.message().contains("spec.nets[0]"),
        "{}",
        err.message()
    );
    let err = res
        .apply(ApplyRequest {
            items: vec![],
            deletes: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Optimistic concurrency: a stale expected revision changes nothing.
    let stale = ApplyRequest {
        items: vec![ApplyItem {
            document: set_yaml("ok-0").into_bytes().into(),
            origin: String::new(),
            expected_revision: Some(1),
        }],
        deletes: Vec::new(),
        origin: None,
    };
    let err = res.apply(stale).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("revision conflict"),
        "{}",
        err.message()
    );

    // Corrupt protobuf on the Sync and Peer services.
    let garbage = Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    let mut raw = tonic::client::Grpc::new(c.channel(0).await);
    raw.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/manul.v1.Sync/Sync");
    let r = raw
        .server_streaming(tonic::Request::new(garbage.clone()), path, RawCodec)
        .await;
    assert!(r.is_err(), "a corrupt SyncRequest is refused");
    let empty_name = open_sync(&c, 0, sync_request("", 0).await)
        .await
        .unwrap_err();
    assert_eq!(empty_name.code(), tonic::Code::InvalidArgument);
    // The Peer service is not on the client listener at all.
    let err = PeerClient::new(c.channel(2).await)
        .raft(RaftBatch::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let mut peer = c.peer(2).await;
    let err = peer
        .raft(RaftBatch {
            messages: vec![garbage],
            ..RaftBatch::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Nothing changed, and the good client still gets the next write.
    for i in 0..3 {
        c.wait_applied(at, Duration::from_secs(5)).await;
        assert_eq!(c.status(i).await.unwrap().state_hash, hash, "replica {i}");
    }
    let next = vec!["next".to_string()];
    assert!(apply(&c, 2, &next).await.is_ok());
    let got = deltas(&mut good, 1).await;
    assert_eq!(got[0].1, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_follower_sees_every_write_acknowledged_before_it() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(3, 10_000).await;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await;
    let followers: Vec<usize> = c.alive().filter(|&i| i != leader).collect();
    assert_eq!(followers.len(), 2);
    for (n, name) in names("ryw", 40).into_iter().enumerate() {
        apply(&c, leader, std::slice::from_ref(&name))
            .await
            .unwrap();
        // Straight after the acknowledgement, on a follower: no stale read.
        let follower = followers[n % 2];
        let got = c
            .resources(follower)
            .await
            .get(manul_proto::v1::GetRequest {
                key: Some(manul_proto::v1::ResourceKey {
                    kind: "globalnetworkset".into(),
                    namespace: String::new(),
                    name: name.clone(),
                }),
            })
            .await;
        assert!(
            got.is_ok(),
            "{name} not visible on follower {follower}: {got:?}"
        );
    }
}
