//! `manulctl apply` and `delete` against a Typha in Kubernetes mode: what
//! the Kubernetes API owns is refused with an error naming the owner and
//! exit code 2, and nothing of the request is written; what it does not
//! own (IPAM blocks) is still written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{examples, free_low_port, manulctl, text};
use manul_typha::kube::driver::KubeOptions;
use manul_typha::server::{TyphaConfig, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_delete_refuse_what_the_kubernetes_api_owns() {
    let dir = tempfile::tempdir().unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_low_port()));
    let mut config = TyphaConfig::single(dir.path().to_path_buf(), listen);
    config.peer_listen = SocketAddr::from(([127, 0, 0, 1], free_low_port()));
    config.peers = BTreeMap::from([(1, config.peer_listen.to_string())]);
    config.kube = Some(KubeOptions::default());
    let typha = start(config).await.unwrap();
    for _ in 0..500 {
        if typha.node.status().leader_id == typha.node.id() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server = typha.local_addr.to_string();

    let file = examples().join("tiers-and-sets.yaml");
    let out = manulctl(&server, &["apply", "-f", file.to_str().unwrap()]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "GlobalNetworkPolicy security.block-threats is owned by the Kubernetes API in \
             Kubernetes mode: apply it with kubectl (apiVersion projectcalico.org/v3, kind GlobalNetworkPolicy)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("Tier security is owned by the Kubernetes API"),
        "{stderr}"
    );
    let out = manulctl(&server, &["get", "gnp"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("block-threats"),
        "nothing of a refused batch is written: {}",
        text(&out.stdout)
    );

    let out = manulctl(&server, &["delete", "gnp", "security.block-threats"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is owned by the Kubernetes API"),
        "{}",
        text(&out.stderr)
    );
    let out = manulctl(&server, &["delete", "wep", "web", "-n", "shop"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("from the Kubernetes pod objects"),
        "{}",
        text(&out.stderr)
    );

    // IPAM blocks are Typha's own, also in Kubernetes mode.
    let block = dir.path().join("block.yaml");
    std::fs::write(
        &block,
        "apiVersion: projectcalico.org/v3\nkind: IPAMBlock\nmetadata:\n  name: 10-65-0-0-26\nspec:\n  cidr: 10.65.0.0/26\n  affinity: host:node-1\n",
    )
    .unwrap();
    let out = manulctl(&server, &["apply", "-f", block.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    typha.shutdown().await;
}
