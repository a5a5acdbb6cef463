//! Pod addresses kept in the datastore: IP pools cut into per-node blocks
//! (`IPAMBlock` resources), allocated and released with compare-and-set
//! writes on the block's revision, so that any number of allocators on any
//! number of nodes never hand out one address twice.
//!
//! An allocation reads the pools and blocks, lets [`plan::choose`] pick a
//! block affine to the node with room (or the next unclaimed block, which
//! it creates with the allocation already in it, expected revision 0), and
//! writes the block back with the revision it read. On a conflict it reads
//! again and retries, a bounded number of times, after a jittered pause.
//! Allocating for a handle that already holds an address of that IP
//! version returns that address, so a repeated CNI ADD does not leak.
//!
//! With [`IpamConfig::require_ready`] (Kubernetes mode) nothing is
//! allocated until `ClusterInformation default` says `datastoreReady`:
//! Typha's pod watcher writes it in the same entry as every live pod's
//! address, so a store rebuilt after losing every replica hands out no
//! address a pod holds.

pub mod plan;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use manul_model::v3::{CLUSTER_INFORMATION_NAME, IpamBlockSpec, Object, ipam_block_name};
use manul_model::{Kind, Resource, ResourceKey};
use tracing::{debug, info};

use crate::{Client, ClientError};
use plan::{Block, Choice, Holder};

/// Why an allocation or release failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no IPPool: create an enabled IPPool for IPv{ip_version} workloads first")]
    NoPool { ip_version: u8 },
    #[error(
        "no usable IPPool for IPv{ip_version} on node {node:?} (all disabled, not for workloads, or not selecting the node)"
    )]
    NoUsablePool { node: String, ip_version: u8 },
    #[error("the IPv{ip_version} pools usable on node {node:?} ({pools}) have no free address")]
    Exhausted {
        node: String,
        ip_version: u8,
        pools: String,
    },
    #[error(
        "gave up after {attempts} revision conflicts on IPAM blocks; the datastore is busy, try again"
    )]
    Contention { attempts: u32 },
    #[error(
        "the datastore is not ready (ClusterInformation \"default\" lacks datastoreReady: Typha has not listed the Kubernetes pods yet); try again"
    )]
    NotReady,
}

impl IpamError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            IpamError::Client(e) => e.is_unavailable() || e.is_conflict(),
            IpamError::Contention { .. } | IpamError::NotReady => true,
            _ => false,
        }
    }
}

/// How hard an allocation or release tries.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// Read-decide-write rounds before giving up on conflicts.
    pub max_attempts: u32,
    /// The first pause after a conflict; it doubles (up to 64×) with
    /// ±50 % jitter.
    pub backoff: Duration,
    /// Allocate only once `ClusterInformation default` says
    /// `datastoreReady` (Kubernetes mode).
    pub require_ready: bool,
}

impl Default for IpamConfig {
    fn default() -> IpamConfig {
        IpamConfig {
            max_attempts: 50,
            backoff: Duration::from_millis(2),
            require_ready: false,
        }
    }
}

/// What to allocate for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRequest {
    /// The node whose blocks to use.
    pub node: String,
    /// The holder: the handle (container id) and the pod, for reading.
    pub holder: Holder,
    /// 4 or 6.
    pub ip_version: u8,
}

/// An allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    /// The block it came from.
    pub block: IpNet,
    /// Whether the handle already held it (nothing was written).
    pub existing: bool,
}

/// Allocates and releases addresses through a [`Client`].
#[derive(Debug, Clone)]
pub struct Ipam {
    client: Client,
    config: IpamConfig,
}

fn block_key(cidr: IpNet) -> ResourceKey {
    ResourceKey {
        kind: Kind::IpamBlock,
        namespace: None,
        name: ipam_block_name(cidr),
    }
}

fn block_resource(spec: IpamBlockSpec, cidr: IpNet) -> Resource {
    Resource::IpamBlock(Object::new(&ipam_block_name(cidr), None, spec))
}

/// A pseudo-random factor in [0.5, 1.5), from the standard library's
/// randomly seeded hasher.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let r = RandomState::new().hash_one(std::time::SystemTime::now());
    0.5 + (r % 10_000) as f64 / 10_000.0
}

impl Ipam {
    pub fn new(client: Client) -> Ipam {
        Ipam::with_config(client, IpamConfig::default())
    }

    pub fn with_config(client: Client, config: IpamConfig) -> Ipam {
        Ipam { client, config }
    }

    async fn pause(&self, attempt: u32) {
        let factor = 1u32 << attempt.min(6);
        tokio::time::sleep(self.config.backoff.mul_f64(f64::from(factor) * jitter())).await;
    }

    /// Every stored block with its revision.
    pub async fn blocks(&self) -> Result<Vec<Block>, ClientError> {
        let listed = self.client.list(Kind::IpamBlock, None).await?;
        Ok(listed
            .into_iter()
            .filter_map(|(r, revision)| match r {
                Resource::IpamBlock(o) => o.spec.cidr.map(|c| Block {
                    cidr: c.net(),
                    spec: o.spec,
                    revision,
                }),
                _ => None,
            })
            .collect())
    }

