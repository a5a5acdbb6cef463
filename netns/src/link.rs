//! Links, addresses and routes over rtnetlink, each inside the namespace it
//! is given: the netlink socket is opened on a thread that entered it.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkWireguard,
    RouteMessageBuilder,
};

use crate::error::{NetnsError, Result, netlink_errno};
use crate::ns::NetNs;

const ENODEV: i32 = nix::libc::ENODEV;

/// Runs `f` with a netlink handle opened inside `ns`, on a current-thread
/// tokio runtime on a thread that entered `ns`.
pub(crate) fn with_netlink<T, F, Fut>(ns: &NetNs, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    let name = ns.name();
    ns.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NetnsError::io(name, "start a tokio runtime", e))?;
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection()
                .map_err(|e| NetnsError::io(name, "open a netlink socket", e))?;
            let connection = tokio::spawn(connection);
            let result = f(handle).await;
            connection.abort();
            result
        })
    })?
}

/// The index of `ifname`, or [`NetnsError::LinkNotFound`].
async fn index_of(handle: &Handle, ns: &str, ifname: &str) -> Result<u32> {
    Ok(message_of(handle, ns, ifname).await?.header.index)
}

async fn message_of(handle: &Handle, ns: &str, ifname: &str) -> Result<LinkMessage> {
    let mut links = handle.link().get().match_name(ifname).execute();
    match links.try_next().await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(not_found(ns, ifname)),
        Err(e) if netlink_errno(&e) == Some(ENODEV) => Err(not_found(ns, ifname)),
        Err(e) => Err(NetnsError::netlink(ns, format!("get link {ifname}"), e)),
    }
}

fn not_found(ns: &str, ifname: &str) -> NetnsError {
    NetnsError::LinkNotFound {
        ns: ns.to_owned(),
        ifname: ifname.to_owned(),
    }
}

/// Creates the veth pair `name` (in `ns`) / `peer_name` (created directly
/// in `peer_ns`, which may be `ns` itself). Both ends start down.
pub fn create_veth(ns: &NetNs, name: &str, peer_ns: &NetNs, peer_name: &str) -> Result<()> {
    let peer_file = File::open(peer_ns.path()).map_err(|e| {
        NetnsError::io(
            peer_ns.name(),
            format!("open {}", peer_ns.path().display()),
            e,
        )
    })?;
    let peer_fd = peer_file.as_raw_fd();
    let ns_name = ns.name();
    let peer_ns_name = peer_ns.name();
    let result = with_netlink(ns, |handle| async move {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .setns_by_fd(peer_fd)
            .build();
        let message = LinkVeth::new(name, peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        handle.link().add(message).execute().await.map_err(|e| {
            NetnsError::netlink(
                ns_name,
                format!("create veth {name} with peer {peer_name} in namespace {peer_ns_name}"),
                e,
            )
        })
    });
    drop(peer_file);
    result
}

/// Creates a kernel WireGuard interface `name` (down). Without WireGuard
/// in the kernel this fails with `EOPNOTSUPP` ([`NetnsError::errno`]).
pub fn create_wireguard(ns: &NetNs, name: &str) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        handle
            .link()
            .add(LinkWireguard::new(name).build())
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("add wireguard link {name}"), e))
    })
}

/// Deletes a link (for a veth, both ends go). [`NetnsError::LinkNotFound`]
/// when absent.
pub fn delete_link(ns: &NetNs, name: &str) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let index = index_of(&handle, ns_name, name).await?;
        match handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(ENODEV) => Err(not_found(ns_name, name)),
            Err(e) => Err(NetnsError::netlink(
                ns_name,
                format!("delete link {name}"),
                e,
            )),
        }
    })
}

/// Whether `ns` has an interface called `name`.
pub fn link_exists(ns: &NetNs, name: &str) -> Result<bool> {
    match link_index(ns, name) {
        Ok(_) => Ok(true),
        Err(NetnsError::LinkNotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The interface index of `name` in `ns`.
pub fn link_index(ns: &NetNs, name: &str) -> Result<u32> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        index_of(&handle, ns_name, name).await
    })
}

