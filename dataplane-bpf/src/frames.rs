//! Ethernet frames for a [`Packet`], for `BPF_PROG_TEST_RUN` in tests and
//! benchmarks. Checksums are left zero (the programs do not check them).

use std::net::IpAddr;

use manul_dataplane_api::Packet;

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// A frame carrying `p` (TCP with `tcp_flags`). Mixed address families are
/// built as IPv6 with the IPv4 address mapped.
pub fn frame(p: &Packet, tcp_flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    match p.protocol {
        6 => {
            l4.extend(p.src_port.to_be_bytes());
            l4.extend(p.dst_port.to_be_bytes());
            l4.extend([
                0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0,
            ]);
        }
        17 | 132 => {
            l4.extend(p.src_port.to_be_bytes());
            l4.extend(p.dst_port.to_be_bytes());
            l4.extend([0, 16, 0, 0, 0, 0, 0, 0]);
        }
        1 | 58 => {
            l4.extend([
                p.icmp_type.unwrap_or(8),
                p.icmp_code.unwrap_or(0),
                0,
                0,
                0x12,
                0x34,
                0,
                1,
            ]);
            l4.extend([0u8; 8]);
        }
        _ => l4.extend([0u8; 8]),
    }
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend([0x08, 0x00]);
            let total = (20 + l4.len()) as u16;
            f.extend([0x45, 0]);
            f.extend(total.to_be_bytes());
            f.extend([0, 1, 0x40, 0, 64, p.protocol, 0, 0]);
            f.extend(s.octets());
            f.extend(d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            f.extend([0x86, 0xdd]);
            f.extend([0x60, 0, 0, 0]);
            f.extend((l4.len() as u16).to_be_bytes());
            f.extend([p.protocol, 64]);
            f.extend(v6(s).octets());
            f.extend(v6(d).octets());
        }
    }
    f.extend(l4);
    f
}
