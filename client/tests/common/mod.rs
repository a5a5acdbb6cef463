//! A single-node Typha in this process on a loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use manul_model::Resource;
use manul_typha::server::Running;

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
    let typha =
        manul_typha::server::start_single_loopback(dir.to_path_buf(), Duration::from_secs(10))
            .await
            .unwrap();
    let addr = typha.local_addr.to_string();
    (typha, addr)
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
