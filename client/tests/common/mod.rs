//! A single-node Typha in this process on a loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use manul_model::Resource;
use manul_typha::server::{Running, TyphaConfig, start};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a single-node Typha with its data in `dir` and waits until it
/// leads; returns it and its address.
pub async fn typha(dir: &std::path::Path) -> (Running, String) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let typha = start(TyphaConfig::single(dir.to_path_buf(), addr))
        .await
        .unwrap();
    for _ in 0..200 {
        if typha.node.status().leader_id == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        typha.node.status().leader_id,
        1,
        "the single node never led"
    );
    (typha, addr.to_string())
}

/// The one resource `yaml` describes.
pub fn resource(yaml: &str) -> Resource {
    let out = manul_model::load("test", yaml.as_bytes());
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    out.resources.into_iter().next().unwrap().resource
}

pub fn pool(name: &str, cidr: &str, block_size: u8) -> Resource {
    resource(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  blockSize: {block_size}\n"
    ))
}
