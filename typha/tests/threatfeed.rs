//! Threat feeds against a real single-voter Typha (in this process) and a
//! feed served over HTTP on loopback: the leader pulls the feed into
//! `threatfeed.NAME` with the feed's labels within one period, follows the
//! feed's changes, keeps the last good set while the server fails, reads
//! `file://` feeds, and deletes the set when the feed goes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::free_port;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::{ApplyItem, ApplyRequest, DeleteRequest, GetRequest, ResourceKey};
use manul_typha::server::{TyphaConfig, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the feed server answers: (status, body).
type Feed = Arc<Mutex<(u16, String)>>;

/// A minimal HTTP/1.1 server on loopback answering every GET with `feed`.
async fn serve(feed: Feed) -> SocketAddr {
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let feed = feed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = feed.lock().unwrap().clone();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

fn feed_doc(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalThreatFeed\nmetadata:\n  name: {name}\nspec:\n  content: IPSet\n  globalNetworkSet:\n    labels:\n      threat-feed: \"true\"\n  pull:\n    period: 1s\n    http:\n      url: {url}\n{extra}"
    )
}

async fn apply(api: &mut ResourcesClient<tonic::transport::Channel>, doc: String) {
    api.apply(ApplyRequest {
        items: vec![ApplyItem {
            document: doc.into_bytes().into(),
            origin: "test".into(),
            expected_revision: None,
        }],
        deletes: Vec::new(),
        origin: None,
    })
    .await
    .unwrap();
}

fn set_key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: "globalnetworkset".into(),
        namespace: String::new(),
        name: format!("threatfeed.{name}"),
    }
}

/// The set's `nets` (None while absent).
async fn nets(
    api: &mut ResourcesClient<tonic::transport::Channel>,
    name: &str,
) -> Option<Vec<String>> {
    let r = api
        .get(GetRequest {
            key: Some(set_key(name)),
        })
        .await
        .ok()?
        .into_inner();
    let v: serde_json::Value = serde_json::from_slice(&r.entry?.value).unwrap();
    assert_eq!(v["metadata"]["labels"]["threat-feed"], "true", "{v}");
    Some(
        v["spec"]["nets"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
    )
}

/// Waits (at most `within`) until the set's nets are `want`; how long it took.
async fn until(
    api: &mut ResourcesClient<tonic::transport::Channel>,
    name: &str,
    want: Option<&[&str]>,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = nets(api, name).await;
        if got
            .as_deref()
            .map(|v| v.iter().map(String::as_str).collect::<Vec<_>>())
            .as_deref()
            == want
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{name}: {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_are_pulled_into_labelled_sets_within_one_period() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = TyphaConfig::single(dir.path().join("data"), addr);
    config.peer_listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    config.peers = [(1, config.peer_listen.to_string())].into();
    let typha = start(config).await.unwrap();
    let mut api = loop {
        if typha.node.status().leader_id == 1
            && let Ok(c) = ResourcesClient::connect(format!("http://{addr}")).await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let feed: Feed = Arc::new(Mutex::new((
        200,
        "# list\n198.51.100.7\n203.0.113.0/24\nbogus\n".into(),
    )));
    let server = serve(feed.clone()).await;
    apply(
        &mut api,
        feed_doc("abuse", &format!("http://{server}/list.txt"), ""),
    )
    .await;
    let first = until(
        &mut api,
        "abuse",
        Some(&["198.51.100.7/32", "203.0.113.0/24"]),
        Duration::from_secs(5),
    )
    .await;
    assert!(first < Duration::from_secs(2), "first pull took {first:?}");

    // The feed changes: the set follows within one period (1 s) and a pull.
    *feed.lock().unwrap() = (200, "192.0.2.1\n".into());
    let changed = until(
        &mut api,
        "abuse",
        Some(&["192.0.2.1/32"]),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        changed < Duration::from_secs(2),
        "the change took {changed:?}"
    );

    // The server fails: the last good set stays.
    *feed.lock().unwrap() = (500, "oops".into());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(nets(&mut api, "abuse").await.unwrap(), ["192.0.2.1/32"]);

    // A file feed, in JSON.
    let path = dir.path().join("feed.json");
    std::fs::write(&path, r#"{"ips": ["10.9.8.7", "10.9.0.0/16"]}"#).unwrap();
    apply(
        &mut api,
        feed_doc(
            "local",
            &format!("file://{}", path.display()),
            "      format:\n        json:\n          path: $.ips[*]\n",
        ),
    )
    .await;
    until(
        &mut api,
        "local",
        Some(&["10.9.0.0/16", "10.9.8.7/32"]),
        Duration::from_secs(5),
    )
    .await;

    // Disabling a feed or deleting it deletes its set.
    apply(
        &mut api,
        feed_doc("local", &format!("file://{}", path.display()), "")
            .replace("content: IPSet", "content: IPSet\n  mode: Disabled"),
    )
    .await;
    until(&mut api, "local", None, Duration::from_secs(5)).await;
    api.delete(DeleteRequest {
        keys: vec![ResourceKey {
            kind: "globalthreatfeed".into(),
            namespace: String::new(),
            name: "abuse".into(),
        }],
        expected_revision: None,
        ..Default::default()
    })
    .await
    .unwrap();
    until(&mut api, "abuse", None, Duration::from_secs(5)).await;

    // The metrics counted the pulls.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &typha.registry).unwrap();
    assert!(
        text.contains("typha_threatfeed_pulls_total{feed=\"abuse\",result=\"ok\"}"),
        "{text}"
    );
    assert!(
        text.contains("typha_threatfeed_pulls_total{feed=\"abuse\",result=\"error\"}"),
        "{text}"
    );
    assert!(
        text.contains("typha_threatfeed_skipped_entries_total{feed=\"abuse\"} 1"),
        "{text}"
    );
    typha.shutdown().await;
}
