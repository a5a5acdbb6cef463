//! The closed set of resource kinds Manul understands, a typed resource
//! value, and the key every resource is stored under.

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Serialize, Serializer};

use crate::operator::InstallationSpec;
use crate::v3::{
    ClusterInformationSpec, FelixConfigurationSpec, GlobalNetworkPolicySpec, GlobalThreatFeedSpec,
    HostEndpointSpec, IpPoolSpec, IpamBlockSpec, NetworkPolicySpec, NetworkSetSpec, NodeSpec,
    Object, ProfileSpec, StagedGlobalNetworkPolicySpec, StagedKubernetesNetworkPolicySpec,
    StagedNetworkPolicySpec, TierSpec, WorkloadEndpointSpec,
};

const K8S_CORE: &str = "v1";
const K8S_NETWORKING: &str = "networking.k8s.io/v1";
const K8S_DISCOVERY: &str = "discovery.k8s.io/v1";

macro_rules! kinds {
    ($( $variant:ident => ($api:expr, $kind:literal, $namespaced:literal, $key:literal) ),* $(,)?) => {
        /// A resource kind: an `apiVersion` and `kind` pair Manul accepts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind { $($variant),* }

        impl Kind {
            /// Every kind, in a stable order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The `apiVersion` documents of this kind carry.
            pub fn api_version(self) -> &'static str {
                match self { $(Kind::$variant => $api),* }
            }

            /// The `kind` documents of this kind carry.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$variant => $kind),* }
            }

            /// Whether resources of this kind live in a namespace.
            pub fn namespaced(self) -> bool {
                match self { $(Kind::$variant => $namespaced),* }
            }

            /// The unique word used for this kind in keys and on the command
            /// line.
            pub fn key_name(self) -> &'static str {
                match self { $(Kind::$variant => $key),* }
            }
        }
    };
}

kinds! {
    NetworkPolicy => (crate::v3::API_VERSION, "NetworkPolicy", true, "networkpolicy"),
    GlobalNetworkPolicy => (crate::v3::API_VERSION, "GlobalNetworkPolicy", false, "globalnetworkpolicy"),
    StagedNetworkPolicy => (crate::v3::API_VERSION, "StagedNetworkPolicy", true, "stagednetworkpolicy"),
    StagedGlobalNetworkPolicy => (crate::v3::API_VERSION, "StagedGlobalNetworkPolicy", false, "stagedglobalnetworkpolicy"),
    StagedKubernetesNetworkPolicy => (crate::v3::API_VERSION, "StagedKubernetesNetworkPolicy", true, "stagedkubernetesnetworkpolicy"),
    Tier => (crate::v3::API_VERSION, "Tier", false, "tier"),
    HostEndpoint => (crate::v3::API_VERSION, "HostEndpoint", false, "hostendpoint"),
    WorkloadEndpoint => (crate::v3::API_VERSION, "WorkloadEndpoint", true, "workloadendpoint"),
    NetworkSet => (crate::v3::API_VERSION, "NetworkSet", true, "networkset"),
    GlobalNetworkSet => (crate::v3::API_VERSION, "GlobalNetworkSet", false, "globalnetworkset"),
    GlobalThreatFeed => (crate::v3::API_VERSION, "GlobalThreatFeed", false, "globalthreatfeed"),
    Profile => (crate::v3::API_VERSION, "Profile", false, "profile"),
    Node => (crate::v3::API_VERSION, "Node", false, "node"),
    IpPool => (crate::v3::API_VERSION, "IPPool", false, "ippool"),
    IpamBlock => (crate::v3::API_VERSION, "IPAMBlock", false, "ipamblock"),
    ClusterInformation => (crate::v3::API_VERSION, "ClusterInformation", false, "clusterinformation"),
    FelixConfiguration => (crate::v3::API_VERSION, "FelixConfiguration", false, "felixconfiguration"),
    K8sNetworkPolicy => (K8S_NETWORKING, "NetworkPolicy", true, "k8s-networkpolicy"),
    Namespace => (K8S_CORE, "Namespace", false, "namespace"),
    Pod => (K8S_CORE, "Pod", true, "pod"),
    Service => (K8S_CORE, "Service", true, "service"),
    EndpointSlice => (K8S_DISCOVERY, "EndpointSlice", true, "endpointslice"),
    Installation => (crate::operator::API_VERSION, "Installation", false, "installation"),
}

