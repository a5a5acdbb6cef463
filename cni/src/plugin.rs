//! ADD, DEL and CHECK against the datastore and the kernel.
//!
//! The plugin runs in the node's network namespace (its own); the pod's is
//! `CNI_NETNS`. ADD undoes what it did when a later step fails, so that a
//! failed ADD leaves neither an address, nor a veth, nor an endpoint.
//!
//! Who writes the pod's WorkloadEndpoint depends on the datastore:
//! with Manul's own (the local cluster) the plugin reads the Pod from Typha
//! and writes the endpoint; with Kubernetes (`datastore_type: kubernetes`)
//! Typha's pod watcher alone writes it, and the plugin records the pod's
//! addresses on the Pod ([`crate::pod_api`]) as soon as the veth is up, so
//! the watcher does not wait for the kubelet's status update. There the
//! plugin allocates only once Typha says `datastoreReady`, and after the
//! Pod carries the address it checks that the address is still its own in
//! the IPAM blocks (a Typha that lost every replica in between may have
//! handed it out again; then ADD fails and is retried).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use manul_client::Client;
use manul_client::ipam::plan::Holder;
use manul_client::ipam::{Allocation, AllocationRequest, Ipam, IpamConfig};
use manul_model::names::workload_interface_name;
use manul_model::{Kind, Resource, ResourceKey};
use manul_netns::{CALICO_GATEWAY_V4, NetNs, NetnsError, PodLink, plumb_pod, unplumb_pod};
use tracing::{debug, info, warn};

use crate::config::{CniEnv, Datastore, NetConf};
use crate::endpoint::{Plumbed, endpoint_key, pod_key, workload_endpoint};
use crate::error::{CniError, code};
use crate::pod_api::{Cleared, PodApi};
use crate::result::{CniResult, pod_result};
use crate::status::wait_programmed;

/// The plugin's own (the node's) network namespace.
pub const NODE_NETNS: &str = "/proc/self/ns/net";

/// One invocation: the configuration, the environment and the node name.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub conf: NetConf,
    pub env: CniEnv,
    pub node: String,
}

/// Runs kernel work (blocking netlink calls) off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, CniError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetnsError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(CniError::from),
        Err(e) => Err(CniError::caused(code::NETWORK, "kernel work failed", &e)),
    }
}

pub(crate) fn node_netns() -> Result<NetNs, NetnsError> {
    NetNs::from_path(Path::new(NODE_NETNS))
}

/// What ADD has done so far, undone in reverse when a later step fails.
struct Undo {
    ipam: Ipam,
    handle: String,
    host_if: Option<String>,
    endpoint: Option<(ResourceKey, u64)>,
    /// The Pod (namespace, name) whose annotations ADD set.
    annotated: Option<(PodApi, String, String)>,
}

impl Undo {
    async fn run(self, client: &Client) {
        if let Some((key, revision)) = &self.endpoint
            && let Err(e) = client.delete(key, Some(*revision)).await
        {
            warn!(%key, error = %e, "could not delete the endpoint of a failed ADD");
        }
        if let Some((pods, namespace, name)) = &self.annotated
            && let Err(e) = pods.clear(namespace, name, &self.handle).await
        {
            warn!(%namespace, pod = %name, error = %e, "could not take the addresses of a failed ADD off the pod");
        }
        if let Some(host_if) = self.host_if {
            let r = blocking(move || unplumb_pod(&node_netns()?, &host_if)).await;
            if let Err(e) = r {
                warn!(error = %e, "could not remove the veth of a failed ADD");
            }
        }
        if let Err(e) = self.ipam.release(&self.handle).await {
            warn!(handle = %self.handle, error = %e, "could not release the address of a failed ADD");
        }
    }
}

impl Plugin {
    async fn connect(&self) -> Result<Client, CniError> {
        let config = manul_client::ClientConfig {
            transport: crate::tls::transport(&self.conf)?,
            ..manul_client::ClientConfig::default()
        };
        Client::connect_with(&self.conf.typha, config)
            .await
            .map_err(CniError::from)
    }

