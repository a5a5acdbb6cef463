//! A scenario's Services: their spec, how it is checked, and the Service
//! and EndpointSlice written for each (what the endpoint controller would
//! write: the pods of its namespace whose labels it selects, each with its
//! node and its ready, serving and terminating conditions).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use manul_local_cluster::LocalCluster;
use serde::Deserialize;

use crate::scenario::Protocol;

/// A Service port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default)]
    pub name: String,
    pub protocol: Protocol,
    /// The Service's port (on its cluster IP).
    pub port: u16,
    /// The pods' port; default: `port`.
    #[serde(default)]
    pub target_port: Option<u16>,
    /// The node port (30000-32767) of a NodePort or LoadBalancer Service.
    #[serde(default)]
    pub node_port: Option<u16>,
}

impl ServicePort {
    /// The port the backends listen on.
    pub fn backend_port(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// The Service's `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// `sessionAffinity`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

/// A Kubernetes Service selecting pods of its namespace by labels:
/// headless (what policy `services` matches need) unless it has a
/// `cluster_ip`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `NAMESPACE/NAME`.
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// Its cluster IP; none: a headless Service, which no dataplane
    /// programs.
    #[serde(default)]
    pub cluster_ip: Option<Ipv4Addr>,
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// A LoadBalancer Service's ingress address (`status.loadBalancer`):
    /// probes reach it as `lb/NAMESPACE/NAME`, external clients through
    /// node 0.
    #[serde(default)]
    pub load_balancer_ip: Option<Ipv4Addr>,
    /// `loadBalancerSourceRanges`: CIDRs, or `external/NAME` for an
    /// external client's own address.
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<String>,
}

impl ServiceSpec {
    /// Checks what the API server would refuse, and what the probes could
    /// not reach.
    pub fn check(&self) -> Result<()> {
        let s = &self.name;
        if s.split_once('/')
            .is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
        {
            bail!("service {s:?}: the name must be NAMESPACE/NAME");
        }
        let mut seen = BTreeSet::new();
        for p in &self.ports {
            if p.protocol == Protocol::Icmp {
                bail!("service {s}: port {:?} must be TCP or UDP", p.name);
            }
            if !seen.insert((p.protocol, p.port)) {
                bail!(
                    "service {s}: {:?} port {} is listed twice",
                    p.protocol,
                    p.port
                );
            }
            match (self.service_type, p.node_port) {
                (ServiceType::ClusterIP, Some(_)) => {
                    bail!("service {s}: node_port needs type NodePort or LoadBalancer")
                }
                (ServiceType::NodePort | ServiceType::LoadBalancer, None) => {
                    bail!("service {s}: port {} needs a node_port", p.port)
                }
                (_, Some(n)) if !(30000..=32767).contains(&n) => {
                    bail!("service {s}: node_port {n} is not in 30000-32767")
                }
                _ => {}
            }
        }
        let plain = self.service_type == ServiceType::ClusterIP
            && self.external_traffic_policy == TrafficPolicy::Cluster
            && self.session_affinity == SessionAffinity::None;
        if self.cluster_ip.is_none() && !plain {
            bail!(
                "service {s}: a headless service (no cluster_ip) has no type, traffic policy or affinity"
            );
        }
        if self.external_traffic_policy == TrafficPolicy::Local
            && self.service_type == ServiceType::ClusterIP
        {
            bail!("service {s}: external_traffic_policy needs type NodePort or LoadBalancer");
        }
        if self.load_balancer_ip.is_some() && self.service_type != ServiceType::LoadBalancer {
            bail!("service {s}: load_balancer_ip needs type LoadBalancer");
        }
        if !self.load_balancer_source_ranges.is_empty() && self.load_balancer_ip.is_none() {
            bail!("service {s}: load_balancer_source_ranges needs a load_balancer_ip");
        }
        for r in &self.load_balancer_source_ranges {
            if !r.starts_with(crate::scenario::EXTERNAL)
                && !matches!(r.parse(), Ok(manul_netns::IpNet::V4(_)))
            {
                bail!("service {s}: source range {r:?} is neither an IPv4 CIDR nor external/NAME");
            }
        }
        Ok(())
    }

