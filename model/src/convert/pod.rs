//! Pod → WorkloadEndpoint, with the rules of Calico's Kubernetes datastore.
//!
//! A pod gets an endpoint once it is scheduled, has an address and is not
//! host-networked; it loses it when it finishes (`Succeeded`/`Failed`) or is
//! being deleted without an address. The endpoint is stored under the pod's
//! namespace and name, as Manul's CNI plugin stores it.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{
    ConvertError, NAMESPACE_PROFILE_PREFIX, ORCHESTRATOR_LABEL, SERVICE_ACCOUNT_PROFILE_PREFIX,
    fail,
};
use crate::names;
use crate::v3::{Cidr, EndpointPort, Object, Protocol, WorkloadEndpointSpec};

pub use crate::selector::NAMESPACE_LABEL;
/// The label carrying an endpoint's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
/// The orchestrator of endpoints that stand for pods.
pub const ORCHESTRATOR_K8S: &str = "k8s";
/// The pod-side interface of a pod's (only) endpoint.
pub const POD_INTERFACE: &str = "eth0";
/// Annotation a Calico-style CNI plugin sets with the pod's addresses
/// (comma-separated), read when the status has none yet.
pub const POD_IPS_ANNOTATION: &str = "cni.projectcalico.org/podIPs";
/// The singular form of [`POD_IPS_ANNOTATION`]; set to `""` by the plugin
/// when it has taken the pod's network down.
pub const POD_IP_ANNOTATION: &str = "cni.projectcalico.org/podIP";
/// Annotation carrying the sandbox's container ID.
pub const CONTAINER_ID_ANNOTATION: &str = "cni.projectcalico.org/containerID";

/// Why a pod has no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSkip {
    /// `spec.hostNetwork`: the pod uses the node's interfaces.
    HostNetwork,
    /// `spec.nodeName` is not set yet.
    NotScheduled,
    /// Neither the status nor the CNI annotations carry an address.
    NoAddress,
    /// `Succeeded` or `Failed`, or being deleted after its network was
    /// taken down: its address may already belong to another pod.
    Finished,
}

impl std::fmt::Display for PodSkip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PodSkip::HostNetwork => "host-networked",
            PodSkip::NotScheduled => "not scheduled yet",
            PodSkip::NoAddress => "no address yet",
            PodSkip::Finished => "finished",
        })
    }
}

/// A pod's endpoint, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub enum PodEndpoint {
    Endpoint(Box<Object<WorkloadEndpointSpec>>),
    Skipped(PodSkip),
}

/// The labels of a pod's endpoint: the pod's own, plus
/// `projectcalico.org/namespace`, `projectcalico.org/orchestrator: k8s` and
/// `projectcalico.org/serviceaccount` when the account's name is a valid
/// label value.
pub fn endpoint_labels(
    namespace: &str,
    pod_labels: Option<&BTreeMap<String, String>>,
    service_account: &str,
) -> BTreeMap<String, String> {
    let mut labels = pod_labels.cloned().unwrap_or_default();
    labels.insert(NAMESPACE_LABEL.into(), namespace.into());
    labels.insert(ORCHESTRATOR_LABEL.into(), ORCHESTRATOR_K8S.into());
    if !service_account.is_empty() && names::validate_label_value(service_account).is_ok() {
        labels.insert(SERVICE_ACCOUNT_LABEL.into(), service_account.into());
    }
    labels
}

/// The profiles of a pod's endpoint: `kns.NAMESPACE`, then
/// `ksa.NAMESPACE.ACCOUNT` when it runs as a service account.
pub fn endpoint_profiles(namespace: &str, service_account: &str) -> Vec<String> {
    let mut profiles = vec![format!("{NAMESPACE_PROFILE_PREFIX}{namespace}")];
    if !service_account.is_empty() {
        profiles.push(format!(
            "{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{service_account}"
        ));
    }
    profiles
}

