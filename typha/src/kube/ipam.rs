//! IPAM that survives losing every Typha replica. No I/O.
//!
//! In Kubernetes mode the IPAM blocks live in Typha's store (the CNI
//! plugin allocates with compare-and-set writes, `manul_client::ipam`), and
//! the addresses in use are also on the Pods (the CNI plugin's
//! `cni.projectcalico.org/podIPs` annotation, then the status). When a
//! list of pods completes, the pod watcher adds to the same Raft entry:
//!
//! - every address a live pod's endpoint holds that no block records, as
//!   an allocation for the pod's container, in the block that covers it;
//!   a missing block is created affine to the pod's node, with its pool's
//!   block size (the default size when no stored pool covers the address:
//!   the pools may come back after the pods), or as a single-address block
//!   when that would overlap a stored block; each block is written only if
//!   it still has the revision read;
//! - `ClusterInformation default` with `datastoreReady: true` (a constant
//!   of the pod watcher, [`cluster_information`]).
//!
//! So a store rebuilt from nothing holds the ready flag only together with
//! every address a pod holds, and the CNI plugin, which allocates only once
//! it reads the flag, never hands out an address a live pod holds.
//! Recording only adds: an allocation whose pod is gone (a container the
//! plugin released, or an address taken before its annotation was written)
//! is the plugin's to release, never the watcher's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use manul_model::v3::{
    CLUSTER_INFORMATION_NAME, Cidr, ClusterInformationSpec, IpPoolSpec, IpamAllocation,
    IpamBlockSpec, Object, WorkloadEndpointSpec, host_affinity, ipam_block_name,
};
use manul_model::{Kind, Resource, ResourceKey};

/// The ready flag the pod watcher writes with every list.
pub fn cluster_information() -> Resource {
    Resource::ClusterInformation(Object::new(
        CLUSTER_INFORMATION_NAME,
        None,
        ClusterInformationSpec {
            datastore_ready: Some(true),
            ..ClusterInformationSpec::default()
        },
    ))
}

/// The key of [`cluster_information`].
pub fn cluster_information_key() -> ResourceKey {
    ResourceKey {
        kind: Kind::ClusterInformation,
        namespace: None,
        name: CLUSTER_INFORMATION_NAME.to_string(),
    }
}

/// A stored block and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBlock {
    pub spec: IpamBlockSpec,
    pub revision: u64,
}

/// A block to write, only if it still has `expected` (0: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockWrite {
    pub key: ResourceKey,
    pub block: Resource,
    pub expected: u64,
}

/// The handle of an address recorded for a pod whose container is unknown.
pub fn pod_handle(namespace: &str, pod: &str) -> String {
    format!("k8s-pod.{namespace}.{pod}")
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The block to create for `ip`, which no stored block covers: its pool's
/// block (the default size without a pool), or the address alone when
/// that block would overlap one of `stored`.
fn new_block_for(ip: IpAddr, pools: &[Object<IpPoolSpec>], stored: &[IpNet]) -> IpNet {
    let default = manul_model::v3::default_block_size(ip.is_ipv4());
    let size = pools
        .iter()
        .find_map(|p| {
            let cidr = p.spec.cidr?.net();
            cidr.contains(&ip)
                .then(|| p.spec.block_size.unwrap_or(default).max(cidr.prefix_len()))
        })
        .unwrap_or(default);
    let host = IpNet::from(ip);
    match IpNet::new(ip, size).map(|n| n.trunc()) {
        Ok(block) if !stored.iter().any(|s| overlap(s, &block)) => block,
        _ => host,
    }
}

/// The block writes that record every address of `endpoints` that no
/// block records yet. `blocks` are every stored block, `pools` every
/// stored pool.
pub fn record_live(
    endpoints: &[Object<WorkloadEndpointSpec>],
    pools: &[Object<IpPoolSpec>],
    blocks: &[StoredBlock],
) -> Vec<BlockWrite> {
    let mut recorded: BTreeSet<IpAddr> = blocks
        .iter()
        .flat_map(|b| b.spec.allocations.iter().map(|a| a.ip))
        .collect();
    let mut stored: BTreeMap<IpNet, (IpamBlockSpec, u64)> = blocks
        .iter()
        .filter_map(|b| Some((b.spec.cidr?.net().trunc(), (b.spec.clone(), b.revision))))
        .collect();
    let mut changed: BTreeSet<IpNet> = BTreeSet::new();
    for wep in endpoints {
        let namespace = wep.metadata.namespace.clone().unwrap_or_default();
        let pod = if wep.spec.pod.is_empty() {
            wep.name().to_string()
        } else {
            wep.spec.pod.clone()
        };
        for net in &wep.spec.ip_networks {
            let ip = net.net().addr();
            if recorded.contains(&ip) {
                continue;
            }
            let cidr = match stored.keys().copied().find(|c| c.contains(&ip)) {
                Some(c) => c,
                None => {
                    let cidrs: Vec<IpNet> = stored.keys().copied().collect();
                    new_block_for(ip, pools, &cidrs)
                }
            };
            let (spec, _) = stored.entry(cidr).or_insert_with(|| {
                (
                    IpamBlockSpec {
                        cidr: Some(Cidr(cidr)),
                        affinity: host_affinity(&wep.spec.node),
                        allocations: Vec::new(),
                    },
                    0,
                )
            });
            let handle = if wep.spec.container_id.is_empty() {
                pod_handle(&namespace, &pod)
            } else {
                wep.spec.container_id.clone()
            };
            spec.allocations.push(IpamAllocation {
                ip,
                handle,
                namespace: Some(namespace.clone()),
                pod: Some(pod.clone()),
            });
            spec.allocations.sort_by_key(|a| a.ip);
            recorded.insert(ip);
            changed.insert(cidr);
        }
    }
    changed
        .into_iter()
        .filter_map(|cidr| {
            let (spec, expected) = stored.remove(&cidr)?;
            let name = ipam_block_name(cidr);
            Some(BlockWrite {
                key: ResourceKey {
                    kind: Kind::IpamBlock,
                    namespace: None,
                    name: name.clone(),
                },
                block: Resource::IpamBlock(Object::new(&name, None, spec)),
                expected,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "ipam_tests.rs"]
mod tests;
