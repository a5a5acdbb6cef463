//! The WorkloadEndpoint a pod gets, built the way Calico's CNI plugin
//! builds it, from the stored Pod and what ADD set up. No I/O.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
pub use manul_model::convert::pod::{
    NAMESPACE_LABEL, ORCHESTRATOR_K8S as ORCHESTRATOR, SERVICE_ACCOUNT_LABEL,
};
use manul_model::convert::pod::{endpoint_labels, endpoint_profiles, named_ports};
use manul_model::v3::{Cidr, Object, WorkloadEndpointSpec};
use manul_model::{Kind, Resource, ResourceKey};

/// What ADD made for the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plumbed {
    pub node: String,
    pub container_id: String,
    /// The pod-side interface (`CNI_IFNAME`).
    pub endpoint: String,
    /// The host-side interface.
    pub interface_name: String,
    pub ip: IpAddr,
    /// The pod side's MAC.
    pub mac: [u8; 6],
}

/// The key of the endpoint of pod `namespace/name`.
pub fn endpoint_key(namespace: &str, pod: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::WorkloadEndpoint,
        namespace: Some(namespace.to_string()),
        name: pod.to_string(),
    }
}

/// The key of pod `namespace/name`.
pub fn pod_key(namespace: &str, pod: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::Pod,
        namespace: Some(namespace.to_string()),
        name: pod.to_string(),
    }
}

/// The endpoint for `pod` (in `namespace`, named `name`) with what ADD made,
/// and the labels, profiles and named ports of the model's Pod conversion
/// ([`manul_model::convert::pod`]), so the plugin and the Kubernetes
/// watchers describe a pod alike.
pub fn workload_endpoint(namespace: &str, name: &str, pod: &Pod, plumbed: &Plumbed) -> Resource {
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_default();
    let labels = endpoint_labels(namespace, pod.metadata.labels.as_ref(), &service_account);
    let profiles = endpoint_profiles(namespace, &service_account);
    let spec = WorkloadEndpointSpec {
        orchestrator: ORCHESTRATOR.into(),
        node: plumbed.node.clone(),
        container_id: plumbed.container_id.clone(),
        pod: name.into(),
        endpoint: plumbed.endpoint.clone(),
        service_account_name: service_account,
        ip_networks: vec![Cidr(IpNet::from(plumbed.ip))],
        profiles,
        interface_name: plumbed.interface_name.clone(),
        mac: crate::result::format_mac(plumbed.mac),
        ports: named_ports(pod),
        ..WorkloadEndpointSpec::default()
    };
    let mut object = Object::new(name, Some(namespace), spec);
    object.metadata.labels = Some(labels);
    Resource::WorkloadEndpoint(object)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn pod(yaml: &str) -> Pod {
        let out = manul_model::load("test", yaml.as_bytes());
        assert!(out.errors.is_empty(), "{:#?}", out.errors);
        match out.resources.into_iter().next().unwrap().resource {
            Resource::Pod(p) => *p,
            other => panic!("{other:?}"),
        }
    }

    const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: production
  labels: {app: api, tier: backend}
spec:
  serviceAccountName: api-sa
  containers:
  - name: main
    image: x
    ports:
    - {name: http, containerPort: 8080}
    - {name: metrics, containerPort: 9090, protocol: UDP, hostPort: 19090}
    - {containerPort: 22}
  - name: sidecar
    image: y
    ports:
    - {name: admin, containerPort: 7000, protocol: SCTP}
";

    fn plumbed() -> Plumbed {
        Plumbed {
            node: "node-1".into(),
            container_id: "c0ffee".into(),
            endpoint: "eth0".into(),
            interface_name: "mnl0123456789ab".into(),
            ip: "10.65.0.7".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 9],
        }
    }

    #[test]
    fn the_endpoint_carries_labels_profile_ports_and_plumbing() {
        let wep = workload_endpoint("production", "api", &pod(POD), &plumbed());
        assert_eq!(wep.key(), endpoint_key("production", "api"));
        let Resource::WorkloadEndpoint(o) = &wep else {
            panic!("{wep:?}")
        };
        let labels = o.metadata.labels.clone().unwrap();
        let want: BTreeMap<String, String> = [
            ("app", "api"),
            ("tier", "backend"),
            ("projectcalico.org/namespace", "production"),
            ("projectcalico.org/orchestrator", "k8s"),
            ("projectcalico.org/serviceaccount", "api-sa"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, want);
        let s = &o.spec;
        assert_eq!(s.orchestrator, "k8s");
        assert_eq!(
            (s.node.as_str(), s.pod.as_str(), s.endpoint.as_str()),
            ("node-1", "api", "eth0")
        );
        assert_eq!(s.container_id, "c0ffee");
        assert_eq!(s.interface_name, "mnl0123456789ab");
        assert_eq!(s.mac, "02:00:00:00:00:09");
        assert_eq!(s.ip_networks[0].to_string(), "10.65.0.7/32");
        assert_eq!(s.profiles, vec!["kns.production", "ksa.production.api-sa"]);
        assert_eq!(s.service_account_name, "api-sa");
        let ports: Vec<_> = s
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.protocol.to_string(), p.port, p.host_port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("admin", "SCTP".to_string(), 7000, None),
                ("http", "TCP".to_string(), 8080, None),
                ("metrics", "UDP".to_string(), 9090, Some(19090)),
            ]
        );
        // What the plugin writes is what Typha's validation accepts.
        let text = serde_json::to_vec(&wep).unwrap();
        let back = manul_model::load("wep", &text);
        assert!(back.errors.is_empty(), "{:#?}", back.errors);
        assert_eq!(back.resources[0].resource, wep);
    }

    #[test]
    fn a_bare_pod_gets_the_calico_labels_only() {
        let bare = pod("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\n");
        let wep = workload_endpoint("ns", "p", &bare, &plumbed());
        let Resource::WorkloadEndpoint(o) = &wep else {
            panic!("{wep:?}")
        };
        assert_eq!(o.metadata.labels.as_ref().unwrap().len(), 2);
        assert!(o.spec.ports.is_empty());
        assert!(o.spec.service_account_name.is_empty());
    }
}