/// The named ports of the pod's containers and init containers, sorted by
/// name and port. Unnamed ports cannot be referenced by rules and are left
/// out; so are ports of protocols that have none and out-of-range numbers.
pub fn named_ports(pod: &Pod) -> Vec<EndpointPort> {
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let mut out: Vec<EndpointPort> = containers
        .flat_map(|c: &Container| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty())?;
            let protocol = p
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .parse::<Protocol>()
                .ok()
                .filter(|p| p.supports_ports())?;
            Some(EndpointPort {
                name,
                protocol,
                port: u16::try_from(p.container_port).ok().filter(|p| *p > 0)?,
                host_port: p
                    .host_port
                    .and_then(|h| u16::try_from(h).ok())
                    .filter(|h| *h > 0),
                host_ip: p.host_ip.as_deref().and_then(|h| h.parse().ok()),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
    out.dedup();
    out
}

/// The pod's addresses, each as a host network (`/32`, `/128`), in
/// Calico's order: the CNI plugin's annotations (`podIPs`, else `podIP`)
/// first, then `status.podIPs`, else `status.podIP`. The plugin writes the
/// annotations when it sets the pod's network up, before the kubelet
/// reports any status, and again for every new sandbox of the pod; the
/// status still names the old sandbox's address until the kubelet updates
/// it, so preferring it would give the endpoint an address the plugin has
/// already released.
fn addresses(pod: &Pod) -> Result<Vec<Cidr>, ConvertError> {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |k: &str| {
        annotations
            .and_then(|a| a.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let status = pod.status.as_ref();
    let from_status = || -> Option<(&str, Vec<String>)> {
        if let Some(ips) = status
            .and_then(|s| s.pod_ips.as_ref())
            .filter(|v| !v.is_empty())
        {
            return Some(("status.podIPs", ips.iter().map(|i| i.ip.clone()).collect()));
        }
        status
            .and_then(|s| s.pod_ip.clone())
            .filter(|i| !i.is_empty())
            .map(|ip| ("status.podIP", vec![ip]))
    };
    let found = match (
        annotation(POD_IPS_ANNOTATION),
        annotation(POD_IP_ANNOTATION),
    ) {
        (Some(v), _) => Some((
            "metadata.annotations.cni.projectcalico.org/podIPs",
            v.split(',').map(str::to_string).collect(),
        )),
        (None, Some(v)) => Some(("metadata.annotations.cni.projectcalico.org/podIP", vec![v])),
        (None, None) => from_status(),
    };
    let Some((field, raw)) = found else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        let text = text.trim();
        let net = match text.parse::<std::net::IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => match text.parse::<IpNet>() {
                Ok(net) => IpNet::from(net.addr()),
                Err(_) => {
                    return fail(
                        format!("{field}[{i}]"),
                        format!("{text:?} is not an IP address"),
                    );
                }
            },
        };
        if !out.contains(&Cidr(net)) {
            out.push(Cidr(net));
        }
    }
    Ok(out)
}

/// Converts a pod into its endpoint, or says why it has none. A malformed
/// address is an error (the caller skips the pod and counts it).
pub fn workload_endpoint(pod: &Pod) -> Result<PodEndpoint, ConvertError> {
    let skip = |why| Ok(PodEndpoint::Skipped(why));
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let Some(namespace) = pod.metadata.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return fail("metadata.namespace", "a pod needs a namespace");
    };
    if name.is_empty() {
        return fail("metadata.name", "a pod needs a name");
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.host_network == Some(true) {
        return skip(PodSkip::HostNetwork);
    }
    let node = spec.node_name.clone().unwrap_or_default();
    if node.is_empty() {
        return skip(PodSkip::NotScheduled);
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed" | "Completed")) {
        return skip(PodSkip::Finished);
    }
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let network_down = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_IP_ANNOTATION))
        .is_some_and(String::is_empty);
    if deleting && network_down {
        return skip(PodSkip::Finished);
    }
    let ips = addresses(pod)?;
    if ips.is_empty() {
        return skip(if deleting {
            PodSkip::Finished
        } else {
            PodSkip::NoAddress
        });
    }
    let service_account = spec.service_account_name.clone().unwrap_or_default();
    let container_id = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONTAINER_ID_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let spec = WorkloadEndpointSpec {
        orchestrator: ORCHESTRATOR_K8S.into(),
        node,
        container_id,
        pod: name.into(),
        endpoint: POD_INTERFACE.into(),
        service_account_name: service_account.clone(),
        ip_networks: ips,
        profiles: endpoint_profiles(namespace, &service_account),
        interface_name: names::workload_interface_name(namespace, name),
        ports: named_ports(pod),
        ..WorkloadEndpointSpec::default()
    };
    let mut object = Object::new(name, Some(namespace), spec);
    object.metadata.labels = Some(endpoint_labels(
        namespace,
        pod.metadata.labels.as_ref(),
        &service_account,
    ));
    Ok(PodEndpoint::Endpoint(Box::new(object)))
}
