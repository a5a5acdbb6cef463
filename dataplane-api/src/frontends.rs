//! A [`Service`] seen from the client's side: its frontends (each address,
//! protocol and port a connection can target) and the backends each one
//! selects under its traffic policy. Felix serves this as `/services` and
//! `manulctl services` prints it; the serialised form is their shared
//! format.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ops::{Backend, Balancing, Service, ServicePort, TrafficPolicy};

/// What kind of address a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FrontendKind {
    /// A ClusterIP: internal traffic.
    ClusterIp,
    /// An address of `spec.externalIPs`: external traffic.
    ExternalIp,
    /// A `status.loadBalancer.ingress` IP: external traffic.
    LoadBalancerIp,
    /// A node port, open on every address of the node: external traffic.
    NodePort,
}

/// One address, protocol and port a connection to a Service can target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Frontend {
    pub kind: FrontendKind,
    /// None for a node port (every address of the node).
    pub address: Option<IpAddr>,
    /// `TCP`, `UDP`, `SCTP`, or the protocol number.
    pub protocol: String,
    pub port: u16,
    /// The service port's name.
    pub port_name: String,
    /// The policy that chose `backends`: `internalTrafficPolicy` for a
    /// ClusterIP, `externalTrafficPolicy` otherwise.
    pub traffic_policy: TrafficPolicy,
    /// What a new connection picks from; empty: it is rejected at once.
    pub backends: Vec<Backend>,
}

/// A Service as a node programs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceFrontends {
    pub namespace: String,
    pub name: String,
    pub internal_traffic_policy: TrafficPolicy,
    pub external_traffic_policy: TrafficPolicy,
    /// `sessionAffinity: ClientIP`'s timeout; None: no affinity.
    pub affinity_timeout_seconds: Option<u32>,
    pub balancing: Balancing,
    pub load_balancer_source_ranges: Vec<IpNet>,
    pub health_check_node_port: Option<u16>,
    pub frontends: Vec<Frontend>,
}

/// A protocol number's name as Kubernetes spells it.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

impl Service {
    /// Every frontend, in the order: cluster IPs, external IPs,
    /// load-balancer IPs, node ports; port by port within each.
    pub fn frontends(&self) -> Vec<Frontend> {
        let addressed = [
            (
                FrontendKind::ClusterIp,
                &self.cluster_ips,
                self.internal_traffic,
            ),
            (
                FrontendKind::ExternalIp,
                &self.external_ips,
                self.external_traffic,
            ),
            (
                FrontendKind::LoadBalancerIp,
                &self.load_balancer_ips,
                self.external_traffic,
            ),
        ];
        let mut out = Vec::new();
        for (kind, addresses, policy) in addressed {
            for address in addresses {
                for p in &self.ports {
                    out.push(Frontend {
                        kind,
                        address: Some(*address),
                        protocol: protocol_name(p.protocol),
                        port: p.port,
                        port_name: p.name.clone(),
                        traffic_policy: policy,
                        backends: p.backends_for(policy).to_vec(),
                    });
                }
            }
        }
        for p in &self.ports {
            if let Some(node_port) = p.node_port {
                out.push(Frontend {
                    kind: FrontendKind::NodePort,
                    address: None,
                    protocol: protocol_name(p.protocol),
                    port: node_port,
                    port_name: p.name.clone(),
                    traffic_policy: self.external_traffic,
                    backends: p.backends_for(self.external_traffic).to_vec(),
                });
            }
        }
        out
    }

    /// The distinct backends (address and port) of all ports under the
    /// `Cluster` policy: every endpoint the Service may send to.
    pub fn backend_count(&self) -> usize {
        let all: std::collections::BTreeSet<(IpAddr, u16, u8)> = self
            .ports
            .iter()
            .flat_map(|p| p.backends.iter().map(|b| (b.ip, b.port, p.protocol)))
            .collect();
        all.len()
    }

    /// This Service with its frontends, as Felix's `/services` shows it.
    pub fn with_frontends(&self) -> ServiceFrontends {
        ServiceFrontends {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            internal_traffic_policy: self.internal_traffic,
            external_traffic_policy: self.external_traffic,
            affinity_timeout_seconds: self.affinity_timeout_seconds,
            balancing: self.balancing,
            load_balancer_source_ranges: self.load_balancer_source_ranges.clone(),
            health_check_node_port: self.health_check_node_port,
            frontends: self.frontends(),
        }
    }
}

