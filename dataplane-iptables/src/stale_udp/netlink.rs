//! The kernel side of clearing stale UDP entries: one conntrack dump and
//! one delete per stale entry (by its original tuple), over a
//! `NETLINK_NETFILTER` socket opened in the calling thread's network
//! namespace.

use manul_dataplane_api::FlowTuple;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::{UdpFrontends, stale};
use crate::flows::FlowSocketError;
use crate::flows::netlink::{dump_table, messages, send};

/// Why stale entries could not be cleared.
#[derive(Debug, thiserror::Error)]
pub enum StaleUdpError {
    #[error("opening a conntrack socket")]
    Open(#[source] std::io::Error),
    #[error("listing conntrack entries")]
    Dump(#[source] FlowSocketError),
    #[error("deleting the conntrack entry of {tuple:?}")]
    Delete {
        tuple: FlowTuple,
        #[source]
        source: std::io::Error,
    },
}

/// Deletes the entries [`stale`] finds; returns how many it deleted (one
/// gone meanwhile is not counted, and is no error). On a socket of its
/// own; see [`clear_on`].
pub fn clear(frontends: &UdpFrontends) -> Result<usize, StaleUdpError> {
    if frontends.is_empty() {
        return Ok(0);
    }
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(StaleUdpError::Open)?;
    socket.bind_auto().map_err(StaleUdpError::Open)?;
    clear_on(&socket, frontends)
}

/// [`clear`] on a `NETLINK_NETFILTER` socket that is kept open (closing
/// one waits for nf_tables, see `crate::netlink`) and has no answer
/// queued.
pub fn clear_on(socket: &Socket, frontends: &UdpFrontends) -> Result<usize, StaleUdpError> {
    if frontends.is_empty() {
        return Ok(0);
    }
    let entries = dump_table(socket).map_err(StaleUdpError::Dump)?;
    let mut deleted = 0;
    for tuple in stale(frontends, &entries) {
        match delete(socket, &tuple) {
            Ok(()) => deleted += 1,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
            Err(source) => return Err(StaleUdpError::Delete { tuple, source }),
        }
    }
    Ok(deleted)
}

/// Deletes one entry by its original tuple and waits for the answer.
fn delete(socket: &Socket, t: &FlowTuple) -> std::io::Result<()> {
    let family = match t.src {
        std::net::IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        std::net::IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    };
    let tuple = vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(t.src),
            IPTuple::DestinationAddress(t.dst),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(t.protocol.into()),
            ProtoTuple::SourcePort(t.src_port),
            ProtoTuple::DestinationPort(t.dst_port),
        ]),
    ];
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_ACK;
    let msg = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
        )),
    );
    send(socket, msg)?;
    let mut buf = vec![0u8; 8192];
    let n = socket.recv(&mut &mut buf[..], 0)?;
    for m in messages(&buf[..n]) {
        if let NetlinkPayload::Error(e) = m.payload
            && let Some(code) = e.code
        {
            return Err(std::io::Error::from_raw_os_error(-code.get()));
        }
    }
    Ok(())
}
