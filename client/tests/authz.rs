//! The CNI plugin's IPAM under Typha's authorization, over mutual TLS: a
//! node's CNI identity allocates, releases and deletes in the blocks of
//! its own node, and is refused another node's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use manul_client::ipam::plan::Holder;
use manul_client::ipam::{AllocationRequest, Ipam};
use manul_client::{Client, ClientConfig};
use manul_tls::Expected;
use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;
use manul_tls::dev::{DevSet, write_dev_set};
use manul_typha::server::{TyphaConfig, start};
use manul_typha::tls::TlsArgs;

/// A loopback address below port 32768 that nothing listens on now.
fn low_addr(skip: u16) -> SocketAddr {
    let base = (std::process::id() % 3_000) as u16;
    (0..3_000u16)
        .map(|k| 25_000 + (base + skip * 101 + k * 17) % 7_000)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .find(|a| std::net::TcpListener::bind(a).is_ok())
        .unwrap()
}

async fn client(certs: &Path, who: &str, addr: &str) -> Client {
    let settings = ClientSettings {
        ca_file: certs.join("ca.crt"),
        cert_file: certs.join(format!("{who}.crt")),
        key_file: certs.join(format!("{who}.key")),
        server: Expected::new(["manul-typha".to_string()], [], "test").unwrap(),
    };
    let config = ClientConfig {
        transport: Transport::Tls(settings.config().unwrap()),
        ..ClientConfig::default()
    };
    Client::connect_with(&[addr], config).await.unwrap()
}

fn request(node: &str, handle: &str) -> AllocationRequest {
    AllocationRequest {
        node: node.into(),
        holder: Holder {
            handle: handle.into(),
            namespace: Some("ns".into()),
            pod: Some(handle.into()),
        },
        ip_version: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cni_identity_does_ipam_for_its_own_node_only() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    write_dev_set(
        &certs,
        &DevSet {
            typha_names: vec!["127.0.0.1".into()],
            typha_cn: "manul-typha".into(),
            nodes: vec!["n1".into(), "n2".into()],
            days: 1,
        },
    )
    .unwrap();
    let tls = TlsArgs {
        ca_file: Some(certs.join("ca.crt")),
        server_cert_file: Some(certs.join("typha.crt")),
        server_key_file: Some(certs.join("typha.key")),
        client_cn: vec!["manul-felix".into(), "manul-cni".into()],
        ..TlsArgs::default()
    }
    .build()
    .unwrap();
    let (listen, peer) = (low_addr(0), low_addr(1));
    let mut config = TyphaConfig::single(dir.path().join("data"), listen);
    config.peer_listen = peer;
    config.peers = [(1, peer.to_string())].into();
    config.tls = tls;
    let typha = start(config).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while typha.node.status().leader_id != typha.node.id() {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = listen.to_string();
    let admin = client(&certs, "admin", &addr).await;
    admin
        .apply(&[common::pool("pool", "10.65.0.0/16", 26)])
        .await
        .unwrap();
    let n1 = Ipam::new(client(&certs, "cni-n1", &addr).await);
    let n2 = Ipam::new(client(&certs, "cni-n2", &addr).await);

    // Claiming a block and allocating in it again: the plugin's own writes.
    let a = n1.allocate(&request("n1", "a")).await.unwrap();
    let b = n1.allocate(&request("n1", "b")).await.unwrap();
    assert_eq!(a.block, b.block);
    let c = n2.allocate(&request("n2", "c")).await.unwrap();
    assert_ne!(a.block, c.block);

    // Another node's addresses: refused, naming the identity.
    let refused = n1.allocate(&request("n2", "d")).await.unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("spiffe://manul/node/n1/cni may not write IPAMBlock")
            && text.contains("affine to its own node only"),
        "{text}"
    );
    let refused = n1.release("c").await.unwrap_err().to_string();
    assert!(refused.contains("it is on node n2"), "{refused}");

    // Releasing its own and deleting its emptied block.
    assert_eq!(n1.release("a").await.unwrap(), vec![a.ip]);
    assert_eq!(n1.release("b").await.unwrap(), vec![b.ip]);
    let emptied = n1
        .blocks()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.cidr == a.block)
        .unwrap();
    let other = n2
        .blocks()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.cidr == c.block)
        .unwrap();
    assert!(n2.delete_empty_block(&emptied).await.is_err());
    assert!(n1.delete_empty_block(&emptied).await.unwrap());
    assert_eq!(n2.addresses_of("c").await.unwrap(), vec![c.ip]);
    assert!(!n1.delete_empty_block(&other).await.unwrap());
    typha.shutdown().await;
}
