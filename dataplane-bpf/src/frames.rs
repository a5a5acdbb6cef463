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

/// IPv6 extension headers the programs skip (next-header number, bytes):
/// hop-by-hop options with a router alert, as MLD reports carry.
pub fn hop_by_hop() -> (u8, Vec<u8>) {
    (0, vec![0, 0, 5, 2, 0, 0, 1, 0])
}

/// Destination options 16 bytes long (a PadN filling 14 bytes).
pub fn dest_options() -> (u8, Vec<u8>) {
    let mut b = vec![0, 1, 1, 12];
    b.extend([0u8; 12]);
    (60, b)
}

/// A fragment header: `offset` in 8-byte units, more fragments follow.
pub fn fragment(offset: u16) -> (u8, Vec<u8>) {
    let mut b = vec![0, 0];
    b.extend(((offset << 3) | 1).to_be_bytes());
    b.extend([0, 0, 0, 7]);
    (44, b)
}

/// `frame` (an IPv6 frame from [`frame`]) with extension headers put
/// between the IPv6 header and the L4 header: each is its next-header
/// number and its bytes (whose first byte is overwritten with the next
/// header's number); the payload length and the chain are fixed up.
pub fn with_ext(frame: &[u8], headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
    const IP6: usize = 14;
    const L4: usize = IP6 + 40;
    let upper = frame[IP6 + 6];
    let mut out = frame[..L4].to_vec();
    out[IP6 + 6] = headers.first().map_or(upper, |h| h.0);
    for (i, (_, bytes)) in headers.iter().enumerate() {
        let mut b = bytes.clone();
        if let Some(first) = b.first_mut() {
            *first = headers.get(i + 1).map_or(upper, |h| h.0);
        }
        out.extend(b);
    }
    out.extend(&frame[L4..]);
    let payload = (out.len() - L4) as u16;
    out[IP6 + 4..IP6 + 6].copy_from_slice(&payload.to_be_bytes());
    out
}
