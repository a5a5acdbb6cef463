//! A replica serves Sync clients only once it has known a Raft leader
//! since it started, against real `typha` processes on loopback: a replica
//! restarted alone from a three-voter cluster's persisted state refuses
//! them (UNAVAILABLE with the 200 ms retry hint, `typha_serving` 0) for as
//! long as it finds no leader, well past the election-timeout grace, and
//! serves once a second voter is back; a single-voter cluster serves
//! within moments of its start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SERIAL};
use manul_proto::v1::SyncRequest;
use manul_proto::v1::sync_message::Message;

fn hello(node: &str) -> SyncRequest {
    SyncRequest {
        node_name: node.into(),
        client_version: manul_proto::PROTOCOL_VERSION.into(),
        resume_revision: 0,
        accepted_compression: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_refuses_sync_until_it_knows_a_leader() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(3, 10_000).await;
    let written = common::apply(&c, 0, &["kept".to_owned()])
        .await
        .unwrap()
        .revision;
    c.wait_applied(written, Duration::from_secs(5)).await;
    for i in 0..3 {
        c.kill(i);
    }
    // Replica 1 alone, with everything it had: no leader to be found.
    c.spawn(0);
    let started = Instant::now();
    let mut refusals = 0;
    while started.elapsed() < Duration::from_secs(3) {
        match c.sync(0).await.sync(hello("early")).await {
            Ok(_) => panic!("a replica that has known no leader serves"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    status
                        .message()
                        .contains("has not known a Raft leader since it started"),
                    "{status:?}"
                );
                let hint = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .and_then(|v| v.to_str().ok());
                assert_eq!(hint, Some("200"), "{status:?}");
                refusals += 1;
            }
        }
        assert_ne!(c.metric(0, "typha_serving").await, Some(1.0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{refusals} refusals in 3 s without a leader");
    // A second voter: a leader, and the replica serves what it kept.
    c.spawn(1);
    let back = Instant::now();
    let mut stream = loop {
        match c.sync(0).await.sync(hello("later")).await {
            Ok(s) => break s.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "not serving 10 s after a second voter came back: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    eprintln!(
        "serving {:?} after a second voter came back",
        back.elapsed()
    );
    let in_sync = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await.unwrap().unwrap().message {
                Some(Message::InSync(s)) => return s.revision,
                _ => continue,
            }
        }
    })
    .await
    .expect("in sync");
    assert!(in_sync >= written, "in sync at {in_sync}, before {written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_serves_within_moments_of_its_start() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // `start` waits for the leader and for `typha_serving` 1.
    let c = Cluster::start(1, 10_000).await;
    let took = started.elapsed();
    eprintln!("a single voter serves {took:?} after its process was spawned");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let mut stream = c.sync(0).await.sync(hello("n")).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(first.message, Some(Message::Hello(_))),
        "{first:?}"
    );
}
