//! The underlay bridge, the nodes' namespaces and their Felix, and Felix's
//! readiness as the nodes report it.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manul_netns::{IpNet, NetNs, TcpServer};

use crate::ClusterError;
use crate::procs::program;

use super::*;

/// An HTTP GET from inside `ns`: the status code and the body.
fn http_get(ns: &NetNs, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    ns.run(|| -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    })
    .ok()
    .flatten()
}

fn http_status(ns: &NetNs, addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(ns, addr, path).map(|(code, _)| code)
}

/// The revision the Felix of the node namespace `ns` reports on its
/// `/readyz` (0 when the body names none; `None` when it does not answer):
/// what [`LocalCluster::felix_revision`] reads, for a watcher on a thread
/// of its own holding the namespace (`NetNs::open` of the node's name).
pub fn felix_revision_in(ns: &NetNs) -> Option<u64> {
    let (_, body) = http_get(ns, FELIX_METRICS, "/readyz")?;
    Some(
        body.split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0),
    )
}

const FELIX_METRICS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), FELIX_METRICS_PORT);
impl LocalCluster {
    pub(super) fn underlay(&mut self) -> Result<(), ClusterError> {
        let [a, b, c] = UNDERLAY_PREFIX;
        manul_netns::create_bridge(&self.cp, "br0").map_err(netns_err)?;
        let bridge = IpNet::new(IpAddr::V4(Ipv4Addr::new(a, b, c, 1)), 24)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&self.cp, "br0", bridge).map_err(netns_err)?;
        let [a, b, c] = HOST_NET_PREFIX;
        let host_net = IpNet::new(IpAddr::V4(Ipv4Addr::new(a, b, c, 1)), 24)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&self.cp, "br0", host_net).map_err(netns_err)?;
        manul_netns::link_up(&self.cp, "br0").map_err(netns_err)?;
        Ok(())
    }

    /// Starts a TCP server on `port` in node `node`'s namespace (all its
    /// addresses), as a host process of that node would listen; it stops
    /// with the cluster.
    pub fn host_listen(&mut self, node: usize, port: u16) -> Result<(), ClusterError> {
        let ns = &self
            .nodes
            .get(node)
            .ok_or_else(|| ClusterError::Invalid(format!("no node with index {node}")))?
            .netns;
        let server = TcpServer::start(ns, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .map_err(netns_err)?;
        self.host_servers.push(server);
        Ok(())
    }

    /// A TCP connect from the underlay (the control-plane namespace, a
    /// machine on the nodes' network) to `dst`.
    pub fn underlay_tcp_probe(
        &self,
        dst: SocketAddr,
        timeout: Duration,
    ) -> Result<manul_netns::ProbeOutcome, ClusterError> {
        manul_netns::tcp_connect(&self.cp, dst, timeout).map_err(netns_err)
    }

    pub(super) fn start_node(&mut self, i: usize) -> Result<(), ClusterError> {
        let [a, b, c] = UNDERLAY_PREFIX;
        let name = format!("node{i}");
        let ns = NetNs::create(&format!("{}-{name}", self.config.name)).map_err(netns_err)?;
        let underlay_if = format!("n{i}");
        manul_netns::create_veth(&ns, "eth0", &self.cp, &underlay_if).map_err(netns_err)?;
        manul_netns::set_master(&self.cp, &underlay_if, "br0").map_err(netns_err)?;
        manul_netns::link_up(&self.cp, &underlay_if).map_err(netns_err)?;
        let ip = Ipv4Addr::new(a, b, c, 10 + i as u8);
        let net =
            IpNet::new(IpAddr::V4(ip), 24).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&ns, "eth0", net).map_err(netns_err)?;
        let [ha, hb, hc] = HOST_NET_PREFIX;
        let host_ip = Ipv4Addr::new(ha, hb, hc, 9 + i as u8);
        let host_net = IpNet::new(IpAddr::V4(host_ip), 24)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        manul_netns::add_address(&ns, "eth0", host_net).map_err(netns_err)?;
        manul_netns::link_up(&ns, "eth0").map_err(netns_err)?;
        ns.set_sysctl("net.ipv4.ip_forward", "1")
            .map_err(netns_err)?;
        let dir = self.work.path().join(&name);
        let status_dir = dir.join("endpoint-status");
        std::fs::create_dir_all(&status_dir).map_err(|e| ClusterError::io(&status_dir, e))?;
        let log = dir.join("felix.log");
        let felix = self.spawn_felix(&name, &ns, false)?;
        self.nodes.push(Node {
            name,
            ip,
            host_ip,
            netns: ns,
            status_dir,
            log,
            felix,
        });
        Ok(())
    }

    /// Starts node `name`'s Felix (the same command line at every start;
    /// a restart appends to its log).
    pub(super) fn spawn_felix(
        &self,
        name: &str,
        ns: &NetNs,
        append: bool,
    ) -> Result<Child, ClusterError> {
        let dir = self.work.path().join(name);
        let status_dir = dir.join("endpoint-status");
        let log = dir.join("felix.log");
        let mut cmd = Command::new(program("felix")?);
        cmd.args(["--netns", ns.name(), "--node", name])
            .args(["--typha", &self.typha_addresses().join(",")])
            .args(["--dataplane", self.config.dataplane.as_str()])
            .arg("--status-dir")
            .arg(&status_dir)
            .args([
                "--metrics",
                &format!("0.0.0.0:{FELIX_METRICS_PORT}"),
                "--program-routes",
            ])
            .arg("--typha-ca-file")
            .arg(self.certs_dir().join("ca.crt"))
            .arg("--typha-cert-file")
            .arg(self.certs_dir().join(format!("felix-{name}.crt")))
            .arg("--typha-key-file")
            .arg(self.certs_dir().join(format!("felix-{name}.key")))
            .args(["--typha-cn", manul_tls::dev::TYPHA_CN])
            .args([
                "--typha-sync-transport",
                self.config.sync_transport.as_str(),
                "--typha-sync-port",
                &super::TYPHA_SYNC_PORT.to_string(),
            ])
            .args(self.felix_flow_args());
        if self.config.dataplane == Dataplane::Bpf {
            // bpffs is shared by every namespace: pins are per cluster node.
            cmd.args(["--bpf-pin-name", &format!("{}-{name}", self.config.name)])
                .arg("--flow-log")
                .arg(dir.join("flows.jsonl"));
        }
        // felix enters its namespace itself; start it from the root one.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log)
            .map_err(|e| ClusterError::io(&log, e))?;
        let err = out.try_clone().map_err(|e| ClusterError::io(&log, e))?;
        let felix = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("MANUL_FELIX_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Each node keeps its own WireGuard key (used once a
            // FelixConfiguration sets wireguardEnabled).
            .env("FELIX_WIREGUARDPRIVATEKEYFILE", dir.join("wireguard.key"))
            .spawn()
            .map_err(|e| ClusterError::Spawn(format!("felix: {e}")))?;
        Ok(felix)
    }

    pub(super) fn wait_nodes_ready(&mut self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let metrics = FELIX_METRICS;
        for node in &mut self.nodes {
            loop {
                if let Ok(Some(status)) = node.felix.try_wait() {
                    return Err(ClusterError::NotReady {
                        what: format!("felix on {} (exited: {status})", node.name),
                        secs: 0,
                        log: tail(&node.log),
                    });
                }
                if http_status(&node.netns, metrics, "/readyz") == Some(200) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(ClusterError::NotReady {
                        what: format!("felix on {}", node.name),
                        secs: 30,
                        log: tail(&node.log),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The datastore revision a node's Felix has applied to its dataplane
    /// (0 before its first sync).
    pub fn felix_revision(&self, node: &Node) -> Result<u64, ClusterError> {
        felix_revision_in(&node.netns).ok_or_else(|| ClusterError::NotReady {
            what: format!("felix on {}", node.name),
            secs: 0,
            log: tail(&node.log),
        })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Process ids of Typha replicas and Felix agents, for sampling.
    pub fn process_ids(&self) -> (Vec<u32>, Vec<u32>) {
        (
            self.typhas.iter().map(|r| r.child.id()).collect(),
            self.nodes.iter().map(|n| n.felix.id()).collect(),
        )
    }
}
