//! Which workload an address belongs to, cluster-wide: every
//! WorkloadEndpoint Felix's sync stream carries (not only this node's),
//! with its namespace, pod, aggregated workload and labels; and Nodes'
//! addresses (a flow to or from a node is the host's). A driver's
//! endpoint id finds its workload too (for the side of a flow whose
//! address no endpoint owns, such as a pod's link-local one).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use manul_dataplane_api::EndpointId;
use manul_model::{Kind, Resource, ResourceKey};

use super::workload::aggregated_name;
use crate::calc::Update;

/// One workload endpoint, as flow records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub namespace: String,
    pub pod: String,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
}

/// Addresses to endpoints, kept from sync updates (no I/O).
#[derive(Debug, Default)]
pub struct EndpointIndex {
    by_key: HashMap<ResourceKey, (Vec<IpAddr>, Arc<EndpointInfo>)>,
    by_addr: HashMap<IpAddr, Arc<EndpointInfo>>,
    nodes: HashMap<ResourceKey, (Vec<IpAddr>, String)>,
    node_addrs: HashMap<IpAddr, String>,
}

impl EndpointIndex {
    pub fn update(&mut self, u: &Update) {
        match u.key.kind {
            Kind::WorkloadEndpoint => self.workload(u),
            Kind::Node => self.node(u),
            _ => {}
        }
    }

    fn workload(&mut self, u: &Update) {
        if let Some((addrs, _)) = self.by_key.remove(&u.key) {
            for a in addrs {
                self.by_addr.remove(&a);
            }
        }
        let Some(Resource::WorkloadEndpoint(w)) = &u.value else {
            return;
        };
        let labels: BTreeMap<String, String> = w
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let pod = if w.spec.pod.is_empty() {
            w.metadata.name.clone().unwrap_or_default()
        } else {
            w.spec.pod.clone()
        };
        let info = Arc::new(EndpointInfo {
            namespace: w.metadata.namespace.clone().unwrap_or_default(),
            workload: aggregated_name(&pod, &labels),
            pod,
            labels,
        });
        let addrs: Vec<IpAddr> = w.spec.ip_networks.iter().map(|n| n.0.addr()).collect();
        for a in &addrs {
            self.by_addr.insert(*a, info.clone());
        }
        self.by_key.insert(u.key.clone(), (addrs, info));
    }

    fn node(&mut self, u: &Update) {
        if let Some((addrs, _)) = self.nodes.remove(&u.key) {
            for a in addrs {
                self.node_addrs.remove(&a);
            }
        }
        let Some(Resource::Node(n)) = &u.value else {
            return;
        };
        let name = n.metadata.name.clone().unwrap_or_default();
        let addrs: Vec<IpAddr> = n
            .spec
            .addresses
            .iter()
            .filter_map(|a| {
                let text = a.address.split('/').next().unwrap_or_default();
                text.parse().ok()
            })
            .collect();
        for a in &addrs {
            self.node_addrs.insert(*a, name.clone());
        }
        self.nodes.insert(u.key.clone(), (addrs, name));
    }

    /// The workload endpoint with this address.
    pub fn workload_at(&self, addr: IpAddr) -> Option<&EndpointInfo> {
        self.by_addr.get(&addr).map(|a| a.as_ref())
    }

    /// The workload endpoint a driver names (its resource's namespace and
    /// name).
    pub fn workload_named(&self, id: &EndpointId) -> Option<&EndpointInfo> {
        let key = ResourceKey {
            kind: Kind::WorkloadEndpoint,
            namespace: Some(id.namespace.clone()),
            name: id.name.clone(),
        };
        self.by_key.get(&key).map(|(_, info)| info.as_ref())
    }

    /// The node with this address.
    pub fn node_at(&self, addr: IpAddr) -> Option<&str> {
        self.node_addrs.get(&addr).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}
