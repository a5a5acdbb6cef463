//! The host's service device: how host-networked processes reach
//! services without connect-time load balancing (`bpf/manul_svc_host.h`
//! says what the programs do there).
//!
//! The driver creates a veth pair of its own, [`HOST_SERVICE_DEVICE`]
//! (with the MAC [`HOST_SERVICE_MAC`], how it knows the device is its
//! own, and ARP off) and [`HOST_SERVICE_PEER`],
//! attaches both programs to it, names it in `manul_meta`, and keeps one
//! host route (`IP/32` or `IP/128 dev manul-svc scope link`) per cluster
//! IP, external IP and load-balancer ingress IP of the desired services,
//! both families (as kube-proxy's OUTPUT chain translates all three for
//! host processes), so a host process's packet to any of them leaves
//! through it. IPv6 routes only when the device has IPv6 (the kernel's,
//! and `disable_ipv6` cleared on the device); without it the IPv6
//! addresses keep whatever route the host has, and are not translated.
//! Routes are written only when the set of addresses changes (an
//! EndpointSlice change writes none), all in one netlink session. A host
//! process's packet to its own node's node port goes through loopback
//! instead (either family), so the programs are attached to `lo` too (they
//! pass everything there but such packets), and `accept_local` is set on
//! the device (the reply, redirected into it, has one of the node's
//! addresses as its source). The device, and with it its routes, is
//! removed when the setting is off at start and by
//! [`BpfDriver::purge_node`]; it outlives a restart (the links are
//! pinned), so host connections do too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use manul_dataplane_api::Operation;
use manul_netns::NetNs;

use super::BpfDriver;
use crate::abi;
use crate::error::BpfError;

/// The device's name (not a workload prefix; never a host endpoint's).
pub const HOST_SERVICE_DEVICE: &str = "manul-svc";
/// The other end of its veth pair (nothing reaches it: the programs
/// redirect or drop every packet sent to the device).
pub const HOST_SERVICE_PEER: &str = "manul-svc-p";

/// Whether `name` is loopback or the service device's pair: interfaces
/// that are never a host interface to attach as one (loopback and the
/// device get the programs of their own, the peer none).
pub fn is_own_or_loopback(name: &str) -> bool {
    name == "lo" || name == HOST_SERVICE_DEVICE || name == HOST_SERVICE_PEER
}

/// The device's MAC address (`manul_maps.h`'s `MANUL_HOST_SVC_MAC_*`): a
/// reply the programs redirect into the device carries it as its
/// destination, so the host takes it as its own.
pub const HOST_SERVICE_MAC: [u8; 6] = {
    let hi = (abi::MANUL_HOST_SVC_MAC_HI as u16).to_be_bytes();
    let lo = abi::MANUL_HOST_SVC_MAC_LO.to_be_bytes();
    [hi[0], hi[1], lo[0], lo[1], lo[2], lo[3]]
};

/// Loopback's index in every network namespace: the programs are
/// attached there too, for a host process's connection to its own node's
/// node port (they pass everything else).
const LOOPBACK_IFINDEX: u32 = 1;

/// A service's name.
type ServiceKey = (String, String);

/// The device as this run keeps it.
#[derive(Debug)]
pub(super) struct HostServiceDevice {
    pub(super) ifindex: u32,
    /// The routes through it, as last written.
    routed: BTreeSet<IpNet>,
    /// Whether IPv6 addresses are routed through the device.
    ipv6: bool,
    /// Each service's routed addresses, and how many services claim each
    /// (kept batch by batch, so a batch costs what it names, not the
    /// number of services).
    claims: HashMap<ServiceKey, BTreeSet<IpNet>>,
    counts: BTreeMap<IpNet, usize>,
    /// An address appeared or went since the routes were written.
    changed: bool,
    /// Whether the routes must be read back and rewritten whole (at
    /// start, and after a failed write).
    stale: bool,
}

/// The calling thread's network namespace (the driver's).
fn own_ns() -> Result<NetNs, BpfError> {
    NetNs::from_path(std::path::Path::new("/proc/thread-self/ns/net")).map_err(|source| {
        BpfError::HostDevice {
            device: HOST_SERVICE_DEVICE,
            what: "open the driver's network namespace",
            source: Box::new(source),
        }
    })
}

fn device_error(what: &'static str) -> impl FnOnce(manul_netns::NetnsError) -> BpfError {
    move |source| BpfError::HostDevice {
        device: HOST_SERVICE_DEVICE,
        what,
        source: Box::new(source),
    }
}

