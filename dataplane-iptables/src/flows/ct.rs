//! The conntrack entry an nflog record carries (`NFULA_CT`, asked for
//! with the group's `NFULNL_CFG_F_CONNTRACK` flag): a ctnetlink attribute
//! set like a conntrack event's, of which this reads the original tuple
//! (as the client sent it: the Service frontend as destination) and the
//! reply tuple (the backend answering). With them a connection's `Start`
//! names its frontend although the packet was logged after DNAT.
//!
//! Parsed here rather than by `netlink-packet-netfilter` (which hands the
//! attribute over as opaque bytes): bounded, without allocating; every
//! length is checked against what is left, and bad input is an error,
//! never a panic nor a read past the end. Unknown attributes are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use manul_dataplane_api::FlowTuple;

use super::track::CtEntry;

/// nflog's packet attribute carrying the conntrack entry (nested).
pub const NFULA_CT: u16 = 18;
/// nflog's packet attribute carrying the packet's `ip_conntrack_info`
/// (big-endian `u32`).
pub const NFULA_CT_INFO: u16 = 19;

const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// `IP_CT_IS_REPLY`: `ip_conntrack_info` values from here on are of the
/// reply direction.
const IP_CT_IS_REPLY: u32 = 3;

/// Why an `NFULA_CT` or `NFULA_CT_INFO` attribute could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtParseError {
    #[error("attribute header cut short at byte {at} of {len}")]
    Header { at: usize, len: usize },
    #[error("attribute {kind} at byte {at} claims {claimed} bytes where {left} are left")]
    Length {
        kind: u16,
        at: usize,
        claimed: usize,
        left: usize,
    },
    #[error("{what} is {len} bytes instead of {want}")]
    Size {
        what: &'static str,
        len: usize,
        want: usize,
    },
    #[error("the {tuple} tuple has no {what}")]
    Missing {
        tuple: &'static str,
        what: &'static str,
    },
    #[error("the {tuple} tuple mixes IPv4 and IPv6 addresses")]
    Family { tuple: &'static str },
}

/// One attribute: its type (flags masked off) and value.
type Attr<'a> = (u16, &'a [u8]);

/// The attributes of `buf`, one after the other; the first malformed one
/// ends the walk with its error.
#[derive(Debug)]
struct Attrs<'a> {
    buf: &'a [u8],
    at: usize,
    failed: bool,
}

fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs {
        buf,
        at: 0,
        failed: false,
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, CtParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.buf.len() {
            return None;
        }
        let at = self.at;
        let rest = &self.buf[at..];
        let Some(&[l0, l1, k0, k1]) = rest.get(..4) else {
            self.failed = true;
            return Some(Err(CtParseError::Header {
                at,
                len: self.buf.len(),
            }));
        };
        let len = usize::from(u16::from_ne_bytes([l0, l1]));
        let kind = u16::from_ne_bytes([k0, k1]) & NLA_TYPE_MASK;
        let Some(value) = rest.get(4..len).filter(|_| len >= 4) else {
            self.failed = true;
            return Some(Err(CtParseError::Length {
                kind,
                at,
                claimed: len,
                left: rest.len(),
            }));
        };
        // Values are padded to 4 bytes; the last one's padding may be cut.
        self.at = at.saturating_add((len + 3) & !3);
        Some(Ok((kind, value)))
    }
}

fn exact<const N: usize>(what: &'static str, v: &[u8]) -> Result<[u8; N], CtParseError> {
    v.try_into().map_err(|_| CtParseError::Size {
        what,
        len: v.len(),
        want: N,
    })
}

