//! IPAM decisions without I/O: which pools a node may use, which block to
//! allocate from (or to claim), which address in it, and what a block looks
//! like after an allocation or a release.
//!
//! Blocks are tried in address order; a node only allocates from blocks
//! affine to it (it never borrows another node's block), and claims the
//! first block of the first usable pool (pools in name order) that no
//! stored block overlaps (blocks of another size, or the single-address
//! blocks Typha records for pods after losing its data, count as claimed).
//! The first address of every block is never handed out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use manul_model::v3::{
    AllowedUse, IpPoolSpec, IpamAllocation, IpamBlockSpec, Object, host_affinity, ipam_block_name,
};

pub use manul_model::v3::{DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6};

/// A pool a node may allocate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    pub block_size: u8,
}

/// A stored block and the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub cidr: IpNet,
    pub spec: IpamBlockSpec,
    pub revision: u64,
}

impl Block {
    /// The block's resource name.
    pub fn name(&self) -> String {
        ipam_block_name(self.cidr)
    }
}

/// Where the next address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `ip` is free in the stored block `cidr`, affine to the node.
    Existing { cidr: IpNet, ip: IpAddr },
    /// No affine block has room: claim the unclaimed block `cidr` and take
    /// `ip` from it.
    Claim { cidr: IpNet, ip: IpAddr },
    /// Every usable pool is fully claimed and the node's blocks are full.
    Exhausted,
}

/// Who asks for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub handle: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