/// Creates the device (or adopts the one an earlier run left) and
/// returns its index. An interface of that name that is not Manul's
/// (another MAC) is an error: it is never taken over.
pub(super) fn ensure_device() -> Result<u32, BpfError> {
    let ns = own_ns()?;
    manul_netns::create_device_veth(
        &ns,
        HOST_SERVICE_DEVICE,
        HOST_SERVICE_PEER,
        HOST_SERVICE_MAC,
    )
    .map_err(device_error("create"))?;
    match manul_netns::link_index_mac(&ns, HOST_SERVICE_DEVICE)
        .map_err(device_error("read back"))?
    {
        Some((ifindex, Some(mac))) if mac == HOST_SERVICE_MAC => {
            manul_netns::link_up(&ns, HOST_SERVICE_DEVICE).map_err(device_error("set up"))?;
            Ok(ifindex)
        }
        _ => Err(BpfError::Config(format!(
            "an interface named {HOST_SERVICE_DEVICE} exists and is not Manul's (its MAC is not {})",
            mac_text(HOST_SERVICE_MAC)
        ))),
    }
}

/// Removes the device (its peer and routes go with it) from the calling thread's
/// namespace if it is there and Manul's.
pub(super) fn remove_device() -> Result<(), BpfError> {
    let ns = own_ns()?;
    if let Some((_, Some(mac))) =
        manul_netns::link_index_mac(&ns, HOST_SERVICE_DEVICE).map_err(device_error("read"))?
        && mac == HOST_SERVICE_MAC
    {
        manul_netns::delete_link(&ns, HOST_SERVICE_DEVICE).map_err(device_error("delete"))?;
    }
    Ok(())
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The routes the desired services need (pure): each cluster IP,
/// external IP and load-balancer ingress IP as a host route, IPv6 ones
/// only with `ipv6`. Addresses no route may carry off the host
/// (unspecified, loopback, multicast) are left out.
pub(super) fn service_routes<'a>(
    services: impl IntoIterator<Item = &'a manul_dataplane_api::Service>,
    ipv6: bool,
) -> BTreeSet<IpNet> {
    services
        .into_iter()
        .flat_map(|s| {
            s.cluster_ips
                .iter()
                .chain(&s.external_ips)
                .chain(&s.load_balancer_ips)
        })
        .filter(|ip| !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast()))
        .filter(|ip| ipv6 || ip.is_ipv4())
        .map(|ip| IpNet::from(*ip))
        .collect()
}

/// Gives the device IPv6 when the kernel has it (`disable_ipv6` cleared
/// on the device alone): whether IPv6 addresses can be routed through it.
fn device_ipv6(ns: &NetNs) -> bool {
    let key = format!("net.ipv6.conf.{HOST_SERVICE_DEVICE}.disable_ipv6");
    match ns.set_sysctl(&key, "0") {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "no IPv6 on the host service device: host processes' IPv6 service traffic is not translated");
            false
        }
    }
}

impl HostServiceDevice {
    pub(super) fn new(ifindex: u32, ipv6: bool) -> Self {
        Self {
            ifindex,
            ipv6,
            routed: BTreeSet::new(),
            claims: HashMap::new(),
            counts: BTreeMap::new(),
            changed: true,
            stale: true,
        }
    }

    /// Service `key` now claims `ips` (empty: removed).
    fn claim(&mut self, key: ServiceKey, ips: BTreeSet<IpNet>) {
        let old = if ips.is_empty() {
            self.claims.remove(&key).unwrap_or_default()
        } else {
            self.claims.insert(key, ips.clone()).unwrap_or_default()
        };
        for ip in old.difference(&ips) {
            if let Some(n) = self.counts.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(ip);
                    self.changed = true;
                }
            }
        }
        for ip in ips.difference(&old) {
            let n = self.counts.entry(*ip).or_insert(0);
            *n += 1;
            self.changed |= *n == 1;
        }
    }

    /// The claims of the whole desired state.
    fn rebuild<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a manul_dataplane_api::Service>,
    ) {
        self.claims.clear();
        self.counts.clear();
        self.changed = true;
        for s in services {
            let ips = service_routes([s], self.ipv6);
            self.claim((s.namespace.clone(), s.name.clone()), ips);
        }
    }

    /// Makes the device's routes `want`, writing only when they differ
    /// from what was last written (or after a start or a failed write,
    /// when the kernel's are read back).
    pub(super) fn sync_routes(&mut self, want: BTreeSet<IpNet>) -> Result<(), BpfError> {
        if !self.stale && want == self.routed {
            return Ok(());
        }
        let ns = own_ns()?;
        self.stale = true;
        let (added, deleted) = manul_netns::sync_device_routes(&ns, self.ifindex, &want)
            .map_err(device_error("write the service addresses' routes"))?;
        tracing::debug!(added, deleted, "host service device routes");
        self.routed = want;
        self.stale = false;
        self.changed = false;
        Ok(())
    }
}

