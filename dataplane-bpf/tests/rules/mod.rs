//! Policy pieces the tests share: policy ids in the default tier, allow
//! rules, the open "allow" profile and the guarding "backend" policy, and
//! workload endpoints under one or the other.
#![allow(dead_code)]

use std::net::IpAddr;

use ipnet::IpNet;
use manul_dataplane_api::{
    Action, EndpointId, Match, Operation, Policy, PolicyId, Rule, TierPolicies, WorkloadEndpoint,
};
use manul_dataplane_conformance::topology::Pod;

/// A policy of the default tier.
pub fn pid(name: &str) -> PolicyId {
    PolicyId {
        tier: "default".into(),
        name: name.into(),
    }
}

/// Allows any protocol from `src` (to anywhere).
pub fn allow(id: &str, src: Match) -> Rule {
    Rule {
        id: id.into(),
        action: Action::Allow,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        src,
        dst: Match::default(),
    }
}

/// Allows everything.
pub fn allow_all(id: &str) -> Rule {
    allow(id, Match::default())
}

/// A pod's tiers and profiles: a backend is guarded by the default tier's
/// "backend" policy (denying what it does not allow), any other pod is
/// open through the "allow" profile.
pub fn guard(backend: bool) -> (Vec<TierPolicies>, Vec<String>) {
    if backend {
        let tier = TierPolicies {
            name: "default".into(),
            default_action: Action::Deny,
            inbound: vec![pid("backend")],
            outbound: vec![pid("backend")],
        };
        (vec![tier], vec![])
    } else {
        (vec![], vec!["allow".into()])
    }
}

/// The "allow" profile: everything in and everything out.
pub fn allow_profile() -> Operation {
    Operation::ProfileUpdate {
        id: "allow".into(),
        profile: Policy {
            inbound: vec![allow_all("allow/in")],
            outbound: vec![allow_all("allow/out")],
        },
    }
}

/// The "backend" policy (see [`guard`]): in from `from` only, everything
/// out.
pub fn backend_policy(from: Match) -> Operation {
    Operation::PolicyUpdate {
        id: pid("backend"),
        policy: Policy {
            inbound: vec![allow("backend/in", from)],
            outbound: vec![allow("backend/out", Match::default())],
        },
    }
}

/// Workload endpoint `namespace/name` at `interface` with `ips` (each a
/// host prefix), a guarded backend or open (see [`guard`]).
pub fn endpoint(
    namespace: &str,
    name: &str,
    interface: &str,
    ips: &[IpAddr],
    backend: bool,
) -> Operation {
    let (tiers, profiles) = guard(backend);
    Operation::WorkloadEndpointUpdate(WorkloadEndpoint {
        id: EndpointId {
            namespace: namespace.into(),
            name: name.into(),
        },
        interface_name: interface.into(),
        nets: ips.iter().map(|ip| IpNet::from(*ip)).collect(),
        mac: None,
        tiers,
        profiles,
    })
}

/// [`endpoint`] of a conformance topology's pod.
pub fn pod_endpoint(pod: &Pod, backend: bool) -> Operation {
    endpoint(
        &pod.namespace,
        &pod.name,
        &pod.interface,
        &[IpAddr::V4(pod.ip)],
        backend,
    )
}