fn version(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

/// The pools, of IP version `ip_version`, a node with `node_labels` may
/// allocate workload addresses from, in name order: enabled, allowing
/// `Workload` use, and selecting the node.
pub fn usable_pools(
    pools: &[Object<IpPoolSpec>],
    node_labels: &BTreeMap<String, String>,
    ip_version: u8,
) -> Vec<Pool> {
    let mut out: Vec<Pool> = pools
        .iter()
        .filter(|p| !p.spec.disabled)
        .filter(|p| {
            p.spec.allowed_uses.is_empty() || p.spec.allowed_uses.contains(&AllowedUse::Workload)
        })
        .filter(|p| p.spec.node_selector.matches(node_labels))
        .filter_map(|p| {
            let cidr = p.spec.cidr?.net();
            let default = if version(&cidr) == 4 {
                DEFAULT_BLOCK_SIZE_V4
            } else {
                DEFAULT_BLOCK_SIZE_V6
            };
            let block_size = p.spec.block_size.unwrap_or(default).max(cidr.prefix_len());
            (version(&cidr) == ip_version).then(|| Pool {
                name: p.name().to_string(),
                cidr,
                block_size,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn addr_add(base: IpAddr, offset: u128) -> Option<IpAddr> {
    match base {
        IpAddr::V4(a) => u32::try_from(offset)
            .ok()
            .and_then(|o| u32::from(a).checked_add(o))
            .map(|v| IpAddr::V4(v.into())),
        IpAddr::V6(a) => u128::from(a)
            .checked_add(offset)
            .map(|v| IpAddr::V6(v.into())),
    }
}

fn size(cidr: &IpNet) -> u128 {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// The lowest free address of a block, never its first one.
pub fn free_address(cidr: IpNet, spec: &IpamBlockSpec) -> Option<IpAddr> {
    let used: BTreeSet<IpAddr> = spec.allocations.iter().map(|a| a.ip).collect();
    let base = cidr.network();
    (1..size(&cidr))
        .filter_map(|i| addr_add(base, i))
        .find(|ip| !used.contains(ip))
}

/// Whether `cidr` lies inside one of `pools`.
fn in_pools(cidr: &IpNet, pools: &[Pool]) -> bool {
    pools.iter().any(|p| p.cidr.contains(cidr))
}

fn bounds(net: &IpNet) -> (u128, u128) {
    let n = |ip: IpAddr| match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    (n(net.network()), n(net.broadcast()))
}

/// The address ranges stored blocks cover, per IP version, merged into
/// disjoint intervals (start → end), so a candidate block is checked in
/// logarithmic time however many blocks and subnets there are.
struct Claimed {
    v4: BTreeMap<u128, u128>,
    v6: BTreeMap<u128, u128>,
}

impl Claimed {
    fn new(blocks: &[Block]) -> Claimed {
        let mut ranges: Vec<(bool, u128, u128)> = blocks
            .iter()
            .map(|b| {
                let (lo, hi) = bounds(&b.cidr);
                (version(&b.cidr) == 4, lo, hi)
            })
            .collect();
        ranges.sort_unstable();
        let mut out = Claimed {
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
        };
        let mut last: Option<(bool, u128, u128)> = None;
        for (v4, lo, hi) in ranges {
            last = match last {
                Some((lv4, llo, lhi)) if lv4 == v4 && lo <= lhi.saturating_add(1) => {
                    Some((v4, llo, lhi.max(hi)))
                }
                Some(done) => {
                    out.insert(done);
                    Some((v4, lo, hi))
                }
                None => Some((v4, lo, hi)),
            };
        }
        if let Some(done) = last {
            out.insert(done);
        }
        out
    }

    fn insert(&mut self, (v4, lo, hi): (bool, u128, u128)) {
        let map = if v4 { &mut self.v4 } else { &mut self.v6 };
        map.insert(lo, hi);
    }

    /// Whether a stored block overlaps `c`.
    fn overlaps(&self, c: &IpNet) -> bool {
        let map = if version(c) == 4 { &self.v4 } else { &self.v6 };
        let (lo, hi) = bounds(c);
        map.range(..=hi)
            .next_back()
            .is_some_and(|(_, end)| *end >= lo)
    }
}

/// Where `node`'s next address comes from, given the usable `pools` and
/// every stored block (any affinity).
pub fn choose(node: &str, pools: &[Pool], blocks: &[Block]) -> Choice {
    let affinity = host_affinity(node);
    let mut mine: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.spec.affinity == affinity && in_pools(&b.cidr, pools))
        .collect();
    mine.sort_by_key(|b| b.cidr);
    for b in mine {
        if let Some(ip) = free_address(b.cidr, &b.spec) {
            return Choice::Existing { cidr: b.cidr, ip };
        }
    }
    let claimed = Claimed::new(blocks);
    for pool in pools {
        let Ok(subnets) = pool.cidr.subnets(pool.block_size) else {
            continue;
        };
        let free = subnets
            .filter(|c| !claimed.overlaps(c))
            .find_map(|c| free_address(c, &IpamBlockSpec::default()).map(|ip| (c, ip)));
        if let Some((cidr, ip)) = free {
            return Choice::Claim { cidr, ip };
        }
    }
    Choice::Exhausted
}

/// `spec` with `ip` allocated to `holder`.
pub fn with_allocation(spec: &IpamBlockSpec, ip: IpAddr, holder: &Holder) -> IpamBlockSpec {
    let mut spec = spec.clone();
    spec.allocations.push(IpamAllocation {
        ip,
        handle: holder.handle.clone(),
        namespace: holder.namespace.clone(),
        pod: holder.pod.clone(),
    });
    spec.allocations.sort_by_key(|a| a.ip);
    spec
}

/// A new block `cidr` affine to `node`, with nothing allocated.
pub fn new_block(cidr: IpNet, node: &str) -> IpamBlockSpec {
    IpamBlockSpec {
        cidr: Some(manul_model::v3::Cidr(cidr)),
        affinity: host_affinity(node),
        allocations: Vec::new(),
    }
}

/// `spec` without `handle`'s addresses, and those addresses; `None` when
/// the handle holds nothing in this block.
pub fn without_handle(spec: &IpamBlockSpec, handle: &str) -> Option<(IpamBlockSpec, Vec<IpAddr>)> {
    let (gone, kept): (Vec<_>, Vec<_>) = spec
        .allocations
        .iter()
        .cloned()
        .partition(|a| a.handle == handle);
    if gone.is_empty() {
        return None;
    }
    let mut spec = spec.clone();
    spec.allocations = kept;
    Some((spec, gone.into_iter().map(|a| a.ip).collect()))
}

/// Every address `handle` holds, with its block, in address order.
pub fn held_by(blocks: &[Block], handle: &str) -> Vec<(IpNet, IpAddr)> {
    let mut out: Vec<_> = blocks
        .iter()
        .flat_map(|b| {
            b.spec
                .allocations
                .iter()
                .filter(|a| a.handle == handle)
                .map(|a| (b.cidr, a.ip))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