impl Kind {
    /// The kind a document's `apiVersion` and `kind` name, if any.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// The kind a command-line word names: its key name, its `kind`
    /// (case-insensitive, plural accepted) or a short name.
    pub fn from_cli(word: &str) -> Option<Kind> {
        let w = word.to_ascii_lowercase();
        let w = w
            .strip_suffix('s')
            .filter(|s| !s.ends_with('s'))
            .unwrap_or(&w);
        let short = match w {
            "gnp" => Some(Kind::GlobalNetworkPolicy),
            "np" | "policy" => Some(Kind::NetworkPolicy),
            "knp" => Some(Kind::K8sNetworkPolicy),
            "snp" => Some(Kind::StagedNetworkPolicy),
            "sgnp" => Some(Kind::StagedGlobalNetworkPolicy),
            "sknp" => Some(Kind::StagedKubernetesNetworkPolicy),
            "hep" => Some(Kind::HostEndpoint),
            "wep" => Some(Kind::WorkloadEndpoint),
            "gn" => Some(Kind::GlobalNetworkSet),
            "ns" => Some(Kind::Namespace),
            _ => None,
        };
        short.or_else(|| {
            Kind::ALL
                .iter()
                .copied()
                .find(|k| k.key_name() == w || k.name().eq_ignore_ascii_case(w))
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a resource is stored: kind, namespace (for namespaced kinds) and
/// name. Keys order by kind, then namespace, then name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ResourceKey {
    /// `NAMESPACE/NAME` or `NAME`, as printed by the CLI.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.key_name(), self.qualified_name())
    }
}

/// A typed resource of any supported kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    NetworkPolicy(Object<NetworkPolicySpec>),
    GlobalNetworkPolicy(Object<GlobalNetworkPolicySpec>),
    StagedNetworkPolicy(Object<StagedNetworkPolicySpec>),
    StagedGlobalNetworkPolicy(Object<StagedGlobalNetworkPolicySpec>),
    StagedKubernetesNetworkPolicy(Object<StagedKubernetesNetworkPolicySpec>),
    Tier(Object<TierSpec>),
    HostEndpoint(Object<HostEndpointSpec>),
    WorkloadEndpoint(Object<WorkloadEndpointSpec>),
    NetworkSet(Object<NetworkSetSpec>),
    GlobalNetworkSet(Object<NetworkSetSpec>),
    GlobalThreatFeed(Object<GlobalThreatFeedSpec>),
    Profile(Object<ProfileSpec>),
    Node(Object<NodeSpec>),
    IpPool(Object<IpPoolSpec>),
    IpamBlock(Object<IpamBlockSpec>),
    ClusterInformation(Object<ClusterInformationSpec>),
    FelixConfiguration(Box<Object<FelixConfigurationSpec>>),
    K8sNetworkPolicy(Box<K8sNetworkPolicy>),
    Namespace(Box<Namespace>),
    Pod(Box<Pod>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Installation(Box<Object<InstallationSpec>>),
}

/// Applies `$body` to the metadata of whichever variant `$r` is.
macro_rules! with_meta {
    ($r:expr, $m:ident => $body:expr) => {
        match $r {
            Resource::NetworkPolicy(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::GlobalNetworkPolicy(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::Tier(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::StagedNetworkPolicy(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::StagedGlobalNetworkPolicy(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::StagedKubernetesNetworkPolicy(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::HostEndpoint(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::WorkloadEndpoint(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::GlobalThreatFeed(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::Profile(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::Node(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::IpPool(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::IpamBlock(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::ClusterInformation(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::FelixConfiguration(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::K8sNetworkPolicy(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::Namespace(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::Pod(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::Service(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::EndpointSlice(o) => {
                let $m = &o.metadata;
                $body
            }
            Resource::Installation(o) => {
                let $m = &o.metadata;
                $body
            }
        }
    };
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::NetworkPolicy(_) => Kind::NetworkPolicy,
            Resource::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
            Resource::StagedNetworkPolicy(_) => Kind::StagedNetworkPolicy,
            Resource::StagedGlobalNetworkPolicy(_) => Kind::StagedGlobalNetworkPolicy,
            Resource::StagedKubernetesNetworkPolicy(_) => Kind::StagedKubernetesNetworkPolicy,
            Resource::Tier(_) => Kind::Tier,
            Resource::HostEndpoint(_) => Kind::HostEndpoint,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
            Resource::NetworkSet(_) => Kind::NetworkSet,
            Resource::GlobalNetworkSet(_) => Kind::GlobalNetworkSet,
            Resource::GlobalThreatFeed(_) => Kind::GlobalThreatFeed,
            Resource::Profile(_) => Kind::Profile,
            Resource::Node(_) => Kind::Node,
            Resource::IpPool(_) => Kind::IpPool,
            Resource::IpamBlock(_) => Kind::IpamBlock,
            Resource::ClusterInformation(_) => Kind::ClusterInformation,
            Resource::FelixConfiguration(_) => Kind::FelixConfiguration,
            Resource::K8sNetworkPolicy(_) => Kind::K8sNetworkPolicy,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Pod(_) => Kind::Pod,
            Resource::Service(_) => Kind::Service,
            Resource::EndpointSlice(_) => Kind::EndpointSlice,
            Resource::Installation(_) => Kind::Installation,
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        with_meta!(self, m => m)
    }

    /// The key the resource is stored under. Namespaced kinds without a
    /// namespace get `default` when loaded (see [`crate::defaults`]).
    pub fn key(&self) -> ResourceKey {
        let kind = self.kind();
        let meta = self.metadata();
        ResourceKey {
            kind,
            namespace: if kind.namespaced() {
                Some(meta.namespace.clone().unwrap_or_default())
            } else {
                None
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct Tagged<'a, S: Serialize> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    object: &'a Object<S>,
}

fn tagged<S: Serialize, Z: Serializer>(
    kind: Kind,
    object: &Object<S>,
    s: Z,
) -> Result<Z::Ok, Z::Error> {
    Tagged {
        api_version: kind.api_version(),
        kind: kind.name(),
        object,
    }
    .serialize(s)
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = self.kind();
        match self {
            Resource::NetworkPolicy(o) => tagged(kind, o, s),
            Resource::GlobalNetworkPolicy(o) => tagged(kind, o, s),
            Resource::StagedNetworkPolicy(o) => tagged(kind, o, s),
            Resource::StagedGlobalNetworkPolicy(o) => tagged(kind, o, s),
            Resource::StagedKubernetesNetworkPolicy(o) => tagged(kind, o, s),
            Resource::Tier(o) => tagged(kind, o, s),
            Resource::HostEndpoint(o) => tagged(kind, o, s),
            Resource::WorkloadEndpoint(o) => tagged(kind, o, s),
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => tagged(kind, o, s),
            Resource::GlobalThreatFeed(o) => tagged(kind, o, s),
            Resource::Profile(o) => tagged(kind, o, s),
            Resource::Node(o) => tagged(kind, o, s),
            Resource::IpPool(o) => tagged(kind, o, s),
            Resource::IpamBlock(o) => tagged(kind, o, s),
            Resource::ClusterInformation(o) => tagged(kind, o, s),
            Resource::FelixConfiguration(o) => tagged(kind, o, s),
            Resource::Installation(o) => tagged(kind, o, s),
            Resource::K8sNetworkPolicy(o) => o.serialize(s),
            Resource::Namespace(o) => o.serialize(s),
            Resource::Pod(o) => o.serialize(s),
            Resource::Service(o) => o.serialize(s),
            Resource::EndpointSlice(o) => o.serialize(s),
        }
    }
}
