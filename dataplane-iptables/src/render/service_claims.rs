//! Who has each service frontend when services contest it, as the eBPF
//! dataplane decides (`dataplane-bpf`'s `plan::index`): a frontend is an
//! address, protocol and port (cluster, external and load-balancer IPs),
//! or a protocol and node port of one family, and the first service in
//! namespace/name order that claims it has *every* entry of it, in every
//! map: the verdict maps for other sources (`mnl-svc-ips4`,
//! `mnl-svc-nodeports4`), for pods and the node (`mnl-svc-xpod4`,
//! `mnl-svc-xnode4` and their node-port twins), the reject maps
//! (`mnl-noep-…`) and the backend maps (`mnl-be4-tcp`, `mnl-npbe4-tcp`,
//! …). A service that loses a frontend writes none of its entries, so an
//! `externalTrafficPolicy: Local` loser cannot keep the pod or node
//! entries of a `Cluster` keeper's frontend, a loser without backends
//! cannot reject the keeper's traffic (the reject maps are looked up
//! before DNAT), a loser's translation never serves a keeper without
//! backends, and the keeper's pick chain never indexes a loser's
//! backends. Within one service, its first claim on a
//! frontend has it (a cluster IP listed again as an external IP stays a
//! cluster IP), as on eBPF.
//!
//! Entries of plain sets (cluster IPs, hairpin pairs, the pick chains in
//! use, the load-balancer addresses with source ranges) are not
//! frontends: any claimant writes the same element, which stays while one
//! service claims it. A load-balancer address's source ranges are, as on
//! eBPF, per address and the union of every service's that names it
//! (`mnl-lb-src4` holds `address . range`, aggregated: the kernel refuses
//! overlapping ranges in one set).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;

use manul_dataplane_api::ServiceKey;

use super::service_pick;
use super::services::{LB_SOURCES, PORT_MAPS, ServiceObjects, TRIPLE_MAPS};
use crate::element::{Element, Value};

/// A frontend services may contest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Frontend {
    /// A cluster, external or load-balancer IP's protocol and port.
    Address { addr: IpAddr, proto: u8, port: u16 },
    /// A node port of one family.
    NodePort { v6: bool, proto: u8, port: u16 },
}

/// How a shared map's keys name their frontend.
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    /// `daddr . l4proto . dport [. index]`.
    Address,
    /// `l4proto . dport [. index]`, in this family (`v6`).
    NodePort(bool),
}

/// The shared maps whose entries belong to a frontend.
fn frontend_maps() -> &'static BTreeMap<String, KeyKind> {
    static MAPS: LazyLock<BTreeMap<String, KeyKind>> = LazyLock::new(|| {
        let mut out = BTreeMap::new();
        for v6 in [false, true] {
            let n = if v6 { '6' } else { '4' };
            for m in TRIPLE_MAPS {
                out.insert(format!("mnl-{m}{n}"), KeyKind::Address);
            }
            for m in PORT_MAPS {
                out.insert(format!("mnl-{m}{n}"), KeyKind::NodePort(v6));
            }
            for (proto, _) in service_pick::PROTOCOLS {
                if let Some(m) = service_pick::backend_map(v6, false, proto) {
                    out.insert(m, KeyKind::Address);
                }
                if let Some(m) = service_pick::backend_map(v6, true, proto) {
                    out.insert(m, KeyKind::NodePort(v6));
                }
            }
        }
        out
    });
    &MAPS
}

/// The frontend an entry of `set` with `key` belongs to; `None` for the
/// plain sets' elements.
pub fn frontend_of(set: &str, key: &[Value]) -> Option<Frontend> {
    match (frontend_maps().get(set)?, key) {
        (
            KeyKind::Address,
            [
                Value::Addr(addr),
                Value::Proto(proto),
                Value::Port(port),
                ..,
            ],
        ) => Some(Frontend::Address {
            addr: *addr,
            proto: *proto,
            port: *port,
        }),
        (KeyKind::NodePort(v6), [Value::Proto(proto), Value::Port(port), ..]) => {
            Some(Frontend::NodePort {
                v6: *v6,
                proto: *proto,
                port: *port,
            })
        }
        _ => None,
    }
}

/// A frontend's entries as one service writes them: `(map, element)`,
/// sorted.
pub type Entries = Vec<(String, Element)>;

/// A load-balancer address in a source-range set: `(set, address)`.
pub type RangeKey = (String, IpAddr);

/// The source-range sets.
fn range_sets() -> &'static BTreeSet<String> {
    static SETS: LazyLock<BTreeSet<String>> =
        LazyLock::new(|| ["4", "6"].map(|n| format!("mnl-{LB_SOURCES}{n}")).into());
    &SETS
}

/// The address and range of an element of a source-range set.
pub fn range_of(set: &str, key: &[Value]) -> Option<(RangeKey, IpNet)> {
    if !range_sets().contains(set) {
        return None;
    }
    match key {
        [Value::Addr(addr), Value::Net(net)] => Some(((set.to_string(), *addr), *net)),
        _ => None,
    }
}

