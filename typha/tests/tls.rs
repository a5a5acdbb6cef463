//! Three `typha` processes with TLS on every listener: the replicas elect a
//! leader and forward writes over mutual TLS; Felix, administrators and
//! strangers are admitted or refused by their certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manul_proto::v1::cluster_client::ClusterClient;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::sync_client::SyncClient;
use manul_proto::v1::{ListRequest, ReplicaStatusRequest, StatusRequest, SyncRequest};
use manul_tls::Expected;
use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;
use tonic::transport::{Channel, Endpoint};

/// Loopback ports below 32768 that nothing listens on now.
fn low_ports(n: usize) -> Vec<u16> {
    let base = std::process::id() % 4_000;
    let mut out = Vec::new();
    let mut k = 0u32;
    while out.len() < n {
        let p = 22_000 + ((base + k * 11) % 9_000) as u16;
        k += 1;
        if !out.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            out.push(p);
        }
    }
    out
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn transport(certs: &Path, who: &str, typha_cn: &str) -> Transport {
    let settings = ClientSettings {
        ca_file: certs.join("ca.crt"),
        cert_file: certs.join(format!("{who}.crt")),
        key_file: certs.join(format!("{who}.key")),
        server: Expected::new([typha_cn.to_string()], [], "test").unwrap(),
    };
    Transport::Tls(settings.config().unwrap())
}

async fn channel(addr: &str, t: &Transport) -> Result<Channel, tonic::transport::Error> {
    let e = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    t.connect(e).await
}

/// The leader's id once every replica names the same one (asked on each
/// peer listener as an administrator).
async fn agreed_leader(peers: &[String], admin: &Transport) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for p in peers {
            let leader = match channel(p, admin).await {
                Ok(ch) => ClusterClient::new(ch)
                    .replica(ReplicaStatusRequest::default())
                    .await
                    .map_or(0, |s| s.into_inner().leader_id),
                Err(_) => 0,
            };
            leaders.push(leader);
        }
        if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_use_mutual_tls_and_clients_are_admitted_by_identity() {
    let _serial = common::SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    common::tls_typha::dev_certs(&certs);
    let ports = low_ports(9);
    let client: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
    let peer: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[3 + i]))
        .collect();
    let peers = (0..3)
        .map(|i| format!("{}={}", i + 1, peer[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs(Vec::new());
    for i in 0..3 {
        let data = tmp.path().join(format!("r{}", i + 1));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_typha"));
        cmd.args(["--node-id", &(i + 1).to_string()])
            .args(["--listen", &client[i], "--peer-listen", &peer[i]])
            .args(["--metrics", &format!("127.0.0.1:{}", ports[6 + i])])
            .arg("--data-dir")
            .arg(&data)
            .args(["--peers", &peers]);
        let child = common::tls_typha::tls_server_args(&mut cmd, &certs)
            .args(["--client-cn", "manul-felix"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    let admin = transport(&certs, "admin", "manul-typha");
    let felix = transport(&certs, "felix-node1", "manul-typha");

    // Raft over mutual TLS: a leader is elected.
    let leader = agreed_leader(&peer, &admin).await;
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
    loop {
        let list = ResourcesClient::new(ch.clone())
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner();
        if list
            .entries
            .iter()
            .any(|e| e.key.as_ref().unwrap().name == "over-tls")
        {
            break;
        }
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