/// Sets `name` administratively up.
pub fn link_up(ns: &NetNs, name: &str) -> Result<()> {
    set_link(ns, name, "set up", |builder| builder.up())
}

/// Sets the MTU of `name`.
pub fn set_mtu(ns: &NetNs, name: &str, mtu: u32) -> Result<()> {
    set_link(ns, name, &format!("set mtu {mtu}"), |builder| {
        builder.mtu(mtu)
    })
}

/// Sets the MAC address of `name`.
pub fn set_mac(ns: &NetNs, name: &str, mac: [u8; 6]) -> Result<()> {
    set_link(
        ns,
        name,
        &format!("set address {}", format_mac(mac)),
        |builder| builder.address(mac.to_vec()),
    )
}

/// The MAC address of `name`.
pub fn link_mac(ns: &NetNs, name: &str) -> Result<[u8; 6]> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let message = message_of(&handle, ns_name, name).await?;
        message
            .attributes
            .iter()
            .find_map(|attr| match attr {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| NetnsError::Unexpected {
                ns: ns_name.to_owned(),
                what: format!("interface {name} has no 6-byte hardware address"),
            })
    })
}

/// Creates a Linux bridge called `name`, already up.
pub fn create_bridge(ns: &NetNs, name: &str) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("create bridge {name}"), e))
    })
}

/// Enslaves `ifname` to `bridge` (both in `ns`).
pub fn set_master(ns: &NetNs, ifname: &str, bridge: &str) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let bridge_index = index_of(&handle, ns_name, bridge).await?;
        let index = index_of(&handle, ns_name, ifname).await?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge_index)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("set {ifname} master {bridge}"), e))
    })
}

fn set_link(
    ns: &NetNs,
    name: &str,
    what: &str,
    change: impl FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec> + Send,
) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let index = index_of(&handle, ns_name, name).await?;
        let message = change(LinkUnspec::new_with_index(index)).build();
        handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("{what} on {name}"), e))
    })
}

/// Adds `addr` (address and prefix length, e.g. `10.0.0.1/24`) to `ifname`.
/// An address that is already there is an error (`EEXIST`). An IPv6
/// address skips duplicate address detection (`IFA_F_NODAD`): usable at
/// once, never tentative (with `accept_dad=0` alone it is tentative until
/// the kernel's address worker runs after the link comes up, and a bind
/// to it in that window fails with `EADDRNOTAVAIL`).
pub fn add_address(ns: &NetNs, ifname: &str, addr: IpNet) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let index = index_of(&handle, ns_name, ifname).await?;
        let mut request = handle.address().add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("add address {addr} to {ifname}"), e))
    })
}

/// The addresses on `ifname`, both families.
pub fn list_addresses(ns: &NetNs, ifname: &str) -> Result<Vec<IpNet>> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let index = index_of(&handle, ns_name, ifname).await?;
        let messages: Vec<_> = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("list addresses of {ifname}"), e))?;
        let mut out = Vec::new();
        for message in messages {
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address)
                && let Ok(net) = IpNet::new(ip, message.header.prefix_len)
            {
                out.push(net);
            }
        }
        Ok(out)
    })
}

/// The interface holding address `ip` (any prefix length), if any.
pub fn interface_with_address(ns: &NetNs, ip: IpAddr) -> Result<Option<String>> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let messages: Vec<_> = handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, "list addresses", e))?;
        let Some(index) = messages
            .iter()
            .find(|m| {
                m.attributes.iter().any(|a| match a {
                    AddressAttribute::Local(a) | AddressAttribute::Address(a) => *a == ip,
                    _ => false,
                })
            })
            .map(|m| m.header.index)
        else {
            return Ok(None);
        };
        let mut links = handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(message)) => Ok(message.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(NetnsError::netlink(ns_name, format!("get link {index}"), e)),
        }
    })
}

