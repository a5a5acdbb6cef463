//! What each watched Kubernetes kind becomes in the store, with Calico's
//! conversion rules from `manul_model::convert`. No I/O.
//!
//! | watched | stored as | owned keys |
//! |---|---|---|
//! | Pod | WorkloadEndpoint `NS/POD` (none while skipped); with each list, `ClusterInformation default` (`datastoreReady`) and the live pods' addresses in the IPAM blocks ([`super::ipam`]) | every WorkloadEndpoint, `ClusterInformation default` |
//! | Namespace | Namespace (Felix derives profile `kns.NAME`) | every Namespace |
//! | ServiceAccount | Profile `ksa.NS.NAME` | Profiles named `ksa.*` |
//! | NetworkPolicy | Kubernetes NetworkPolicy (Felix converts it; checked here) | every Kubernetes NetworkPolicy |
//! | Service | Service (spec only) | every Service |
//! | EndpointSlice | EndpointSlice | every EndpointSlice |
//! | Node | Node, and `NAME-auto-hep` when enabled (plus the allow-all profile `projectcalico-default-allow` they use) | every Node, HostEndpoints named `*-auto-hep`, that profile |
//!
//! Kubernetes objects stored as they are keep only what Felix reads: name,
//! namespace, labels, uid and spec (no status, annotations or managed
//! fields), so a status update does not rewrite them.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use manul_model::convert::node::{
    DEFAULT_ALLOW_PROFILE, auto_host_endpoint, auto_host_endpoint_name, node,
};
use manul_model::convert::pod::{PodEndpoint, workload_endpoint};
use manul_model::convert::service_account::{
    service_account_profile, service_account_profile_name,
};
use manul_model::convert::{ConvertError, SERVICE_ACCOUNT_PROFILE_PREFIX, network_policy};
use manul_model::v3::{Action, Object, ProfileSpec, Rule};
use manul_model::{Kind, Resource, ResourceKey};

use std::collections::BTreeMap;

use super::ipam::{StoredBlock, cluster_information, cluster_information_key, record_live};
use super::reconcile::{Guarded, ObjectRef, Source};

fn key(kind: Kind, at: &ObjectRef, name: String) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: if kind.namespaced() {
            Some(at.namespace.clone().unwrap_or_default())
        } else {
            None
        },
        name,
    }
}

/// The metadata kept on Kubernetes objects stored as they are.
fn trimmed(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone(),
        uid: meta.uid.clone(),
        ..ObjectMeta::default()
    }
}

/// The resource's validation problems as one conversion error.
fn validated(r: Resource) -> Result<Resource, ConvertError> {
    let problems = manul_model::validate::validate(&r);
    match problems.first() {
        None => Ok(r),
        Some(p) => Err(ConvertError {
            path: p.path.clone(),
            reason: p.reason.clone(),
        }),
    }
}

/// Pods become WorkloadEndpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pods;

impl Source for Pods {
    type Object = Pod;
    fn kind(&self) -> &'static str {
        "pod"
    }
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        vec![key(Kind::WorkloadEndpoint, at, at.name.clone())]
    }
    fn convert(&self, pod: &Pod) -> Result<Vec<Resource>, ConvertError> {
        match workload_endpoint(pod)? {
            PodEndpoint::Endpoint(wep) => Ok(vec![validated(Resource::WorkloadEndpoint(*wep))?]),
            PodEndpoint::Skipped(_) => Ok(Vec::new()),
        }
    }
    fn owns(&self, key: &ResourceKey) -> bool {
        key.kind == Kind::WorkloadEndpoint || *key == cluster_information_key()
    }
    /// The ready flag, written in the same entry as the list and the
    /// addresses recorded by [`Source::after_list`].
    fn constant(&self) -> Vec<Resource> {
        vec![cluster_information()]
    }
    /// Every live pod's address that no IPAM block records, recorded.
    fn after_list(
        &self,
        owned: &BTreeMap<ResourceKey, Vec<u8>>,
        read: &dyn Fn(Kind) -> Vec<(ResourceKey, Vec<u8>, u64)>,
    ) -> Vec<Guarded> {
        let endpoints: Vec<_> = owned
            .iter()
            .filter(|(k, _)| k.kind == Kind::WorkloadEndpoint)
            .filter_map(|(_, v)| match manul_model::stored::decode(v) {
                Ok(Resource::WorkloadEndpoint(o)) => Some(o),
                _ => None,
            })
            .collect();
        let pools: Vec<_> = read(Kind::IpPool)
            .into_iter()
            .filter_map(|(_, v, _)| match manul_model::stored::decode(&v) {
                Ok(Resource::IpPool(o)) => Some(o),
                _ => None,
            })
            .collect();
        let blocks: Vec<_> = read(Kind::IpamBlock)
            .into_iter()
            .filter_map(|(_, v, revision)| match manul_model::stored::decode(&v) {
                Ok(Resource::IpamBlock(o)) => Some(StoredBlock {
                    spec: o.spec,
                    revision,
                }),
                _ => None,
            })
            .collect();
        record_live(&endpoints, &pools, &blocks)
            .into_iter()
            .filter_map(|w| {
                let value = serde_json::to_vec(&w.block).ok()?;
                Some(Guarded {
                    key: w.key,
                    value,
                    expected: w.expected,
                })
            })
            .collect()
    }
}

/// Namespaces are stored as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Namespaces;

