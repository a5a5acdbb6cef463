//! The parser on real messages, table-driven: each case is one packet's
//! nflog record and its connection's conntrack new-connection event as
//! captured from the kernel (Linux 6.18) in a network namespace whose
//! `inet` table DNATs 10.96.0.50 and fd00:96::50 (TCP and SCTP port 80 to
//! 8080, UDP 53 to 5353) to the namespace's own 10.0.0.1 and fd00::1 in
//! its output hook and logs new connections to an nflog group in its
//! filter output hook; the ICMP echoes go to the address itself and are
//! not translated; the last datagram is untracked (`notrack`).
//!
//! An `NFULA_CT` attribute is the same ctnetlink attribute set as the
//! event's (both come from `ctnetlink_dump_tuples`): the parser is checked
//! on the events' attributes against `netlink-packet-netfilter`'s reading
//! of the same bytes, and a record with the entry is the captured record
//! with the event's attributes nested as `NFULA_CT` and an
//! `NFULA_CT_INFO`, as the kernel appends them.
//!
//! The `GLUE_*` records are as a kernel with
//! `CONFIG_NETFILTER_NETLINK_GLUE_CT` built them itself (Debian's Linux
//! 6.1, booted by `scripts/kernel-vm.sh`; the same table, the group asked
//! for conntrack entries): the entry (with its id, status, timeout,
//! protocol state and use count besides the tuples) comes before the
//! payload, its `NFULA_CT_INFO` says `IP_CT_NEW`.

use std::net::IpAddr;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::nflog::ULogMessage;
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use proptest::prelude::*;

use super::*;
use crate::flows::netlink::{RawLog, entry_of, log_of, messages};

