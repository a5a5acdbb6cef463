//! External clients: network namespaces attached to the underlay bridge
//! like a node, but running no Felix: a machine outside the cluster that
//! reaches node ports, external and load-balancer IPs on the nodes'
//! addresses.

use std::net::{IpAddr, Ipv4Addr};

use manul_netns::{IpNet, NetNs};

use crate::ClusterError;
use crate::cluster::{LocalCluster, UNDERLAY_PREFIX};

/// The first external client's last address octet on the underlay
/// (`192.168.220.200`); nodes use `.11` upwards.
const FIRST_HOST: u8 = 200;
/// At most this many external clients per cluster.
pub const MAX_EXTERNALS: usize = 50;

/// A client outside the cluster. Dropping it removes its namespace (and
/// with it its link to the bridge).
#[derive(Debug)]
pub struct ExternalClient {
    pub name: String,
    pub ip: Ipv4Addr,
    pub netns: NetNs,
}

impl LocalCluster {
    /// Creates external client number `index` (0-based): a namespace
    /// `NAME-xINDEX` with `eth0` at `192.168.220.(200+INDEX)/24` on the
    /// underlay bridge (the nodes' network, no default route). Its name
    /// has the cluster's prefix, so [`LocalCluster::cleanup`] removes a
    /// killed run's clients with the rest.
    pub fn add_external(&self, index: usize, name: &str) -> Result<ExternalClient, ClusterError> {
        let netns_err = |e: manul_netns::NetnsError| ClusterError::Netns(e.to_string());
        let host = u8::try_from(index)
            .ok()
            .filter(|i| usize::from(*i) < MAX_EXTERNALS)
            .ok_or_else(|| {
                ClusterError::Invalid(format!(
                    "external client {name}: at most {MAX_EXTERNALS} per cluster"
                ))
            })?;
        let [a, b, c] = UNDERLAY_PREFIX;
        let ip = Ipv4Addr::new(a, b, c, FIRST_HOST + host);
        let netns =
            NetNs::create(&format!("{}-x{index}", self.config().name)).map_err(netns_err)?;
        let cp = self.underlay_netns();
        let bridge_port = format!("x{index}");
        manul_netns::create_veth(&netns, "eth0", cp, &bridge_port).map_err(netns_err)?;
        manul_netns::set_master(cp, &bridge_port, "br0").map_err(netns_err)?;
        manul_netns::link_up(cp, &bridge_port).map_err(netns_err)?;
        let net =
            IpNet::new(IpAddr::V4(ip), 24).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&netns, "eth0", net).map_err(netns_err)?;
        manul_netns::link_up(&netns, "eth0").map_err(netns_err)?;
        manul_netns::link_up(&netns, "lo").map_err(netns_err)?;
        Ok(ExternalClient {
            name: name.to_string(),
            ip,
            netns,
        })
    }
}
