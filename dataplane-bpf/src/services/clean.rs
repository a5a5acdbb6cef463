//! Forgetting what clients had of backends that left their lists, in
//! either family's maps: affinity entries deleted, UDP and SCTP flows'
//! NAT entries deleted (the next packet picks a live backend), TCP
//! connections' forward entries marked for a reset (the program answers
//! the client's next packet with a RST). One walk of each map.

use std::collections::{BTreeMap, BTreeSet};

use super::maps::{Hash, backend_of, backend6_of, hairpin_snat_v6};
use super::plan::{BackendAddr, PROTO_SCTP, PROTO_UDP};
use crate::abi;

/// One family's NAT conntrack and affinity entries, as [`clean`] reads
/// and rewrites them.
pub trait Family {
    type AffKey: aya::Pod;
    type AffValue: aya::Pod;
    type NatKey: aya::Pod;
    type NatValue: aya::Pod;
    /// The list id and backend an affinity entry holds.
    fn affinity(k: &Self::AffKey, v: &Self::AffValue) -> (u32, BackendAddr);
    /// A forward entry's protocol, list id and backend (`None`: another
    /// direction).
    fn forward(k: &Self::NatKey, v: &Self::NatValue) -> Option<(u8, u32, BackendAddr)>;
    /// The entries of a forward entry's flow besides it: the reverse one
    /// (to the hairpin address for a hairpinned flow), and a masqueraded
    /// flow's.
    fn others(k: &Self::NatKey, v: &Self::NatValue) -> Vec<Self::NatKey>;
    fn mark_reset(v: &mut Self::NatValue);
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    type AffKey = abi::manul_svc_aff_key;
    type AffValue = abi::manul_svc_aff_value;
    type NatKey = abi::manul_nat_key;
    type NatValue = abi::manul_nat_value;

    fn affinity(k: &Self::AffKey, v: &Self::AffValue) -> (u32, BackendAddr) {
        (k.id, backend_of(v.addr, v.port))
    }

    fn forward(k: &Self::NatKey, v: &Self::NatValue) -> Option<(u8, u32, BackendAddr)> {
        (k.dir == abi::MANUL_NAT_FWD as u8).then(|| (k.proto, v.id, backend_of(v.addr, v.port)))
    }

    fn others(k: &Self::NatKey, v: &Self::NatValue) -> Vec<Self::NatKey> {
        let mut out = vec![abi::manul_nat_key {
            src: v.addr,
            dst: if v.flags & abi::MANUL_NAT_HAIRPIN != 0 {
                abi::MANUL_HAIRPIN_SNAT_V4.to_be()
            } else {
                k.src
            },
            sport: v.port,
            dport: k.sport,
            proto: k.proto,
            // A host process's reply entry (bpf/manul_svc_host.h).
            dir: if v.flags & abi::MANUL_NAT_FROM_HOST != 0 {
                abi::MANUL_NAT_HOST_REV as u8
            } else {
                abi::MANUL_NAT_REV as u8
            },
            pad: 0,
        }];
        if v.flags & abi::MANUL_NAT_SNAT != 0 {
            out.push(abi::manul_nat_key {
                src: v.addr,
                dst: v.snat_addr,
                sport: v.port,
                dport: v.snat_port,
                proto: k.proto,
                dir: abi::MANUL_NAT_SNAT_REV as u8,
                pad: 0,
            });
        }
        out
    }

    fn mark_reset(v: &mut Self::NatValue) {
        v.flags |= abi::MANUL_NAT_RESET;
    }
}

impl Family for V6 {
    type AffKey = abi::manul_svc_aff6_key;
    type AffValue = abi::manul_svc_aff6_value;
    type NatKey = abi::manul_nat6_key;
    type NatValue = abi::manul_nat6_value;

    fn affinity(k: &Self::AffKey, v: &Self::AffValue) -> (u32, BackendAddr) {
        (k.id, backend6_of(v.addr, v.port))
    }

    fn forward(k: &Self::NatKey, v: &Self::NatValue) -> Option<(u8, u32, BackendAddr)> {
        (k.dir == abi::MANUL_NAT_FWD as u8).then(|| (k.proto, v.id, backend6_of(v.addr, v.port)))
    }