/// Who claims each frontend and each plain set element: the services that
/// want it and what each would write. The first service in key order has
/// it.
///
/// A service's key is shared by all its claims (`Arc`): recording a
/// service costs its claims' map insertions, not a copy of its namespace
/// and name per element. Plain elements are kept per set, then per key,
/// so a search compares a set's name a few times, not at every step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    by_key: BTreeMap<String, BTreeMap<Vec<Value>, Claimants<Element>>>,
    by_frontend: BTreeMap<Frontend, Claimants<Entries>>,
    ranges: BTreeMap<RangeKey, Claimants<Vec<IpNet>>>,
}

/// The services claiming one thing, in key order, and what each would
/// write.
type Claimants<T> = BTreeMap<Arc<ServiceKey>, T>;

impl Claims {
    /// The element that holds plain set element `(set, key)`, if any
    /// service claims it.
    pub fn holder(&self, set: &str, key: &[Value]) -> Option<&Element> {
        self.by_key
            .get(set)
            .and_then(|m| m.get(key))
            .and_then(|m| m.values().next())
    }

    /// The service that has `frontend`, and its entries.
    pub fn keeper(&self, frontend: &Frontend) -> Option<(&ServiceKey, &Entries)> {
        self.by_frontend
            .get(frontend)
            .and_then(|m| m.iter().next())
            .map(|(k, entries)| (k.as_ref(), entries))
    }

    /// The elements of a load-balancer address's source ranges: the
    /// union of every claimant's, aggregated.
    pub fn range_entries(&self, k: &RangeKey) -> Entries {
        self.range_elements(k)
            .into_iter()
            .map(|e| (k.0.clone(), e))
            .collect()
    }

    /// [`Claims::range_entries`] without the set's name.
    fn range_elements(&self, k: &RangeKey) -> Vec<Element> {
        let Some(m) = self.ranges.get(k) else {
            return Vec::new();
        };
        let nets: Vec<IpNet> = m.values().flatten().copied().collect();
        IpNet::aggregate(&nets)
            .into_iter()
            .map(|n| Element::key(vec![Value::Addr(k.1), Value::Net(n)]))
            .collect()
    }

    /// Records `service`'s claims.
    pub fn insert(&mut self, service: &ServiceKey, objects: &ServiceObjects) {
        self.insert_elements(service, objects.elements.clone());
    }

    /// Records `service`'s claims: `elements`, its [`ServiceObjects`]'
    /// shared set and map elements.
    pub fn insert_elements(&mut self, service: &ServiceKey, elements: Vec<(String, Element)>) {
        let service = Arc::new(service.clone());
        let mut frontends: BTreeMap<Frontend, Entries> = BTreeMap::new();
        for (set, element) in elements {
            if let Some((k, net)) = range_of(&set, &element.key) {
                let nets = self.ranges.entry(k).or_default();
                nets.entry(Arc::clone(&service)).or_default().push(net);
                continue;
            }
            match frontend_of(&set, &element.key) {
                Some(f) => frontends.entry(f).or_default().push((set, element)),
                None => {
                    self.by_key
                        .entry(set)
                        .or_default()
                        .entry(element.key.clone())
                        .or_default()
                        .insert(Arc::clone(&service), element);
                }
            }
        }
        for (f, mut entries) in frontends {
            entries.sort();
            self.by_frontend
                .entry(f)
                .or_default()
                .insert(Arc::clone(&service), entries);
        }
    }

    /// Forgets `service`'s claims.
    pub fn remove(&mut self, service: &ServiceKey, objects: &ServiceObjects) {
        for (set, element) in &objects.elements {
            if let Some((k, _)) = range_of(set, &element.key) {
                if let Some(m) = self.ranges.get_mut(&k) {
                    m.remove(service);
                    if m.is_empty() {
                        self.ranges.remove(&k);
                    }
                }
                continue;
            }
            if let Some(f) = frontend_of(set, &element.key) {
                if let Some(m) = self.by_frontend.get_mut(&f) {
                    m.remove(service);
                    if m.is_empty() {
                        self.by_frontend.remove(&f);
                    }
                }
                continue;
            }
            if let Some(keys) = self.by_key.get_mut(set) {
                if let Some(m) = keys.get_mut(&element.key) {
                    m.remove(service);
                    if m.is_empty() {
                        keys.remove(&element.key);
                    }
                }
                if keys.is_empty() {
                    self.by_key.remove(set);
                }
            }
        }
    }

    /// Every element the claims program: each plain set element once,
    /// each frontend's keeper's entries, and each load-balancer address's
    /// source ranges; each element once, with the name of its set.
    pub fn programmed(&self) -> impl Iterator<Item = (&str, Element)> + '_ {
        let plain = self.by_key.iter().flat_map(|(set, keys)| {
            keys.values()
                .filter_map(|m| Some((set.as_str(), m.values().next()?.clone())))
        });
        let kept = self
            .by_frontend
            .values()
            .filter_map(|m| m.values().next())
            .flat_map(|entries| entries.iter().map(|(set, e)| (set.as_str(), e.clone())));
        let ranges = self.ranges.keys().flat_map(|k| {
            self.range_elements(k)
                .into_iter()
                .map(move |e| (k.0.as_str(), e))
        });
        plain.chain(kept).chain(ranges)
    }
}
