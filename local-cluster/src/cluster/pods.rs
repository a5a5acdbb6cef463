//! Pods: their Namespace and Pod resources (typed values), their sandbox
//! namespace wired in by the CNI plugin, and servers on their ports.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ContainerPort, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use manul_model::resource::{Resource, ResourceKey};
use manul_netns::{NetNs, TcpServer};

use crate::ClusterError;
use crate::procs::{self, program};

use super::*;

/// A pod to create.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Index into the cluster's nodes.
    pub node: usize,
    /// TCP ports to listen on: `(port, optional name)`.
    pub tcp_ports: Vec<(u16, Option<String>)>,
    /// UDP ports to echo on.
    pub udp_ports: Vec<u16>,
    /// The pod's `serviceAccountName`.
    pub service_account: Option<String>,
}

/// A pod that exists.
#[derive(Debug)]
pub struct PodInfo {
    pub spec: PodSpec,
    pub ip: Ipv4Addr,
    pub netns: NetNs,
    pub container_id: String,
    /// When the CNI plugin returned: the sandbox is ready.
    pub ready_at: Instant,
    _servers: Vec<TcpServer>,
    _udp: Vec<manul_netns::UdpEcho>,
}

impl PodInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.spec.namespace, self.spec.name)
    }
}

impl LocalCluster {
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    pub fn pod(&self, key: &str) -> Result<&PodInfo, ClusterError> {
        self.pods
            .get(key)
            .ok_or_else(|| ClusterError::Invalid(format!("no pod {key}")))
    }

    /// Creates (or updates) a Kubernetes Namespace with `labels`.
    pub fn declare_namespace(
        &mut self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        self.apply(vec![Self::namespace_resource(namespace, labels)])?;
        self.namespaces.insert(namespace.to_string());
        Ok(())
    }

    fn ensure_namespace(&mut self, namespace: &str) -> Result<(), ClusterError> {
        if self.namespaces.contains(namespace) {
            return Ok(());
        }
        self.declare_namespace(namespace, &BTreeMap::new())
    }

