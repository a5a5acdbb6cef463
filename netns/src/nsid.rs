//! Which network namespaces sit at the far end of a namespace's links (a
//! veth's peer namespace): by the id (nsid) the namespace knows each peer
//! by, `IFLA_LINK_NETNSID` on the link and `RTM_GETNSID` for a namespace
//! file, both asked inside the namespace.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;

use futures::TryStreamExt as _;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};

use crate::error::{NetnsError, Result};
use crate::link::with_netlink;
use crate::ns::NetNs;

/// The paths among `candidates` that name a namespace at the far end of
/// one of `ns`'s links named in `links` (their peer namespaces, compared
/// by the nsid `ns` has for each). A candidate that cannot be opened, or
/// that `ns` has no id for, is left out; so is every one when no such
/// link has a peer elsewhere.
pub fn link_peer_namespaces(
    ns: &NetNs,
    links: &BTreeSet<String>,
    candidates: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    let name = ns.name();
    with_netlink(ns, |mut handle| async move {
        let mut ids = BTreeSet::new();
        let mut dump = handle.link().get().execute();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(|e| NetnsError::netlink(name, "list links", e))?
        {
            let named = msg
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if links.contains(n)));
            if !named {
                continue;
            }
            ids.extend(msg.attributes.iter().filter_map(|a| match a {
                LinkAttribute::LinkNetNsId(id) if *id >= 0 => Some(*id),
                _ => None,
            }));
        }
        let mut found = Vec::new();
        if ids.is_empty() {
            return Ok(found);
        }
        for path in candidates {
            let Ok(file) = File::open(path) else {
                continue;
            };
            if nsid_of(&mut handle, name, &file)
                .await?
                .is_some_and(|id| ids.contains(&id))
            {
                found.push(path.clone());
            }
        }
        Ok(found)
    })
}

/// The id the handle's namespace has for the namespace `file` opens, if
/// it has one (`RTM_GETNSID` by file descriptor; none is assigned here).
async fn nsid_of(handle: &mut rtnetlink::Handle, ns: &str, file: &File) -> Result<Option<i32>> {
    let mut msg = NsidMessage::default();
    let fd = u32::try_from(file.as_raw_fd()).unwrap_or(u32::MAX);
    msg.attributes = vec![NsidAttribute::Fd(fd)];
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut answers = handle
        .request(req)
        .map_err(|e| NetnsError::netlink(ns, "ask a namespace's id", e))?;
    let mut id = None;
    while let Some(answer) = futures::StreamExt::next(&mut answers).await {
        match answer.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(NetnsError::netlink(
                    ns,
                    "ask a namespace's id",
                    rtnetlink::Error::NetlinkError(e),
                ));
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                id = m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(i) if *i >= 0 => Some(*i),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    Ok(id)
}
