//! UDP conntrack entries of endpoints that went away, cleared as
//! kube-proxy clears them (`CleanStaleEntries`): a UDP flow has no end
//! the kernel sees, so its entry would keep sending a client's datagrams
//! to a backend that is no longer one for as long as the client keeps
//! talking. After every change of the services, an entry is stale when
//! its original destination is a UDP service address and port (cluster
//! IP, external or load-balancer IP) or its original destination port is
//! a UDP node port, and its reply comes from no backend of that port.
//!
//! TCP entries are left alone, as kube-proxy leaves them: an established
//! connection keeps its backend while that backend answers (the eBPF
//! dataplane resets it instead). The backends kept are the port's
//! `backends` and `local_backends`: an endpoint that turned terminating
//! while a ready one exists is no backend any more, and its flows are
//! cleared (kube-proxy keeps serving terminating ones; the dataplane
//! model does not carry them).
//!
//! [`stale`] is pure; `netlink.rs` dumps and deletes the entries in the
//! calling thread's network namespace.

pub mod netlink;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use manul_dataplane_api::{FlowTuple, Operation, Service, ServiceKey};

use crate::flows::CtEntry;

const UDP: u8 = 17;

/// Whether `batch`, applied to `services` (the state before it), can
/// leave UDP entries stale: it changes or removes a service with a UDP
/// port before or after the change, or it is a sync (`InSync`). A batch
/// of TCP services alone cannot, and does not pay for walking every
/// service.
pub fn touched(services: &BTreeMap<ServiceKey, Service>, batch: &[Operation]) -> bool {
    let has_udp = |svc: &Service| svc.ports.iter().any(|p| p.protocol == UDP);
    let had_udp = |namespace: &str, name: &str| {
        services
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(has_udp)
    };
    batch.iter().any(|op| match op {
        Operation::ServiceUpdate(svc) => has_udp(svc) || had_udp(&svc.namespace, &svc.name),
        Operation::ServiceRemove { namespace, name } => had_udp(namespace, name),
        Operation::InSync => true,
        _ => false,
    })
}

/// The UDP frontends of the services and the backend addresses each
/// keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpFrontends {
    by_address: HashMap<(IpAddr, u16), HashSet<IpAddr>>,
    by_node_port: HashMap<u16, HashSet<IpAddr>>,
}

impl UdpFrontends {
    /// Every UDP port of `services`.
    pub fn of(services: &BTreeMap<ServiceKey, Service>) -> UdpFrontends {
        let mut out = UdpFrontends::default();
        for svc in services.values() {
            for port in svc.ports.iter().filter(|p| p.protocol == UDP) {
                let kept: BTreeSet<IpAddr> = port
                    .backends
                    .iter()
                    .chain(&port.local_backends)
                    .map(|b| b.ip)
                    .collect();
                for ip in svc.cluster_ips.iter().chain(svc.external_addresses()) {
                    out.by_address
                        .entry((*ip, port.port))
                        .or_default()
                        .extend(&kept);
                }
                if let Some(np) = port.node_port {
                    out.by_node_port.entry(np).or_default().extend(&kept);
                }
            }
        }
        out
    }

    /// Whether there is no UDP frontend at all.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty() && self.by_node_port.is_empty()
    }
}

/// The original tuples of the entries to delete.
pub fn stale(frontends: &UdpFrontends, entries: &[CtEntry]) -> Vec<FlowTuple> {
    entries
        .iter()
        .filter(|e| e.orig.protocol == UDP)
        .filter(|e| {
            let by_address = frontends
                .by_address
                .get(&(e.orig.dst, e.orig.dst_port))
                .is_some_and(|kept| !kept.contains(&e.reply_src));
            let by_node_port = frontends
                .by_node_port
                .get(&e.orig.dst_port)
                .is_some_and(|kept| !kept.contains(&e.reply_src));
            by_address || by_node_port
        })
        .map(|e| e.orig)
        .collect()
}

#[cfg(test)]
mod tests;