    /// The source ranges as CIDRs, an external client named by its own
    /// address (`externals`: name to address; an unknown one is an
    /// error).
    pub fn source_ranges(&self, externals: &BTreeMap<String, Ipv4Addr>) -> Result<Vec<String>> {
        self.load_balancer_source_ranges
            .iter()
            .map(|r| match r.strip_prefix(crate::scenario::EXTERNAL) {
                Some(x) => externals
                    .get(x)
                    .map(|ip| format!("{ip}/32"))
                    .ok_or_else(|| anyhow::anyhow!("service {}: unknown external {x}", self.name)),
                None => Ok(r.clone()),
            })
            .collect()
    }

    /// `(namespace, name)`.
    pub fn key(&self) -> (&str, &str) {
        self.name.split_once('/').unwrap_or(("default", &self.name))
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        _ => "TCP",
    }
}

/// The Service and its EndpointSlice: every pod of its namespace whose
/// labels it selects, with its node, ready unless `terminating` marks it
/// (then serving and terminating, not ready). `ranges`: its
/// `loadBalancerSourceRanges`, resolved. `only`: the pods its endpoints
/// list instead (a scenario step's change).
pub fn resources(
    s: &ServiceSpec,
    c: &LocalCluster,
    terminating: &BTreeSet<String>,
    ranges: Vec<String>,
    only: Option<&BTreeSet<String>>,
) -> Vec<manul_model::Resource> {
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec as K8sServiceSpec,
        ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let (ns, name) = s.key();
    let mut endpoints = Vec::new();
    for pod in c.pods() {
        let selected = match only {
            Some(only) => only.contains(&pod.key()),
            None => {
                pod.spec.namespace == ns
                    && s.selector
                        .iter()
                        .all(|(k, v)| pod.spec.labels.get(k) == Some(v))
            }
        };
        if !selected {
            continue;
        }
        let ending = terminating.contains(&pod.key());
        endpoints.push(Endpoint {
            addresses: vec![pod.ip.to_string()],
            node_name: c.nodes().get(pod.spec.node).map(|n| n.name.clone()),
            conditions: Some(EndpointConditions {
                ready: Some(!ending),
                serving: Some(true),
                terminating: Some(ending),
            }),
            ..Endpoint::default()
        });
    }
    let meta = |n: String, labels: Option<BTreeMap<String, String>>| ObjectMeta {
        name: Some(n),
        namespace: Some(ns.to_string()),
        labels,
        ..ObjectMeta::default()
    };
    let type_name = match s.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let external = s.service_type != ServiceType::ClusterIP;
    let service = Service {
        metadata: meta(name.to_string(), None),
        spec: Some(K8sServiceSpec {
            cluster_ip: Some(s.cluster_ip.map_or("None".into(), |ip| ip.to_string())),
            cluster_ips: s.cluster_ip.map(|ip| vec![ip.to_string()]),
            type_: s.cluster_ip.map(|_| type_name.to_string()),
            external_traffic_policy: external.then(|| {
                match s.external_traffic_policy {
                    TrafficPolicy::Cluster => "Cluster",
                    TrafficPolicy::Local => "Local",
                }
                .to_string()
            }),
            session_affinity: s.cluster_ip.map(|_| {
                match s.session_affinity {
                    SessionAffinity::None => "None",
                    SessionAffinity::ClientIP => "ClientIP",
                }
                .to_string()
            }),
            selector: Some(s.selector.clone()),
            load_balancer_source_ranges: (!ranges.is_empty()).then_some(ranges),
            ports: Some(
                s.ports
                    .iter()
                    .map(|p| k8s_openapi::api::core::v1::ServicePort {
                        name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                        protocol: Some(protocol_name(p.protocol).into()),
                        port: i32::from(p.port),
                        target_port: Some(IntOrString::Int(i32::from(p.backend_port()))),
                        node_port: p.node_port.map(i32::from),
                        ..k8s_openapi::api::core::v1::ServicePort::default()
                    })
                    .collect(),
            ),
            ..K8sServiceSpec::default()
        }),
        status: s.load_balancer_ip.map(|ip| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ..LoadBalancerIngress::default()
                }]),
            }),
            ..ServiceStatus::default()
        }),
    };
    let slice = EndpointSlice {
        metadata: meta(
            format!("{name}-1"),
            Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                name.to_string(),
            )])),
        ),
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(
            s.ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.clone()),
                    protocol: Some(protocol_name(p.protocol).into()),
                    port: Some(i32::from(p.backend_port())),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    };
    vec![
        manul_model::Resource::Service(Box::new(service)),
        manul_model::Resource::EndpointSlice(Box::new(slice)),
    ]
}
