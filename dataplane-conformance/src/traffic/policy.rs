//! The state the benchmark programs: both pods' endpoints, the client's IP
//! set, and the server's inbound policy of `fillers` non-matching rules
//! before the one that allows the benchmark traffic.

use std::net::{IpAddr, Ipv4Addr};

use manul_dataplane_api::{
    Action, EndpointId, IpSetKind, IpSetMember, Operation, Policy, PolicyId, PortRange, Rule,
    TierPolicies, WorkloadEndpoint,
};
use manul_model::names::workload_interface_name;
use manul_netns::IpNet;

use super::{
    CLIENT, CLIENT_IP, CLIENT_SET, CONNECT_PORT, ECHO_PORT, IPERF_PORT, NAMESPACE, PROFILE, SERVER,
    SERVER_IP,
};

/// The server's inbound policy.
pub fn server_policy_id() -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: format!("{NAMESPACE}/server-ingress"),
    }
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::from(IpAddr::V4(ip))
}

fn port(p: u16) -> PortRange {
    PortRange { first: p, last: p }
}

/// A rule that allows everything (the shared builder of the contract's
/// tests).
fn allow_all(id: &str) -> Rule {
    manul_dataplane_api::testutil::rule(id, Action::Allow)
}

/// The ports the allowing rule opens.
pub const ALLOWED_PORTS: [u16; 3] = [ECHO_PORT, CONNECT_PORT, IPERF_PORT];

/// Rule `index` of the server's inbound policy when it has `fillers`
/// non-matching rules: a filler below `fillers`, the allowing rule at
/// `fillers`.
pub fn server_rule(index: usize, fillers: usize) -> Rule {
    let policy = server_policy_id().name;
    let mut rule = allow_all(&format!("{policy}/inbound/{index}"));
    rule.protocol = Some(6);
    if index >= fillers {
        // The one that decides: TCP from the client's set to the ports.
        rule.src.ip_sets = vec![CLIENT_SET.into()];
        rule.dst.ports = ALLOWED_PORTS.iter().map(|p| port(*p)).collect();
    } else if index.is_multiple_of(2) {
        // The right ports from another pod's address.
        let n = index / 2;
        let other = Ipv4Addr::new(10, 200, (n / 250) as u8, (n % 250 + 1) as u8);
        rule.src.nets = vec![host(other)];
        rule.dst.ports = ALLOWED_PORTS.iter().map(|p| port(*p)).collect();
    } else {
        // The right source, another port.
        rule.src.ip_sets = vec![CLIENT_SET.into()];
        rule.dst.ports = vec![port(20000 + (index % 40000) as u16)];
    }
    rule
}

/// Everything the benchmark programs, in contract order, ending with
/// [`Operation::InSync`]: the client's IP set, the allow-all profile, the
/// server's policy (`fillers` non-matching rules, then the allowing one)
/// and both workload endpoints.
pub fn bench_operations(fillers: usize) -> Vec<Operation> {
    let endpoint = |name: &str, ip: Ipv4Addr, tiers: Vec<TierPolicies>| {
        Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
            id: EndpointId {
                namespace: NAMESPACE.into(),
                name: name.into(),
            },
            interface_name: workload_interface_name(NAMESPACE, name),
            nets: vec![host(ip)],
            mac: None,
            tiers,
            profiles: vec![PROFILE.into()],
        })
    };
    vec![
        Operation::IpSetUpdate {
            id: CLIENT_SET.into(),
            kind: IpSetKind::Net,
            members: vec![IpSetMember::Net(host(CLIENT_IP))],
        },
        Operation::ProfileUpdate {
            id: PROFILE.into(),
            profile: Policy {
                inbound: vec![allow_all(&format!("{PROFILE}/inbound/0"))],
                outbound: vec![allow_all(&format!("{PROFILE}/outbound/0"))],
            },
        },
        Operation::PolicyUpdate {
            id: server_policy_id(),
            policy: Policy {
                inbound: (0..=fillers).map(|i| server_rule(i, fillers)).collect(),
                outbound: vec![],
            },
        },
        endpoint(CLIENT, CLIENT_IP, vec![]),
        endpoint(
            SERVER,
            SERVER_IP,
            vec![TierPolicies {
                name: "default".into(),
                default_action: Action::Deny,
                inbound: vec![server_policy_id()],
                outbound: vec![],
            }],
        ),
        Operation::InSync,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::CLOSED_PORT;

    #[test]
    fn operations_follow_the_contract_and_the_last_rule_decides() {
        use manul_dataplane_api::{Driver as _, NullDriver, Packet};
        let fillers = 100;
        let mut null = NullDriver::new();
        null.apply(&bench_operations(fillers)).expect("contract");
        assert_eq!(
            null.state().policies[&server_policy_id()].inbound.len(),
            fillers + 1
        );
        let (client, server) = (IpAddr::V4(CLIENT_IP), IpAddr::V4(SERVER_IP));
        for port in ALLOWED_PORTS {
            let v = null
                .state()
                .verdict(&Packet::tcp(client, 40000, server, port));
            assert!(v.allowed, "port {port}");
            let decider = v.inbound.expect("inbound judged").decider;
            let last = format!("{}/inbound/{fillers}", server_policy_id().name);
            assert_eq!(decider.rule_id(), Some(last.as_str()));
        }
        let closed = null
            .state()
            .verdict(&Packet::tcp(client, 40000, server, CLOSED_PORT));
        assert!(!closed.allowed);
        // A filler matches its own traffic: the checks are real.
        let other = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 3));
        let f = null
            .state()
            .verdict(&Packet::tcp(other, 40000, server, CONNECT_PORT));
        assert_eq!(
            f.inbound
                .expect("inbound")
                .decider
                .rule_id()
                .map(str::to_owned),
            Some(format!("{}/inbound/4", server_policy_id().name))
        );
    }
}
