//! CHECK: the container's address, interfaces, routes and endpoint are all
//! still what ADD made.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use manul_client::ipam::Ipam;
use manul_model::Resource;
use manul_model::names::workload_interface_name;
use manul_netns::{CALICO_GATEWAY_V4, NetNs, link_exists, list_addresses, list_routes};

use crate::endpoint::endpoint_key;
use crate::error::{CniError, code};
use crate::plugin::{Plugin, blocking, node_netns};

fn failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg, "")
}

/// What the kernel side of CHECK found missing, if anything.
fn kernel_problems(
    pod_netns: PathBuf,
    host_if: String,
    ifname: String,
    ip: IpAddr,
) -> Result<Vec<String>, manul_netns::NetnsError> {
    let mut problems = Vec::new();
    let node = node_netns()?;
    let pod = NetNs::from_path(&pod_netns)?;
    let host = IpNet::from(ip);
    if !link_exists(&node, &host_if)? {
        problems.push(format!("the host interface {host_if} is missing"));
    } else if !list_routes(&node)?
        .iter()
        .any(|r| r.dst == host && r.dev.as_deref() == Some(host_if.as_str()))
    {
        problems.push(format!("the node has no route {host} dev {host_if}"));
    }
    if !link_exists(&pod, &ifname)? {
        problems.push(format!("the pod interface {ifname} is missing"));
        return Ok(problems);
    }
    if !list_addresses(&pod, &ifname)?.contains(&host) {
        problems.push(format!("{ifname} does not have {host}"));
    }
    let gateway = IpAddr::V4(CALICO_GATEWAY_V4);
    if !list_routes(&pod)?
        .iter()
        .any(|r| r.dst.prefix_len() == 0 && r.via == Some(gateway))
    {
        problems.push(format!("the pod has no default route via {gateway}"));
    }
    Ok(problems)
}

impl Plugin {
    /// CHECK (CNI 0.4.0 and later).
    pub async fn check(&self) -> Result<(), CniError> {
        if self.conf.cni_version.starts_with("0.3") {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "CHECK needs CNI 0.4.0 or later, not {}",
                    self.conf.cni_version
                ),
                "",
            ));
        }
        let (namespace, pod_name) = self.env.required_pod()?;
        let pod_netns = self
            .env
            .netns
            .clone()
            .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is not set", ""))?;
        let client = manul_client::Client::connect(&self.conf.typha).await?;
        let held = Ipam::new(client.clone())
            .addresses_of(&self.env.container_id)
            .await?;
        let Some(&ip) = held.iter().find(|ip| ip.is_ipv4()) else {
            return Err(failed(format!(
                "no address is allocated to container {}",
                self.env.container_id
            )));
        };
        let key = endpoint_key(namespace, pod_name);
        let host_if = workload_interface_name(namespace, pod_name);
        match client.get(&key).await? {
            Some((Resource::WorkloadEndpoint(o), _)) => {
                let s = &o.spec;
                if s.container_id != self.env.container_id {
                    return Err(failed(format!(
                        "endpoint {key} belongs to container {:?}",
                        s.container_id
                    )));
                }
                if !s.ip_networks.iter().any(|n| n.0 == IpNet::from(ip))
                    || s.interface_name != host_if
                {
                    return Err(failed(format!(
                        "endpoint {key} does not name {ip} on {host_if}"
                    )));
                }
            }
            _ => return Err(failed(format!("endpoint {key} is missing"))),
        }
        let ifname = self.env.ifname.clone();
        let problems = blocking(move || kernel_problems(pod_netns, host_if, ifname, ip)).await?;
        if !problems.is_empty() {
            return Err(failed(problems.join("; ")));
        }
        Ok(())
    }
}
