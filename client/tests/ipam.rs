//! IPAM against a real single-node Typha: allocators racing on one node and
//! on two nodes never hand out an address twice; pools, exhaustion,
//! repeated allocation and release.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use manul_client::Client;
use manul_client::ipam::plan::Holder;
use manul_client::ipam::{AllocationRequest, Ipam, IpamError};
use manul_model::Resource;

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

/// Allocator `name`: `tasks` concurrent tasks on their own connection, each allocating `per`
/// addresses on `node`; returns (handle, ip) pairs.
async fn allocator(
    name: &'static str,
    addr: String,
    node: &'static str,
    tasks: usize,
    per: usize,
) -> Vec<(String, IpAddr)> {
    let ipam = Ipam::new(Client::connect(&[addr]).await.unwrap());
    let mut joins = Vec::new();
    for t in 0..tasks {
        let ipam = ipam.clone();
        joins.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..per {
                let handle = format!("{name}-{t}-{i}");
                let a = ipam.allocate(&request(node, &handle)).await.unwrap();
                assert!(!a.existing);
                got.push((handle, a.ip));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for j in joins {
        all.extend(j.await.unwrap());
    }
    all
}

/// Checks that every address was handed out once and that the stored
/// blocks hold exactly what the allocators were told.
async fn assert_consistent(ipam: &Ipam, got: &[(String, IpAddr)]) {
    let unique: BTreeSet<IpAddr> = got.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(unique.len(), got.len(), "an address was handed out twice");
    let mut stored: Vec<(String, IpAddr)> = ipam
        .blocks()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|b| b.spec.allocations.into_iter().map(|a| (a.handle, a.ip)))
        .collect();
    stored.sort();
    let mut want = got.to_vec();
    want.sort();
    assert_eq!(stored, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_allocators_on_one_node_never_share_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let (typha, addr) = common::typha(dir.path()).await;
    let c = Client::connect(&[addr.as_str()]).await.unwrap();
    c.apply(&[common::pool("default", "10.65.0.0/24", 26)])
        .await
        .unwrap();

    let (a, b) = tokio::join!(
        allocator("a", addr.clone(), "node-1", 3, 25),
        allocator("b", addr.clone(), "node-1", 3, 25)
    );
    let got: Vec<_> = a.into_iter().chain(b).collect();
    assert_eq!(got.len(), 150);
    let ipam = Ipam::new(c);
    assert_consistent(&ipam, &got).await;
    let blocks = ipam.blocks().await.unwrap();
    assert_eq!(blocks.len(), 3, "150 addresses fill 3 blocks of 63");
    assert!(
        blocks
            .iter()
            .all(|b| b.spec.affine_node() == Some("node-1"))
    );
    typha.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_allocators_on_two_nodes_claim_separate_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (typha, addr) = common::typha(dir.path()).await;
    let c = Client::connect(&[addr.as_str()]).await.unwrap();
    c.apply(&[common::pool("default", "10.65.0.0/24", 26)])
        .await
        .unwrap();

    let (a, b) = tokio::join!(
        allocator("a", addr.clone(), "node-a", 2, 35),
        allocator("b", addr.clone(), "node-b", 2, 35)
    );
    let ipam = Ipam::new(c);
    let blocks = ipam.blocks().await.unwrap();
    assert_eq!(blocks.len(), 4, "70 addresses per node need 2 blocks each");
    for (node, got) in [("node-a", &a), ("node-b", &b)] {
        for (handle, ip) in got {
            let block = blocks.iter().find(|b| b.cidr.contains(ip)).unwrap();
            assert_eq!(block.spec.affine_node(), Some(node), "{handle} {ip}");
        }
    }
    let got: Vec<_> = a.into_iter().chain(b).collect();
    assert_consistent(&ipam, &got).await;

    // Pool full: the next allocation is a clear error.
    let e = ipam.allocate(&request("node-c", "late")).await.unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { .. }), "{e}");
    typha.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_repeats_exhaustion_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let (typha, addr) = common::typha(dir.path()).await;
    let c = Client::connect(&[addr.as_str()]).await.unwrap();
    let ipam = Ipam::new(c.clone());

    let e = ipam.allocate(&request("n1", "h0")).await.unwrap_err();
    assert!(matches!(e, IpamError::NoPool { .. }), "{e}");
    assert!(e.to_string().contains("no IPPool"), "{e}");

    let mut disabled = common::pool("off", "10.70.0.0/24", 26);
    if let Resource::IpPool(p) = &mut disabled {
        p.spec.disabled = true;
    }
    c.apply(&[disabled]).await.unwrap();
    let e = ipam.allocate(&request("n1", "h0")).await.unwrap_err();
    assert!(matches!(e, IpamError::NoUsablePool { .. }), "{e}");

    c.apply(&[common::pool("small", "10.66.0.0/26", 26)])
        .await
        .unwrap();
    let first = ipam.allocate(&request("n1", "h0")).await.unwrap();
    assert_eq!(
        first.ip.to_string(),
        "10.66.0.1",
        "the block's first address is skipped"
    );
    let again = ipam.allocate(&request("n1", "h0")).await.unwrap();
    assert!(again.existing);
    assert_eq!(
        again.ip, first.ip,
        "a repeated allocation returns the held address"
    );
    for i in 1..63 {
        ipam.allocate(&request("n1", &format!("h{i}")))
            .await
            .unwrap();
    }
    let e = ipam.allocate(&request("n1", "h63")).await.unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { .. }), "{e}");

    assert_eq!(ipam.addresses_of("h5").await.unwrap().len(), 1);
    let released = ipam.release("h5").await.unwrap();
    assert_eq!(released.len(), 1);
    assert!(
        ipam.release("h5").await.unwrap().is_empty(),
        "release is idempotent"
    );
    assert!(ipam.addresses_of("h5").await.unwrap().is_empty());
    let reused = ipam.allocate(&request("n1", "h63")).await.unwrap();
    assert_eq!(
        reused.ip, released[0],
        "a released address is handed out again"
    );
    typha.shutdown().await;
}