    /// The Namespace resource for `namespace` with `labels`, and the label
    /// Kubernetes gives every namespace (`kubernetes.io/metadata.name`).
    fn namespace_resource(namespace: &str, labels: &BTreeMap<String, String>) -> Resource {
        let mut all = labels.clone();
        all.entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| namespace.to_string());
        Resource::Namespace(Box::new(Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_string()),
                labels: Some(all),
                ..ObjectMeta::default()
            },
            spec: None,
            status: None,
        }))
    }

    /// The Pod resource a kubelet would report for `spec` on `node`.
    fn pod_resource(spec: &PodSpec, node: &str) -> Resource {
        let ports = spec
            .tcp_ports
            .iter()
            .map(|(port, name)| ContainerPort {
                name: name.clone(),
                container_port: i32::from(*port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            })
            .collect();
        Resource::Pod(Box::new(Pod {
            metadata: ObjectMeta {
                name: Some(spec.name.clone()),
                namespace: Some(spec.namespace.clone()),
                labels: Some(spec.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.to_string()),
                service_account_name: spec.service_account.clone(),
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("manul/probe".into()),
                    ports: Some(ports),
                    ..Container::default()
                }],
                ..k8s_openapi::api::core::v1::PodSpec::default()
            }),
            status: None,
        }))
    }

    fn cni(
        &self,
        node: &Node,
        command: &str,
        container_id: &str,
        netns: &Path,
        spec: &PodSpec,
    ) -> Result<String, ClusterError> {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "manul",
            "type": "manul-cni",
            "typha": self.typha_addresses(),
            "nodename": node.name,
            "policy_setup_timeout_ms": self.config.policy_setup_timeout.as_millis() as u64,
            "endpoint_status_dir": node.status_dir,
            "typha_ca_file": self.certs_dir().join("ca.crt"),
            "typha_cert_file": self.certs_dir().join(format!("cni-{}.crt", node.name)),
            "typha_key_file": self.certs_dir().join(format!("cni-{}.key", node.name)),
            "typha_cn": manul_tls::dev::TYPHA_CN,
        });
        let cni = program("manul-cni")?;
        let bin_dir = procs::bin_dir()?;
        let args = format!(
            "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            spec.namespace, spec.name
        );
        let netns = netns.to_path_buf();
        let container_id = container_id.to_string();
        let command = command.to_string();
        let output = node
            .netns
            .run(move || -> std::io::Result<std::process::Output> {
                let mut child = Command::new(cni)
                    .env("CNI_COMMAND", command)
                    .env("CNI_CONTAINERID", container_id)
                    .env("CNI_NETNS", netns)
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_ARGS", args)
                    .env("CNI_PATH", bin_dir)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(conf.to_string().as_bytes())?;
                }
                child.wait_with_output()
            })
            .map_err(netns_err)?
            .map_err(|e| ClusterError::Spawn(format!("manul-cni: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(ClusterError::Cni {
                pod: format!("{}/{}", spec.namespace, spec.name),
                message: format!(
                    "{} {}",
                    stdout.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    }

    /// Creates a pod: its Namespace and Pod resources, its namespace, the
    /// CNI ADD on its node, and servers on its ports. Returns when the
    /// sandbox is ready (the CNI plugin returned).
    pub fn add_pod(&mut self, spec: PodSpec) -> Result<&PodInfo, ClusterError> {
        let node_name = self
            .nodes
            .get(spec.node)
            .map(|n| n.name.clone())
            .ok_or_else(|| ClusterError::Invalid(format!("no node with index {}", spec.node)))?;
        self.ensure_namespace(&spec.namespace)?;
        self.apply(vec![Self::pod_resource(&spec, &node_name)])?;
        let n = self.pod_counter.fetch_add(1, Ordering::Relaxed);
        let netns = NetNs::create(&format!("{}-p{n}", self.config.name)).map_err(netns_err)?;
        let container_id = format!("{}-{n:08}", self.config.name);
        let node = &self.nodes[spec.node];
        let result = self.cni(node, "ADD", &container_id, netns.path(), &spec)?;
        let ready_at = Instant::now();
        let ip = pod_ip(&result).ok_or_else(|| ClusterError::Cni {
            pod: format!("{}/{}", spec.namespace, spec.name),
            message: format!("no IPv4 address in the result {result}"),
        })?;
        let mut servers = Vec::new();
        for (port, _) in &spec.tcp_ports {
            servers.push(
                TcpServer::start(&netns, SocketAddr::new(IpAddr::V4(ip), *port))
                    .map_err(netns_err)?,
            );
        }
        let mut udp = Vec::new();
        for port in &spec.udp_ports {
            udp.push(
                manul_netns::UdpEcho::start(&netns, SocketAddr::new(IpAddr::V4(ip), *port))
                    .map_err(netns_err)?,
            );
        }
        let key = format!("{}/{}", spec.namespace, spec.name);
        self.pods.insert(
            key.clone(),
            PodInfo {
                spec,
                ip,
                netns,
                container_id,
                ready_at,
                _servers: servers,
                _udp: udp,
            },
        );
        self.pod(&key)
    }

    /// Removes a pod: CNI DEL, its Pod resource, its namespace.
    pub fn remove_pod(&mut self, key: &str) -> Result<(), ClusterError> {
        let Some(pod) = self.pods.remove(key) else {
            return Ok(());
        };
        let node = &self.nodes[pod.spec.node];
        self.cni(node, "DEL", &pod.container_id, pod.netns.path(), &pod.spec)?;
        self.delete(ResourceKey {
            kind: manul_model::resource::Kind::Pod,
            namespace: Some(pod.spec.namespace.clone()),
            name: pod.spec.name.clone(),
        })?;
        Ok(())
    }

    /// A TCP connect from pod `from` to pod `to` on `port`.
    pub fn tcp_probe(
        &self,
        from: &str,
        to: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<manul_netns::ProbeOutcome, ClusterError> {
        let from = self.pod(from)?;
        let to = self.pod(to)?;
        manul_netns::tcp_connect(
            &from.netns,
            SocketAddr::new(IpAddr::V4(to.ip), port),
            timeout,
        )
        .map_err(netns_err)
    }
}

/// The first IPv4 address in a CNI result.
fn pod_ip(result: &str) -> Option<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(result).ok()?;
    v.get("ips")?
        .as_array()?
        .iter()
        .find_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cni_result_gives_the_pod_address() {
        let r = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.65.0.7/32","interface":0}]}"#;
        assert_eq!(pod_ip(r), Some(Ipv4Addr::new(10, 65, 0, 7)));
        assert_eq!(pod_ip("{}"), None);
        assert_eq!(pod_ip("garbage"), None);
    }
}