impl BpfDriver {
    /// At start: the device made and its programs attached (setting on),
    /// or an earlier run's removed (off).
    pub(super) fn start_host_service_device(&mut self) -> Result<(), BpfError> {
        if !self.config.host_service_nat {
            // With the slot 0 the programs pass everything on loopback.
            self.maps.store_host_service_if(0)?;
            self.detach(LOOPBACK_IFINDEX);
            if let Some(ix) = super::interfaces::by_name().get(HOST_SERVICE_DEVICE) {
                self.detach(*ix);
            }
            return remove_device();
        }
        let ifindex = ensure_device()?;
        let ns = own_ns()?;
        let ipv6 = device_ipv6(&ns);
        // A reply to a host process's connection to its own node port
        // has one of the node's addresses as its source.
        ns.set_sysctl(
            &format!("net.ipv4.conf.{HOST_SERVICE_DEVICE}.accept_local"),
            "1",
        )
        .map_err(device_error("accept local sources"))?;
        self.attach(HOST_SERVICE_DEVICE.to_owned(), ifindex)?;
        self.maps.store_host_service_if(ifindex)?;
        self.attach("lo".to_owned(), LOOPBACK_IFINDEX)?;
        self.host_device = Some(HostServiceDevice::new(ifindex, ipv6));
        Ok(())
    }

    /// After a batch that touched services: the service addresses' routes.
    pub(super) fn sync_host_service_routes(&mut self, batch: &[Operation]) -> Result<(), BpfError> {
        let Some(device) = self.host_device.as_mut() else {
            return Ok(());
        };
        let touched = batch.iter().any(|op| {
            matches!(
                op,
                Operation::InSync | Operation::ServiceUpdate(_) | Operation::ServiceRemove { .. }
            )
        });
        if !touched && !device.stale {
            return Ok(());
        }
        if device.stale || batch.iter().any(|op| matches!(op, Operation::InSync)) {
            device.rebuild(self.desired.state().services.values());
        } else {
            for op in batch {
                match op {
                    Operation::ServiceUpdate(s) => {
                        let ips = service_routes([s], device.ipv6);
                        device.claim((s.namespace.clone(), s.name.clone()), ips)
                    }
                    Operation::ServiceRemove { namespace, name } => {
                        device.claim((namespace.clone(), name.clone()), BTreeSet::new())
                    }
                    _ => {}
                }
            }
        }
        if !device.changed && !device.stale {
            return Ok(());
        }
        let want: BTreeSet<IpNet> = device.counts.keys().copied().collect();
        device.sync_routes(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manul_dataplane_api::Service;
    use std::net::{IpAddr, Ipv6Addr};

    #[test]
    fn the_mac_is_the_programs_and_locally_administered() {
        assert_eq!(HOST_SERVICE_MAC, [0x0e, 0x6d, 0x6e, 0x6c, 0x73, 0x76]);
        assert_eq!(
            HOST_SERVICE_MAC[0] & 0b11,
            0b10,
            "unicast, locally administered"
        );
    }

    #[test]
    fn claims_follow_services_and_a_shared_cluster_ip_stays_while_claimed() {
        let ip = |d: u8| IpNet::from(IpAddr::V4([10, 96, 0, d].into()));
        let key = |n: &str| ("ns".to_string(), n.to_string());
        let mut d = HostServiceDevice::new(7, true);
        d.claim(key("a"), BTreeSet::from([ip(1)]));
        d.claim(key("b"), BTreeSet::from([ip(1), ip(2)]));
        assert!(d.changed);
        d.changed = false;
        d.claim(key("a"), BTreeSet::new());
        assert!(!d.changed, "10.96.0.1 is still b's");
        d.claim(key("b"), BTreeSet::from([ip(2)]));
        assert!(d.changed);
        assert_eq!(d.counts.keys().copied().collect::<Vec<_>>(), vec![ip(2)]);
        d.changed = false;
        d.claim(key("b"), BTreeSet::from([ip(2)]));
        assert!(!d.changed, "the same claim again");
    }

    #[test]
    fn every_service_address_is_routed_once_and_ipv6_only_with_ipv6() {
        let v4 = |d: u8| IpAddr::V4([10, 96, 0, d].into());
        let v6 = |d: u16| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, d));
        let mut a = Service::cluster_ip("ns", "a", vec![v4(1), v6(1)], vec![]);
        a.external_ips = vec![v4(9), v6(9), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        a.load_balancer_ips = vec![v4(8), IpAddr::V4([0, 0, 0, 0].into())];
        let b = Service::cluster_ip("ns", "b", vec![v4(1)], vec![]);
        let mut c = Service::cluster_ip("ns", "c", vec![v4(2)], vec![]);
        c.load_balancer_ips = vec![v6(8), IpAddr::V4([224, 0, 0, 1].into())];
        let set =
            |v: &[&str]| -> BTreeSet<IpNet> { v.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(
            service_routes([&a, &b, &c], true),
            set(&[
                "10.96.0.1/32",
                "10.96.0.2/32",
                "10.96.0.8/32",
                "10.96.0.9/32",
                "fd00::1/128",
                "fd00::8/128",
                "fd00::9/128",
            ])
        );
        assert_eq!(
            service_routes([&a, &b, &c], false),
            set(&[
                "10.96.0.1/32",
                "10.96.0.2/32",
                "10.96.0.8/32",
                "10.96.0.9/32"
            ])
        );
    }
}
