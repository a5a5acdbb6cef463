//! The connect-time load balancer's own maps, both families (keys and
//! values in `bpf/manul_ctlb.h`), and what the driver does to them: the
//! node's addresses for node ports, the network namespaces whose sockets
//! are translated, and, when backends leave their lists,
//! the namespaces' affinity to them forgotten, the connected sockets
//! given them listed for the iterators, and what `getpeername` and
//! `recvmsg` answered for them dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::Ebpf;
use aya::maps::{HashMap, MapData};

use crate::abi;
use crate::error::BpfError;
use crate::services::plan::{BackendAddr, PROTO_TCP, PROTO_UDP};

/// Backends that left their lists: list id → backends.
pub type Gone = BTreeMap<u32, BTreeSet<BackendAddr>>;

pub struct CtlbMaps {
    sock: HashMap<MapData, abi::manul_ctlb_sock_key, abi::manul_ctlb_sock_value>,
    conn: HashMap<MapData, u64, abi::manul_ctlb_conn_value>,
    aff: HashMap<MapData, abi::manul_ctlb_aff_key, abi::manul_svc_aff_value>,
    kill: HashMap<MapData, u64, abi::manul_ctlb_kill_value>,
    local: HashMap<MapData, u32, u32>,
    sock6: HashMap<MapData, abi::manul_ctlb_sock6_key, abi::manul_ctlb_sock6_value>,
    conn6: HashMap<MapData, u64, abi::manul_ctlb_conn6_value>,
    aff6: HashMap<MapData, abi::manul_ctlb_aff_key, abi::manul_svc_aff6_value>,
    kill6: HashMap<MapData, u64, abi::manul_ctlb_kill6_value>,
    local6: HashMap<MapData, abi::manul_ctlb_local6_key, u32>,
    netns: HashMap<MapData, u64, u32>,
}

fn take<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, BpfError> {
    ebpf.take_map(name)
        .ok_or(BpfError::Missing(name))?
        .try_into()
        .map_err(|e| BpfError::map(name, "unexpected map type", e))
}

/// An IPv4 backend as the maps hold it (address and port in network
/// order).
fn backend4(addr: u32, port: u16) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V4(Ipv4Addr::from(addr.to_ne_bytes())),
        port: u16::from_be(port),
    }
}

/// An IPv6 backend as the maps hold it.
fn backend6(addr: [u8; 16], port: u16) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V6(Ipv6Addr::from(addr)),
        port: u16::from_be(port),
    }
}

fn is_gone(gone: &Gone, id: u32, backend: BackendAddr) -> bool {
    gone.get(&id).is_some_and(|s| s.contains(&backend))
}

fn translated(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_UDP
}

/// Makes `map` hold exactly the keys `want` (values 1).
fn sync_set<K: aya::Pod + PartialEq>(
    map: &mut HashMap<MapData, K, u32>,
    name: &'static str,
    want: &[(K, String)],
) -> Result<(), BpfError> {
    for (k, shown) in want {
        map.insert(k, 1, 0)
            .map_err(|e| BpfError::map(name, format!("add {shown}"), e))?;
    }
    let stale: Vec<K> = map
        .keys()
        .flatten()
        .filter(|k| !want.iter().any(|(w, _)| w == k))
        .collect();
    for k in stale {
        let _ = map.remove(&k);
    }
    Ok(())
}

/// The addresses node ports are reached on, of both families: every
/// address of `addrs` but loopback ones.
pub fn node_addresses(addrs: impl IntoIterator<Item = IpAddr>) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for ip in addrs {
        match ip {
            IpAddr::V4(ip) if !ip.is_loopback() => {
                v4.insert(ip);
            }
            IpAddr::V6(ip) if !ip.is_loopback() => {
                v6.insert(ip);
            }
            _ => {}
        }
    }
    (v4.into_iter().collect(), v6.into_iter().collect())
}

