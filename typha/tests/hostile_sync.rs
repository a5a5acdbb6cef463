//! A Sync client that stops reading while its HTTP/2 connection stays
//! healthy (its library answers PINGs; its window stays shut), against a
//! real `typha` process on loopback, with a history long enough that it
//! never falls behind: it is cut within the stall timeout, its connection
//! closed (counted in `typha_connections_dropped_total{reason="stalled"}`),
//! while a reading client gets every delta.
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
async fn a_client_that_stops_reading_is_cut_within_the_stall_timeout() {
    let _serial = SERIAL.lock().await;
    let flags = [
        ("--sync-stall-timeout-secs", "2"),
        ("--http2-keepalive-secs", "1"),
        ("--http2-keepalive-timeout-secs", "1"),
    ];
    let c = Cluster::start_with(
        1,
        10_000,
        flags
            .iter()
            .flat_map(|(f, v)| [(*f).to_owned(), (*v).to_owned()])
            .collect(),
    )
    .await;
    let addr = c.replicas[0].addr();

    // The staller: the smallest windows, never read.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stalled = manul_proto::v1::sync_client::SyncClient::new(channel)
        .sync(hello("staller"))
        .await
        .unwrap()
        .into_inner();
    // A reader.
    let mut reader = c
        .sync(0)
        .await
        .sync(hello("reader"))
        .await
        .unwrap()
        .into_inner();
    let (tx, mut reached) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        while let Ok(Some(message)) = reader.message().await {
            match message.message {
                Some(Message::InSync(s)) => tx.send_replace(s.revision),
                Some(Message::Deltas(d)) => tx.send_replace(d.last_revision),
                _ => continue,
            };
        }
    });

    // About 500 KiB of deltas: more than the staller's window and queue
    // hold.
    let mut resources = c.resources(0).await;
    let mut last = 0;
    let started = Instant::now();
    for k in 0..120 {
        last = resources
            .apply(common::big_set(k))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    eprintln!("120 writes in {:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(5), reached.wait_for(|r| *r >= last))
        .await
        .expect("the reader gets every delta")
        .unwrap();

    // Cut within the stall timeout (2 s) and a check interval, counted.
    let stalled_total = "typha_connections_dropped_total{reason=\"stalled\"}";
    let deadline = Instant::now() + Duration::from_secs(6);
    while c.metric(0, stalled_total).await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the staller was not cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("cut {:?} after the last write", started.elapsed());
    // Its connection is closed: what it reads now ends in an error.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the staller's stream ends");
    assert!(ended.is_some(), "the staller's stream ends with an error");
    // Only the reader is left, and it was not cut.
    assert_eq!(c.metric(0, "typha_connections_active").await, Some(1.0));
    assert_eq!(
        c.metric(0, "typha_connections_dropped_total{reason=\"fell_behind\"}")
            .await
            .unwrap_or(0.0),
        0.0
    );
    let after = resources
        .apply(common::big_set(999))
        .await
        .unwrap()
        .into_inner()
        .revision;
    tokio::time::timeout(Duration::from_secs(2), reached.wait_for(|r| *r >= after))
        .await
        .expect("the reader goes on")
        .unwrap();
}
