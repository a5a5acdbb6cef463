//! The filter against the kernel: in a namespace of its own, a socket
//! subscribed to conntrack's new entries with the filter receives the
//! entry of a connection DNAT rewrote and not that of a plain one, while
//! the same subscription without the filter receives both. Needs root;
//! fails, rather than skips, without it when `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use manul_netns::NetNs;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::*;
use crate::flows::netlink::{entry_of, messages};

/// `NFNLGRP_CONNTRACK_NEW`.
const GROUP_CT_NEW: u32 = 1;

fn subscribed(filtered: bool) -> Socket {
    let mut s = Socket::new(NETLINK_NETFILTER).unwrap();
    s.bind_auto().unwrap();
    s.add_membership(GROUP_CT_NEW).unwrap();
    if filtered {
        attach(&s).unwrap();
    }
    s.set_non_blocking(true).unwrap();
    s
}

/// The original destination ports of the new entries the socket holds.
fn new_entries(s: &Socket) -> Vec<u16> {
    let mut buf = vec![0u8; 1 << 16];
    let mut ports = Vec::new();
    let begin = Instant::now();
    while begin.elapsed() < Duration::from_millis(300) {
        match s.recv(&mut &mut buf[..], 0) {
            Ok(n) => {
                for m in messages(&buf[..n]) {
                    if let NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                        ..
                    }) = m.payload
                        && let Some(e) = entry_of(&attrs)
                        && e.orig.protocol == 6
                    {
                        ports.push(e.orig.dst_port);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("reading conntrack events: {e}"),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[test]
fn only_translated_new_entries_reach_a_filtered_socket() {
    if !manul_netns::testing::have_root("the conntrack event filter") {
        return;
    }
    let ns = NetNs::create(&format!("{}-f", manul_netns::unique_prefix("ctf"))).unwrap();
    let got = ns
        .run(|| {
            // Connections to 127.0.0.2:80 are DNAT'd to 127.0.0.1:8080.
            let mut nft = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            nft.stdin
                .take()
                .unwrap()
                .write_all(
                    b"table ip ctf {
  chain out { type nat hook output priority -100; ip daddr 127.0.0.2 tcp dport 80 dnat to 127.0.0.1:8080; }
}
",
                )
                .unwrap();
            assert!(nft.wait().unwrap().success(), "nft");
            let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).unwrap();
            let (filtered, plain) = (subscribed(true), subscribed(false));
            let connect = |a: SocketAddr| {
                let c = TcpStream::connect_timeout(&a, Duration::from_secs(1)).unwrap();
                let (s, _) = server.accept().unwrap();
                (c, s)
            };
            let _translated = connect(SocketAddr::from(([127, 0, 0, 2], 80)));
            let _plain = connect(SocketAddr::from(([127, 0, 0, 1], 8080)));
            (new_entries(&filtered), new_entries(&plain))
        })
        .unwrap();
    assert_eq!(got, (vec![80], vec![80, 8080]), "(filtered, unfiltered)");
}

#[test]
fn the_program_ends_in_returns_and_jumps_inside_it() {
    let p = translated_only();
    for (i, ins) in p.iter().enumerate() {
        if ins.code & 0x07 == 0x05 {
            assert!(i + 1 + usize::from(ins.jt) < p.len(), "{i}: jt");
            assert!(i + 1 + usize::from(ins.jf) < p.len(), "{i}: jf");
        }
    }
    assert_eq!(p.last().map(|i| i.code), Some(RET_K));
}
