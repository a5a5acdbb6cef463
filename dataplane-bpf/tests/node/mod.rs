//! The test node the kernel tests share: the pin root and the root check,
//! a driver configuration and driver factories pinning there, and guards
//! that remove what a test built, namespaces first and then the node's
//! pins, also on failure: a pin directory alone ([`Pins`]), a namespace
//! with one ([`Sandbox`]), the conformance topology's node with its pods
//! ([`Node`]), a bare node with dual-stack pods ([`DualNode`]), and the
//! nodes a shared case runner makes ([`SharedNodes`]).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use manul_dataplane_api::Driver;
use manul_dataplane_bpf::{BpfConfig, BpfDriver};
use manul_dataplane_conformance::driver_thread::{DriverThread, chain};
use manul_dataplane_conformance::topology::{Pod, Topology};
use manul_dataplane_conformance::{Factory, NodeContext, privileges};
use manul_netns::{NetNs, PodLink, link_index, plumb_pod_ips, unique_prefix};

/// Where the tests pin, each node in a directory of its own.
pub const PIN_ROOT: &str = "/sys/fs/bpf/manul-test";

/// Whether a test that needs root runs: true as root; otherwise a notice
/// and false, or a failure under `CI=true`.
pub fn root() -> bool {
    if privileges().expect("privileges: CI=true needs root") {
        return true;
    }
    eprintln!("skipped: needs root (set CI=true to make this a failure)");
    false
}

/// A driver configuration for node `pins`, pinning under [`PIN_ROOT`].
pub fn config(pins: &str) -> BpfConfig {
    let mut config = BpfConfig::new(pins);
    config.pin_root = PathBuf::from(PIN_ROOT);
    config
}

/// Loads a driver as a [`Factory`] returns it.
fn load(config: BpfConfig) -> Result<Box<dyn Driver>, String> {
    BpfDriver::new(config)
        .map(|d| Box::new(d) as Box<dyn Driver>)
        .map_err(|e| chain(&e))
}

/// Drivers for node `pins` ([`config`], then `configure`).
pub fn factory(
    pins: &str,
    configure: impl Fn(&mut BpfConfig) + Send + Sync + 'static,
) -> Arc<Factory> {
    let pins = pins.to_string();
    Arc::new(move |_: &NodeContext| {
        let mut config = config(&pins);
        configure(&mut config);
        load(config)
    })
}

/// A node's pin directory under [`PIN_ROOT`]: on drop the node's pins
/// are purged (and the host service device of the dropping thread's
/// namespace, where it is there).
#[derive(Debug)]
pub struct Pins(pub String);

impl Pins {
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Purges the node's pins now (the driver must not be running).
    pub fn purge(&self) -> std::io::Result<()> {
        BpfDriver::purge_node(PIN_ROOT.as_ref(), &self.0)
    }

    /// The node's context for a driver thread.
    pub fn context(&self) -> NodeContext {
        NodeContext {
            node: self.0.clone(),
        }
    }

    /// [`config`] for this node.
    pub fn config(&self) -> BpfConfig {
        config(&self.0)
    }

    /// A driver thread for this node in `ns` ([`factory`]).
    pub fn driver(
        &self,
        ns: &NetNs,
        configure: impl Fn(&mut BpfConfig) + Send + Sync + 'static,
    ) -> DriverThread {
        DriverThread::start(ns, self.context(), factory(&self.0, configure)).expect("driver")
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = self.purge();
    }
}

/// A namespace named after its node, and the node's pins; dropped in
/// that order.
pub struct Sandbox {
    pub ns: NetNs,
    pub pins: Pins,
}

impl Sandbox {
    /// A fresh node `TAG…`; None when not root (see [`root`]).
    pub fn new(tag: &str) -> Option<Sandbox> {
        if !root() {
            return None;
        }
        let name = unique_prefix(tag);
        let ns = NetNs::create(&name).expect("create a network namespace");
        Some(Sandbox {
            ns,
            pins: Pins(name),
        })
    }

    /// [`config`] for this node.
    pub fn config(&self) -> BpfConfig {
        self.pins.config()
    }

    /// The index of interface `name` in the namespace.
    pub fn index(&self, name: &str) -> u32 {
        link_index(&self.ns, name).expect("ifindex")
    }
}

/// The conformance topology's node (`PREFIX-node`) with its pods, each
/// running the topology's servers, and the node's pins; dropped pods
/// first, then the node, then the pins.
pub struct Node {
    pub topo: Topology,
    pub pins: Pins,
}

impl Node {
    /// A node `TAG…` with pods `ns/NAME` at their addresses.
    pub fn new(tag: &str, pods: &[(&str, Ipv4Addr)]) -> Node {
        let prefix = unique_prefix(tag);
        let mut topo = Topology::new(&prefix).expect("node");
        for (name, ip) in pods {
            topo.add_pod("ns", name, *ip).expect("pod");
        }
        Node {
            topo,
            pins: Pins(prefix),
        }
    }

