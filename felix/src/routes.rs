//! Routes to the pods of other nodes: every IPAM block affine to another
//! node is routed via that node's address (direct routing, as Calico does
//! with no encapsulation), or, with WireGuard, through the WireGuard
//! interface when that node has published a public key (Calico routes
//! those blocks through `wireguard.cali`). The same calculation gives the
//! WireGuard device its peers: each such node, at its address and the
//! WireGuard port, with its blocks as allowed IPs; until the device is up
//! (as while Felix restarts) those blocks are unreachable, never routed in
//! plaintext. A node without a key (or sharing its key with another node)
//! is routed directly, as Calico does. The calculation is pure (updates in, changes out);
//! [`RouteProgrammer`] writes them with rtnetlink in Felix's own network
//! namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use manul_model::resource::{Kind, Resource};
use manul_model::v3::WIREGUARD_PUBLIC_KEY_ANNOTATION;
use tracing::warn;

use crate::calc::Update;
use crate::wireguard::key;
use crate::wireguard::plan::{Key, Peer};

/// One change to the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Route `dst` via `via` (create or replace).
    Set {
        dst: IpNet,
        via: IpAddr,
    },
    /// Route `dst` out of interface `dev` (create or replace).
    SetDev {
        dst: IpNet,
        dev: String,
    },
    /// Make `dst` unreachable (create or replace): a WireGuard peer's block
    /// while the device is not up, never sent in plaintext instead.
    SetUnreachable {
        dst: IpNet,
    },
    Remove {
        dst: IpNet,
    },
}

/// Where a block is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Via(IpAddr),
    Dev(String),
    Unreachable,
}

impl Target {
    fn change(&self, dst: IpNet) -> RouteChange {
        match self {
            Target::Via(via) => RouteChange::Set { dst, via: *via },
            Target::Dev(dev) => RouteChange::SetDev {
                dst,
                dev: dev.clone(),
            },
            Target::Unreachable => RouteChange::SetUnreachable { dst },
        }
    }
}

/// This node's WireGuard, as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The WireGuard interface.
    pub interface: String,
    /// The WireGuard port (Calico's `wireguardListeningPort`: every node
    /// listens on the same one).
    pub port: u16,
    /// Persistent keepalive in seconds; 0 is off.
    pub keepalive: u16,
    /// This node's public key.
    pub public_key: Key,
}

/// What routing knows about a node.
#[derive(Debug, Clone, Default, PartialEq)]
struct NodeInfo {
    address: Option<IpAddr>,
    /// Its WireGuard public key, when it has published a valid one.
    key: Option<Key>,
    /// The annotation as stored (to tell whether ours is published).
    key_text: Option<String>,
}

/// The routes (and WireGuard peers) this node needs, from Node and
/// IPAMBlock resources.
#[derive(Debug)]
pub struct RouteCalc {
    node: String,
    nodes: BTreeMap<String, NodeInfo>,
    /// Block name → (CIDR, affine node).
    blocks: BTreeMap<String, (IpNet, String)>,
    /// What was last emitted.
    routes: BTreeMap<IpNet, Target>,
    /// Route blocks of nodes without WireGuard via their addresses
    /// (`--program-routes`).
    direct: bool,
    /// Route through WireGuard once the device is up.
    tunnel: Option<Tunnel>,
    tunnel_up: bool,
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

fn node_info(name: &str, r: &Resource) -> NodeInfo {
    let key_text = match r {
        Resource::Node(n) => n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(WIREGUARD_PUBLIC_KEY_ANNOTATION))
            .cloned(),
        _ => None,
    };
    let key = key_text.as_deref().and_then(|t| {
        let k = key::decode(t);
        if k.is_none() {
            warn!(
                node = name,
                "the node's WireGuard public key is not a base64 32-byte key: ignored"
            );
        }
        k
    });
    NodeInfo {
        address: node_address(r),
        key,
        key_text,
    }
}

impl RouteCalc {
    /// Direct routes only (`--program-routes`).
    pub fn new(node: impl Into<String>) -> RouteCalc {
        RouteCalc {
            node: node.into(),
            nodes: BTreeMap::new(),
            blocks: BTreeMap::new(),
            routes: BTreeMap::new(),
            direct: true,
            tunnel: None,
            tunnel_up: false,
        }
    }

    /// Routes through WireGuard too; `direct` says whether nodes without
    /// it are routed via their addresses.
    pub fn with_tunnel(mut self, tunnel: Tunnel, direct: bool) -> RouteCalc {
        self.tunnel = Some(tunnel);
        self.direct = direct;
        self
    }

    /// Every route currently wanted, to write again (a refresh).
    pub fn all(&self) -> Vec<RouteChange> {
        self.routes
            .iter()
            .map(|(dst, target)| target.change(*dst))
            .collect()
    }