    /// IPAM through `client`; in Kubernetes mode only once Typha has
    /// listed the pods.
    fn ipam(&self, client: &Client) -> Ipam {
        Ipam::with_config(
            client.clone(),
            IpamConfig {
                require_ready: self.conf.kubernetes(),
                ..IpamConfig::default()
            },
        )
    }

    /// The Kubernetes API, in Kubernetes mode.
    async fn pod_api(&self) -> Result<Option<PodApi>, CniError> {
        match &self.conf.datastore {
            Datastore::Typha => Ok(None),
            Datastore::Kubernetes { kubeconfig } => PodApi::connect(kubeconfig).await.map(Some),
        }
    }

    fn pod_netns(&self) -> Result<PathBuf, CniError> {
        self.env
            .netns
            .clone()
            .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is not set", ""))
    }

    /// ADD: address, veth and routes, endpoint, and optionally the wait for
    /// Felix.
    pub async fn add(&self) -> Result<CniResult, CniError> {
        let (namespace, pod_name) = self.env.required_pod()?;
        let netns_path = self.pod_netns()?;
        let client = self.connect().await?;
        // Manul's own datastore holds the Pod; in Kubernetes the pod watcher
        // reads it and the address patch finds out whether it exists.
        let owner = match self.pod_api().await? {
            Some(api) => EndpointOwner::Watcher(api),
            None => match client.get(&pod_key(namespace, pod_name)).await? {
                Some((Resource::Pod(p), _)) => EndpointOwner::Plugin(p),
                _ => {
                    return Err(CniError::new(
                        code::DATASTORE,
                        format!("pod {namespace}/{pod_name} not found in the datastore"),
                        "write the Pod to Typha before running the plugin, as the Kubernetes API server would",
                    ));
                }
            },
        };
        let check_path = netns_path.clone();
        blocking(move || NetNs::from_path(&check_path).map(drop))
            .await
            .map_err(|e| {
                CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!("cannot open CNI_NETNS {}", netns_path.display()),
                    e.details,
                )
            })?;

