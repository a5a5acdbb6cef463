//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table
//! a dataplane fills from a service port's backends, so that a flow's hash
//! picks the same backend on every node, and removing one of N backends
//! moves few of the other backends' flows (about 1% at N = 100).
//!
//! Each backend's preference list is a permutation of the table's slots,
//! `(offset + j × skip) mod M`, with `offset` and `skip` from two hashes of
//! the backend's identity (its address and port; not `local`, which differs
//! between nodes). Backends take turns claiming their next free preferred
//! slot until the table is full, so each holds `M / N` slots, give or take
//! one. The backends are sorted first, which makes the table a function of
//! the backend set alone, not of the order it came in.
//!
//! The table size `M` is the first prime of a fixed list that is at least
//! 100 × N (the paper's bound for a near-even spread), and the hashes are
//! fixed functions (FNV-1a with two seeds, finished with a 64-bit mixer),
//! never a per-process random state: every node builds the same table.
//! Past the list's largest prime (6,553,621, for more than 65,536
//! backends) that prime is used, with a coarser spread. A change of M
//! moves every flow, so a set that grows or shrinks across a size step
//! (64 to 65 backends: 6,421 to 12,809 slots) is a full remap;
//! [`MaglevTable::with_capacity`] pins M to a planned maximum of backends
//! (as Calico's `bpfMaglevMaxEndpointsPerService` does) to avoid that.
//!
//! [`flow_hash`] is the one hash of a flow every dataplane uses to pick a
//! slot (the eBPF program computes the same function in C), so that a
//! flow lands on one backend whichever node it reaches. It reads the
//! client's address and port, the frontend's port and protocol, and the
//! frontend's address as the dataplane keys it: the service address for
//! external and load-balancer IPs, the unspecified address for a node
//! port (each node's own address differs, the table must not).

use std::net::IpAddr;

use crate::ops::Backend;

/// The table sizes, primes, each about twice the one before.
pub const TABLE_SIZES: [u32; 17] = [
    101, 211, 421, 809, 1_601, 3_203, 6_421, 12_809, 25_601, 51_203, 102_407, 204_803, 409_609,
    819_229, 1_638_431, 3_276_803, 6_553_621,
];

/// Slots per backend the table aims for at least.
pub const SLOTS_PER_BACKEND: u64 = 100;

/// The table size for `backends` backends: the first of [`TABLE_SIZES`]
/// that is at least 100 × `backends`, or the largest.
pub fn table_size(backends: usize) -> u32 {
    let wanted = (backends as u64).saturating_mul(SLOTS_PER_BACKEND);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|m| u64::from(*m) >= wanted)
        .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1])
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Two offset bases: FNV-1a's own, and one for the second hash.
const SEED_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const SEED_SKIP: u64 = 0x9e37_79b9_7f4a_7c15;

/// FNV-1a from `seed` over `bytes`, then a 64-bit finalizer (the one of
/// SplitMix64) so that every input bit reaches every output bit.
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A backend's identity as the hashes read it: a family byte, the
/// address, the port.
fn identity(b: &Backend) -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    match b.ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&b.port.to_be_bytes());
    out
}

/// The seed of [`flow_hash`] (also `MANUL_MAGLEV_FLOW_SEED` in the eBPF
/// program).
pub const FLOW_SEED: u64 = 0x6d61_6e75_6c5f_6d67;

/// SplitMix64's finalizer.
fn mix(h: u64) -> u64 {
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// An address as 16 bytes, an IPv4 one in the first four (the layout of
/// the eBPF program's parsed packet).
fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            out
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The hash of a flow that picks its slot ([`MaglevTable::index`]): from
/// [`FLOW_SEED`], each big-endian 32-bit word of the client's address,
/// then of the frontend's (16 bytes each, an IPv4 address in the first
/// four, zeros after), then `client_port << 16 | frontend_port` XORed
/// with `protocol << 32`, each XORed in and mixed with SplitMix64's
/// finalizer. `frontend` is the unspecified address for a node port.
pub fn flow_hash(
    client: IpAddr,
    frontend: IpAddr,
    client_port: u16,
    frontend_port: u16,
    protocol: u8,
) -> u64 {
    let mut h = FLOW_SEED;
    for addr in [address_bytes(client), address_bytes(frontend)] {
        for w in addr.chunks_exact(4) {
            h = mix(h ^ u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])));
        }
    }
    let ports = (u64::from(client_port) << 16) | u64::from(frontend_port);
    mix(h ^ ports ^ (u64::from(protocol) << 32))
}

