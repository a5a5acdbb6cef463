//! A socket filter for conntrack's new-connection events (classic BPF,
//! `SO_ATTACH_FILTER`). Where log records carry no conntrack entry the
//! reader subscribes to every new entry, yet keeps only translated ones
//! (a connection's start needs its Service frontend only when DNAT
//! rewrote its destination). The filter drops the others in the kernel,
//! before they are queued to the socket: no wake-up, copy or parse per
//! untranslated connection. Destroy events and anything that is not a
//! new entry pass; so does a new entry without a status attribute (user
//! space judges it as before). The program is data built here (pure);
//! attaching it is the only system call.

use std::os::fd::AsFd;

use nix::libc;
use nix::sys::socket::setsockopt;
use nix::{setsockopt_impl, sockopt_impl};

/// `SO_ATTACH_FILTER` (Linux's `asm-generic/socket.h`: 26 on every
/// architecture Manul builds for).
const SO_ATTACH_FILTER: libc::c_int = 26;

sockopt_impl!(
    /// A classic BPF program that filters what the socket receives.
    AttachFilter,
    SetOnly,
    libc::SOL_SOCKET,
    SO_ATTACH_FILTER,
    libc::sock_fprog
);

/// Where a conntrack message's attributes start: `struct nlmsghdr` (16
/// bytes) and `struct nfgenmsg` (4).
const ATTRIBUTES: u32 = 20;
/// `CTA_STATUS`: the entry's status bits, a big-endian u32.
const CTA_STATUS: u32 = 3;
/// `IPS_DST_NAT`: the entry's destination was translated.
const IPS_DST_NAT: u32 = 1 << 5;
/// `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW`: a new entry (the
/// header is in host order).
const CT_NEW: u16 = 1 << 8;

// Classic BPF opcodes (`linux/filter.h`).
const LD_H_ABS: u16 = 0x28;
const LD_W_ABS: u16 = 0x20;
const LD_W_IND: u16 = 0x40;
const LD_IMM: u16 = 0x00;
const LDX_IMM: u16 = 0x01;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const TAX: u16 = 0x07;
const RET_K: u16 = 0x06;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program: pass everything but a new entry whose status lacks
/// `IPS_DST_NAT`.
pub fn translated_only() -> Vec<libc::sock_filter> {
    // A halfword load reads big-endian; the header's type is host order.
    let ct_new = u32::from(u16::from_be_bytes(CT_NEW.to_ne_bytes()));
    // SKF_AD_OFF + SKF_AD_NLATTR: with A an offset and X an attribute
    // type, A becomes the offset of the first such attribute from A on
    // (0: none).
    let find_attribute = (libc::SKF_AD_OFF + libc::SKF_AD_NLATTR) as u32;
    const PASS: u32 = u32::MAX;
    vec![
        /* 0 */ op(LD_H_ABS, 0, 0, 4),
        /* 1 */ op(JEQ_K, 0, 8, ct_new), // not a new entry: 10
        /* 2 */ op(LD_IMM, 0, 0, ATTRIBUTES),
        /* 3 */ op(LDX_IMM, 0, 0, CTA_STATUS),
        /* 4 */ op(LD_W_ABS, 0, 0, find_attribute),
        /* 5 */ op(JEQ_K, 4, 0, 0), // no status: 10
        /* 6 */ op(TAX, 0, 0, 0),
        /* 7 */ op(LD_W_IND, 0, 0, 4), // the value, after the 4-byte nlattr header
        /* 8 */ op(JSET_K, 1, 0, IPS_DST_NAT), // translated: 10
        /* 9 */ op(RET_K, 0, 0, 0),
        /* 10 */ op(RET_K, 0, 0, PASS),
    ]
}

/// Attaches [`translated_only`] to `socket`.
pub fn attach(socket: &impl AsFd) -> std::io::Result<()> {
    let mut program = translated_only();
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(u16::MAX),
        filter: program.as_mut_ptr(),
    };
    setsockopt(socket, AttachFilter, &fprog)?;
    Ok(())
}

#[cfg(test)]
#[path = "ct_filter_tests.rs"]
mod tests;