/// The MTU of `name`.
pub fn link_mtu(ns: &NetNs, name: &str) -> Result<u32> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let message = message_of(&handle, ns_name, name).await?;
        message
            .attributes
            .iter()
            .find_map(|attr| match attr {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .ok_or_else(|| NetnsError::Unexpected {
                ns: ns_name.to_owned(),
                what: format!("interface {name} has no MTU"),
            })
    })
}

/// A route to add or replace: `ip route add DST [via VIA] [dev DEV]
/// [onlink] [scope link]`, in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination; host bits are cleared.
    pub dst: IpNet,
    /// The gateway, if any.
    pub via: Option<IpAddr>,
    /// The output interface, if any.
    pub dev: Option<String>,
    /// Treat the gateway as directly reachable on `dev`.
    pub onlink: bool,
    /// `scope link` instead of the default `scope global`.
    pub scope_link: bool,
    /// Unicast, or a route that drops or rejects.
    pub kind: RouteKind,
}

/// The route types this crate writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A normal route.
    #[default]
    Unicast,
    /// Drops silently (`ip route add blackhole DST`).
    Blackhole,
    /// Drops with ICMP host unreachable (`ip route add unreachable DST`).
    Unreachable,
    /// Drops with ICMP administratively prohibited (`ip route add
    /// prohibit DST`).
    Prohibit,
}

impl Route {
    /// A route to `dst` with nothing else set yet.
    pub fn to(dst: IpNet) -> Route {
        Route {
            dst,
            via: None,
            dev: None,
            onlink: false,
            scope_link: false,
            kind: RouteKind::Unicast,
        }
    }

    /// Sets the route type.
    pub fn kind(mut self, kind: RouteKind) -> Route {
        self.kind = kind;
        self
    }

    /// Sets the gateway.
    pub fn via(mut self, via: IpAddr) -> Route {
        self.via = Some(via);
        self
    }

    /// Sets the output interface.
    pub fn dev(mut self, dev: &str) -> Route {
        self.dev = Some(dev.to_owned());
        self
    }

    /// Sets `onlink`.
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    /// Sets `scope link`.
    pub fn scope_link(mut self) -> Route {
        self.scope_link = true;
        self
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Blackhole => write!(f, "blackhole ")?,
            RouteKind::Unreachable => write!(f, "unreachable ")?,
            RouteKind::Prohibit => write!(f, "prohibit ")?,
        }
        write!(f, "{}", self.dst.trunc())?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        if self.scope_link {
            write!(f, " scope link")?;
        }
        Ok(())
    }
}

/// Adds a route; one that is already there is an error (`EEXIST`).
pub fn add_route(ns: &NetNs, route: &Route) -> Result<()> {
    write_route(ns, route, false)
}

/// Adds a route, or replaces the one to the same destination.
pub fn replace_route(ns: &NetNs, route: &Route) -> Result<()> {
    write_route(ns, route, true)
}

fn write_route(ns: &NetNs, route: &Route, replace: bool) -> Result<()> {
    let ns_name = ns.name();
    let verb = if replace { "replace" } else { "add" };
    with_netlink(ns, |handle| async move {
        let oif = match &route.dev {
            Some(dev) => Some(index_of(&handle, ns_name, dev).await?),
            None => None,
        };
        let message = route_message(ns_name, route, oif)?;
        let request = handle.route().add(message);
        let request = if replace { request.replace() } else { request };
        request
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("{verb} route {route}"), e))
    })
}

fn route_message(ns: &str, route: &Route, oif: Option<u32>) -> Result<RouteMessage> {
    let invalid = |e: String| NetnsError::InvalidArgument {
        ns: ns.to_owned(),
        reason: format!("route {route}: {e}"),
    };
    let dst = route.dst.trunc();
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .map_err(|e| invalid(e.to_string()))?;
    if let Some(via) = route.via {
        builder = builder.gateway(via).map_err(|e| invalid(e.to_string()))?;
    }
    if let Some(index) = oif {
        builder = builder.output_interface(index);
    }
    if route.onlink {
        builder = builder.onlink();
    }
    if route.scope_link {
        builder = builder.scope(RouteScope::Link);
    }
    builder = match route.kind {
        RouteKind::Unicast => builder,
        RouteKind::Blackhole => builder.kind(RouteType::BlackHole),
        RouteKind::Unreachable => builder.kind(RouteType::Unreachable),
        RouteKind::Prohibit => builder.kind(RouteType::Prohibit),
    };
    Ok(builder.build())
}

