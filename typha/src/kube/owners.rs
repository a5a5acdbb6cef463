//! Who owns each key in Kubernetes mode: a watcher that converts a
//! Kubernetes object (Pods, Namespaces, ServiceAccounts, NetworkPolicies,
//! Nodes, Services, EndpointSlices), the custom resources of a
//! `projectcalico.org/v3` CRD (or the operator's Installation CRD), or
//! nobody (IPAM blocks and Pods, written through Typha's API). Owned keys are
//! written only by their watcher: Typha's write API refuses them, and a
//! custom resource cannot take a key a converting watcher owns. No I/O.

use manul_model::convert::NAMESPACE_PROFILE_PREFIX;
use manul_model::{Kind, ResourceKey};

use super::driver::KubeOptions;
use super::reconcile::Source;
use super::sources::{
    EndpointSlices, Namespaces, NetworkPolicies, Nodes, Pods, ServiceAccounts, Services,
};

/// The owner of a key in Kubernetes mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Converted from the Kubernetes objects of this kind (`pod`, ...).
    Converted(&'static str),
    /// A `projectcalico.org/v3` custom resource.
    Crd,
    /// Typha's threat-feed puller (`GlobalNetworkSet` `threatfeed.NAME`).
    ThreatFeed,
}

impl Owner {
    /// Who owns it, for error messages.
    pub fn describe(self) -> String {
        match self {
            Owner::Converted(from) => format!(
                "Typha writes it from the Kubernetes {from} objects (change those with kubectl)"
            ),
            Owner::Crd => "it is a custom resource in the Kubernetes API".to_string(),
            Owner::ThreatFeed => {
                "Typha's threat-feed puller writes it from its GlobalThreatFeed".to_string()
            }
        }
    }
}

/// The owner of `key`, or `None` when only Typha's write API writes it.
pub fn owner(key: &ResourceKey, opts: KubeOptions) -> Option<Owner> {
    let nodes = Nodes {
        auto_host_endpoints: opts.auto_host_endpoints,
    };
    let converted: [(&'static str, bool); 7] = [
        (Pods.kind(), Pods.owns(key)),
        (Namespaces.kind(), Namespaces.owns(key)),
        (ServiceAccounts.kind(), ServiceAccounts.owns(key)),
        (NetworkPolicies.kind(), NetworkPolicies.owns(key)),
        (nodes.kind(), nodes.owns(key)),
        (Services.kind(), Services.owns(key)),
        (EndpointSlices.kind(), EndpointSlices.owns(key)),
    ];
    if let Some((from, _)) = converted.iter().find(|(_, owns)| *owns) {
        return Some(Owner::Converted(from));
    }
    // Felix derives profile `kns.NAME` from the stored Namespace: no other
    // writer may take the name.
    if key.kind == Kind::Profile && key.name.starts_with(NAMESPACE_PROFILE_PREFIX) {
        return Some(Owner::Converted(Namespaces.kind()));
    }
    // The pod watcher writes `datastoreReady` once IPAM is rebuilt from
    // the pods (see `ipam.rs`).
    if key.kind == Kind::ClusterInformation {
        return Some(Owner::Converted(Pods.kind()));
    }
    if crate::threatfeed::owns(key) {
        return Some(Owner::ThreatFeed);
    }
    manul_model::crd::crd_of(key.kind).map(|_| Owner::Crd)
}

/// Why a write to `key` through Typha's API is refused in Kubernetes
/// mode, or `None` when it is allowed.
pub fn refuse_write(key: &ResourceKey, opts: KubeOptions) -> Option<String> {
    let kind = key.kind;
    let name = key.qualified_name();
    match owner(key, opts)? {
        Owner::Crd => Some(format!(
            "{kind} {name} is owned by the Kubernetes API in Kubernetes mode: apply it with kubectl \
             (apiVersion {}, kind {})",
            kind.api_version(),
            kind.name()
        )),
        Owner::Converted(from) => Some(format!(
            "{kind} {name} is owned by the Kubernetes API in Kubernetes mode: Typha writes it from \
             the Kubernetes {from} objects; change those with kubectl"
        )),
        Owner::ThreatFeed => Some(format!(
            "{kind} {name} is written by Typha's threat-feed puller from its GlobalThreatFeed; \
             change the feed instead"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds whose keys are all writable through Typha's API.
    fn writable_kinds(opts: KubeOptions) -> Vec<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .filter(|k| {
                let probe = ResourceKey {
                    kind: *k,
                    namespace: k.namespaced().then(|| "default".to_string()),
                    name: "probe".to_string(),
                };
                owner(&probe, opts).is_none()
            })
            .collect()
    }

    fn key(kind: Kind, ns: Option<&str>, name: &str) -> ResourceKey {
        ResourceKey {
            kind,
            namespace: ns.map(str::to_string),
            name: name.to_string(),
        }
    }

    #[test]
    fn every_key_has_one_owner() {
        let opts = KubeOptions::default();
        assert_eq!(
            owner(&key(Kind::WorkloadEndpoint, Some("a"), "p"), opts),
            Some(Owner::Converted("pod"))
        );
        assert_eq!(
            owner(&key(Kind::Profile, None, "ksa.a.b"), opts),
            Some(Owner::Converted("serviceaccount"))
        );
        assert_eq!(
            owner(
                &key(Kind::Profile, None, "projectcalico-default-allow"),
                opts
            ),
            Some(Owner::Converted("node"))
        );
        assert_eq!(
            owner(&key(Kind::Profile, None, "mine"), opts),
            Some(Owner::Crd)
        );
        assert_eq!(
            owner(&key(Kind::HostEndpoint, None, "n1-auto-hep"), opts),
            Some(Owner::Converted("node"))
        );
        assert_eq!(
            owner(&key(Kind::HostEndpoint, None, "n1-eth0"), opts),
            Some(Owner::Crd)
        );
        assert_eq!(
            owner(&key(Kind::GlobalNetworkPolicy, None, "x"), opts),
            Some(Owner::Crd)
        );
        assert_eq!(
            owner(&key(Kind::GlobalNetworkSet, None, "threatfeed.abuse"), opts),
            Some(Owner::ThreatFeed)
        );
        assert_eq!(
            owner(&key(Kind::GlobalNetworkSet, None, "blocked"), opts),
            Some(Owner::Crd)
        );
        assert_eq!(
            owner(&key(Kind::IpamBlock, None, "10-65-0-0-26"), opts),
            None
        );
        // IPAM blocks (the CNI plugin's) and Pods (stored only outside
        // Kubernetes mode, where the plugin reads them from Typha); the
        // operator's Installation is a custom resource.
        assert_eq!(writable_kinds(opts), [Kind::IpamBlock, Kind::Pod]);
    }

    #[test]
    fn refusals_name_the_owner() {
        let opts = KubeOptions::default();
        assert_eq!(
            refuse_write(&key(Kind::GlobalNetworkPolicy, None, "default.x"), opts).as_deref(),
            Some(
                "GlobalNetworkPolicy default.x is owned by the Kubernetes API in Kubernetes mode: \
                 apply it with kubectl (apiVersion projectcalico.org/v3, kind GlobalNetworkPolicy)"
            )
        );
        let wep = refuse_write(&key(Kind::WorkloadEndpoint, Some("shop"), "web"), opts)
            .unwrap_or_default();
        assert!(
            wep.starts_with("WorkloadEndpoint shop/web is owned by the Kubernetes API"),
            "{wep}"
        );
        assert!(wep.contains("Kubernetes pod objects"), "{wep}");
        assert_eq!(refuse_write(&key(Kind::IpamBlock, None, "b"), opts), None);
    }
}