    /// This node's own address, once its Node is known.
    pub fn own_address(&self) -> Option<IpAddr> {
        self.nodes.get(&self.node).and_then(|n| n.address)
    }

    /// Whether this node's Node carries `text` as its public key.
    pub fn own_key_published(&self, text: &str) -> bool {
        self.nodes
            .get(&self.node)
            .and_then(|n| n.key_text.as_deref())
            == Some(text)
    }

    /// The WireGuard device is up (or gone): blocks are routed through it
    /// (or not) from now on. Returns the route changes.
    pub fn set_tunnel_up(&mut self, up: bool) -> Vec<RouteChange> {
        self.tunnel_up = up;
        self.recompute()
    }

    /// Keys held by exactly one node (this one counted with its own key).
    fn unique_keys(&self) -> BTreeMap<Key, usize> {
        let mut count: BTreeMap<Key, usize> = BTreeMap::new();
        for (name, info) in &self.nodes {
            let key = if *name == self.node {
                self.tunnel.as_ref().map(|t| t.public_key)
            } else {
                info.key
            };
            if let Some(k) = key {
                *count.entry(k).or_default() += 1;
            }
        }
        if !self.nodes.contains_key(&self.node)
            && let Some(t) = &self.tunnel
        {
            *count.entry(t.public_key).or_default() += 1;
        }
        count
    }

    /// The other node's key when its blocks go through WireGuard.
    fn tunnel_key(&self, node: &str, unique: &BTreeMap<Key, usize>) -> Option<Key> {
        if node == self.node || self.tunnel.is_none() {
            return None;
        }
        let info = self.nodes.get(node)?;
        info.address?;
        let key = info.key?;
        if unique.get(&key) != Some(&1) {
            warn!(
                node,
                "the node shares its WireGuard public key with another node: not encrypted"
            );
            return None;
        }
        Some(key)
    }

    /// The WireGuard device's peers: every other node with a public key
    /// of its own and an address, its blocks as allowed IPs.
    pub fn peers(&self) -> BTreeMap<Key, Peer> {
        let Some(tunnel) = &self.tunnel else {
            return BTreeMap::new();
        };
        let unique = self.unique_keys();
        let mut out = BTreeMap::new();
        for (name, info) in &self.nodes {
            let (Some(key), Some(address)) = (self.tunnel_key(name, &unique), info.address) else {
                continue;
            };
            let allowed_ips: BTreeSet<IpNet> = self
                .blocks
                .values()
                .filter(|(_, n)| n == name)
                .map(|(c, _)| *c)
                .collect();
            out.insert(
                key,
                Peer {
                    endpoint: SocketAddr::new(address, tunnel.port),
                    allowed_ips,
                    keepalive: tunnel.keepalive,
                },
            );
        }
        out
    }