        let ipam = self.ipam(&client);
        let handle = self.env.container_id.clone();
        let allocation = ipam
            .allocate(&AllocationRequest {
                node: self.node.clone(),
                holder: Holder {
                    handle: handle.clone(),
                    namespace: Some(namespace.to_string()),
                    pod: Some(pod_name.to_string()),
                },
                ip_version: 4,
            })
            .await?;
        let mut undo = Undo {
            ipam,
            handle,
            host_if: None,
            endpoint: None,
            annotated: None,
        };
        match self
            .add_after_allocation(&client, &mut undo, namespace, pod_name, owner, &allocation)
            .await
        {
            Ok(result) => Ok(result),
            Err(e) => {
                undo.run(&client).await;
                Err(e)
            }
        }
    }

    async fn add_after_allocation(
        &self,
        client: &Client,
        undo: &mut Undo,
        namespace: &str,
        pod_name: &str,
        owner: EndpointOwner,
        allocation: &Allocation,
    ) -> Result<CniResult, CniError> {
        let ip = allocation.ip;
        let IpAddr::V4(ip4) = ip else {
            return Err(CniError::new(
                code::IPAM,
                format!("expected an IPv4 address, got {ip}"),
                "",
            ));
        };
        let host_if = workload_interface_name(namespace, pod_name);
        let netns_path = self.pod_netns()?;
        undo.host_if = Some(host_if.clone());
        let link = {
            let (host_if, ifname, path) =
                (host_if.clone(), self.env.ifname.clone(), netns_path.clone());
            blocking(move || plumb(&path, &host_if, &ifname, ip4)).await?
        };
        info!(%namespace, pod = %pod_name, %ip, host_if = %link.host_if, "pod plumbed");

        let revision = match owner {
            EndpointOwner::Plugin(pod) => {
                let endpoint = workload_endpoint(
                    namespace,
                    pod_name,
                    &pod,
                    &Plumbed {
                        node: self.node.clone(),
                        container_id: self.env.container_id.clone(),
                        endpoint: self.env.ifname.clone(),
                        interface_name: link.host_if.clone(),
                        ip,
                        mac: link.pod_mac,
                    },
                );
                let revision = client
                    .apply(std::slice::from_ref(&endpoint))
                    .await?
                    .first()
                    .copied()
                    .unwrap_or_default();
                undo.endpoint = Some((endpoint.key(), revision));
                debug!(key = %endpoint.key(), revision, "endpoint written");
                Some(revision)
            }
            EndpointOwner::Watcher(pods) => {
                let container = self.env.container_id.as_str();
                pods.record(namespace, pod_name, &[ip], container).await?;
                undo.annotated = Some((pods, namespace.to_string(), pod_name.to_string()));
                let held = undo.ipam.addresses_of(container).await?;
                if !held.contains(&ip) {
                    return Err(CniError::new(
                        code::TRY_AGAIN_LATER,
                        format!("the allocation of {ip} to container {container} is gone"),
                        "Typha lost its IPAM blocks after the allocation (every replica restarted empty?); ADD is undone and may be retried",
                    ));
                }
                None
            }
        };

        if let (Some(timeout), Some(dir)) = (
            self.conf.policy_setup_timeout(),
            &self.conf.endpoint_status_dir,
        ) {
            let started = std::time::Instant::now();
            let revision = match revision {
                Some(r) => r,
                None => {
                    watcher_endpoint(
                        client,
                        namespace,
                        pod_name,
                        &self.env.container_id,
                        ip,
                        timeout,
                    )
                    .await?
                }
            };
            let left = timeout.saturating_sub(started.elapsed());
            let took = wait_programmed(dir, namespace, pod_name, revision, left)
                .await
                .map_err(|e| {
                    CniError::caused(
                        code::POLICY_TIMEOUT,
                        "the endpoint was not programmed in time",
                        &e,
                    )
                })?;
            debug!(?took, "Felix reported the endpoint programmed");
        }
        Ok(pod_result(
            &self.conf.cni_version,
            self.conf.legacy_result(),
            (&link.host_if, link.host_mac),
            (&link.pod_if, link.pod_mac),
            &netns_path.display().to_string(),
            ip,
            IpAddr::V4(CALICO_GATEWAY_V4),
        ))
    }

    /// The pod this container belongs to: from `CNI_ARGS`, else the endpoint
    /// that names this container.
    async fn pod_of(&self, client: &Client) -> Result<Option<(String, String)>, CniError> {
        if let Some((ns, name)) = self.env.pod() {
            return Ok(Some((ns.to_string(), name.to_string())));
        }
        let endpoints = client.list(Kind::WorkloadEndpoint, None).await?;
        Ok(endpoints.into_iter().find_map(|(r, _)| match r {
            Resource::WorkloadEndpoint(o) if o.spec.container_id == self.env.container_id => {
                Some((
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.name().to_string(),
                ))
            }
            _ => None,
        }))
    }

    /// DEL: release the address, delete the endpoint, remove the host veth.
    /// Anything already gone is fine; an endpoint (and veth) that belongs
    /// to a newer container of the same pod is left alone.
    pub async fn del(&self) -> Result<(), CniError> {
        if let Some(pods) = self.pod_api().await? {
            return self.del_kubernetes(&pods).await;
        }
        let client = self.connect().await?;
        let released = Ipam::new(client.clone())
            .release(&self.env.container_id)
            .await?;
        debug!(?released, "released");
        let Some((namespace, pod_name)) = self.pod_of(&client).await? else {
            info!(container = %self.env.container_id, "no pod known for this container; nothing else to delete");
            return Ok(());
        };
        let key = endpoint_key(&namespace, &pod_name);
        let ours = match client.get(&key).await? {
            Some((Resource::WorkloadEndpoint(o), revision)) => {
                let id = &o.spec.container_id;
                if id.is_empty() || *id == self.env.container_id {
                    client.delete(&key, Some(revision)).await?;
                    true
                } else {
                    info!(%key, other = %id, "the endpoint belongs to another container; leaving it and its veth");
                    false
                }
            }
            _ => true,
        };
        if ours {
            let host_if = workload_interface_name(&namespace, &pod_name);
            blocking(move || unplumb_pod(&node_netns()?, &host_if)).await?;
        }
        info!(%namespace, pod = %pod_name, "pod deleted");
        Ok(())
    }
}

