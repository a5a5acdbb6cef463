//! `manul_pool`: the cluster's IP pools, whose sources reaching a
//! `Local` external frontend at a host interface are pods of another node
//! (kube-proxy's `ClusterCIDR` local-traffic detection). IPv6 prefixes as
//! they are, IPv4 ones IPv4-mapped; map data only, no program reload.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{LpmTrie, MapData};
use ipnet::{IpNet, Ipv6Net};

use crate::abi;
use crate::error::BpfError;

const MAP: &str = "manul_pool";

/// The handle on `manul_pool`.
pub struct Pools(LpmTrie<MapData, abi::manul_pool_data, u32>);

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").finish_non_exhaustive()
    }
}

/// A pool as the map holds it: IPv4 IPv4-mapped (`::ffff:0:0/96` + the
/// pool's length), host bits cleared.
fn mapped(pool: IpNet) -> Option<Ipv6Net> {
    match pool.trunc() {
        IpNet::V4(n) => Ipv6Net::new(n.network().to_ipv6_mapped(), 96 + n.prefix_len()).ok(),
        IpNet::V6(n) => Some(n),
    }
}

/// The pool a mapped prefix stands for.
fn unmapped(net: Ipv6Net) -> IpNet {
    match net.network().to_ipv4_mapped() {
        Some(v4) if net.prefix_len() >= 96 => {
            match ipnet::Ipv4Net::new(v4, net.prefix_len() - 96) {
                Ok(n) => IpNet::V4(n),
                Err(_) => IpNet::V6(net),
            }
        }
        _ => IpNet::V6(net),
    }
}

fn key(net: Ipv6Net) -> Key<abi::manul_pool_data> {
    Key::new(
        u32::from(net.prefix_len()),
        abi::manul_pool_data {
            addr: net.network().octets(),
        },
    )
}

impl Pools {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let map = ebpf
            .take_map(MAP)
            .ok_or(BpfError::Missing(MAP))?
            .try_into()
            .map_err(|e| BpfError::map(MAP, "unexpected map type", e))?;
        Ok(Pools(map))
    }

    /// The prefixes the map holds, as keyed.
    fn held(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        self.0
            .keys()
            .flatten()
            .filter_map(|k| Ipv6Net::new(Ipv6Addr::from(k.data().addr), k.prefix_len() as u8).ok())
    }

    /// The pools the map holds.
    pub fn get(&self) -> BTreeSet<IpNet> {
        self.held().map(unmapped).collect()
    }

    /// Makes the map hold exactly `want`: new pools first, then the
    /// others removed (a source in both an old and a new pool is never
    /// judged external in between).
    pub fn set(&mut self, want: &BTreeSet<IpNet>) -> Result<(), BpfError> {
        let want: BTreeSet<Ipv6Net> = want.iter().copied().filter_map(mapped).collect();
        for net in &want {
            self.0
                .insert(&key(*net), 1, 0)
                .map_err(|e| BpfError::map(MAP, format!("add pool {}", unmapped(*net)), e))?;
        }
        let held: Vec<Ipv6Net> = self.held().filter(|n| !want.contains(n)).collect();
        for net in held {
            self.0
                .remove(&key(net))
                .map_err(|e| BpfError::map(MAP, format!("remove pool {}", unmapped(net)), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_map_to_the_keys_the_programs_look_up_and_back() {
        let table: [(&str, &str); 4] = [
            ("10.65.0.0/16", "::ffff:10.65.0.0/112"),
            ("10.65.1.7/24", "::ffff:10.65.1.0/120"),
            ("0.0.0.0/0", "::ffff:0.0.0.0/96"),
            ("fd00:65::/64", "fd00:65::/64"),
        ];
        for (pool, want) in table {
            let pool: IpNet = pool.parse().unwrap();
            let got = mapped(pool).unwrap();
            assert_eq!(got, want.parse::<Ipv6Net>().unwrap(), "{pool}");
            assert_eq!(unmapped(got), pool.trunc(), "{pool} back");
        }
    }
}