    fn others(k: &Self::NatKey, v: &Self::NatValue) -> Vec<Self::NatKey> {
        let mut out = vec![abi::manul_nat6_key {
            src: v.addr,
            dst: if v.flags & abi::MANUL_NAT_HAIRPIN != 0 {
                hairpin_snat_v6()
            } else {
                k.src
            },
            sport: v.port,
            dport: k.sport,
            proto: k.proto,
            // A host process's reply entry (bpf/manul_svc_host.h).
            dir: if v.flags & abi::MANUL_NAT_FROM_HOST != 0 {
                abi::MANUL_NAT_HOST_REV as u8
            } else {
                abi::MANUL_NAT_REV as u8
            },
            pad: 0,
        }];
        if v.flags & abi::MANUL_NAT_SNAT != 0 {
            out.push(abi::manul_nat6_key {
                src: v.addr,
                dst: v.snat_addr,
                sport: v.port,
                dport: v.snat_port,
                proto: k.proto,
                dir: abi::MANUL_NAT_SNAT_REV as u8,
                pad: 0,
            });
        }
        out
    }

    fn mark_reset(v: &mut Self::NatValue) {
        v.flags |= abi::MANUL_NAT_RESET;
    }
}

/// [`super::maps::ServiceMaps::clean`] for one family's maps.
pub fn clean<F: Family>(
    aff: &mut Hash<F::AffKey, F::AffValue>,
    nat: &mut Hash<F::NatKey, F::NatValue>,
    gone: &BTreeMap<u32, BTreeSet<BackendAddr>>,
) -> usize {
    let is_gone = |(id, b): (u32, BackendAddr)| gone.get(&id).is_some_and(|s| s.contains(&b));
    let stale: Vec<F::AffKey> = aff
        .iter()
        .flatten()
        .filter(|(k, v)| is_gone(F::affinity(k, v)))
        .map(|(k, _)| k)
        .collect();
    let mut flows = Vec::new();
    let mut reset = Vec::new();
    for (k, v) in nat.iter().flatten() {
        let Some((proto, id, b)) = F::forward(&k, &v) else {
            continue;
        };
        if !is_gone((id, b)) {
            continue;
        }
        // TCP gets a RST; UDP and SCTP flows pick a live backend with
        // their next packet (an SCTP association finds none there and is
        // aborted by the new peer).
        if proto != PROTO_UDP && proto != PROTO_SCTP {
            reset.push((k, v));
            continue;
        }
        flows.extend(F::others(&k, &v));
        flows.push(k);
    }
    let mut removed = 0;
    for k in &stale {
        removed += usize::from(aff.remove(k).is_ok());
    }
    for k in &flows {
        removed += usize::from(nat.remove(k).is_ok());
    }
    for (k, mut v) in reset {
        F::mark_reset(&mut v);
        // Only while it exists (BPF_EXIST): a connection gone meanwhile
        // must not come back as one to reset.
        removed += usize::from(nat.insert(k, v, 2).is_ok());
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_processs_flow_forgets_its_host_reply_entry_in_either_family() {
        for (flags, dir) in [
            (abi::MANUL_NAT_FROM_HOST, abi::MANUL_NAT_HOST_REV),
            (0, abi::MANUL_NAT_REV),
        ] {
            let k4 = abi::manul_nat_key {
                src: 0x0a00_0001,
                dst: 0x0a60_0001,
                sport: 4000,
                dport: 80,
                proto: PROTO_UDP,
                dir: abi::MANUL_NAT_FWD as u8,
                ..Default::default()
            };
            let v4 = abi::manul_nat_value {
                addr: 0x0a43_0014,
                port: 8080,
                flags: flags as _,
                ..Default::default()
            };
            let rev4 = V4::others(&k4, &v4);
            assert_eq!(rev4.len(), 1);
            assert_eq!(
                (rev4[0].dir, rev4[0].src, rev4[0].dst),
                (dir as u8, v4.addr, k4.src)
            );
            let k6 = abi::manul_nat6_key {
                src: [1; 16],
                dst: [2; 16],
                sport: 4000,
                dport: 80,
                proto: PROTO_UDP,
                dir: abi::MANUL_NAT_FWD as u8,
                ..Default::default()
            };
            let v6 = abi::manul_nat6_value {
                addr: [3; 16],
                port: 8080,
                flags: flags as _,
                ..Default::default()
            };
            let rev6 = V6::others(&k6, &v6);
            assert_eq!(rev6.len(), 1);
            assert_eq!(
                (rev6[0].dir, rev6[0].src, rev6[0].dst),
                (dir as u8, v6.addr, k6.src)
            );
            assert_eq!((rev6[0].sport, rev6[0].dport), (8080, 4000));
        }
    }
}
