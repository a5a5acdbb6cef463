//! Raw sockets for the tests: SCTP over raw sockets (the test kernel may
//! have no SCTP stack), packets built with their CRC32c, sent and received
//! as they are on the wire; frames captured on a namespace's interfaces;
//! the Internet checksum to build and verify packets with.
#![allow(dead_code)]

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use manul_netns::NetNs;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
    SockaddrStorage, recv, recvfrom, sendto, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

/// The Internet checksum (RFC 1071) of `parts` concatenated (each of even
/// length but the last).
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A packet socket in `ns` that captures every frame of its interfaces,
/// both ways (opened before the traffic it is to see).
pub fn capture_socket(ns: &NetNs) -> OwnedFd {
    let fd = ns
        .run(|| {
            socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::EthAll,
            )
        })
        .unwrap()
        .unwrap();
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000)).unwrap();
    fd
}

/// Hands each frame `fd` captures within `within` to `pick` until it
/// picks one.
pub fn capture<T>(
    fd: &OwnedFd,
    within: Duration,
    mut pick: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut frame = [0u8; 2048];
    while Instant::now() < deadline {
        let Ok(n) = recv(fd.as_raw_fd(), &mut frame, MsgFlags::empty()) else {
            continue;
        };
        if let Some(found) = pick(&frame[..n]) {
            return Some(found);
        }
    }
    None
}

/// CRC32c (Castagnoli, reflected 0x82f63b78), bit by bit.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Whether an SCTP packet's checksum field holds its CRC32c (stored as
/// Linux stores it: little-endian).
pub fn crc_holds(sctp: &[u8]) -> bool {
    if sctp.len() < 12 {
        return false;
    }
    let mut copy = sctp.to_vec();
    copy[8..12].fill(0);
    sctp[8..12] == crc32c(&copy).to_le_bytes()
}

/// An SCTP packet: the common header (verification tag `vtag`) and one
/// INIT (chunk type 1) or INIT ACK (2) chunk whose initiate tag is `tag`,
/// with its CRC32c.
pub fn sctp_packet(sport: u16, dport: u16, vtag: u32, chunk: u8, tag: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&[chunk, 0]);
    p.extend_from_slice(&20u16.to_be_bytes());
    p.extend_from_slice(&tag.to_be_bytes());
    p.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    p.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&tag.to_be_bytes()); // initial TSN
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// A raw socket of `proto` in `ns` (IPv4 ones receive the IP header too).
pub fn raw_socket(ns: &NetNs, v6: bool, proto: SockProtocol) -> OwnedFd {
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = ns
        .run(move || socket(family, SockType::Raw, SockFlag::empty(), proto))
        .unwrap()
        .unwrap();
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 50_000)).unwrap();
    fd
}

pub fn send_to(fd: &OwnedFd, payload: &[u8], to: IpAddr) {
    match to {
        IpAddr::V4(a) => {
            let to = SockaddrIn::from(std::net::SocketAddrV4::new(a, 0));
            sendto(fd.as_raw_fd(), payload, &to, MsgFlags::empty()).unwrap();
        }
        IpAddr::V6(a) => {
            let to = SockaddrIn6::from(std::net::SocketAddrV6::new(a, 0, 0, 0));
            sendto(fd.as_raw_fd(), payload, &to, MsgFlags::empty()).unwrap();
        }
    };
}

/// One packet a raw socket received: its source and its layer-4 bytes.
pub fn receive(fd: &OwnedFd, v6: bool) -> Option<(IpAddr, Vec<u8>)> {
    let mut buf = [0u8; 2048];
    let (n, from) = recvfrom::<SockaddrStorage>(fd.as_raw_fd(), &mut buf).ok()?;
    let from = from?;
    let src = match (from.as_sockaddr_in(), from.as_sockaddr_in6()) {
        (Some(a), _) => IpAddr::V4(a.ip()),
        (_, Some(a)) => IpAddr::V6(a.ip()),
        _ => return None,
    };
    let data = &buf[..n];
    // IPv4 raw sockets hand over the IP header; IPv6 ones do not.
    let l4 = if v6 {
        data
    } else {
        data.get(usize::from(data.first()? & 0x0f) * 4..)?
    };
    Some((src, l4.to_vec()))
}
