//! Connection tracking in userspace: timeouts by protocol and state, and the
//! garbage collection that applies them (the kernel's LRU only evicts when
//! the map is full).

use std::net::IpAddr;
use std::time::Duration;

use aya::maps::{HashMap, MapData};
use serde::Serialize;

use crate::abi;
use crate::error::BpfError;
use crate::keys::addr_from;

/// Idle timeouts (Calico's eBPF defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackTimeouts {
    /// TCP before the responder answered.
    pub tcp_pre_established: Duration,
    pub tcp_established: Duration,
    /// TCP after both sides sent FIN.
    pub tcp_fins_seen: Duration,
    pub tcp_reset_seen: Duration,
    pub udp: Duration,
    pub icmp: Duration,
    pub generic: Duration,
    /// Remembered denials (they are re-evaluated anyway when the policy
    /// changes).
    pub denied: Duration,
}

impl Default for ConntrackTimeouts {
    fn default() -> Self {
        Self {
            tcp_pre_established: Duration::from_secs(20),
            tcp_established: Duration::from_secs(3600),
            tcp_fins_seen: Duration::from_secs(30),
            tcp_reset_seen: Duration::from_secs(40),
            udp: Duration::from_secs(60),
            icmp: Duration::from_secs(5),
            generic: Duration::from_secs(600),
            denied: Duration::from_secs(5),
        }
    }
}

impl ConntrackTimeouts {
    /// The idle timeout that applies to an entry.
    pub fn for_entry(&self, key: &abi::manul_ct_key, v: &abi::manul_ct_value) -> Duration {
        if u32::from(v.state) == abi::MANUL_CT_DENIED {
            return self.denied;
        }
        let f = u32::from(v.tcp_flags);
        match key.proto {
            6 if f & abi::MANUL_TCP_RST != 0 => self.tcp_reset_seen,
            6 if f & abi::MANUL_TCP_FIN_FWD != 0 && f & abi::MANUL_TCP_FIN_REV != 0 => {
                self.tcp_fins_seen
            }
            6 if f & (abi::MANUL_TCP_SYN_REV | abi::MANUL_TCP_ACK_REV) != 0 => self.tcp_established,
            6 => self.tcp_pre_established,
            17 => self.udp,
            1 | 58 => self.icmp,
            _ => self.generic,
        }
    }

    /// Whether the entry has been idle longer than its timeout at `now`
    /// (CLOCK_MONOTONIC, like `bpf_ktime_get_ns`).
    pub fn expired(&self, key: &abi::manul_ct_key, v: &abi::manul_ct_value, now: Duration) -> bool {
        let idle = now.saturating_sub(Duration::from_nanos(v.last_seen_ns));
        idle > self.for_entry(key, v)
    }
}

/// The kernel's clock (CLOCK_MONOTONIC), for [`crate::BpfDriver::gc`].
pub fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

/// One conntrack entry, readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConntrackEntry {
    pub ifindex: u32,
    pub protocol: u8,
    /// The originator's address and port.
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub allowed: bool,
    pub packets_orig: u64,
    pub packets_reply: u64,
    pub bytes_orig: u64,
    pub bytes_reply: u64,
    pub tcp_flags: u8,
}

impl ConntrackEntry {
    pub fn new(k: &abi::manul_ct_key, v: &abi::manul_ct_value) -> Self {
        let a = addr_from(k.version, &k.addr_a);
        let b = addr_from(k.version, &k.addr_b);
        let (pa, pb) = (u16::from_be(k.port_a), u16::from_be(k.port_b));
        let ((src, src_port), (dst, dst_port)) = if v.orig_is_a != 0 {
            ((a, pa), (b, pb))
        } else {
            ((b, pb), (a, pa))
        };
        Self {
            ifindex: k.ifindex,
            protocol: k.proto,
            src,
            src_port,
            dst,
            dst_port,
            allowed: u32::from(v.state) == abi::MANUL_CT_ALLOWED,
            packets_orig: v.packets[0],
            packets_reply: v.packets[1],
            bytes_orig: v.bytes[0],
            bytes_reply: v.bytes[1],
            tcp_flags: v.tcp_flags,
        }
    }
}

/// What one garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcStats {
    pub scanned: usize,
    pub removed: usize,
}

/// Removes the entries idle past their timeout.
pub fn gc(
    map: &mut HashMap<MapData, abi::manul_ct_key, abi::manul_ct_value>,
    timeouts: &ConntrackTimeouts,
    now: Duration,
) -> Result<GcStats, BpfError> {
    gc_visit(map, timeouts, now, |_, _, _| {})
}

/// [`gc`], showing `visit` every entry scanned and whether it expired
/// (the flow tracker's scan).
pub fn gc_visit(
    map: &mut HashMap<MapData, abi::manul_ct_key, abi::manul_ct_value>,
    timeouts: &ConntrackTimeouts,
    now: Duration,
    mut visit: impl FnMut(&abi::manul_ct_key, &abi::manul_ct_value, bool),
) -> Result<GcStats, BpfError> {
    let mut stats = GcStats::default();
    let mut expired = Vec::new();
    for item in map.iter() {
        let (k, v) = item.map_err(|e| BpfError::map("manul_ct", "iterate", e))?;
        stats.scanned += 1;
        let gone = timeouts.expired(&k, &v, now);
        visit(&k, &v, gone);
        if gone {
            expired.push(k);
        }
    }
    for k in expired {
        if map.remove(&k).is_ok() {
            stats.removed += 1;
        }
    }
    Ok(stats)
}

/// Every entry.
pub fn entries(
    map: &HashMap<MapData, abi::manul_ct_key, abi::manul_ct_value>,
) -> Vec<ConntrackEntry> {
    map.iter()
        .filter_map(Result::ok)
        .map(|(k, v)| ConntrackEntry::new(&k, &v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_protocol_and_state() {
        let t = ConntrackTimeouts::default();
        let key = abi::manul_ct_key {
            proto: 6,
            ..Default::default()
        };
        let mut v = abi::manul_ct_value {
            state: abi::MANUL_CT_ALLOWED as u8,
            last_seen_ns: 1_000_000_000,
            tcp_flags: abi::MANUL_TCP_SYN_FWD as u8,
            ..Default::default()
        };
        assert_eq!(t.for_entry(&key, &v), t.tcp_pre_established);
        assert!(!t.expired(&key, &v, Duration::from_secs(20)));
        assert!(t.expired(&key, &v, Duration::from_secs(22)));
        v.tcp_flags |= abi::MANUL_TCP_SYN_REV as u8;
        assert_eq!(t.for_entry(&key, &v), t.tcp_established);
        v.tcp_flags |= (abi::MANUL_TCP_FIN_FWD | abi::MANUL_TCP_FIN_REV) as u8;
        assert_eq!(t.for_entry(&key, &v), t.tcp_fins_seen);
        v.tcp_flags |= abi::MANUL_TCP_RST as u8;
        assert_eq!(t.for_entry(&key, &v), t.tcp_reset_seen);
        let udp = abi::manul_ct_key {
            proto: 17,
            ..Default::default()
        };
        assert_eq!(t.for_entry(&udp, &v), t.udp);
        v.state = abi::MANUL_CT_DENIED as u8;
        assert_eq!(t.for_entry(&udp, &v), t.denied);
    }
}
