//! The pending view: the cluster's enforced policies with every staged
//! policy applied as if it were enforced. Pure.
//!
//! - A staged `Set` takes the place of the enforced policy of its
//!   counterpart kind and name (`StagedNetworkPolicy` NS/NAME for
//!   `NetworkPolicy` NS/NAME, `StagedGlobalNetworkPolicy` NAME for
//!   `GlobalNetworkPolicy` NAME, `StagedKubernetesNetworkPolicy` NS/NAME
//!   for the Kubernetes `NetworkPolicy` NS/NAME), or joins the others when
//!   there is none: in its own tier and order, as the enforced one would.
//! - A staged `Delete` removes its counterpart.
//!
//! Everything else passes unchanged.

use std::collections::BTreeSet;

use manul_model::resource::{Kind, Resource, ResourceKey};

/// The enforced kind a staged kind stands for.
pub fn enforced_kind(staged: Kind) -> Option<Kind> {
    match staged {
        Kind::StagedNetworkPolicy => Some(Kind::NetworkPolicy),
        Kind::StagedGlobalNetworkPolicy => Some(Kind::GlobalNetworkPolicy),
        Kind::StagedKubernetesNetworkPolicy => Some(Kind::K8sNetworkPolicy),
        _ => None,
    }
}

/// The enforced resources and the staged ones as the pending view holds
/// them: enforced policies with a staged counterpart are left out (the
/// staged one, a `Set`, stands in their place; a `Delete` stands for
/// nothing). Feed the result to
/// [`ClusterState::from_resources_with`](crate::evaluator::ClusterState::from_resources_with)
/// with `staged` set.
pub fn pending_resources<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Vec<Resource> {
    let all: Vec<&Resource> = resources.into_iter().collect();
    let replaced: BTreeSet<ResourceKey> = all
        .iter()
        .filter_map(|r| {
            let key = r.key();
            enforced_kind(key.kind).map(|kind| ResourceKey { kind, ..key })
        })
        .collect();
    all.into_iter()
        .filter(|r| !replaced.contains(&r.key()))
        .cloned()
        .collect()
}

/// Whether the pending view depends on resources of this kind.
pub fn relevant(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::NetworkPolicy
            | Kind::GlobalNetworkPolicy
            | Kind::K8sNetworkPolicy
            | Kind::StagedNetworkPolicy
            | Kind::StagedGlobalNetworkPolicy
            | Kind::StagedKubernetesNetworkPolicy
            | Kind::Tier
            | Kind::Profile
            | Kind::Namespace
            | Kind::WorkloadEndpoint
            | Kind::HostEndpoint
            | Kind::NetworkSet
            | Kind::GlobalNetworkSet
            | Kind::EndpointSlice
    )
}