/// One `CTA_TUPLE_*` attribute's value.
fn tuple(name: &'static str, value: &[u8]) -> Result<FlowTuple, CtParseError> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut src_port, mut dst_port) = (0, 0);
    for a in attrs(value) {
        match a? {
            (CTA_TUPLE_IP, ips) => {
                for a in attrs(ips) {
                    match a? {
                        (CTA_IP_V4_SRC, v) => {
                            src = Some(IpAddr::V4(Ipv4Addr::from(exact::<4>("CTA_IP_V4_SRC", v)?)));
                        }
                        (CTA_IP_V4_DST, v) => {
                            dst = Some(IpAddr::V4(Ipv4Addr::from(exact::<4>("CTA_IP_V4_DST", v)?)));
                        }
                        (CTA_IP_V6_SRC, v) => {
                            src =
                                Some(IpAddr::V6(Ipv6Addr::from(exact::<16>("CTA_IP_V6_SRC", v)?)));
                        }
                        (CTA_IP_V6_DST, v) => {
                            dst =
                                Some(IpAddr::V6(Ipv6Addr::from(exact::<16>("CTA_IP_V6_DST", v)?)));
                        }
                        _ => {}
                    }
                }
            }
            (CTA_TUPLE_PROTO, parts) => {
                for a in attrs(parts) {
                    match a? {
                        (CTA_PROTO_NUM, v) => protocol = Some(exact::<1>("CTA_PROTO_NUM", v)?[0]),
                        (CTA_PROTO_SRC_PORT, v) => {
                            src_port = u16::from_be_bytes(exact("CTA_PROTO_SRC_PORT", v)?);
                        }
                        (CTA_PROTO_DST_PORT, v) => {
                            dst_port = u16::from_be_bytes(exact("CTA_PROTO_DST_PORT", v)?);
                        }
                        // ICMP's id, type and code: no ports, as the
                        // packet parser has none for it.
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let missing = |what| CtParseError::Missing { tuple: name, what };
    let src = src.ok_or_else(|| missing("source address"))?;
    let dst = dst.ok_or_else(|| missing("destination address"))?;
    let protocol = protocol.ok_or_else(|| missing("protocol"))?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(CtParseError::Family { tuple: name });
    }
    if !matches!(protocol, 6 | 17 | 132 | 136) {
        (src_port, dst_port) = (0, 0);
    }
    Ok(FlowTuple {
        protocol,
        src,
        src_port,
        dst,
        dst_port,
    })
}

/// The entry of an `NFULA_CT` value (a ctnetlink attribute set; a
/// conntrack message's attributes read the same): its original and reply
/// tuples. Counters and state are not read (`counts: None`).
pub fn parse_ct(value: &[u8]) -> Result<CtEntry, CtParseError> {
    let (mut orig, mut reply) = (None, None);
    for a in attrs(value) {
        match a? {
            (CTA_TUPLE_ORIG, v) => orig = Some(tuple("original", v)?),
            (CTA_TUPLE_REPLY, v) => reply = Some(tuple("reply", v)?),
            _ => {}
        }
    }
    let orig = orig.ok_or(CtParseError::Missing {
        tuple: "original",
        what: "CTA_TUPLE_ORIG",
    })?;
    let reply = reply.ok_or(CtParseError::Missing {
        tuple: "reply",
        what: "CTA_TUPLE_REPLY",
    })?;
    Ok(CtEntry {
        orig,
        reply_src: reply.src,
        reply_src_port: reply.src_port,
        counts: None,
        closed: false,
    })
}

/// The `ip_conntrack_info` of an `NFULA_CT_INFO` value.
pub fn parse_ct_info(value: &[u8]) -> Result<u32, CtParseError> {
    Ok(u32::from_be_bytes(exact("NFULA_CT_INFO", value)?))
}

/// The Service frontend a logged packet's connection came through: its
/// entry's original destination, when the packet is of the original
/// direction (`info`), the entry is this packet's as policy saw it (after
/// DNAT, before SNAT) and it was translated.
pub fn frontend_of(
    entry: &CtEntry,
    info: Option<u32>,
    packet: &FlowTuple,
) -> Option<(IpAddr, u16)> {
    if info.is_some_and(|i| i >= IP_CT_IS_REPLY) || entry.policy_tuple() != *packet {
        return None;
    }
    entry.frontend()
}

#[cfg(test)]
#[path = "ct_tests.rs"]
mod tests;