/// A Maglev lookup table over a set of backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// The backends, sorted by address and port, without duplicates.
    backends: Vec<Backend>,
    /// Slot → index into `backends`; empty when there are none.
    table: Vec<u32>,
}

impl MaglevTable {
    /// The table for `backends` (in any order; a backend listed twice, or
    /// with another `local`, counts once).
    pub fn build(backends: &[Backend]) -> MaglevTable {
        Self::with_capacity(backends, 0)
    }

    /// The table for `backends`, sized for at least `capacity` backends:
    /// its size stays the same while the set has at most `capacity`.
    pub fn with_capacity(backends: &[Backend], capacity: usize) -> MaglevTable {
        let mut sorted = backends.to_vec();
        sorted.sort_by_key(|b| (b.ip, b.port));
        sorted.dedup_by_key(|b| (b.ip, b.port));
        if sorted.is_empty() {
            return MaglevTable {
                backends: sorted,
                table: Vec::new(),
            };
        }
        let m = u64::from(table_size(sorted.len().max(capacity)));
        // Each backend's (offset, skip, next j).
        let mut perm: Vec<(u64, u64, u64)> = sorted
            .iter()
            .map(|b| {
                let id = identity(b);
                let offset = hash(SEED_OFFSET, &id) % m;
                let skip = hash(SEED_SKIP, &id) % (m - 1) + 1;
                (offset, skip, 0)
            })
            .collect();
        let mut table = vec![u32::MAX; m as usize];
        let mut filled: u64 = 0;
        'fill: loop {
            for (i, (offset, skip, next)) in perm.iter_mut().enumerate() {
                // M is prime and skip in 1..M, so the preference list is a
                // permutation and a free slot is always found.
                let slot = loop {
                    let c = ((*offset + *next * *skip) % m) as usize;
                    *next += 1;
                    if table[c] == u32::MAX {
                        break c;
                    }
                };
                table[slot] = i as u32;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        MaglevTable {
            backends: sorted,
            table,
        }
    }

    /// The backend a flow with hash `hash` goes to; None without backends.
    pub fn lookup(&self, hash: u64) -> Option<&Backend> {
        let slot = self.index(hash)?;
        self.backends.get(slot as usize)
    }

    /// The index into [`MaglevTable::backends`] for `hash`.
    pub fn index(&self, hash: u64) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let slot = (hash % self.table.len() as u64) as usize;
        self.table.get(slot).copied()
    }

    /// The backends, sorted, in the order the table's indexes refer to.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Slot → backend index: what a dataplane writes into its lookup map.
    pub fn slots(&self) -> &[u32] {
        &self.table
    }

    /// The table size M (0 without backends).
    pub fn size(&self) -> usize {
        self.table.len()
    }
}

/// Of the slots that held a backend still in `after`, the fraction that
/// now hold another: the share of the surviving backends' flows that a
/// change of the backend set moves. Both tables must have one size (the
/// same M), else every slot counts as moved.
pub fn remapped_fraction(before: &MaglevTable, after: &MaglevTable) -> f64 {
    let key = |b: &Backend| (b.ip, b.port);
    let mut kept = 0u64;
    let mut moved = 0u64;
    for (slot, i) in before.table.iter().enumerate() {
        let Some(b) = before.backends.get(*i as usize) else {
            continue;
        };
        if !after.backends.iter().any(|a| key(a) == key(b)) {
            continue;
        }
        kept += 1;
        let now = after
            .table
            .get(slot)
            .and_then(|j| after.backends.get(*j as usize));
        if now.map(key) != Some(key(b)) || before.table.len() != after.table.len() {
            moved += 1;
        }
    }
    if kept == 0 {
        0.0
    } else {
        moved as f64 / kept as f64
    }
}

#[cfg(test)]
mod tests;
