//! A userspace model of the kernel's lookup over a [`CompiledTable`] and
//! its address space's view ([`crate::space::Space::view`]): the same
//! longest-prefix matches, bitmap AND and Pass walk as `manul_tc.c`, done
//! by scanning. Tests compare it with the reference verdicts, and it
//! explains a decision without a kernel.

use std::net::IpAddr;

use manul_dataplane_api::Packet;

use crate::bitmap::{Bitmap, MAX_SLOTS};
use crate::compile::{CompiledTable, IpEntry, Slot, SlotAction};

const MAX_PASSES: usize = crate::abi::MANUL_MAX_PASSES as usize;

/// The slot that decides `packet` in `table`, as the kernel would find it;
/// `None` means no slot matched (the kernel drops).
pub fn decide<'t>(
    table: &'t CompiledTable,
    addr_view: &[Vec<(IpEntry, Bitmap)>; 2],
    packet: &Packet,
) -> Option<(usize, &'t Slot)> {
    let version = packet.ip_version();
    let icmp = matches!(packet.protocol, 1 | 58);
    let (icmp_type, icmp_code) = if icmp {
        (packet.icmp_type.unwrap_or(0), packet.icmp_code.unwrap_or(0))
    } else {
        (0, 0)
    };
    // The protocol trie: the entry with the most known fields that match.
    let proto = table
        .proto
        .iter()
        .filter(|(e, _)| {
            e.version == version
                && e.proto.is_none_or(|p| p == packet.protocol)
                && e.icmp_type.is_none_or(|t| t == icmp_type)
                && e.icmp_code.is_none_or(|c| c == icmp_code)
        })
        .max_by_key(|(e, _)| e.known_bytes())?;
    let mut acc = proto.1;
    for (side, addr, port) in [
        (0, packet.src, packet.src_port),
        (1, packet.dst, packet.dst_port),
    ] {
        acc.and(ip_lookup(&addr_view[side], addr)?);
        acc.and(port_lookup(table, side, addr, packet.protocol, port)?);
    }
    let mut from = 0;
    for _ in 0..MAX_PASSES {
        let i = acc.first_from(from)?;
        let slot = table.slots.get(i)?;
        if slot.action == SlotAction::Pass {
            from = slot.end as usize + 1;
            if from >= MAX_SLOTS {
                return None;
            }
            continue;
        }
        return Some((i, slot));
    }
    None
}

fn ip_lookup(entries: &[(IpEntry, Bitmap)], addr: IpAddr) -> Option<&Bitmap> {
    entries
        .iter()
        .filter(|(e, _)| match e {
            IpEntry::Root => true,
            IpEntry::Net(n) => n.contains(&addr),
        })
        .max_by_key(|(e, _)| match e {
            IpEntry::Root => -1,
            IpEntry::Net(n) => i32::from(n.prefix_len()),
        })
        .map(|(_, b)| b)
}

fn port_lookup(
    table: &CompiledTable,
    side: usize,
    addr: IpAddr,
    protocol: u8,
    port: u16,
) -> Option<&Bitmap> {
    if let Some((_, b)) = table.named[side]
        .iter()
        .find(|(t, _)| *t == (addr, protocol, port))
    {
        return Some(b);
    }
    table.port[side]
        .iter()
        .filter(|(b, _)| b.contains(port))
        .max_by_key(|(b, _)| b.prefix_len)
        .map(|(_, b)| b)
}
