//! Kubernetes Node → v3 Node, and the node's automatic host endpoint.
//!
//! The v3 Node carries the Kubernetes node's labels, an orchestrator
//! reference back to it, the Calico annotations Manul uses (BGP and tunnel
//! addresses; an invalid one is ignored, as Calico ignores it; the WireGuard
//! public key, kept as the annotation it is) and its
//! addresses: the Calico node IPs first, then the `InternalIP` and
//! `ExternalIP` addresses from the status. The automatic host endpoint
//! (`NODE-auto-hep`, interface `*`) brings every interface of the node under
//! policy with the node's labels and every address the node is known by.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node as K8sNode;

use super::{ConvertError, fail};
use crate::v3::{
    Cidr, HostEndpointSpec, NodeAddress, NodeAddressType, NodeBgpSpec, NodeSpec, Object, OrchRef,
    WIREGUARD_PUBLIC_KEY_ANNOTATION,
};

/// The node's BGP IPv4 address and network (`10.0.0.1/24`).
pub const IPV4_ADDRESS_ANNOTATION: &str = "projectcalico.org/IPv4Address";
/// The node's BGP IPv6 address and network.
pub const IPV6_ADDRESS_ANNOTATION: &str = "projectcalico.org/IPv6Address";
/// The node's IPIP tunnel address.
pub const IPIP_TUNNEL_ANNOTATION: &str = "projectcalico.org/IPv4IPIPTunnelAddr";
/// The node's IPv4 VXLAN tunnel address.
pub const VXLAN_TUNNEL_ANNOTATION: &str = "projectcalico.org/IPv4VXLANTunnelAddr";
/// The node's VXLAN tunnel MAC.
pub const VXLAN_MAC_ANNOTATION: &str = "projectcalico.org/VXLANTunnelMACAddr";
/// The node's AS number.
pub const AS_NUMBER_ANNOTATION: &str = "projectcalico.org/ASNumber";
/// Suffix of the automatic host endpoints' names.
pub const AUTO_HEP_SUFFIX: &str = "-auto-hep";
/// The label marking what created an automatic host endpoint.
pub const CREATED_BY_LABEL: &str = "projectcalico.org/created-by";
/// Its value, as Calico sets it (so selectors written for Calico match).
pub const CREATED_BY_VALUE: &str = "calico-kube-controllers";
/// The profile automatic host endpoints use: allow everything not denied
/// by policy, so enabling them does not cut a node off.
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Converts a Kubernetes node into a v3 Node.
pub fn node(k8s: &K8sNode) -> Result<Object<NodeSpec>, ConvertError> {
    let name = k8s.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return fail("metadata.name", "a node needs a name");
    }
    let empty = BTreeMap::new();
    let annotations = k8s.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |k: &str| {
        annotations
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let cidr = |k: &str, v4: bool| {
        get(k)
            .and_then(|v| v.parse::<Cidr>().ok())
            .filter(|c| (c.ip_version() == 4) == v4)
    };
    let ip = |k: &str| {
        get(k)
            .and_then(|v| v.parse::<IpAddr>().ok())
            .filter(IpAddr::is_ipv4)
    };
    let bgp = NodeBgpSpec {
        ipv4_address: cidr(IPV4_ADDRESS_ANNOTATION, true),
        ipv6_address: cidr(IPV6_ADDRESS_ANNOTATION, false),
        ipv4_ipip_tunnel_addr: ip(IPIP_TUNNEL_ANNOTATION),
        as_number: get(AS_NUMBER_ANNOTATION).and_then(|v| v.parse().ok()),
        route_reflector_cluster_id: None,
    };
    let mut addresses = Vec::new();
    for c in [bgp.ipv4_address, bgp.ipv6_address].into_iter().flatten() {
        addresses.push(NodeAddress {
            address: c.to_string(),
            address_type: Some(NodeAddressType::CalicoNodeIp),
        });
    }
    for a in k8s
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        let address_type = match a.type_.as_str() {
            "InternalIP" => NodeAddressType::InternalIP,
            "ExternalIP" => NodeAddressType::ExternalIP,
            _ => continue,
        };
        addresses.push(NodeAddress {
            address: a.address.clone(),
            address_type: Some(address_type),
        });
    }
    let spec = NodeSpec {
        bgp: (bgp != NodeBgpSpec::default()).then_some(bgp),
        addresses,
        ipv4_vxlan_tunnel_addr: ip(VXLAN_TUNNEL_ANNOTATION),
        vxlan_tunnel_mac_addr: get(VXLAN_MAC_ANNOTATION)
            .filter(|m| is_mac(m))
            .map(str::to_string),
        orch_refs: vec![OrchRef {
            node_name: name.to_string(),
            orchestrator: super::pod::ORCHESTRATOR_K8S.to_string(),
        }],
    };
    let mut object = Object::new(name, None, spec);
    object.metadata.labels = k8s.metadata.labels.clone();
    if let Some(key) = get(WIREGUARD_PUBLIC_KEY_ANNOTATION) {
        object.metadata.annotations = Some(BTreeMap::from([(
            WIREGUARD_PUBLIC_KEY_ANNOTATION.to_string(),
            key.to_string(),
        )]));
    }
    Ok(object)
}

/// The name of node `node`'s automatic host endpoint.
pub fn auto_host_endpoint_name(node: &str) -> String {
    format!("{node}{AUTO_HEP_SUFFIX}")
}

/// The automatic host endpoint of a (converted) node: interface `*`, the
/// node's labels plus `projectcalico.org/created-by`, and every address
/// the node is known by (BGP, tunnel and status addresses), sorted.
pub fn auto_host_endpoint(node: &Object<NodeSpec>) -> Object<HostEndpointSpec> {
    let s = &node.spec;
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    if let Some(b) = &s.bgp {
        ips.extend(
            [b.ipv4_address, b.ipv6_address]
                .iter()
                .flatten()
                .map(|c| c.0.addr()),
        );
        ips.extend(b.ipv4_ipip_tunnel_addr);
    }
    ips.extend(s.ipv4_vxlan_tunnel_addr);
    for a in &s.addresses {
        let text = a.address.as_str();
        let parsed = text
            .parse::<IpAddr>()
            .ok()
            .or_else(|| text.parse::<Cidr>().ok().map(|c| c.0.addr()));
        ips.extend(parsed);
    }
    let mut expected_ips: Vec<IpAddr> = ips.into_iter().collect();
    // Calico orders them as text.
    expected_ips.sort_by_key(ToString::to_string);
    let mut labels = node.metadata.labels.clone().unwrap_or_default();
    labels.insert(CREATED_BY_LABEL.into(), CREATED_BY_VALUE.into());
    let mut hep = Object::new(
        &auto_host_endpoint_name(node.name()),
        None,
        HostEndpointSpec {
            node: node.name().to_string(),
            interface_name: "*".into(),
            expected_ips,
            profiles: vec![DEFAULT_ALLOW_PROFILE.into()],
            ports: Vec::new(),
        },
    );
    hep.metadata.labels = Some(labels);
    hep
}
