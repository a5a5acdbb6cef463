//! The WireGuard device's desired peers and the changes that bring a
//! device from one set to another, rendered as the cross-platform UAPI
//! text (`set=1`) both the userspace device and `wg`-compatible tools
//! read. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ipnet::IpNet;

/// A Curve25519 key (public or private), 32 bytes.
pub type Key = [u8; 32];

/// What the device knows about one peer (another node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer node's address and WireGuard port.
    pub endpoint: SocketAddr,
    /// The peer's pod blocks: what is routed to it, and what it may send.
    pub allowed_ips: BTreeSet<IpNet>,
    /// Persistent keepalive in seconds; 0 is off.
    pub keepalive: u16,
}

/// One change to the device's peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    Remove(Key),
    /// Adds a peer that the device does not have. A changed peer is removed
    /// and added again (the userspace device cannot modify one in place).
    Add(Key, Peer),
}

/// The changes from `old` to `new`: removals first, each in key order.
pub fn diff(old: &BTreeMap<Key, Peer>, new: &BTreeMap<Key, Peer>) -> Vec<PeerChange> {
    let mut out = Vec::new();
    for (key, peer) in old {
        if new.get(key) != Some(peer) {
            out.push(PeerChange::Remove(*key));
        }
    }
    for (key, peer) in new {
        if old.get(key) != Some(peer) {
            out.push(PeerChange::Add(*key, peer.clone()));
        }
    }
    out
}

fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The UAPI request setting the device's private key and listening port.
pub fn uapi_device(private: &Key, port: u16) -> String {
    format!(
        "set=1\nprivate_key={}\nlisten_port={port}\n\n",
        hex(private)
    )
}

/// The UAPI request for one change (one peer per request: the userspace
/// device carries a peer's flags over to the next peer of a request).
pub fn uapi_peer(change: &PeerChange) -> String {
    match change {
        PeerChange::Remove(key) => format!("set=1\npublic_key={}\nremove=true\n\n", hex(key)),
        PeerChange::Add(key, peer) => {
            let mut out = format!(
                "set=1\npublic_key={}\nendpoint={}\nreplace_allowed_ips=true\n",
                hex(key),
                peer.endpoint
            );
            if peer.keepalive > 0 {
                out.push_str(&format!(
                    "persistent_keepalive_interval={}\n",
                    peer.keepalive
                ));
            }
            for net in &peer.allowed_ips {
                out.push_str(&format!("allowed_ip={}\n", net.trunc()));
            }
            out.push('\n');
            out
        }
    }
}

/// The UAPI answer's status: `errno=0` is success.
pub fn uapi_errno(answer: &str) -> Option<i32> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("errno="))
        .and_then(|v| v.trim().parse().ok())
}

/// IPv4 and IPv6 WireGuard overheads (Calico's): outer IP header, UDP
/// header, WireGuard header and authentication tag.
pub const OVERHEAD_V4: u32 = 60;
pub const OVERHEAD_V6: u32 = 80;

/// The device's MTU: `configured` when set (non-zero), otherwise the
/// underlay's MTU less the overhead of its address family.
pub fn mtu(configured: u32, underlay_mtu: u32, ipv6_underlay: bool) -> u32 {
    if configured != 0 {
        return configured;
    }
    let overhead = if ipv6_underlay {
        OVERHEAD_V6
    } else {
        OVERHEAD_V4
    };
    underlay_mtu.saturating_sub(overhead).max(68)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(endpoint: &str, nets: &[&str]) -> Peer {
        Peer {
            endpoint: endpoint.parse().unwrap(),
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            keepalive: 0,
        }
    }

    #[test]
    fn a_changed_peer_is_removed_then_added_and_unchanged_ones_are_left_alone() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let old = BTreeMap::from([
            (a, peer("192.168.1.1:51820", &["10.65.0.0/26"])),
            (b, peer("192.168.1.2:51820", &["10.65.0.64/26"])),
        ]);
        let new = BTreeMap::from([
            (a, peer("192.168.1.1:51820", &["10.65.0.0/26"])),
            (
                b,
                peer("192.168.1.2:51820", &["10.65.0.64/26", "10.65.1.0/26"]),
            ),
            (c, peer("192.168.1.3:51820", &[])),
        ]);
        assert_eq!(
            diff(&old, &new),
            vec![
                PeerChange::Remove(b),
                PeerChange::Add(b, new[&b].clone()),
                PeerChange::Add(c, new[&c].clone()),
            ]
        );
        assert_eq!(diff(&new, &new), vec![]);
        assert_eq!(
            diff(&new, &BTreeMap::new()),
            vec![
                PeerChange::Remove(a),
                PeerChange::Remove(b),
                PeerChange::Remove(c)
            ]
        );
    }

    #[test]
    fn uapi_requests_are_one_peer_each_with_hex_keys() {
        let mut p = peer("192.168.1.2:51820", &["10.65.0.64/26", "10.65.1.3/26"]);
        p.keepalive = 25;
        assert_eq!(
            uapi_peer(&PeerChange::Add([0xab; 32], p)),
            format!(
                "set=1\npublic_key={}\nendpoint=192.168.1.2:51820\nreplace_allowed_ips=true\n\
                 persistent_keepalive_interval=25\nallowed_ip=10.65.0.64/26\nallowed_ip=10.65.1.0/26\n\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            uapi_peer(&PeerChange::Remove([1; 32])),
            format!("set=1\npublic_key={}\nremove=true\n\n", "01".repeat(32))
        );
        assert_eq!(
            uapi_device(&[0; 32], 51820),
            format!(
                "set=1\nprivate_key={}\nlisten_port=51820\n\n",
                "00".repeat(32)
            )
        );
        assert_eq!(uapi_errno("errno=0\n\n"), Some(0));
        assert_eq!(uapi_errno("errno=22\n\n"), Some(22));
        assert_eq!(uapi_errno("garbage"), None);
    }

    #[test]
    fn the_mtu_is_the_underlays_less_the_overhead_unless_configured() {
        assert_eq!(mtu(0, 1500, false), 1440);
        assert_eq!(mtu(0, 1500, true), 1420);
        assert_eq!(mtu(0, 9000, false), 8940);
        assert_eq!(mtu(1300, 1500, false), 1300);
        assert_eq!(mtu(0, 100, true), 68);
    }
}
