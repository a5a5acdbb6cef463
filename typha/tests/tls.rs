//! Three `typha` processes with TLS on every listener: the replicas elect a
//! leader and forward writes over mutual TLS; Felix, administrators and
//! strangers are admitted or refused by their certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::sync_client::SyncClient;
use manul_proto::v1::{ListRequest, StatusRequest, SyncRequest};
use manul_tls::connect::Transport;

use common::tls_replicas::{TlsReplicas, agreed_leader, channel};
use common::tls_typha::transport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_use_mutual_tls_and_clients_are_admitted_by_identity() {
    let _serial = common::SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    common::tls_typha::dev_certs(&certs);
    let replicas = TlsReplicas::start(tmp.path(), &certs, |_, cmd| {
        cmd.args(["--client-cn", "manul-felix"]);
    });
    let (client, peer) = (&replicas.client, &replicas.peer);
    let admin = transport(&certs, "admin", "manul-typha");
    let felix = transport(&certs, "felix-node1", "manul-typha");

    // Raft over mutual TLS: a leader is elected.
    let leader = agreed_leader(peer, &admin).await;
    // With TLS no peer token is written.
    assert!(!tmp.path().join("r1/peer-token").exists());

    // A write on a follower is forwarded to the leader over mutual TLS.
    let follower = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    let mut api = ResourcesClient::new(channel(&client[follower], &admin).await.unwrap());
    api.apply(common::apply_request(&["over-tls".into()]))
        .await
        .unwrap();

    // Felix's identity reads and syncs on the client listener.
    let other = (follower + 1) % 3;
    let ch = channel(&client[other], &felix).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::names(&mut ResourcesClient::new(ch.clone()))
        .await
        .iter()
        .any(|n| n == "over-tls")
    {
        assert!(
            Instant::now() < deadline,
            "the write never reached replica {other}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A replica that has not served yet (no leader known since it started,
    // or still applying what it knows committed) answers UNAVAILABLE, and
    // a client asks again, as Felix does.
    let request = SyncRequest {
        node_name: "node1".into(),
        client_version: manul_proto::PROTOCOL_VERSION.into(),
        ..SyncRequest::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match SyncClient::new(ch.clone()).sync(request.clone()).await {
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => break r.unwrap().into_inner(),
        }
    };
    assert!(stream.message().await.unwrap().is_some());

    // Felix's identity is not a replica's or an administrator's: refused on
    // the peer listener.
    let refused = match channel(&peer[0], &felix).await {
        Ok(ch) => ClusterClient::new(ch)
            .status(StatusRequest {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(
        refused,
        "Felix's certificate was admitted on the peer listener"
    );

    // Plaintext, even with the peer token, is refused on both listeners.
    for addr in [&client[0], &peer[0]] {
        let plain = match channel(addr, &Transport::Plain).await {
            Ok(ch) => {
                let token = manul_typha::peer_auth::PeerToken::new(common::TOKEN).unwrap();
                ResourcesClient::new(ch)
                    .list(token.request(ListRequest::default()))
                    .await
                    .is_err()
            }
            Err(_) => true,
        };
        assert!(plain, "a plaintext client was served on {addr}");
    }

    // A client that expects another Typha name refuses this one.
    let wrong = transport(&certs, "felix-node1", "another-typha");
    let e = channel(&client[0], &wrong).await.unwrap_err();
    let chain = format!("{:?}", e);
    assert!(chain.contains("another-typha"), "{chain}");
}
