//! WireGuard in a local cluster: turning it on (the FelixConfiguration
//! `default` with `wireguardEnabled: true`; every Felix restarts in place
//! to act on it) and waiting until every node routes the other nodes' pods
//! through its tunnel; a bulk TCP transfer between two pods, for the
//! throughput benchmark.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use manul_model::resource::{Kind, Resource, ResourceKey};
use manul_model::v3::WIREGUARD_PUBLIC_KEY_ANNOTATION;

use crate::{ClusterError, LocalCluster, PodInfo};

/// Felix's default `wireguardInterfaceName`.
pub const INTERFACE: &str = "wireguard.mnl";

/// Felix's default `wireguardListeningPort`.
pub const PORT: u16 = 51820;

fn netns_err(e: manul_netns::NetnsError) -> ClusterError {
    ClusterError::Netns(e.to_string())
}

/// Whether node `name`'s Node carries a WireGuard public key.
fn has_key(c: &LocalCluster, name: &str) -> Result<bool, ClusterError> {
    let client = c.client()?;
    let key = ResourceKey {
        kind: Kind::Node,
        namespace: None,
        name: name.to_string(),
    };
    let got = c
        .block_on(async move { client.get(&key).await })?
        .map_err(|e| ClusterError::Typha(e.to_string()))?;
    Ok(matches!(got, Some((Resource::Node(n), _)) if n
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(WIREGUARD_PUBLIC_KEY_ANNOTATION))))
}

/// Whether every node has published its key, has its WireGuard interface,
/// and routes nothing via another node's address (every other node's
/// blocks go through the tunnel).
pub fn encrypted(c: &LocalCluster) -> Result<bool, ClusterError> {
    for node in c.nodes() {
        if !has_key(c, &node.name)?
            || !manul_netns::link_exists(&node.netns, INTERFACE).map_err(netns_err)?
        {
            return Ok(false);
        }
        let routes = manul_netns::list_routes(&node.netns).map_err(netns_err)?;
        let direct = routes.iter().any(|r| {
            r.via
                .is_some_and(|via| c.nodes().iter().any(|n| IpAddr::V4(n.ip) == via))
        });
        if direct {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Turns WireGuard on for every node and waits until pod traffic between
/// nodes goes through it.
pub fn enable(c: &LocalCluster, within: Duration) -> Result<(), ClusterError> {
    c.apply_yaml(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {wireguardEnabled: true}\n",
    )?;
    let deadline = Instant::now() + within;
    while !encrypted(c)? {
        if Instant::now() > deadline {
            return Err(ClusterError::NotReady {
                what: "WireGuard on every node".into(),
                secs: within.as_secs(),
                log: c
                    .nodes()
                    .iter()
                    .map(|n| {
                        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                        let lines: Vec<&str> = text.lines().collect();
                        format!(
                            "{}:\n{}",
                            n.name,
                            lines[lines.len().saturating_sub(10)..].join("\n")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Sends as much as it can over one TCP connection from pod `from` to pod
/// `to` (a sink listening on `port` there) for `duration`; returns the
/// bytes the sink received.
pub fn bulk_tcp(
    from: &PodInfo,
    to: &PodInfo,
    port: u16,
    duration: Duration,
) -> Result<u64, ClusterError> {
    let io = |what: &str, e: std::io::Error| ClusterError::Netns(format!("{what}: {e}"));
    let listener = to
        .netns
        .run(|| TcpListener::bind(("0.0.0.0", port)))
        .map_err(netns_err)?
        .map_err(|e| io("listen in the receiving pod", e))?;
    let sink = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let target = SocketAddr::new(IpAddr::V4(to.ip), port);
    let mut conn = from
        .netns
        .run(|| TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .map_err(netns_err)?
        .map_err(|e| io("connect from the sending pod", e))?;
    let chunk = vec![0x5au8; 128 * 1024];
    let start = Instant::now();
    while start.elapsed() < duration {
        conn.write_all(&chunk).map_err(|e| io("send", e))?;
    }
    drop(conn);
    sink.join()
        .map_err(|_| ClusterError::Invalid("the receiving thread panicked".into()))?
        .map_err(|e| io("receive", e))
}