impl CtlbMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        Ok(Self {
            sock: take(ebpf, "manul_ctlb_sock")?,
            conn: take(ebpf, "manul_ctlb_conn")?,
            aff: take(ebpf, "manul_ctlb_aff")?,
            kill: take(ebpf, "manul_ctlb_kill")?,
            local: take(ebpf, "manul_ctlb_local")?,
            sock6: take(ebpf, "manul_ctlb_sock6")?,
            conn6: take(ebpf, "manul_ctlb_conn6")?,
            aff6: take(ebpf, "manul_ctlb_aff6")?,
            kill6: take(ebpf, "manul_ctlb_kill6")?,
            local6: take(ebpf, "manul_ctlb_local6")?,
            netns: take(ebpf, "manul_ctlb_netns")?,
        })
    }

    /// Makes `manul_ctlb_local` and `manul_ctlb_local6` hold `v4` and
    /// `v6`.
    pub fn set_local(&mut self, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Result<(), BpfError> {
        let want4: Vec<(u32, String)> = v4
            .iter()
            .map(|ip| (u32::from_ne_bytes(ip.octets()), ip.to_string()))
            .collect();
        sync_set(&mut self.local, "manul_ctlb_local", &want4)?;
        let want6: Vec<(abi::manul_ctlb_local6_key, String)> = v6
            .iter()
            .map(|ip| {
                (
                    abi::manul_ctlb_local6_key { addr: ip.octets() },
                    ip.to_string(),
                )
            })
            .collect();
        sync_set(&mut self.local6, "manul_ctlb_local6", &want6)
    }

    /// Adds one namespace to those served (`manul_ctlb_netns`), leaving
    /// the others.
    pub fn serve(&mut self, cookie: u64, kind: u32) -> Result<(), BpfError> {
        self.netns
            .insert(cookie, kind, 0)
            .map_err(|e| BpfError::map("manul_ctlb_netns", format!("add namespace {cookie}"), e))
    }

    /// Makes `manul_ctlb_netns` hold exactly `want` (cookie → kind):
    /// additions first, so a namespace served before and after is never
    /// missing.
    pub fn set_served(&mut self, want: &BTreeMap<u64, u32>) -> Result<(), BpfError> {
        for (cookie, kind) in want {
            self.serve(*cookie, *kind)?;
        }
        let stale: Vec<u64> = self
            .netns
            .keys()
            .flatten()
            .filter(|k| !want.contains_key(k))
            .collect();
        for k in stale {
            let _ = self.netns.remove(&k);
        }
        Ok(())
    }

    /// Forgets the namespaces' affinity to the backends that left.
    pub fn forget_affinity(&mut self, gone: &Gone) {
        let aff: Vec<_> = self
            .aff
            .iter()
            .flatten()
            .filter(|(k, v)| is_gone(gone, k.id, backend4(v.addr, v.port)))
            .map(|(k, _)| k)
            .collect();
        for k in aff {
            let _ = self.aff.remove(&k);
        }
        let aff6: Vec<_> = self
            .aff6
            .iter()
            .flatten()
            .filter(|(k, v)| is_gone(gone, k.id, backend6(v.addr, v.port)))
            .map(|(k, _)| k)
            .collect();
        for k in aff6 {
            let _ = self.aff6.remove(&k);
        }
    }

    /// Lists the live connected sockets given a backend that left in
    /// `manul_ctlb_kill` / `manul_ctlb_kill6` (with the backend, so that a
    /// socket connected elsewhere since is spared); how many were listed.
    pub fn list_victims(&mut self, gone: &Gone) -> usize {
        let mut listed = 0;
        let victims: Vec<_> = self
            .conn
            .iter()
            .flatten()
            .filter(|(_, v)| translated(v.proto) && is_gone(gone, v.id, backend4(v.addr, v.port)))
            .collect();
        for (cookie, v) in &victims {
            let target = abi::manul_ctlb_kill_value {
                addr: v.addr,
                port: v.port,
                pad: 0,
            };
            listed += usize::from(self.kill.insert(cookie, target, 0).is_ok());
        }
        let victims6: Vec<_> = self
            .conn6
            .iter()
            .flatten()
            .filter(|(_, v)| translated(v.proto) && is_gone(gone, v.id, backend6(v.addr, v.port)))
            .collect();
        for (cookie, v) in &victims6 {
            let target = abi::manul_ctlb_kill6_value {
                addr: v.addr,
                port: v.port,
                pad: 0,
            };
            listed += usize::from(self.kill6.insert(cookie, target, 0).is_ok());
        }
        listed
    }

    /// Whether a listed socket is still to be found.
    pub fn victims_left(&self) -> bool {
        self.kill.keys().next().is_some() || self.kill6.keys().next().is_some()
    }

    /// Empties the kill lists (sockets closed before an iterator met
    /// them); how many entries were left.
    pub fn clear_victims(&mut self) -> usize {
        let left: Vec<u64> = self.kill.keys().flatten().collect();
        for k in &left {
            let _ = self.kill.remove(k);
        }
        let left6: Vec<u64> = self.kill6.keys().flatten().collect();
        for k in &left6 {
            let _ = self.kill6.remove(k);
        }
        left.len() + left6.len()
    }

    /// Drops what `getpeername` and `recvmsg` answered for the backends
    /// that left.
    pub fn forget_sockets(&mut self, gone: &Gone) {
        let stale: Vec<_> = self
            .sock
            .iter()
            .flatten()
            .filter(|(k, v)| is_gone(gone, v.id, backend4(k.addr, k.port)))
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = self.sock.remove(&k);
        }
        let stale6: Vec<_> = self
            .sock6
            .iter()
            .flatten()
            .filter(|(k, v)| is_gone(gone, v.id, backend6(k.addr, k.port)))
            .map(|(k, _)| k)
            .collect();
        for k in stale6 {
            let _ = self.sock6.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_leave_out_loopback_of_both_families() {
        let (v4, v6) = node_addresses([
            "127.0.0.1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            "::1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        ]);
        assert_eq!(v4, vec![Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(v6, vec!["fd00::1".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn backends_read_from_the_maps_compare_with_the_plans() {
        let mut gone = Gone::new();
        gone.insert(
            7,
            [
                BackendAddr {
                    addr: "10.1.2.3".parse().unwrap(),
                    port: 8080,
                },
                BackendAddr {
                    addr: "fd00::5".parse().unwrap(),
                    port: 53,
                },
            ]
            .into(),
        );
        let v4 = u32::from_ne_bytes([10, 1, 2, 3]);
        assert!(is_gone(&gone, 7, backend4(v4, 8080u16.to_be())));
        assert!(!is_gone(&gone, 8, backend4(v4, 8080u16.to_be())));
        let v6 = "fd00::5".parse::<Ipv6Addr>().unwrap().octets();
        assert!(is_gone(&gone, 7, backend6(v6, 53u16.to_be())));
        assert!(!is_gone(&gone, 7, backend6(v6, 54u16.to_be())));
    }
}
