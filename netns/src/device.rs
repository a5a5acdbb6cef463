//! A device of a dataplane's own and the host routes through it, as a dataplane keeps
//! them for addresses it handles itself (one netlink session per call, so
//! thousands of routes cost one thread and one socket).

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{NetnsError, Result};
use crate::link::{Route, format_mac, with_netlink};
use crate::ns::NetNs;

/// Creates the veth pair `name` / `peer` (both in `ns`), `name` with the
/// MAC address `mac` and ARP off (a route through it needs no neighbour:
/// frames carry its own address), both up. An existing interface called
/// `name` is left as it is: `Ok(false)`. (A veth pair rather than a dummy
/// interface, which not every kernel has.)
pub fn create_device_veth(ns: &NetNs, name: &str, peer: &str, mac: [u8; 6]) -> Result<bool> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let mut links = handle.link().get().match_name(name).execute();
        if let Ok(Some(_)) = links.try_next().await {
            return Ok(false);
        }
        let message = LinkVeth::new(name, peer)
            .address(mac.to_vec())
            .arp(false)
            .up()
            .build();
        handle.link().add(message).execute().await.map_err(|e| {
            NetnsError::netlink(
                ns_name,
                format!("create veth {name} peer {peer} address {}", format_mac(mac)),
                e,
            )
        })?;
        let mut links = handle.link().get().match_name(peer).execute();
        let index = match links.try_next().await {
            Ok(Some(m)) => m.header.index,
            _ => {
                return Err(NetnsError::LinkNotFound {
                    ns: ns_name.to_owned(),
                    ifname: peer.to_owned(),
                });
            }
        };
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("set {peer} up"), e))?;
        Ok(true)
    })
}

/// The index and MAC address of interface `name`, or `None` when there
/// is none.
pub fn link_index_mac(ns: &NetNs, name: &str) -> Result<Option<(u32, Option<[u8; 6]>)>> {
    with_netlink(ns, |handle| async move {
        let mut links = handle.link().get().match_name(name).execute();
        let Ok(Some(message)) = links.try_next().await else {
            return Ok(None);
        };
        let mac = message.attributes.iter().find_map(|attr| match attr {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        Ok(Some((message.header.index, mac)))
    })
}

/// Makes the main table's IPv4 and IPv6 routes through interface index
/// `oif` exactly `want` (each `DST dev IFNAME scope link`): the missing
/// ones added, the others deleted. Returns how many were added and
/// deleted.
pub fn sync_device_routes(ns: &NetNs, oif: u32, want: &BTreeSet<IpNet>) -> Result<(usize, usize)> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let mut have: Vec<(IpNet, RouteMessage)> = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessageBuilder::<IpAddr>::new().build();
            query.header.address_family = family;
            let routes: Vec<RouteMessage> = handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|e| NetnsError::netlink(ns_name, "list routes", e))?;
            for route in routes {
                if let Some(dst) = device_route(&route, oif) {
                    have.push((dst, route));
                }
            }
        }
        let present: BTreeSet<IpNet> = have.iter().map(|(dst, _)| *dst).collect();
        let mut deleted = 0;
        for (dst, route) in have {
            if !want.contains(&dst) {
                handle
                    .route()
                    .del(route)
                    .execute()
                    .await
                    .map_err(|e| NetnsError::netlink(ns_name, format!("delete route {dst}"), e))?;
                deleted += 1;
            }
        }
        let mut added = 0;
        for dst in want.difference(&present) {
            let route = Route::to(*dst).scope_link();
            let message = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len())
                .map_err(|e| NetnsError::InvalidArgument {
                    ns: ns_name.to_owned(),
                    reason: format!("route {route}: {e}"),
                })?
                .output_interface(oif)
                .scope(rtnetlink::packet_route::route::RouteScope::Link)
                .build();
            handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(|e| NetnsError::netlink(ns_name, format!("add route {route}"), e))?;
            added += 1;
        }
        Ok((added, deleted))
    })
}

/// A main-table route through `oif`: its destination.
fn device_route(route: &RouteMessage, oif: u32) -> Option<IpNet> {
    let mut table = u32::from(route.header.table);
    let mut dst = None;
    let mut through = false;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(addr) => dst = crate::link::route_ip(addr),
            RouteAttribute::Oif(index) => through = *index == oif,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || !through {
        return None;
    }
    IpNet::new(dst?, route.header.destination_prefix_length).ok()
}