    /// Whether `ClusterInformation default` says `datastoreReady` (always,
    /// without [`IpamConfig::require_ready`]).
    async fn ready(&self) -> Result<(), IpamError> {
        if !self.config.require_ready {
            return Ok(());
        }
        let key = ResourceKey {
            kind: Kind::ClusterInformation,
            namespace: None,
            name: CLUSTER_INFORMATION_NAME.to_string(),
        };
        match self.client.get(&key).await? {
            Some((Resource::ClusterInformation(o), _)) if o.spec.datastore_ready == Some(true) => {
                Ok(())
            }
            _ => Err(IpamError::NotReady),
        }
    }

    async fn pools(&self, node: &str, ip_version: u8) -> Result<Vec<plan::Pool>, IpamError> {
        let pools: Vec<_> = self
            .client
            .list(Kind::IpPool, None)
            .await?
            .into_iter()
            .filter_map(|(r, _)| match r {
                Resource::IpPool(p) => Some(p),
                _ => None,
            })
            .collect();
        if pools.is_empty() {
            return Err(IpamError::NoPool { ip_version });
        }
        let labels = if pools.iter().all(|p| p.spec.node_selector.is_all()) {
            BTreeMap::new()
        } else {
            let key = ResourceKey {
                kind: Kind::Node,
                namespace: None,
                name: node.to_string(),
            };
            match self.client.get(&key).await? {
                Some((r, _)) => r.metadata().labels.clone().unwrap_or_default(),
                None => BTreeMap::new(),
            }
        };
        let usable = plan::usable_pools(&pools, &labels, ip_version);
        if usable.is_empty() {
            return Err(IpamError::NoUsablePool {
                node: node.to_string(),
                ip_version,
            });
        }
        Ok(usable)
    }

    /// Allocates one address for `request.holder` on `request.node`.
    pub async fn allocate(&self, request: &AllocationRequest) -> Result<Allocation, IpamError> {
        let node = request.node.as_str();
        let handle = request.holder.handle.as_str();
        for attempt in 0..self.config.max_attempts {
            if attempt > 0 {
                self.pause(attempt).await;
            }
            let (ready, pools, blocks) = tokio::join!(
                self.ready(),
                self.pools(node, request.ip_version),
                self.blocks()
            );
            ready?;
            let (pools, blocks) = (pools?, blocks?);
            let held = plan::held_by(&blocks, handle)
                .into_iter()
                .find(|(_, ip)| ip.is_ipv4() == (request.ip_version == 4));
            if let Some((block, ip)) = held {
                debug!(%handle, %ip, "the handle already holds an address");
                return Ok(Allocation {
                    ip,
                    block,
                    existing: true,
                });
            }
            let (cidr, ip, spec, expected) = match plan::choose(node, &pools, &blocks) {
                Choice::Existing { cidr, ip } => {
                    let Some(b) = blocks.iter().find(|b| b.cidr == cidr) else {
                        continue;
                    };
                    (
                        cidr,
                        ip,
                        plan::with_allocation(&b.spec, ip, &request.holder),
                        b.revision,
                    )
                }
                Choice::Claim { cidr, ip } => {
                    let spec =
                        plan::with_allocation(&plan::new_block(cidr, node), ip, &request.holder);
                    (cidr, ip, spec, 0)
                }
                Choice::Exhausted => {
                    return Err(IpamError::Exhausted {
                        node: node.to_string(),
                        ip_version: request.ip_version,
                        pools: pools
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            };
            match self
                .client
                .apply_if(&block_resource(spec, cidr), expected)
                .await
            {
                Ok(_) => {
                    if expected == 0 {
                        info!(%node, block = %cidr, "claimed an IPAM block");
                    }
                    debug!(%handle, %ip, block = %cidr, attempt, "allocated");
                    return Ok(Allocation {
                        ip,
                        block: cidr,
                        existing: false,
                    });
                }
                Err(e) if e.is_conflict() => {
                    debug!(%handle, block = %cidr, attempt, "block changed under us; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            attempts: self.config.max_attempts,
        })
    }

    /// Every address `handle` holds.
    pub async fn addresses_of(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let blocks = self.blocks().await?;
        Ok(plan::held_by(&blocks, handle)
            .into_iter()
            .map(|(_, ip)| ip)
            .collect())
    }

    /// Releases every address `handle` holds and returns them; releasing
    /// what is not held succeeds and returns nothing.
    pub async fn release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let mut released = Vec::new();
        for attempt in 0..self.config.max_attempts {
            if attempt > 0 {
                self.pause(attempt).await;
            }
            let mut conflicted = false;
            for b in self.blocks().await? {
                let Some((spec, ips)) = plan::without_handle(&b.spec, handle) else {
                    continue;
                };
                match self
                    .client
                    .apply_if(&block_resource(spec, b.cidr), b.revision)
                    .await
                {
                    Ok(_) => released.extend(ips),
                    Err(e) if e.is_conflict() => conflicted = true,
                    Err(e) => return Err(e.into()),
                }
            }
            if !conflicted {
                debug!(%handle, ?released, "released");
                return Ok(released);
            }
        }
        Err(IpamError::Contention {
            attempts: self.config.max_attempts,
        })
    }

    /// Deletes `cidr`'s block if nothing is allocated in it any more (and
    /// it has not changed since `revision`). Returns whether it was deleted.
    pub async fn delete_empty_block(&self, block: &Block) -> Result<bool, IpamError> {
        if !block.spec.allocations.is_empty() {
            return Ok(false);
        }
        match self
            .client
            .delete(&block_key(block.cidr), Some(block.revision))
            .await
        {
            Ok(r) => Ok(r.is_some()),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