const TCP4_LOG: &[&str] = &[
    "7c0000000004000000000000000000000200001e080001000800030008000a00636170000800050000000001",
    "08000b000000000008000e0000000000400009004500003cf35e40004006335c0a0000010a000001e5701f90",
    "f177bdd200000000a002ffd7143000000204ffd70402080a42e35138000000000103030a",
];
const TCP4_CT: &[&str] = &[
    "c4000000000100060000000000000000020000003400018014000180080001000a000001080002000a600032",
    "1c000280050001000600000006000200e570000006000300005000003400028014000180080001000a000001",
    "080002000a0000011c0002800500010006000000060002001f90000006000300e570000008000c00dd80a1d8",
    "08000300000001a80800070000000078300004802c0001800500010001000000050002000a00000005000300",
    "0000000006000400030000000600050000000000",
];
const UDP4_LOG: &[&str] = &[
    "640000000004000000000000000000000200001e080001000800030008000a00636170000800050000000001",
    "08000b000000000008000e000000000025000900450000217c7840004011aa520a0000010a0000019c7514e9",
    "000d142068656c6c6f000000",
];
const UDP4_CT: &[&str] = &[
    "94000000000100060000000000000000020000003400018014000180080001000a000001080002000a600032",
    "1c0002800500010011000000060002009c75000006000300003500003400028014000180080001000a000001",
    "080002000a0000011c00028005000100110000000600020014e90000060003009c75000008000c0000e0275b",
    "08000300000001a8080007000000001e",
];
const TCP6_LOG: &[&str] = &[
    "900000000004000000000000000000000a00001e0800010086dd030008000a00636170000800050000000001",
    "08000b000000000008000e0000000000540009006002744400280640fd000000000000000000000000000001",
    "fd000000000000000000000000000001baec1f90ab91c96700000000a002ffc4fa3100000204ffc40402080a",
    "663e98f3000000000103030a",
];
const TCP6_CT: &[&str] = &[
    "f40000000001000600000000000000000a0000004c0001802c00018014000300fd0000000000000000000000",
    "0000000114000400fd0000960000000000000000000000501c000280050001000600000006000200baec0000",
    "06000300005000004c0002802c00018014000300fd00000000000000000000000000000114000400fd000000",
    "0000000000000000000000011c0002800500010006000000060002001f90000006000300baec000008000c00",
    "e3c32cf608000300000001a80800070000000078300004802c0001800500010001000000050002000a000000",
    "050003000000000006000400030000000600050000000000",
];
const UDP6_LOG: &[&str] = &[
    "780000000004000000000000000000000a00001e0800010086dd030008000a00636170000800050000000001",
    "08000b000000000008000e00000000003900090060081623000d1140fd000000000000000000000000000001",
    "fd0000000000000000000000000000019c7614e9000dfa2168656c6c6f000000",
];
const UDP6_CT: &[&str] = &[
    "c40000000001000600000000000000000a0000004c0001802c00018014000300fd0000000000000000000000",
    "0000000114000400fd0000960000000000000000000000501c0002800500010011000000060002009c760000",
    "06000300003500004c0002802c00018014000300fd00000000000000000000000000000114000400fd000000",
    "0000000000000000000000011c00028005000100110000000600020014e90000060003009c76000008000c00",
    "a37f286308000300000001a8080007000000001e",
];
const ICMP4_LOG: &[&str] = &[
    "600000000004000000000000000000000200001e080001000800030008000a00636170000800050000000001",
    "08000b000000000008000e00000000002400090045000020d8d5400040014e060a0000010a000001080006fa",
    "1234000170696e67",
];
const ICMP4_CT: &[&str] = &[
    "a4000000000100060000000000000000020000003c00018014000180080001000a000001080002000a000001",
    "2400028005000100010000000600040012340000050005000800000005000600000000003c00028014000180",
    "080001000a000001080002000a00000124000280050001000100000006000400123400000500050000000000",
    "050006000000000008000c00350bd4cb0800030000000188080007000000001e",
];
const ICMP6_LOG: &[&str] = &[
    "740000000004000000000000000000000a00001e0800010086dd030008000a00636170000800050000000001",
    "08000b000000000008000e0000000000380009006002b18a000c3a40fd000000000000000000000000000001",
    "fd000000000000000000000000000001800063c24321000170696e67",
];
const ICMP6_CT: &[&str] = &[
    "d40000000001000600000000000000000a000000540001802c00018014000300fd0000000000000000000000",
    "0000000114000400fd00000000000000000000000000000124000280050001003a0000000600070043210000",
    "05000800800000000500090000000000540002802c00018014000300fd000000000000000000000000000001",
    "14000400fd00000000000000000000000000000124000280050001003a000000060007004321000005000800",
    "81000000050009000000000008000c00084cd8200800030000000188080007000000001e",
];
const SCTP4_LOG: &[&str] = &[
    "740000000004000000000000000000000200001e080001000800030008000a00636170000800050000000001",
    "08000b000000000008000e00000000003800090045000034d12940004084551b0a0000010a0000019cc41f90",
    "00000000dd72332e01000014010203040000ffff000100010a0b0c0d",
];
const SCTP4_CT: &[&str] = &[
    "b4000000000100060000000000000000020000003400018014000180080001000a000001080002000a600032",
    "1c0002800500010084000000060002009cc4000006000300005000003400028014000180080001000a000001",
    "080002000a0000011c0002800500010084000000060002001f900000060003009cc4000008000c008c47a5db",
    "08000300000001a8080007000000000a200004801c0003800500010001000000080002000000000008000300",
    "01020304",
];
const NOTRACK_LOG: &[&str] = &[
    "6c0000000004000000000000000000000200001e08000100080003000e000a00756e747261636b6564000000",
    "080005000000000108000b000000000008000e00000000002500090045000021b03c40004011768e0a000001",
    "0a0000019ca3270f000d142068656c6c6f000000",
];

const GLUE_TCP4: &[&str] = &[
    "4001000000040000000000000000000002000007080001000800030008000a00636170000800050000000001",
    "08000b000000000008000e0000000000bc0012803400018014000180080001000a000001080002000a600032",
    "1c000280050001000600000006000200e4a0000006000300005000003400028014000180080001000a000001",
    "080002000a0000011c0002800500010006000000060002001f90000006000300e4a0000008000c0073b826a3",
    "08000300000001200800070000000078300004802c0001800500010001000000050002000700000005000300",
    "000000000600040003000000060005000000000008000800000000000800130000000002400009004500003c",
    "753a40004006b1800a0000010a000001e4a01f90d58c07af00000000a002ffd7143000000204ffd70402080a",
    "a4bb9ab40000000001030307",
];
const GLUE_UDP4: &[&str] = &[
    "f800000000040000000000000000000002000007080001000800030008000a00636170000800050000000001",
    "08000b000000000008000e00000000008c0012803400018014000180080001000a000001080002000a600032",
    "1c000280050001001100000006000200b8c4000006000300003500003400028014000180080001000a000001",
    "080002000a0000011c00028005000100110000000600020014e9000006000300b8c4000008000c0093bc6dfa",
    "0800030000000120080007000000001e08000800000000000800130000000002250009004500002151444000",
    "4011d5860a0000010a000001b8c414e9000d142068656c6c6f000000",
];
const GLUE_TCP6: &[&str] = &[
    "840100000004000000000000000000000a0000070800010086dd030008000a00636170000800050000000001",
    "08000b000000000008000e0000000000ec0012804c0001802c00018014000300fd0000000000000000000000",
    "0000000114000400fd0000960000000000000000000000501c000280050001000600000006000200a0f20000",
    "06000300005000004c0002802c00018014000300fd00000000000000000000000000000114000400fd000000",
    "0000000000000000000000011c0002800500010006000000060002001f90000006000300a0f2000008000c00",
    "54eb82f808000300000001200800070000000078300004802c00018005000100010000000500020007000000",
    "0500030000000000060004000300000006000500000000000800080000000000080013000000000254000900",
    "600b882a00280640fd000000000000000000000000000001fd000000000000000000000000000001a0f21f90",
    "151692fd00000000a002ffc4fa3100000204ffc40402080aa4694c5c0000000001030307",
];
const GLUE_UDP6: &[&str] = &[
    "3c0100000004000000000000000000000a0000070800010086dd030008000a00636170000800050000000001",
    "08000b000000000008000e0000000000bc0012804c0001802c00018014000300fd0000000000000000000000",
    "0000000114000400fd0000960000000000000000000000501c000280050001001100000006000200b0070000",
    "06000300003500004c0002802c00018014000300fd00000000000000000000000000000114000400fd000000",
    "0000000000000000000000011c00028005000100110000000600020014e9000006000300b007000008000c00",
    "dc69b90e0800030000000120080007000000001e0800080000000000080013000000000239000900600ef9d4",
    "000d1140fd000000000000000000000000000001fd000000000000000000000000000001b00714e9000dfa21",
    "68656c6c6f000000",
];

