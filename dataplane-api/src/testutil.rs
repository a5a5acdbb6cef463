//! Builders shared by the tests of this crate and, with the `testing`
//! feature, of the drivers. They panic on a malformed literal (a broken
//! test), never on data.

#![allow(clippy::expect_used)]

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ops::{
    Action, Backend, EndpointId, HostEndpoint, IpSetKind, IpSetMember, Match, Operation, Policy,
    PolicyId, PortRange, Rule, Service, ServicePort, TierPolicies, WorkloadEndpoint,
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("test network")
}

pub fn pid(tier: &str, name: &str) -> PolicyId {
    PolicyId {
        tier: tier.to_owned(),
        name: name.to_owned(),
    }
}

pub fn eid(namespace: &str, name: &str) -> EndpointId {
    EndpointId {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

pub fn ports(ranges: &[(u16, u16)]) -> Vec<PortRange> {
    ranges
        .iter()
        .map(|&(first, last)| PortRange { first, last })
        .collect()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A rule that matches everything.
pub fn rule(id: &str, action: Action) -> Rule {
    Rule {
        id: id.to_owned(),
        action,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src: Match::default(),
        dst: Match::default(),
    }
}

pub fn net_set(id: &str, nets: &[&str]) -> Operation {
    Operation::IpSetUpdate {
        id: id.to_owned(),
        kind: IpSetKind::Net,
        members: nets.iter().map(|n| IpSetMember::Net(net(n))).collect(),
    }
}

pub fn named_port(addr: &str, protocol: u8, port: u16) -> IpSetMember {
    IpSetMember::NamedPort {
        ip: ip(addr),
        protocol,
        port,
    }
}

pub fn np_set(id: &str, members: &[(&str, u8, u16)]) -> Operation {
    Operation::IpSetUpdate {
        id: id.to_owned(),
        kind: IpSetKind::NamedPort,
        members: members
            .iter()
            .map(|&(addr, protocol, port)| named_port(addr, protocol, port))
            .collect(),
    }
}

pub fn policy_update(id: PolicyId, inbound: Vec<Rule>, outbound: Vec<Rule>) -> Operation {
    Operation::PolicyUpdate {
        id,
        policy: Policy { inbound, outbound },
    }
}

pub fn profile_update(id: &str, inbound: Vec<Rule>, outbound: Vec<Rule>) -> Operation {
    Operation::ProfileUpdate {
        id: id.to_owned(),
        profile: Policy { inbound, outbound },
    }
}

pub fn allow_all_profile(id: &str) -> Operation {
    profile_update(
        id,
        vec![rule(&format!("{id}/inbound/0"), Action::Allow)],
        vec![rule(&format!("{id}/outbound/0"), Action::Allow)],
    )
}

pub fn tier(
    name: &str,
    default_action: Action,
    inbound: &[PolicyId],
    outbound: &[PolicyId],
) -> TierPolicies {
    TierPolicies {
        name: name.to_owned(),
        default_action,
        inbound: inbound.to_vec(),
        outbound: outbound.to_vec(),
    }
}

pub fn wep(
    namespace: &str,
    name: &str,
    nets: &[&str],
    tiers: Vec<TierPolicies>,
    profiles: &[&str],
) -> WorkloadEndpoint {
    WorkloadEndpoint {
        id: eid(namespace, name),
        interface_name: format!("cali{name}"),
        nets: nets.iter().map(|n| net(n)).collect(),
        mac: None,
        tiers,
        profiles: strings(profiles),
    }
}

pub fn hep(id: &str, tiers: Vec<TierPolicies>, profiles: &[&str]) -> HostEndpoint {
    HostEndpoint {
        id: id.to_owned(),
        interface_name: "eth0".to_owned(),
        expected_ips: vec![ip("192.168.0.10")],
        tiers,
        pre_dnat_tiers: Vec::new(),
        untracked_tiers: Vec::new(),
        forward_tiers: Vec::new(),
        profiles: strings(profiles),
    }
}

pub fn service(namespace: &str, name: &str) -> Service {
    Service::cluster_ip(
        namespace,
        name,
        vec![ip("10.96.0.10")],
        vec![ServicePort {
            name: "http".to_owned(),
            protocol: 6,
            port: 80,
            node_port: None,
            backends: vec![Backend {
                ip: ip("10.0.0.1"),
                port: 8080,
                local: true,
                ready: true,
            }],
            local_backends: vec![Backend {
                ip: ip("10.0.0.1"),
                port: 8080,
                local: true,
                ready: true,
            }],
        }],
    )
}

/// A valid state, in contract order: a set, a named-port set, a policy
/// using both, a profile, two endpoints, a host endpoint, a service, InSync.
pub fn sample_batch() -> Vec<Operation> {
    let mut allow_web = rule("default/allow-web/inbound/0", Action::Allow);
    allow_web.protocol = Some(6);
    allow_web.src.ip_sets = strings(&["s:web"]);
    allow_web.dst.named_port_sets = strings(&["np:http"]);
    let p = pid("default", "prod/allow-web");
    vec![
        net_set("s:web", &["10.0.0.1/32", "10.0.0.2/32"]),
        np_set("np:http", &[("10.0.0.1", 6, 8080)]),
        policy_update(p.clone(), vec![allow_web], Vec::new()),
        allow_all_profile("kns.prod"),
        Operation::WorkloadEndpointUpdate(wep(
            "prod",
            "web-0",
            &["10.0.0.1/32"],
            vec![tier("default", Action::Deny, std::slice::from_ref(&p), &[])],
            &["kns.prod"],
        )),
        Operation::WorkloadEndpointUpdate(wep(
            "prod",
            "web-1",
            &["10.0.0.2/32"],
            Vec::new(),
            &["kns.prod"],
        )),
        Operation::HostEndpointUpdate(hep(
            "node1-eth0",
            vec![tier("default", Action::Deny, &[p], &[])],
            &["kns.prod"],
        )),
        Operation::ServiceUpdate(service("prod", "web")),
        Operation::InSync,
    ]
}