    /// Takes the updates that matter for routing; returns the changes.
    pub fn apply(&mut self, updates: &[Update]) -> Vec<RouteChange> {
        let mut touched = false;
        for u in updates {
            match u.key.kind {
                Kind::Node => {
                    touched = true;
                    match &u.value {
                        Some(r) => {
                            self.nodes
                                .insert(u.key.name.clone(), node_info(&u.key.name, r));
                        }
                        None => {
                            self.nodes.remove(&u.key.name);
                        }
                    }
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
        self.recompute()
    }

    fn recompute(&mut self) -> Vec<RouteChange> {
        let unique = self.unique_keys();
        let mut want = BTreeMap::new();
        for (cidr, node) in self.blocks.values() {
            if *node == self.node {
                continue;
            }
            if let Some(t) = &self.tunnel
                && self.tunnel_key(node, &unique).is_some()
            {
                let target = if self.tunnel_up {
                    Target::Dev(t.interface.clone())
                } else {
                    Target::Unreachable
                };
                want.insert(*cidr, target);
                continue;
            }
            if !self.direct {
                continue;
            }
            match self.nodes.get(node).and_then(|n| n.address) {
                Some(addr) => {
                    want.insert(*cidr, Target::Via(addr));
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
        for (dst, target) in &want {
            if self.routes.get(dst) != Some(target) {
                changes.push(target.change(*dst));
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
                RouteChange::SetDev { dst, dev } => {
                    manul_netns::replace_route(
                        &self.ns,
                        &manul_netns::Route::to(*dst).dev(dev).scope_link(),
                    )?;
                }
                RouteChange::SetUnreachable { dst } => {
                    manul_netns::replace_route(
                        &self.ns,
                        &manul_netns::Route::to(*dst).kind(manul_netns::RouteKind::Unreachable),
                    )?;
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

    fn keyed(name: &str, ip: &str, key: &Key) -> Update {
        update(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}, annotations: {{'{WIREGUARD_PUBLIC_KEY_ANNOTATION}': '{}'}}}}\nspec: {{bgp: {{ipv4Address: {ip}/24}}}}\n",
            key::encode(key)
        ))
    }

    fn dev(dst: &str) -> RouteChange {
        RouteChange::SetDev {
            dst: dst.parse().unwrap(),
            dev: "wireguard.mnl".into(),
        }
    }

    fn unreachable(dst: &str) -> RouteChange {
        RouteChange::SetUnreachable {
            dst: dst.parse().unwrap(),
        }
    }

    fn tunnel(own: Key) -> Tunnel {
        Tunnel {
            interface: "wireguard.mnl".into(),
            port: 51820,
            keepalive: 0,
            public_key: own,
        }
    }

    #[test]
    fn nodes_with_keys_are_peers_and_their_blocks_go_through_the_tunnel_once_it_is_up() {
        let (own, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let mut rc = RouteCalc::new("node-1").with_tunnel(tunnel(own), true);
        let changes = rc.apply(&[
            keyed("node-1", "192.168.220.11", &own),
            keyed("node-2", "192.168.220.12", &k2),
            node("node-3", "192.168.220.13"),
            block("10.65.0.0/26", "node-1"),
            block("10.65.1.0/26", "node-2"),
            block("10.65.1.64/26", "node-2"),
            block("10.65.2.0/26", "node-3"),
        ]);
        // Until the device is up, a peer's blocks are unreachable (never
        // sent in plaintext); node-3 has no key and is routed directly.
        assert_eq!(
            changes,
            vec![
                unreachable("10.65.1.0/26"),
                unreachable("10.65.1.64/26"),
                set("10.65.2.0/26", "192.168.220.13"),
            ]
        );
        assert!(rc.own_key_published(&key::encode(&own)));
        assert_eq!(rc.own_address(), Some("192.168.220.11".parse().unwrap()));
        // node-2 is a peer with its two blocks; node-3 has no key.
        let peers = rc.peers();
        assert_eq!(peers.keys().collect::<Vec<_>>(), vec![&k2]);
        assert_eq!(peers[&k2].endpoint, "192.168.220.12:51820".parse().unwrap());
        assert_eq!(
            peers[&k2]
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["10.65.1.0/26", "10.65.1.64/26"]
        );
        assert_eq!(
            rc.set_tunnel_up(true),
            vec![dev("10.65.1.0/26"), dev("10.65.1.64/26")]
        );
        // node-3 publishes a key: its block moves into the tunnel.
        assert_eq!(
            rc.apply(&[keyed("node-3", "192.168.220.13", &k3)]),
            vec![dev("10.65.2.0/26")]
        );
        assert_eq!(rc.peers().len(), 2);
        // node-3 takes node-2's key: neither is encrypted (Calico's rule).
        assert_eq!(
            rc.apply(&[keyed("node-3", "192.168.220.13", &k2)]),
            vec![
                set("10.65.1.0/26", "192.168.220.12"),
                set("10.65.1.64/26", "192.168.220.12"),
                set("10.65.2.0/26", "192.168.220.13"),
            ]
        );
        assert!(rc.peers().is_empty());
        // Another node claiming our key is refused too.
        let mut rc2 = RouteCalc::new("node-1").with_tunnel(tunnel(own), false);
        rc2.apply(&[
            keyed("node-2", "192.168.220.12", &own),
            block("10.65.1.0/26", "node-2"),
        ]);
        assert!(rc2.peers().is_empty());
        // Without direct routing, a block outside the tunnel is not routed.
        assert_eq!(rc2.set_tunnel_up(true), vec![]);
        // The tunnel going down makes its peers' blocks unreachable.
        rc.apply(&[keyed("node-3", "192.168.220.13", &k3)]);
        assert_eq!(
            rc.set_tunnel_up(false),
            vec![
                unreachable("10.65.1.0/26"),
                unreachable("10.65.1.64/26"),
                unreachable("10.65.2.0/26"),
            ]
        );
    }

    #[test]
    fn a_malformed_key_is_no_key() {
        let mut rc = RouteCalc::new("node-1").with_tunnel(tunnel([1; 32]), true);
        rc.apply(&[
            update(&format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: node-2, annotations: {{'{WIREGUARD_PUBLIC_KEY_ANNOTATION}': 'bm90IGEga2V5'}}}}\nspec: {{bgp: {{ipv4Address: 192.168.220.12/24}}}}\n"
            )),
            block("10.65.1.0/26", "node-2"),
        ]);
        assert!(rc.peers().is_empty());
        assert_eq!(rc.set_tunnel_up(true), vec![]);
        assert!(!rc.own_key_published(&key::encode(&[1; 32])));
    }
}
