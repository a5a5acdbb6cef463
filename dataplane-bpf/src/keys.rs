//! Map keys and values from compiled tables: pure conversions to the layouts
//! of `manul_maps.h`.

use std::net::IpAddr;

use crate::abi;
use crate::compile::{IpEntry, PortBlock, ProtoEntry, Slot, SlotAction, SlotKind, Triple};

/// IP version and the address bytes as the kernel stores them (IPv4 in the
/// first four bytes).
pub fn addr_bytes(addr: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (4, out)
        }
        IpAddr::V6(a) => (6, a.octets()),
    }
}

/// The address back from the kernel's bytes.
pub fn addr_from(version: u8, bytes: &[u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

/// The root covers the space id and the side (40 bits).
const ADDR_ROOT_BITS: u32 = 40;

pub fn addr_key(space: u32, side: u8, entry: &IpEntry) -> (u32, abi::manul_addr_data) {
    let mut data = abi::manul_addr_data {
        space,
        side,
        ..Default::default()
    };
    match entry {
        IpEntry::Root => (ADDR_ROOT_BITS, data),
        IpEntry::Net(net) => {
            let (version, addr) = addr_bytes(net.network());
            data.version = version;
            data.addr = addr;
            (
                abi::MANUL_ADDR_KEY_BASE_BITS + u32::from(net.prefix_len()),
                data,
            )
        }
    }
}

/// A `manul_src` key: one of a workload interface's own networks.
pub fn src_key(ifindex: u32, net: &ipnet::IpNet) -> (u32, abi::manul_src_data) {
    let (version, addr) = addr_bytes(net.network());
    (
        abi::MANUL_SRC_KEY_BASE_BITS + u32::from(net.prefix_len()),
        abi::manul_src_data {
            ifindex,
            version,
            addr,
            ..Default::default()
        },
    )
}

pub fn class_key(table: u32, side: u8, class: u32) -> abi::manul_class_key {
    abi::manul_class_key {
        table,
        side,
        class_id: class,
        ..Default::default()
    }
}

pub fn port_key(table: u32, side: u8, block: &PortBlock) -> (u32, abi::manul_port_data) {
    (
        abi::MANUL_PORT_KEY_BASE_BITS + u32::from(block.prefix_len),
        abi::manul_port_data {
            table,
            side,
            pad: 0,
            port: block.first.to_be_bytes(),
        },
    )
}

pub fn proto_key(table: u32, e: &ProtoEntry) -> (u32, abi::manul_proto_data) {
    (
        abi::MANUL_PROTO_KEY_BASE_BITS + 8 * u32::from(e.known_bytes()),
        abi::manul_proto_data {
            table,
            version: e.version,
            proto: e.proto.unwrap_or(0),
            icmp_type: e.icmp_type.unwrap_or(0),
            icmp_code: e.icmp_code.unwrap_or(0),
        },
    )
}

pub fn np_key(table: u32, side: u8, (ip, proto, port): Triple) -> abi::manul_np_key {
    let (version, addr) = addr_bytes(ip);
    abi::manul_np_key {
        table,
        side,
        version,
        proto,
        port,
        addr,
        ..Default::default()
    }
}

pub fn rule_key(table: u32, index: usize) -> abi::manul_rule_key {
    abi::manul_rule_key {
        table,
        index: index as u32,
    }
}

/// The label a slot's events carry: what decided, and the rule id.
pub fn slot_labels(kind: &SlotKind) -> (String, String) {
    match kind {
        SlotKind::Policy { policy, rule_id } => (policy.to_string(), rule_id.clone()),
        SlotKind::Profile { profile, rule_id } => (format!("profile:{profile}"), rule_id.clone()),
        SlotKind::TierDefault { tier } => (format!("{tier}/(tier default)"), String::new()),
        SlotKind::NoMatch => ("(no match)".to_owned(), String::new()),
    }
}

pub fn rule_value(slot: &Slot, policy: u32, rule: u32) -> abi::manul_rule_value {
    abi::manul_rule_value {
        action: match slot.action {
            SlotAction::Allow => abi::MANUL_ACTION_ALLOW,
            SlotAction::Deny => abi::MANUL_ACTION_DENY,
            SlotAction::Pass => abi::MANUL_ACTION_PASS,
            SlotAction::Next => abi::MANUL_ACTION_NEXT,
        } as u8,
        kind: match slot.kind {
            SlotKind::Policy { .. } => abi::MANUL_RULE_POLICY,
            SlotKind::Profile { .. } => abi::MANUL_RULE_PROFILE,
            SlotKind::TierDefault { .. } => abi::MANUL_RULE_TIER_DEFAULT,
            SlotKind::NoMatch => abi::MANUL_RULE_NO_MATCH,
        } as u8,
        reserved: 0,
        end: slot.end,
        policy,
        rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_key_covers_the_interface_version_and_network() {
        let net: ipnet::IpNet = "10.1.2.3/32".parse().unwrap();
        let (len, data) = src_key(9, &net);
        assert_eq!(len, 64 + 32);
        assert_eq!((data.ifindex, data.version), (9, 4));
        assert_eq!(&data.addr[..4], &[10, 1, 2, 3]);
        assert_eq!(&data.addr[4..], &[0; 12]);
        let net: ipnet::IpNet = "fd00::1:5/112".parse().unwrap();
        let (len, data) = src_key(9, &net);
        assert_eq!((len, data.version), (64 + 112, 6));
        assert_eq!(data.addr[15], 0, "the network, host bits cleared");
    }

    #[test]
    fn keys_cover_the_fixed_fields_and_the_prefix() {
        let net: ipnet::IpNet = "10.1.2.0/24".parse().unwrap();
        let (len, data) = addr_key(7, 1, &IpEntry::Net(net));
        assert_eq!(len, 64 + 24);
        assert_eq!((data.space, data.side, data.version), (7, 1, 4));
        assert_eq!(&data.addr[..4], &[10, 1, 2, 0]);
        assert_eq!(addr_key(7, 0, &IpEntry::Root).0, 40);
        let (len, data) = port_key(
            7,
            0,
            &PortBlock {
                first: 8080,
                prefix_len: 16,
            },
        );
        assert_eq!((len, data.port), (64, 8080u16.to_be_bytes()));
        let e = ProtoEntry {
            version: 4,
            proto: Some(1),
            icmp_type: Some(8),
            icmp_code: None,
        };
        assert_eq!(proto_key(7, &e).0, 32 + 24);
        let a: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(addr_from(6, &addr_bytes(a).1), a);
    }
}
