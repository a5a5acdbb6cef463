//! The 5-tuple and length of a logged packet (nflog hands over the packet
//! from its network header on), parsed without allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use manul_dataplane_api::FlowTuple;

/// What a log record says about its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    pub tuple: FlowTuple,
    /// The packet's length from its IP header.
    pub length: u64,
}

fn ports(protocol: u8, l4: &[u8]) -> (u16, u16) {
    match protocol {
        6 | 17 | 132 | 136 if l4.len() >= 4 => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        _ => (0, 0),
    }
}

/// IPv6 extension headers a packet may carry before its transport header.
fn is_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 60 | 51)
}

/// The tuple of an IPv4 or IPv6 packet; `None` when the bytes are not one.
pub fn parse(packet: &[u8]) -> Option<PacketInfo> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if ihl < 20 || packet.len() < ihl {
                return None;
            }
            let length = u64::from(u16::from_be_bytes([packet[2], packet[3]]));
            let protocol = packet[9];
            let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
            // A fragment other than the first has no transport header.
            let offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            let (src_port, dst_port) = if offset == 0 {
                ports(protocol, &packet[ihl..])
            } else {
                (0, 0)
            };
            Some(PacketInfo {
                tuple: FlowTuple {
                    protocol,
                    src: IpAddr::V4(src),
                    src_port,
                    dst: IpAddr::V4(dst),
                    dst_port,
                },
                length,
            })
        }
        6 => {
            if packet.len() < 40 {
                return None;
            }
            let length = 40 + u64::from(u16::from_be_bytes([packet[4], packet[5]]));
            let addr = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&packet[at..at + 16]);
                Ipv6Addr::from(b)
            };
            let (src, dst) = (addr(8), addr(24));
            let mut next = packet[6];
            let mut at = 40;
            while is_extension(next) {
                let ext = packet.get(at..at + 2)?;
                next = ext[0];
                at += if next == 51 {
                    (usize::from(ext[1]) + 2) * 4
                } else {
                    (usize::from(ext[1]) + 1) * 8
                };
            }
            let (src_port, dst_port) = ports(next, packet.get(at..).unwrap_or(&[]));
            Some(PacketInfo {
                tuple: FlowTuple {
                    protocol: next,
                    src: IpAddr::V6(src),
                    src_port,
                    dst: IpAddr::V6(dst),
                    dst_port,
                },
                length,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(protocol: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0];
        p.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend(l4);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn tuples_of_packets() {
        let tcp = v4(6, &[0x30, 0x39, 0x1f, 0x90, 0, 0, 0, 0]);
        let got = parse(&tcp).unwrap();
        assert_eq!(got.tuple.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((got.tuple.src_port, got.tuple.dst_port), (12345, 8080));
        assert_eq!(got.length, 28);
        let icmp = parse(&v4(1, &[8, 0, 0, 0])).unwrap();
        assert_eq!((icmp.tuple.protocol, icmp.tuple.src_port), (1, 0));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0, 53, 0x13, 0x88, 0, 8, 0, 0]);
        let udp6 = parse(&v6).unwrap();
        assert_eq!(
            (udp6.tuple.protocol, udp6.tuple.dst_port, udp6.length),
            (17, 5000, 48)
        );
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x45, 0]), None);
        assert_eq!(parse(&[0x20; 40]), None);
    }
}