/// Deletes the main-table route to `dst` (any gateway, device, scope or
/// protocol), like `ip route del DST`. An absent route is an error
/// (`ESRCH`).
pub fn delete_route(ns: &NetNs, dst: IpNet) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let dst = dst.trunc();
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(|e| NetnsError::InvalidArgument {
                ns: ns_name.to_owned(),
                reason: format!("route {dst}: {e}"),
            })?;
        let header = &mut builder.get_mut().header;
        header.protocol = RouteProtocol::Unspec;
        header.scope = RouteScope::NoWhere;
        header.kind = RouteType::Unspec;
        handle
            .route()
            .del(builder.build())
            .execute()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, format!("delete route {dst}"), e))
    })
}

/// Adds (or replaces) a permanent neighbour entry: `ip neigh replace IP
/// lladdr MAC dev IFNAME nud permanent`.
pub fn add_neighbour(ns: &NetNs, ifname: &str, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let index = index_of(&handle, ns_name, ifname).await?;
        handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetnsError::netlink(
                    ns_name,
                    format!("neighbour {ip} lladdr {} dev {ifname}", format_mac(mac)),
                    e,
                )
            })
    })
}

/// A route as read back from the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The destination (`0.0.0.0/0` or `::/0` for a default route).
    pub dst: IpNet,
    /// The gateway, if any.
    pub via: Option<IpAddr>,
    /// The output interface's name, if any.
    pub dev: Option<String>,
    /// `scope link`.
    pub scope_link: bool,
    /// The `onlink` flag.
    pub onlink: bool,
    /// The route type (`None` for types this crate does not write, such as
    /// broadcast or local).
    pub kind: Option<RouteKind>,
}

/// The main table's routes, IPv4 and IPv6.
pub fn list_routes(ns: &NetNs) -> Result<Vec<RouteInfo>> {
    let ns_name = ns.name();
    with_netlink(ns, |handle| async move {
        let links: Vec<LinkMessage> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetnsError::netlink(ns_name, "list links", e))?;
        let names: HashMap<u32, String> = links
            .iter()
            .filter_map(|link| {
                link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some((link.header.index, name.clone())),
                    _ => None,
                })
            })
            .collect();
        let mut out = Vec::new();
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
            out.extend(routes.iter().filter_map(|route| route_info(route, &names)));
        }
        Ok(out)
    })
}

fn route_info(route: &RouteMessage, names: &HashMap<u32, String>) -> Option<RouteInfo> {
    let mut table = u32::from(route.header.table);
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(addr) => dst = route_ip(addr),
            RouteAttribute::Gateway(addr) => via = route_ip(addr),
            RouteAttribute::Via(RouteVia::Inet(v4)) => via = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => via = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = match (dst, route.header.address_family) {
        (Some(ip), _) => ip,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    Some(RouteInfo {
        dst: IpNet::new(dst, route.header.destination_prefix_length).ok()?,
        via,
        dev: oif.and_then(|index| names.get(&index).cloned()),
        scope_link: route.header.scope == RouteScope::Link,
        onlink: route.header.flags.contains(RouteFlags::Onlink),
        kind: match route.header.kind {
            RouteType::Unicast => Some(RouteKind::Unicast),
            RouteType::BlackHole => Some(RouteKind::Blackhole),
            RouteType::Unreachable => Some(RouteKind::Unreachable),
            RouteType::Prohibit => Some(RouteKind::Prohibit),
            _ => None,
        },
    })
}

pub(crate) fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(crate) fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