fn bytes(hex: &[&str]) -> Vec<u8> {
    let hex: String = hex.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The netlink and nfnetlink headers before a message's attributes.
const HEADERS: usize = 20;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tuple(protocol: u8, src: &str, src_port: u16, dst: &str, dst_port: u16) -> FlowTuple {
    FlowTuple {
        protocol,
        src: ip(src),
        src_port,
        dst: ip(dst),
        dst_port,
    }
}

/// One captured connection: its record, its event, the original tuple
/// and who answered, and the frontend its `Start` must name.
struct Case {
    name: &'static str,
    log: &'static [&'static str],
    ct: &'static [&'static str],
    orig: FlowTuple,
    reply_src: (&'static str, u16),
    frontend: Option<(&'static str, u16)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "IPv4 TCP to a DNATed address",
            log: TCP4_LOG,
            ct: TCP4_CT,
            orig: tuple(6, "10.0.0.1", 58736, "10.96.0.50", 80),
            reply_src: ("10.0.0.1", 8080),
            frontend: Some(("10.96.0.50", 80)),
        },
        Case {
            name: "IPv4 UDP to a DNATed address",
            log: UDP4_LOG,
            ct: UDP4_CT,
            orig: tuple(17, "10.0.0.1", 40053, "10.96.0.50", 53),
            reply_src: ("10.0.0.1", 5353),
            frontend: Some(("10.96.0.50", 53)),
        },
        Case {
            name: "IPv6 TCP to a DNATed address",
            log: TCP6_LOG,
            ct: TCP6_CT,
            orig: tuple(6, "fd00::1", 47852, "fd00:96::50", 80),
            reply_src: ("fd00::1", 8080),
            frontend: Some(("fd00:96::50", 80)),
        },
        Case {
            name: "IPv6 UDP to a DNATed address",
            log: UDP6_LOG,
            ct: UDP6_CT,
            orig: tuple(17, "fd00::1", 40054, "fd00:96::50", 53),
            reply_src: ("fd00::1", 5353),
            frontend: Some(("fd00:96::50", 53)),
        },
        Case {
            name: "IPv4 SCTP to a DNATed address",
            log: SCTP4_LOG,
            ct: SCTP4_CT,
            orig: tuple(132, "10.0.0.1", 40132, "10.96.0.50", 80),
            reply_src: ("10.0.0.1", 8080),
            frontend: Some(("10.96.0.50", 80)),
        },
        Case {
            name: "ICMP echo, not translated",
            log: ICMP4_LOG,
            ct: ICMP4_CT,
            orig: tuple(1, "10.0.0.1", 0, "10.0.0.1", 0),
            reply_src: ("10.0.0.1", 0),
            frontend: None,
        },
        Case {
            name: "ICMPv6 echo, not translated",
            log: ICMP6_LOG,
            ct: ICMP6_CT,
            orig: tuple(58, "fd00::1", 0, "fd00::1", 0),
            reply_src: ("fd00::1", 0),
            frontend: None,
        },
    ]
}

/// The nflog record of `log` parsed as the reader does.
fn read_log(msg: &[u8]) -> Option<RawLog> {
    messages(msg).into_iter().find_map(|m| match m.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) => log_of(&nlas),
        _ => None,
    })
}