    /// The node's name (its namespaces' prefix and its pin directory).
    pub fn name(&self) -> &str {
        self.pins.name()
    }

    pub fn ns(&self) -> &NetNs {
        &self.topo.node
    }

    /// Pod `ns/NAME`.
    pub fn pod(&self, name: &str) -> &Pod {
        self.topo.pod(&format!("ns/{name}")).expect("pod")
    }

    /// A driver thread in the node's namespace ([`Pins::driver`]).
    pub fn driver(
        &self,
        configure: impl Fn(&mut BpfConfig) + Send + Sync + 'static,
    ) -> DriverThread {
        self.pins.driver(self.ns(), configure)
    }
}

/// A pod of a [`DualNode`], plumbed with any mix of families.
pub struct DualPod {
    pub name: String,
    /// The host side's interface, in the node's namespace.
    pub interface: String,
    pub ips: Vec<IpAddr>,
    pub link: PodLink,
    pub netns: NetNs,
}

impl DualPod {
    /// The pod's first address of one family.
    pub fn ip(&self, v6: bool) -> IpAddr {
        *self
            .ips
            .iter()
            .find(|ip| ip.is_ipv6() == v6)
            .expect("an address of the family")
    }

    /// The pod's first IPv4 address.
    pub fn v4(&self) -> Ipv4Addr {
        let IpAddr::V4(ip) = self.ip(false) else {
            panic!("not IPv4")
        };
        ip
    }

    /// The pod's first IPv6 address.
    pub fn v6(&self) -> Ipv6Addr {
        let IpAddr::V6(ip) = self.ip(true) else {
            panic!("not IPv6")
        };
        ip
    }
}

/// A bare node namespace (`PREFIX-node`) with pods plumbed Calico-style
/// in any mix of families, and the node's pins; dropped pods first, then
/// the node, then the pins.
pub struct DualNode {
    pub pods: Vec<DualPod>,
    pub node: NetNs,
    pub pins: Pins,
}

impl DualNode {
    /// A node `TAG…` without pods.
    pub fn new(tag: &str) -> DualNode {
        let prefix = unique_prefix(tag);
        let node = NetNs::create(&format!("{prefix}-node")).expect("node");
        DualNode {
            pods: Vec::new(),
            node,
            pins: Pins(prefix),
        }
    }

    /// Adds pod `name` in a namespace of its own (`PREFIX-INDEX`), its
    /// host side `interface`, with addresses `ips`.
    pub fn add_pod(&mut self, name: &str, interface: &str, ips: &[IpAddr]) -> &DualPod {
        let netns =
            NetNs::create(&format!("{}-{}", self.name(), self.pods.len())).expect("pod namespace");
        let link = plumb_pod_ips(&self.node, &netns, interface, "eth0", ips).expect("pod plumbing");
        self.pods.push(DualPod {
            name: name.into(),
            interface: interface.into(),
            ips: ips.to_vec(),
            link,
            netns,
        });
        self.pods.last().expect("the pod just added")
    }

    /// The node's name (its namespaces' prefix and its pin directory).
    pub fn name(&self) -> &str {
        self.pins.name()
    }

    pub fn pod(&self, name: &str) -> &DualPod {
        self.pods.iter().find(|p| p.name == name).expect("pod")
    }

    /// A driver thread in the node's namespace ([`Pins::driver`]).
    pub fn driver(
        &self,
        configure: impl Fn(&mut BpfConfig) + Send + Sync + 'static,
    ) -> DriverThread {
        self.pins.driver(&self.node, configure)
    }
}

/// The nodes a shared case runner makes, each driver pinning as its
/// node's name: remembered so that [`SharedNodes::purge`] removes their
/// pins.
#[derive(Default)]
pub struct SharedNodes {
    nodes: Arc<Mutex<Vec<String>>>,
}

impl SharedNodes {
    /// Drivers for each node the runner names ([`config`], then
    /// `configure`).
    pub fn factory(
        &self,
        configure: impl Fn(&mut BpfConfig) + Send + Sync + 'static,
    ) -> Arc<Factory> {
        let seen = self.nodes.clone();
        Arc::new(move |ctx: &NodeContext| {
            seen.lock().expect("nodes").push(ctx.node.clone());
            let mut config = config(&ctx.node);
            configure(&mut config);
            load(config)
        })
    }

    /// Removes every remembered node's pins; fails on any it cannot.
    pub fn purge(&self) {
        for node in self.nodes.lock().expect("nodes").iter() {
            BpfDriver::purge_node(PIN_ROOT.as_ref(), node).expect("remove the test's pins");
        }
    }
}