impl Plugin {
    /// DEL in Kubernetes mode: take the addresses off the Pod (so the pod
    /// watcher drops the endpoint), then release them and remove the veth;
    /// the endpoint itself is the watcher's. A Pod whose addresses belong
    /// to a newer container keeps them, and its veth.
    async fn del_kubernetes(&self, pods: &PodApi) -> Result<(), CniError> {
        let client = self.connect().await?;
        let pod = match self.env.pod() {
            Some((ns, name)) => Some((ns.to_string(), name.to_string())),
            None => self.pod_of(&client).await?,
        };
        let cleared = match &pod {
            Some((ns, name)) => pods.clear(ns, name, &self.env.container_id).await?,
            None => Cleared::Gone,
        };
        let released = self.ipam(&client).release(&self.env.container_id).await?;
        debug!(?released, ?cleared, "released");
        if let Some((namespace, name)) = pod
            && cleared != Cleared::OtherContainer
        {
            let host_if = workload_interface_name(&namespace, &name);
            blocking(move || unplumb_pod(&node_netns()?, &host_if)).await?;
            info!(%namespace, pod = %name, "pod deleted");
        }
        Ok(())
    }
}

/// The revision of the endpoint the pod watcher writes for this container
/// and address, once it is in Typha (polled for at most `timeout`).
async fn watcher_endpoint(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    ip: IpAddr,
    timeout: std::time::Duration,
) -> Result<u64, CniError> {
    let key = endpoint_key(namespace, pod);
    let net = ipnet::IpNet::from(ip);
    let started = std::time::Instant::now();
    loop {
        if let Some((Resource::WorkloadEndpoint(o), revision)) = client.get(&key).await?
            && o.spec.container_id == container
            && o.spec.ip_networks.iter().any(|n| n.0 == net)
        {
            return Ok(revision);
        }
        if started.elapsed() >= timeout {
            return Err(CniError::new(
                code::POLICY_TIMEOUT,
                "the endpoint was not programmed in time",
                format!(
                    "Typha's pod watcher did not write {key} for container {container} and {ip} within {timeout:?}"
                ),
            ));
        }
        tokio::time::sleep(crate::status::POLL_INTERVAL).await;
    }
}

/// Who writes the pod's WorkloadEndpoint.
enum EndpointOwner {
    /// The plugin, from this stored Pod (Manul's own datastore).
    Plugin(Box<k8s_openapi::api::core::v1::Pod>),
    /// Typha's pod watcher; the plugin records the addresses on the Pod.
    Watcher(PodApi),
}

/// Creates the pod's veth, replacing a leftover host side of the same name.
fn plumb(
    pod_netns: &Path,
    host_if: &str,
    ifname: &str,
    ip: Ipv4Addr,
) -> Result<PodLink, NetnsError> {
    let node = node_netns()?;
    let pod = NetNs::from_path(pod_netns)?;
    if manul_netns::link_exists(&node, host_if)? {
        warn!(%host_if, "replacing a leftover host veth");
        unplumb_pod(&node, host_if)?;
    }
    plumb_pod(&node, &pod, host_if, ifname, ip)
}
