//! What the table's fixed parts depend on: Felix's configuration of the
//! dataplane (workload interface prefixes, failsafe ports, what happens to
//! traffic from a workload to its own host). Fixed for a driver's life.

use ipnet::IpNet;

use crate::flows::FlowLog;

/// What happens to traffic from a workload to its own host once the
/// workload's outbound policy allowed it (Calico's
/// `defaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointToHost {
    /// Dropped (Calico's default).
    Drop,
    /// Handed on to the host's other input rules; with nftables an accept
    /// is final only within one base chain, so `Accept` is the same.
    #[default]
    Return,
    Accept,
}

/// One failsafe port: always allowed to (inbound) or from (outbound) a host
/// endpoint, whatever its policy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failsafe {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: &'static str,
    pub port: u16,
    /// Only from (inbound) or to (outbound) this network.
    pub net: Option<IpNet>,
}

impl Failsafe {
    pub fn new(protocol: &'static str, port: u16) -> Failsafe {
        Failsafe {
            protocol,
            port,
            net: None,
        }
    }
}

/// The dataplane's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftConfig {
    /// Interfaces whose names start with one of these are workload
    /// interfaces: dropped until their endpoint is programmed.
    pub workload_prefixes: Vec<String>,
    pub failsafe_inbound: Vec<Failsafe>,
    pub failsafe_outbound: Vec<Failsafe>,
    pub endpoint_to_host: EndpointToHost,
    /// Flow observations: `None` is off (no rule logs anything).
    pub flows: Option<FlowLog>,
}

impl Default for NftConfig {
    /// Manul's workload prefix (`mnl`), Calico's failsafe ports, and
    /// workload-to-host traffic handed on after the workload's policy.
    fn default() -> Self {
        let ports = |list: &[(&'static str, u16)]| {
            list.iter()
                .map(|(p, n)| Failsafe::new(p, *n))
                .collect::<Vec<_>>()
        };
        let both = [
            ("tcp", 179),
            ("tcp", 2379),
            ("tcp", 2380),
            ("tcp", 5473),
            ("tcp", 6443),
            ("tcp", 6666),
            ("tcp", 6667),
        ];
        let mut inbound = vec![("tcp", 22)];
        inbound.extend(both);
        inbound.push(("udp", 68));
        let mut outbound = both.to_vec();
        outbound.extend([("udp", 53), ("udp", 67)]);
        NftConfig {
            workload_prefixes: vec!["mnl".to_string()],
            failsafe_inbound: ports(&inbound),
            failsafe_outbound: ports(&outbound),
            endpoint_to_host: EndpointToHost::default(),
            flows: None,
        }
    }
}

/// The failsafe rules of a filter-table host endpoint chain: each port as
/// the destination port, a port's network as the remote side (source
/// inbound, destination outbound).
pub fn failsafe_rules(ports: &[Failsafe], inbound: bool) -> Vec<String> {
    let remote = if inbound { "saddr" } else { "daddr" };
    failsafe_rules_on(ports, "dport", remote)
}

/// The failsafe rules of an untracked (raw) host endpoint chain. Before
/// connection tracking a reply is not yet known as one, so both
/// directions' ports are let through: inbound, the inbound ports as the
/// destination and the outbound ports as the source (replies to the
/// host's own failsafe connections); outbound the other way round. The
/// packets stay tracked, so the filter table's rules judge them again.
pub fn failsafe_raw_rules(config: &NftConfig, inbound: bool) -> Vec<String> {
    let remote = if inbound { "saddr" } else { "daddr" };
    let (own, other) = if inbound {
        (&config.failsafe_inbound, &config.failsafe_outbound)
    } else {
        (&config.failsafe_outbound, &config.failsafe_inbound)
    };
    let mut out = failsafe_rules_on(own, "dport", remote);
    out.extend(failsafe_rules_on(other, "sport", remote));
    out
}

/// Ports without a network grouped per protocol (in order of first
/// appearance), then one rule per port with a network.
fn failsafe_rules_on(ports: &[Failsafe], port_field: &str, remote: &str) -> Vec<String> {
    let mut protocols: Vec<&str> = Vec::new();
    for p in ports {
        if !protocols.contains(&p.protocol) {
            protocols.push(p.protocol);
        }
    }
    let mut out = Vec::new();
    for proto in protocols {
        let list: Vec<String> = ports
            .iter()
            .filter(|p| p.protocol == proto && p.net.is_none())
            .map(|p| p.port.to_string())
            .collect();
        match list.as_slice() {
            [] => {}
            [one] => out.push(format!("{proto} {port_field} {one} accept")),
            many => out.push(format!(
                "{proto} {port_field} {{ {} }} accept",
                many.join(", ")
            )),
        }
    }
    for p in ports {
        if let Some(net) = p.net {
            let family = if net.addr().is_ipv4() { "ip" } else { "ip6" };
            out.push(format!(
                "{family} {remote} {net} {} {port_field} {} accept",
                p.protocol, p.port
            ));
        }
    }
    out
}
