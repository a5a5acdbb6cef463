//! Routes to the pods of other nodes (direct routing, as Calico does with
//! no encapsulation): every IPAM block affine to another node is routed via
//! that node's address. The calculation is pure (updates in, route changes
//! out); [`RouteProgrammer`] writes them with rtnetlink in Felix's own
//! network namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use manul_model::resource::{Kind, Resource};
use tracing::warn;

use crate::calc::Update;

/// One change to the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Route `dst` via `via` (create or replace).
    Set {
        dst: IpNet,
        via: IpAddr,
    },
    Remove {
        dst: IpNet,
    },
}

/// The routes this node needs, from Node and IPAMBlock resources.
#[derive(Debug, Default)]
pub struct RouteCalc {
    node: String,
    /// Node name → its address.
    nodes: BTreeMap<String, IpAddr>,
    /// Block name → (CIDR, affine node).
    blocks: BTreeMap<String, (IpNet, String)>,
    /// What was last emitted.
    routes: BTreeMap<IpNet, IpAddr>,
}

fn node_address(r: &Resource) -> Option<IpAddr> {
    let Resource::Node(n) = r else { return None };
    let bgp = n
        .spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4_address.as_ref())
        .map(|c| c.0.addr());
    bgp.or_else(|| {
        n.spec
            .addresses
            .iter()
            .find_map(|a| a.address.split('/').next()?.parse().ok())
    })
}

impl RouteCalc {
    pub fn new(node: impl Into<String>) -> RouteCalc {
        RouteCalc {
            node: node.into(),
            ..RouteCalc::default()
        }
    }

    /// Takes the updates that matter for routing; returns the changes.
    /// Every route currently wanted, to write again (a refresh).
    pub fn all(&self) -> Vec<RouteChange> {
        self.routes
            .iter()
            .map(|(dst, via)| RouteChange::Set {
                dst: *dst,
                via: *via,
            })
            .collect()
    }

    pub fn apply(&mut self, updates: &[Update]) -> Vec<RouteChange> {
        let mut touched = false;
        for u in updates {
            match u.key.kind {
                Kind::Node => {
                    touched = true;
                    match u.value.as_ref().and_then(node_address) {
                        Some(addr) => self.nodes.insert(u.key.name.clone(), addr),
                        None => self.nodes.remove(&u.key.name),
                    };
                }
                Kind::IpamBlock => {
                    touched = true;
                    let block = match &u.value {
                        Some(Resource::IpamBlock(b)) => b
                            .spec
                            .cidr
                            .as_ref()
                            .zip(b.spec.affine_node())
                            .map(|(c, n)| (c.net(), n.to_string())),
                        _ => None,
                    };
                    match block {
                        Some(b) => self.blocks.insert(u.key.name.clone(), b),
                        None => self.blocks.remove(&u.key.name),
                    };
                }
                _ => {}
            }
        }
        if !touched {
            return Vec::new();
        }
        let mut want = BTreeMap::new();
        for (cidr, node) in self.blocks.values() {
            if *node == self.node {
                continue;
            }
            match self.nodes.get(node) {
                Some(addr) => {
                    want.insert(*cidr, *addr);
                }
                None => warn!(%cidr, node, "block of a node with no address: not routed"),
            }
        }
        let mut changes = Vec::new();
        for dst in self.routes.keys() {
            if !want.contains_key(dst) {
                changes.push(RouteChange::Remove { dst: *dst });
            }
        }
        for (dst, via) in &want {
            if self.routes.get(dst) != Some(via) {
                changes.push(RouteChange::Set {
                    dst: *dst,
                    via: *via,
                });
            }
        }
        self.routes = want;
        changes
    }
}

/// Writes route changes into Felix's own network namespace.
#[derive(Debug)]
pub struct RouteProgrammer {
    ns: manul_netns::NetNs,
}

impl RouteProgrammer {
    /// Programs the namespace this process runs in.
    pub fn current() -> Result<RouteProgrammer, manul_netns::NetnsError> {
        manul_netns::NetNs::from_path(std::path::Path::new("/proc/self/ns/net"))
            .map(|ns| RouteProgrammer { ns })
    }

    /// Applies changes; an absent route on removal is fine.
    pub fn apply(&self, changes: &[RouteChange]) -> Result<(), manul_netns::NetnsError> {
        for c in changes {
            match c {
                RouteChange::Set { dst, via } => {
                    manul_netns::replace_route(&self.ns, &manul_netns::Route::to(*dst).via(*via))?;
                }
                RouteChange::Remove { dst } => match manul_netns::delete_route(&self.ns, *dst) {
                    Err(e) if e.errno() != Some(ESRCH) => return Err(e),
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

/// "No such process": the kernel's answer to deleting an absent route.
const ESRCH: i32 = 3;

#[cfg(test)]
mod tests {
    use manul_model::resource::Resource;

    use super::*;

    fn update(yaml: &str) -> Update {
        let r: Resource = manul_model::load::load("t", yaml.as_bytes())
            .into_result()
            .unwrap()
            .remove(0)
            .resource;
        Update {
            key: r.key(),
            value: Some(r),
        }
    }

    fn node(name: &str, ip: &str) -> Update {
        update(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: {ip}/24}}}}\n"
        ))
    }

    fn block(cidr: &str, node: &str) -> Update {
        let name = cidr.replace(['.', '/'], "-");
        update(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPAMBlock\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}, affinity: 'host:{node}'}}\n"
        ))
    }

    fn set(dst: &str, via: &str) -> RouteChange {
        RouteChange::Set {
            dst: dst.parse().unwrap(),
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn other_nodes_blocks_are_routed_via_their_address() {
        let mut rc = RouteCalc::new("node-1");
        // Order does not matter: a block before its node is routed once the
        // node's address is known.
        assert_eq!(rc.apply(&[block("10.65.1.0/26", "node-2")]), vec![]);
        assert_eq!(
            rc.apply(&[
                node("node-1", "192.168.220.11"),
                node("node-2", "192.168.220.12")
            ]),
            vec![set("10.65.1.0/26", "192.168.220.12")]
        );
        // Our own block is not routed (the CNI plugin adds /32s).
        assert_eq!(rc.apply(&[block("10.65.0.0/26", "node-1")]), vec![]);
        // A node's address change moves its routes; nothing else is touched.
        assert_eq!(
            rc.apply(&[node("node-2", "192.168.220.22")]),
            vec![set("10.65.1.0/26", "192.168.220.22")]
        );
        // Deleting the block removes its route.
        let mut gone = block("10.65.1.0/26", "node-2");
        gone.value = None;
        assert_eq!(
            rc.apply(&[gone]),
            vec![RouteChange::Remove {
                dst: "10.65.1.0/26".parse().unwrap()
            }]
        );
    }
}