/// The Service and port a connection to the frontend `addr`:`port` over
/// `protocol` came through, as a flow record names it: a ClusterIP,
/// external or load-balancer IP with the service port; else a node port
/// (open on every address of the node, so taken only when `addr` is no
/// Service's address).
pub fn service_at<'a>(
    services: impl IntoIterator<Item = &'a Service> + Clone,
    addr: IpAddr,
    port: u16,
    protocol: u8,
) -> Option<(&'a Service, &'a ServicePort)> {
    let addressed = |s: &&'a Service| {
        s.cluster_ips.contains(&addr) || s.external_addresses().any(|a| *a == addr)
    };
    let by_address = services
        .clone()
        .into_iter()
        .filter(addressed)
        .find_map(|s| {
            s.ports
                .iter()
                .find(|p| p.port == port && p.protocol == protocol)
                .map(|p| (s, p))
        });
    if by_address.is_some() || services.clone().into_iter().any(|s| addressed(&s)) {
        return by_address;
    }
    services.into_iter().find_map(|s| {
        s.ports
            .iter()
            .find(|p| p.node_port == Some(port) && p.protocol == protocol)
            .map(|p| (s, p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ip, service};

    #[test]
    fn a_frontend_names_its_service_port_in_either_family_and_by_node_port() {
        let mut web = service("default", "web");
        web.cluster_ips.push(ip("fd00::10"));
        web.external_ips = vec![ip("2001:db8::7")];
        web.ports[0].node_port = Some(30080);
        let mut dns = service("kube-system", "dns");
        dns.cluster_ips = vec![ip("fd00::53")];
        dns.ports[0].protocol = 17;
        dns.ports[0].port = 53;
        let all = [web.clone(), dns.clone()];
        let named = |addr: &str, port, proto| {
            service_at(&all, ip(addr), port, proto).map(|(s, p)| (s.name.clone(), p.port))
        };
        assert_eq!(named("10.96.0.10", 80, 6), Some(("web".into(), 80)));
        assert_eq!(named("fd00::10", 80, 6), Some(("web".into(), 80)));
        assert_eq!(named("2001:db8::7", 80, 6), Some(("web".into(), 80)));
        assert_eq!(named("fd00::53", 53, 17), Some(("dns".into(), 53)));
        // A node port on any node address names the service port.
        assert_eq!(named("fd00:192::1", 30080, 6), Some(("web".into(), 80)));
        assert_eq!(named("192.168.1.5", 30080, 6), Some(("web".into(), 80)));
        // Wrong protocol, port, or a service address on a node port's number.
        assert_eq!(named("fd00::53", 53, 6), None);
        assert_eq!(named("fd00::10", 81, 6), None);
        assert_eq!(named("fd00::53", 30080, 6), None);
        assert_eq!(named("192.168.1.5", 30080, 17), None);
    }

    #[test]
    fn each_address_and_node_port_is_a_frontend_with_its_policys_backends() {
        let mut svc = service("default", "web");
        svc.cluster_ips.push(ip("fd00::10"));
        svc.load_balancer_ips = vec![ip("192.0.2.1")];
        svc.external_traffic = TrafficPolicy::Local;
        svc.ports[0].node_port = Some(30080);
        svc.ports[0].backends.push(Backend {
            ip: ip("10.0.1.2"),
            port: 8080,
            local: false,
            ready: true,
        });
        let f = svc.frontends();
        let kinds: Vec<_> = f.iter().map(|f| (f.kind, f.address, f.port)).collect();
        assert_eq!(
            kinds,
            vec![
                (FrontendKind::ClusterIp, Some(ip("10.96.0.10")), 80),
                (FrontendKind::ClusterIp, Some(ip("fd00::10")), 80),
                (FrontendKind::LoadBalancerIp, Some(ip("192.0.2.1")), 80),
                (FrontendKind::NodePort, None, 30080),
            ]
        );
        // Cluster IPs pick from every backend; external traffic under
        // Local from this node's only.
        assert_eq!(f[0].backends.len(), 2);
        assert_eq!(f[2].traffic_policy, TrafficPolicy::Local);
        assert_eq!(f[2].backends, svc.ports[0].local_backends);
        assert_eq!(f[3].backends, svc.ports[0].local_backends);
        assert_eq!(f[0].protocol, "TCP");
        assert_eq!(svc.backend_count(), 2);
    }
}
