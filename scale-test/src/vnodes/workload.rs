//! What the virtual nodes' cluster holds (no I/O): namespaces, a few
//! workload endpoints per node, standing policies whose rules select
//! endpoints across the cluster (so every node's graph keeps IP sets with
//! members from other nodes), and the probe policy whose changes are timed.
//!
//! The probe policy selects every virtual endpoint; a change rewrites its
//! ingress rule's destination port to [`marker_port`] of the change's
//! number, so a node's driver can tell which change a batch carries.

use anyhow::{Context, Result};
use manul_model::Resource;

/// The probe policy's name (a GlobalNetworkPolicy).
pub const PROBE_POLICY: &str = "vnodes-probe";

/// Apps endpoints are spread over (a standing policy selects one).
const APPS: usize = 10;

/// The port carrying change `k` in the probe policy's rule.
pub fn marker_port(k: u32) -> u16 {
    u16::try_from(1_000 + k).unwrap_or(u16::MAX)
}

/// The change a probe rule's port carries (the inverse of
/// [`marker_port`]).
pub fn marker_of_port(port: u16) -> Option<u32> {
    u32::from(port).checked_sub(1_000)
}

/// The most changes one run can mark.
pub const MAX_CHANGES: u32 = 60_000;

/// The name of virtual node `i`.
pub fn node_name(i: usize) -> String {
    format!("vnode-{i:05}")
}

/// The shape of the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub nodes: usize,
    pub endpoints_per_node: usize,
    pub namespaces: usize,
    pub policies: usize,
}

fn load(yaml: &str) -> Result<Resource> {
    let mut loaded = manul_model::load("virtual-nodes", yaml.as_bytes())
        .into_result()
        .map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
        .with_context(|| format!("generated resource does not load:\n{yaml}"))?;
    loaded
        .pop()
        .map(|l| l.resource)
        .context("a generated document held no resource")
}

/// Namespace `n`.
fn namespace(n: usize) -> Result<Resource> {
    load(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: vn-{n}\n  labels: {{team: t-{}}}\n",
        n % 5
    ))
}

/// Endpoint `j` of node `node` (global index `i`).
fn endpoint(shape: &Shape, node: usize, j: usize) -> Result<Resource> {
    let i = node * shape.endpoints_per_node + j;
    let ns = format!("vn-{}", i % shape.namespaces.max(1));
    let name = format!("ep-{node}-{j}");
    let iface = manul_model::names::workload_interface_name(&ns, &name);
    let tier = ["web", "api", "db"][j % 3];
    let app = i % APPS;
    let (a, b, c) = (64 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
    load(&format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{app: app-{app}, tier: {tier}, vnode: 'true'}}\nspec:\n  node: {}\n  orchestrator: k8s\n  \
         pod: {name}\n  endpoint: eth0\n  interfaceName: {iface}\n  ipNetworks: [10.{a}.{b}.{c}/32]\n  \
         profiles: [kns.{ns}]\n  ports:\n  - {{name: http, protocol: TCP, port: 8080}}\n",
        node_name(node)
    ))
}

/// Standing policy `j`: half namespaced v3 policies (a named port, a
/// source selector within the namespace), half global ones (a source
/// selector over the whole cluster, a namespace selector).
fn policy(shape: &Shape, j: usize) -> Result<Resource> {
    let app = j % APPS;
    let from = (j + 1) % APPS;
    if j.is_multiple_of(2) {
        load(&format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: np-{j}\n  namespace: vn-{}\n\
             spec:\n  order: {}\n  selector: app == 'app-{app}'\n  ingress:\n  - action: Allow\n    protocol: TCP\n    \
             source:\n      selector: tier == 'web'\n    destination:\n      ports: [http, 9000]\n  egress:\n  - action: Allow\n",
            j % shape.namespaces.max(1),
            j % 100
        ))
    } else {
        load(&format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: gnp-{j}\nspec:\n  \
             order: {}\n  selector: app == 'app-{app}'\n  ingress:\n  - action: Deny\n    source:\n      nets: [192.0.2.0/24]\n  \
             - action: Allow\n    protocol: TCP\n    source:\n      selector: app == 'app-{from}' && tier != 'db'\n      \
             namespaceSelector: has(team)\n    destination:\n      ports: [8080]\n",
            j % 100
        ))
    }
}

/// The probe policy carrying change `k`: it selects every virtual
/// endpoint and allows TCP from web endpoints to [`marker_port`]`(k)`.
pub fn probe_policy(k: u32) -> Result<Resource> {
    load(&format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: {PROBE_POLICY}\nspec:\n  \
         order: 1\n  selector: has(vnode)\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      \
         selector: tier == 'web'\n    destination:\n      ports: [{}]\n",
        marker_port(k)
    ))
}

/// Namespaces and standing policies, then the probe policy at change 0.
pub fn policies(shape: &Shape) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    for n in 0..shape.namespaces {
        out.push(namespace(n)?);
    }
    for j in 0..shape.policies {
        out.push(policy(shape, j)?);
    }
    out.push(probe_policy(0)?);
    Ok(out)
}

/// Every node's endpoints.
pub fn endpoints(shape: &Shape) -> Result<Vec<Resource>> {
    let mut out = Vec::with_capacity(shape.nodes * shape.endpoints_per_node);
    for node in 0..shape.nodes {
        for j in 0..shape.endpoints_per_node {
            out.push(endpoint(shape, node, j)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn markers_round_trip_through_ports() {
        for k in [0, 1, 20, MAX_CHANGES] {
            assert_eq!(marker_of_port(marker_port(k)), Some(k));
        }
        assert_eq!(marker_of_port(999), None);
    }

    #[test]
    fn every_generated_resource_loads_and_endpoints_are_unique() {
        let shape = Shape {
            nodes: 300,
            endpoints_per_node: 3,
            namespaces: 10,
            policies: 20,
        };
        assert_eq!(policies(&shape).unwrap().len(), 10 + 20 + 1);
        let eps = endpoints(&shape).unwrap();
        assert_eq!(eps.len(), 900);
        let keys: std::collections::BTreeSet<_> = eps.iter().map(Resource::key).collect();
        assert_eq!(keys.len(), 900);
        assert_eq!(probe_policy(7).unwrap().key().name, PROBE_POLICY);
    }
}
