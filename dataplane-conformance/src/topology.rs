//! The test node: one node namespace, pods plumbed into it Calico-style,
//! each pod running the same small servers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use manul_model::names::workload_interface_name;
use manul_netns::{NetNs, ProbeOutcome, TcpServer, UdpEcho, plumb_pod};

use crate::ConformanceError;

/// TCP ports every pod listens on.
pub const TCP_PORTS: [u16; 4] = [8080, 8081, 9000, 443];
/// The UDP port every pod echoes on.
pub const UDP_PORT: u16 = 5353;

/// A pod: its namespace, address and servers.
#[derive(Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub interface: String,
    pub netns: NetNs,
    _tcp: Vec<TcpServer>,
    _udp: UdpEcho,
}

/// A node namespace and its pods; everything is removed on drop.
#[derive(Debug)]
pub struct Topology {
    pub prefix: String,
    // Pods before the node: their namespaces go first on drop.
    pub pods: BTreeMap<String, Pod>,
    pub node: NetNs,
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ConformanceError + '_ {
    move |e| ConformanceError::Setup(format!("{what}: {e}"))
}

impl Topology {
    /// A node namespace named `PREFIX-node`.
    pub fn new(prefix: &str) -> Result<Topology, ConformanceError> {
        let node = NetNs::create(&format!("{prefix}-node")).map_err(setup("node namespace"))?;
        Ok(Topology {
            prefix: prefix.to_string(),
            pods: BTreeMap::new(),
            node,
        })
    }

    /// Adds pod `namespace/name` at `ip`, with servers on every port.
    pub fn add_pod(
        &mut self,
        namespace: &str,
        name: &str,
        ip: Ipv4Addr,
    ) -> Result<(), ConformanceError> {
        let netns = NetNs::create(&format!("{}-{}", self.prefix, self.pods.len()))
            .map_err(setup("pod namespace"))?;
        let interface = workload_interface_name(namespace, name);
        plumb_pod(&self.node, &netns, &interface, "eth0", ip).map_err(setup("pod plumbing"))?;
        let mut tcp = Vec::new();
        for port in TCP_PORTS {
            tcp.push(
                TcpServer::start(&netns, SocketAddr::new(IpAddr::V4(ip), port))
                    .map_err(setup("tcp server"))?,
            );
        }
        let udp = UdpEcho::start(&netns, SocketAddr::new(IpAddr::V4(ip), UDP_PORT))
            .map_err(setup("udp server"))?;
        self.pods.insert(
            format!("{namespace}/{name}"),
            Pod {
                namespace: namespace.into(),
                name: name.into(),
                ip,
                interface,
                netns,
                _tcp: tcp,
                _udp: udp,
            },
        );
        Ok(())
    }

    pub fn pod(&self, key: &str) -> Result<&Pod, ConformanceError> {
        self.pods
            .get(key)
            .ok_or_else(|| ConformanceError::Setup(format!("no pod {key}")))
    }
}

/// What a probe sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Tcp(u16),
    Udp,
    Ping,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp(p) => write!(f, "tcp/{p}"),
            Probe::Udp => write!(f, "udp/{UDP_PORT}"),
            Probe::Ping => write!(f, "icmp echo"),
        }
    }
}

/// How long a denied probe waits before it counts as dropped.
pub const DENY_WAIT: Duration = Duration::from_millis(400);

/// Sends one probe from `from` to `to`; true when it got through.
pub fn probe(from: &Pod, to: &Pod, probe: Probe) -> Result<bool, ConformanceError> {
    let dst = IpAddr::V4(to.ip);
    let outcome = match probe {
        Probe::Tcp(port) => {
            manul_netns::tcp_connect(&from.netns, SocketAddr::new(dst, port), DENY_WAIT)
        }
        Probe::Udp => {
            manul_netns::udp_probe(&from.netns, SocketAddr::new(dst, UDP_PORT), DENY_WAIT)
        }
        Probe::Ping => manul_netns::ping(&from.netns, dst, DENY_WAIT),
    }
    .map_err(|e| ConformanceError::Setup(format!("probe {probe}: {e}")))?;
    Ok(outcome == ProbeOutcome::Connected)
}
