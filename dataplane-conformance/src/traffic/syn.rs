//! The packets of the handshake benchmark, without I/O: a TCP SYN
//! segment as a raw IPv4 socket sends it (the kernel adds the IP header),
//! and the reading of what comes back (IP header included, as a raw
//! socket receives it).
//!
//! A SYN carries the MSS option only. Its sequence number is derived from
//! its source port ([`isn`]), so that an answer is recognised as the
//! answer to that SYN by its acknowledgement number alone.

use std::net::{Ipv4Addr, SocketAddrV4};

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// The length of [`syn_segment`]'s segment: 20 bytes of header, 4 of MSS.
pub const SYN_LEN: usize = 24;

/// The initial sequence number of the SYN from `port`.
pub fn isn(port: u16) -> u32 {
    u32::from(port).wrapping_mul(2_654_435_761) ^ 0x4d61_6e75
}

/// The Internet checksum of a TCP segment from `src` to `dst` (with the
/// IPv4 pseudo-header), the segment's own checksum field counted as it is.
pub fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map(u32::from).unwrap_or(0);
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]);
    add(&(segment.len() as u16).to_be_bytes());
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A SYN from `src` to `dst` with sequence number [`isn`]`(src.port())`,
/// window 64,240 and MSS 1,460, its checksum filled in.
pub fn syn_segment(src: SocketAddrV4, dst: SocketAddrV4) -> [u8; SYN_LEN] {
    let mut s = [0u8; SYN_LEN];
    s[0..2].copy_from_slice(&src.port().to_be_bytes());
    s[2..4].copy_from_slice(&dst.port().to_be_bytes());
    s[4..8].copy_from_slice(&isn(src.port()).to_be_bytes());
    // Acknowledgement number 0; data offset 6 words.
    s[12] = ((SYN_LEN / 4) as u8) << 4;
    s[13] = SYN;
    s[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    // Checksum (16..18) and urgent pointer (18..20) zero; then MSS.
    s[20] = 2;
    s[21] = 4;
    s[22..24].copy_from_slice(&1460u16.to_be_bytes());
    let sum = tcp_checksum(*src.ip(), *dst.ip(), &s);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// A TCP segment read from an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

/// The TCP segment in `packet` (an IPv4 packet, header included), or
/// `None` if it is not a whole, unfragmented IPv4 TCP packet.
pub fn parse(packet: &[u8]) -> Option<Segment> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl + 20 || packet[9] != 6 {
        return None;
    }
    // A fragment other than the first carries no TCP header.
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    if frag & 0x1fff != 0 {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    let t = &packet[ihl..];
    let be16 = |at: usize| u16::from_be_bytes([t[at], t[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([t[at], t[at + 1], t[at + 2], t[at + 3]]);
    Some(Segment {
        src: SocketAddrV4::new(ip(12), be16(0)),
        dst: SocketAddrV4::new(ip(16), be16(2)),
        seq: be32(4),
        ack: be32(8),
        flags: t[13],
    })
}

/// What a received segment says about the SYNs sent to `target` from
/// `client`'s ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The SYN-ACK for the SYN from this port, from `target` itself (for
    /// a service: reverse-translated).
    SynAck(u16),
    /// A reset for the SYN from this port, from `target`.
    Reset(u16),
    /// An answer to the SYN from this port that does not come from
    /// `target` (for a service: not reverse-translated).
    Stranger(u16),
    /// Not an answer to any of these SYNs.
    Unrelated,
}

/// Classifies `segment` (see [`Answer`]): it answers the SYN from port
/// `p` when it is addressed to `client`:`p` and acknowledges that SYN's
/// [`isn`].
pub fn classify(segment: &Segment, client: Ipv4Addr, target: SocketAddrV4) -> Answer {
    let port = segment.dst.port();
    if *segment.dst.ip() != client
        || segment.flags & ACK == 0
        || segment.ack != isn(port).wrapping_add(1)
    {
        return Answer::Unrelated;
    }
    if segment.src != target {
        return Answer::Stranger(port);
    }
    if segment.flags & RST != 0 {
        Answer::Reset(port)
    } else if segment.flags & SYN != 0 {
        Answer::SynAck(port)
    } else {
        Answer::Unrelated
    }
}

/// Consecutive ranges of source ports for the phases of one measurement,
/// so that no SYN of a measurement reuses another's 4-tuple (every SYN is
/// the first packet of a new flow for every conntrack table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    next: u32,
    last: u32,
}

impl PortPlan {
    /// Ports `first..=last`.
    pub fn new(first: u16, last: u16) -> PortPlan {
        PortPlan {
            next: u32::from(first),
            last: u32::from(last),
        }
    }

    /// The next `count` ports, or `None` if fewer are left.
    pub fn take(&mut self, count: usize) -> Option<std::ops::Range<u16>> {
        let count = u32::try_from(count).ok()?;
        let end = self.next.checked_add(count)?;
        if end > self.last + 1 {
            return None;
        }
        // A range cannot end past 65,535, so port 65,535 itself is never
        // handed out.
        let range = u16::try_from(self.next).ok()?..u16::try_from(end).ok()?;
        self.next = end;
        Some(range)
    }

    /// Ports not taken yet.
    pub fn left(&self) -> usize {
        (self.last + 1).saturating_sub(self.next) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 6);

    /// An IPv4 packet around `segment` from `src` to `dst`.
    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p[2..4].copy_from_slice(&((20 + segment.len()) as u16).to_be_bytes());
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(segment);
        p
    }

    /// What the server's kernel answers to `syn`.
    fn answer(syn: &[u8; SYN_LEN], from: Ipv4Addr, to: Ipv4Addr, flags: u8) -> Vec<u8> {
        let mut s = [0u8; 20];
        s[0..2].copy_from_slice(&syn[2..4]);
        s[2..4].copy_from_slice(&syn[0..2]);
        s[4..8].copy_from_slice(&7u32.to_be_bytes());
        let ack = u32::from_be_bytes([syn[4], syn[5], syn[6], syn[7]]).wrapping_add(1);
        s[8..12].copy_from_slice(&ack.to_be_bytes());
        s[12] = 5 << 4;
        s[13] = flags;
        let sum = tcp_checksum(from, to, &s);
        s[16..18].copy_from_slice(&sum.to_be_bytes());
        ipv4(from, to, &s)
    }

    #[test]
    fn a_syn_checks_out() {
        let src = SocketAddrV4::new(C, 40_000);
        let dst = SocketAddrV4::new(VIP, 80);
        let syn = syn_segment(src, dst);
        // A correct checksum sums (with itself) to zero.
        assert_eq!(tcp_checksum(C, VIP, &syn), 0);
        let seg = parse(&ipv4(C, VIP, &syn)).expect("a TCP packet");
        assert_eq!((seg.src, seg.dst, seg.flags), (src, dst, SYN));
        assert_eq!(seg.seq, isn(40_000));
        assert_eq!(syn[12] >> 4, 6);
        assert_eq!(&syn[20..24], &[2, 4, 0x05, 0xb4]);
        // Another port, another sequence number.
        assert_ne!(isn(40_000), isn(40_001));
    }

    #[test]
    fn a_known_checksum() {
        // Worked example: the sum of the pseudo-header and an all-zero
        // 20-byte segment between 10.0.0.1 and 10.0.0.2.
        let seg = [0u8; 20];
        let sum = tcp_checksum(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), &seg);
        // 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 0x0006 + 0x0014 = 0x141d.
        assert_eq!(sum, !0x141d);
        // Odd lengths pad with a zero byte.
        assert_eq!(
            tcp_checksum(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &[1]),
            !(0x0100 + 6 + 1)
        );
    }

    #[test]
    fn answers_are_classified() {
        let target = SocketAddrV4::new(VIP, 80);
        let syn = syn_segment(SocketAddrV4::new(C, 2000), target);
        let server = Ipv4Addr::new(10, 66, 0, 20);
        let of = |p: Vec<u8>| classify(&parse(&p).expect("TCP"), C, target);
        assert_eq!(of(answer(&syn, VIP, C, SYN | ACK)), Answer::SynAck(2000));
        assert_eq!(of(answer(&syn, VIP, C, RST | ACK)), Answer::Reset(2000));
        // From the backend's own address: the reply was not translated back.
        let mut untranslated = syn;
        untranslated[2..4].copy_from_slice(&8090u16.to_be_bytes());
        assert_eq!(
            of(answer(&untranslated, server, C, SYN | ACK)),
            Answer::Stranger(2000)
        );
        // Acknowledging another sequence number: not ours.
        let mut wrong = answer(&syn, VIP, C, SYN | ACK);
        wrong[20 + 11] ^= 1;
        assert_eq!(of(wrong), Answer::Unrelated);
        // To another address.
        assert_eq!(
            of(answer(&syn, VIP, Ipv4Addr::new(10, 66, 0, 11), SYN | ACK)),
            Answer::Unrelated
        );
        // A bare ACK answers nothing.
        assert_eq!(of(answer(&syn, VIP, C, ACK)), Answer::Unrelated);
    }

    #[test]
    fn parse_refuses_what_is_not_ipv4_tcp() {
        let syn = syn_segment(SocketAddrV4::new(C, 1), SocketAddrV4::new(VIP, 80));
        let good = ipv4(C, VIP, &syn);
        assert!(parse(&good).is_some());
        assert!(parse(&good[..30]).is_none(), "cut short");
        let mut udp = good.clone();
        udp[9] = 17;
        assert!(parse(&udp).is_none());
        let mut v6 = good.clone();
        v6[0] = 0x60;
        assert!(parse(&v6).is_none());
        let mut fragment = good.clone();
        fragment[7] = 3;
        assert!(parse(&fragment).is_none());
        // IP options are skipped.
        let mut opts = good[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&syn);
        assert_eq!(parse(&opts).map(|s| s.src.port()), Some(1));
        assert!(parse(&[]).is_none());
    }

    #[test]
    fn port_plans_do_not_overlap() {
        let mut plan = PortPlan::new(1024, 1033);
        assert_eq!(plan.take(3), Some(1024..1027));
        assert_eq!(plan.take(7), Some(1027..1034));
        assert_eq!(plan.left(), 0);
        assert_eq!(plan.take(1), None);
        let mut plan = PortPlan::new(1024, 1030);
        assert_eq!(plan.take(8), None);
        assert_eq!(plan.left(), 7);
        assert_eq!(plan.take(0), Some(1024..1024));
        let mut top = PortPlan::new(65_000, 65_535);
        assert_eq!(top.take(536), None, "a range cannot end past u16");
        assert_eq!(top.take(535), Some(65_000..65_535));
    }
}