impl Source for Namespaces {
    type Object = Namespace;
    fn kind(&self) -> &'static str {
        "namespace"
    }
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        vec![key(Kind::Namespace, at, at.name.clone())]
    }
    fn convert(&self, ns: &Namespace) -> Result<Vec<Resource>, ConvertError> {
        let ns = Namespace {
            metadata: trimmed(&ns.metadata),
            spec: None,
            status: None,
        };
        Ok(vec![validated(Resource::Namespace(Box::new(ns)))?])
    }
    fn owns(&self, key: &ResourceKey) -> bool {
        key.kind == Kind::Namespace
    }
}

/// ServiceAccounts become profiles `ksa.NS.NAME`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceAccounts;

impl Source for ServiceAccounts {
    type Object = ServiceAccount;
    fn kind(&self) -> &'static str {
        "serviceaccount"
    }
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        let ns = at.namespace.as_deref().unwrap_or_default();
        vec![key(
            Kind::Profile,
            at,
            service_account_profile_name(ns, &at.name),
        )]
    }
    fn convert(&self, sa: &ServiceAccount) -> Result<Vec<Resource>, ConvertError> {
        Ok(vec![validated(Resource::Profile(
            service_account_profile(sa)?,
        ))?])
    }
    fn owns(&self, key: &ResourceKey) -> bool {
        key.kind == Kind::Profile && key.name.starts_with(SERVICE_ACCOUNT_PROFILE_PREFIX)
    }
}

/// Kubernetes NetworkPolicies are stored as they are, once their v3 form
/// converts (Felix converts them the same way).
#[derive(Debug, Clone, Copy, Default)]
pub struct NetworkPolicies;

impl Source for NetworkPolicies {
    type Object = NetworkPolicy;
    fn kind(&self) -> &'static str {
        "networkpolicy"
    }
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        vec![key(Kind::K8sNetworkPolicy, at, at.name.clone())]
    }
    fn convert(&self, np: &NetworkPolicy) -> Result<Vec<Resource>, ConvertError> {
        validated(Resource::NetworkPolicy(network_policy(np)?))?;
        let np = NetworkPolicy {
            metadata: trimmed(&np.metadata),
            spec: np.spec.clone(),
        };
        Ok(vec![validated(Resource::K8sNetworkPolicy(Box::new(np)))?])
    }
    fn owns(&self, key: &ResourceKey) -> bool {
        key.kind == Kind::K8sNetworkPolicy
    }
}

/// Nodes become v3 Nodes and, when `auto_host_endpoints` is set, their
/// automatic host endpoints (which are deleted when it is not).
#[derive(Debug, Clone, Copy, Default)]
pub struct Nodes {
    pub auto_host_endpoints: bool,
}

impl Source for Nodes {
    type Object = Node;
    fn kind(&self) -> &'static str {
        "node"
    }
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        vec![
            key(Kind::Node, at, at.name.clone()),
            key(Kind::HostEndpoint, at, auto_host_endpoint_name(&at.name)),
        ]
    }
    fn convert(&self, k8s: &Node) -> Result<Vec<Resource>, ConvertError> {
        let n = node(k8s)?;
        let mut out = Vec::new();
        if self.auto_host_endpoints {
            out.push(validated(Resource::HostEndpoint(auto_host_endpoint(&n)))?);
        }
        out.insert(0, validated(Resource::Node(n))?);
        Ok(out)
    }
    /// With automatic host endpoints, the allow-all profile they use (as
    /// Calico has it built in): without it they would deny everything but
    /// the failsafe ports.
    fn constant(&self) -> Vec<Resource> {
        if !self.auto_host_endpoints {
            return Vec::new();
        }
        vec![Resource::Profile(Object::new(
            DEFAULT_ALLOW_PROFILE,
            None,
            ProfileSpec {
                ingress: vec![Rule::action(Action::Allow)],
                egress: vec![Rule::action(Action::Allow)],
                ..ProfileSpec::default()
            },
        ))]
    }
    fn owns(&self, key: &ResourceKey) -> bool {
        (key.kind == Kind::Profile && key.name == DEFAULT_ALLOW_PROFILE)
            || key.kind == Kind::Node
            || (key.kind == Kind::HostEndpoint
                && key
                    .name
                    .ends_with(manul_model::convert::node::AUTO_HEP_SUFFIX))
    }
}

/// Services are stored as they are (spec only), for rules that match
/// services and the kube-proxy replacement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Services;

impl Source for Services {
    type Object = Service;
    fn kind(&self) -> &'static str {
        "service"
    }
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        vec![key(Kind::Service, at, at.name.clone())]
    }
    fn convert(&self, svc: &Service) -> Result<Vec<Resource>, ConvertError> {
        let svc = Service {
            metadata: trimmed(&svc.metadata),
            spec: svc.spec.clone(),
            status: None,
        };
        Ok(vec![validated(Resource::Service(Box::new(svc)))?])
    }
    fn owns(&self, key: &ResourceKey) -> bool {
        key.kind == Kind::Service
    }
}

/// EndpointSlices are stored as they are (their labels name the service).
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointSlices;

impl Source for EndpointSlices {
    type Object = EndpointSlice;
    fn kind(&self) -> &'static str {
        "endpointslice"
    }
    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        vec![key(Kind::EndpointSlice, at, at.name.clone())]
    }
    fn convert(&self, slice: &EndpointSlice) -> Result<Vec<Resource>, ConvertError> {
        let slice = EndpointSlice {
            metadata: trimmed(&slice.metadata),
            ..slice.clone()
        };
        Ok(vec![validated(Resource::EndpointSlice(Box::new(slice)))?])
    }
    fn owns(&self, key: &ResourceKey) -> bool {
        key.kind == Kind::EndpointSlice
    }
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