/// The entry `netlink-packet-netfilter` reads from a conntrack message.
fn crate_entry(msg: &[u8]) -> Option<CtEntry> {
    messages(msg).into_iter().find_map(|m| match m.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
            ..
        }) => entry_of(&attrs),
        _ => None,
    })
}

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + value.len()).unwrap();
    let mut out = len.to_ne_bytes().to_vec();
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    out.resize((out.len() + 3) & !3, 0);
    out
}

/// `log` with `ct` (a conntrack message) nested as `NFULA_CT` and `info`
/// as `NFULA_CT_INFO`.
fn with_ct(log: &[u8], ct: &[u8], info: u32) -> Vec<u8> {
    const NLA_F_NESTED: u16 = 0x8000;
    let mut msg = log.to_vec();
    msg.resize((msg.len() + 3) & !3, 0);
    msg.extend(attr(NFULA_CT | NLA_F_NESTED, &ct[HEADERS..]));
    msg.extend(attr(NFULA_CT_INFO, &info.to_be_bytes()));
    let len = u32::try_from(msg.len()).unwrap();
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

/// `ip_conntrack_info` of a connection's first packet, and of a reply.
const IP_CT_NEW: u32 = 2;
const IP_CT_ESTABLISHED_REPLY: u32 = 3;

#[test]
fn captured_entries_read_as_the_netlink_crate_reads_them() {
    for case in cases() {
        let ct = bytes(case.ct);
        let got = parse_ct(&ct[HEADERS..]).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(got.orig, case.orig, "{}", case.name);
        assert_eq!(
            (got.reply_src, got.reply_src_port),
            (ip(case.reply_src.0), case.reply_src.1),
            "{}",
            case.name
        );
        assert_eq!(Some(got), crate_entry(&ct), "{}", case.name);
    }
}

#[test]
fn a_start_record_names_the_frontend_of_its_entry() {
    for case in cases() {
        let (log, ct) = (bytes(case.log), bytes(case.ct));
        let plain = read_log(&log).unwrap_or_else(|| panic!("{}: no record", case.name));
        assert_eq!(plain.frontend, None, "{}: no entry, no frontend", case.name);
        assert_eq!(plain.prefix, "cap", "{}", case.name);
        // The packet was logged after DNAT: as policy saw it.
        let entry = parse_ct(&ct[HEADERS..]).unwrap();
        assert_eq!(plain.packet.tuple, entry.policy_tuple(), "{}", case.name);

        let full = read_log(&with_ct(&log, &ct, IP_CT_NEW)).unwrap();
        let want = case.frontend.map(|(a, p)| (ip(a), p));
        assert_eq!(full.frontend, want, "{}", case.name);
        assert_eq!(full.packet, plain.packet, "{}", case.name);

        // A reply's packet, or an entry of another connection, names none.
        let reply = read_log(&with_ct(&log, &ct, IP_CT_ESTABLISHED_REPLY)).unwrap();
        assert_eq!(reply.frontend, None, "{}", case.name);
        let other = cases()
            .into_iter()
            .find(|c| c.frontend.is_some() && c.name != case.name)
            .unwrap();
        let crossed = read_log(&with_ct(&log, &bytes(other.ct), IP_CT_NEW)).unwrap();
        assert_eq!(crossed.frontend, None, "{} with {}", case.name, other.name);
    }
    let untracked = read_log(&bytes(NOTRACK_LOG)).unwrap();
    assert_eq!(
        (untracked.prefix.as_str(), untracked.frontend),
        ("untracked", None)
    );
}

#[test]
fn records_a_glue_ct_kernel_built_name_their_frontend() {
    let cases = [
        (
            GLUE_TCP4,
            tuple(6, "10.0.0.1", 58528, "10.0.0.1", 8080),
            ("10.96.0.50", 80),
        ),
        (
            GLUE_UDP4,
            tuple(17, "10.0.0.1", 47300, "10.0.0.1", 5353),
            ("10.96.0.50", 53),
        ),
        (
            GLUE_TCP6,
            tuple(6, "fd00::1", 41202, "fd00::1", 8080),
            ("fd00:96::50", 80),
        ),
        (
            GLUE_UDP6,
            tuple(17, "fd00::1", 45063, "fd00::1", 5353),
            ("fd00:96::50", 53),
        ),
    ];
    for (hex, packet, (addr, port)) in cases {
        let record = read_log(&bytes(hex)).unwrap_or_else(|| panic!("{packet:?}: no record"));
        assert_eq!(record.prefix, "cap");
        // Logged after DNAT; the entry names the frontend dialled.
        assert_eq!(record.packet.tuple, packet);
        assert_eq!(record.frontend, Some((ip(addr), port)), "{packet:?}");
    }
}

#[test]
fn bad_entries_are_errors_naming_the_problem() {
    let ct = bytes(TCP4_CT);
    let attrs = &ct[HEADERS..];
    // Cut inside an attribute header, inside a value; a length below the
    // header's; a tuple without its protocol; a short address.
    assert!(matches!(
        parse_ct(&attrs[..2]),
        Err(CtParseError::Header { at: 0, len: 2 })
    ));
    assert!(matches!(
        parse_ct(&attrs[..30]),
        Err(CtParseError::Length { kind: 1, .. })
    ));
    assert!(matches!(
        parse_ct(&[2, 0, 1, 0]),
        Err(CtParseError::Length { claimed: 2, .. })
    ));
    let no_proto = attr(
        1,
        &attr(
            1,
            &[attr(1, &[10, 0, 0, 1]), attr(2, &[10, 0, 0, 2])].concat(),
        ),
    );
    assert_eq!(
        parse_ct(&no_proto).unwrap_err().to_string(),
        "the original tuple has no protocol"
    );
    let short = attr(1, &attr(1, &attr(1, &[10, 0, 0])));
    assert_eq!(
        parse_ct(&short).unwrap_err().to_string(),
        "CTA_IP_V4_SRC is 3 bytes instead of 4"
    );
    let mixed = attr(
        1,
        &[
            attr(1, &[attr(1, &[10, 0, 0, 1]), attr(4, &[0; 16])].concat()),
            attr(2, &attr(1, &[6])),
        ]
        .concat(),
    );
    assert_eq!(
        parse_ct(&mixed).unwrap_err(),
        CtParseError::Family { tuple: "original" }
    );
    assert!(matches!(
        parse_ct(&[]),
        Err(CtParseError::Missing {
            what: "CTA_TUPLE_ORIG",
            ..
        })
    ));
    assert_eq!(parse_ct_info(&[0, 0, 0, 2]), Ok(2));
    assert!(parse_ct_info(&[0, 2]).is_err());
}

/// A mutation of `input`: `edits` of (position, kind, byte).
fn mutate(input: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = input.to_vec();
    for &(at, kind, b) in edits {
        let at = at % (out.len() + 1);
        match kind % 4 {
            0 if at < out.len() => out[at] = b,
            1 if at < out.len() => out[at] ^= 1 << (b % 8),
            2 => out.insert(at, b),
            _ => out.truncate(at),
        }
    }
    out
}

proptest! {
    /// Whatever the bytes, the parser answers (never panics), and where
    /// `netlink-packet-netfilter` reads the same mutated message's tuples
    /// too, both read the same.
    #[test]
    fn mutated_entries_are_read_or_refused(
        case in 0usize..7,
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let ct = bytes(cases()[case].ct);
        let attrs = mutate(&ct[HEADERS..], &edits);
        let ours = parse_ct(&attrs);
        let mut msg = ct[..HEADERS].to_vec();
        msg.extend(&attrs);
        let len = u32::try_from(msg.len()).unwrap();
        msg[..4].copy_from_slice(&len.to_ne_bytes());
        if let (Ok(ours), Some(theirs)) = (ours, crate_entry(&msg)) {
            prop_assert_eq!(ours.orig, theirs.orig);
            prop_assert_eq!(ours.reply_src, theirs.reply_src);
        }
    }

    /// Any bytes at all as an entry or as a log record's entry.
    #[test]
    fn arbitrary_bytes_never_panic(
        attrs in prop::collection::vec(any::<u8>(), 0..300),
        info in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let _ = parse_ct(&attrs);
        let _ = parse_ct_info(&info);
        let mut log = bytes(TCP4_LOG);
        log.resize((log.len() + 3) & !3, 0);
        log.extend(attr(NFULA_CT, &attrs));
        let len = u32::try_from(log.len()).unwrap();
        log[..4].copy_from_slice(&len.to_ne_bytes());
        let _ = read_log(&log);
    }

    /// A truncated entry is refused, or reads as the whole (cut after
    /// its tuples).
    #[test]
    fn truncated_entries_are_refused_or_whole(case in 0usize..7, keep in 0usize..200) {
        let ct = bytes(cases()[case].ct);
        let attrs = &ct[HEADERS..];
        let whole = parse_ct(attrs).unwrap();
        if let Ok(cut) = parse_ct(&attrs[..keep.min(attrs.len())]) {
            prop_assert_eq!(cut, whole);
        }
    }
}
