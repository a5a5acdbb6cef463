//! The defaults Calico applies to resources as they are stored.
//!
//! - a namespaced resource without a namespace goes in `default`;
//! - a policy's `types` are inferred from its rule lists when absent:
//!   `Egress` when it has egress rules, `Ingress` when it has ingress rules
//!   or no egress rules (so a policy with no rules at all denies ingress);
//! - a tier's `defaultAction` is `Deny`;
//! - an IP pool's block size is 26 (IPv4) or 122 (IPv6), its allowed uses
//!   are `Workload` and `Tunnel`, and its assignment mode is `Automatic`.
//!
//! The tier (`default`) and an empty selector (`all()`) are defaulted while
//! decoding.

use crate::resource::Resource;
use crate::v3::{Action, AllowedUse, AssignmentMode, PolicyType, Rule, StagedAction};

/// The `types` Calico infers for a policy that does not list them.
pub fn infer_types(ingress: &[Rule], egress: &[Rule]) -> Vec<PolicyType> {
    let mut types = Vec::new();
    if !ingress.is_empty() || egress.is_empty() {
        types.push(PolicyType::Ingress);
    }
    if !egress.is_empty() {
        types.push(PolicyType::Egress);
    }
    types
}

/// Applies Calico's defaults to a freshly decoded resource.
pub fn apply(mut resource: Resource) -> Resource {
    let namespaced = resource.kind().namespaced();
    match &mut resource {
        Resource::NetworkPolicy(o) if o.spec.types.is_empty() => {
            o.spec.types = infer_types(&o.spec.ingress, &o.spec.egress);
        }
        Resource::GlobalNetworkPolicy(o) if o.spec.types.is_empty() => {
            o.spec.types = infer_types(&o.spec.ingress, &o.spec.egress);
        }
        // A staged Delete keeps its types empty (Calico clears them).
        Resource::StagedNetworkPolicy(o)
            if o.spec.types.is_empty() && o.spec.staged_action == StagedAction::Set =>
        {
            o.spec.types = infer_types(&o.spec.ingress, &o.spec.egress);
        }
        Resource::StagedGlobalNetworkPolicy(o)
            if o.spec.types.is_empty() && o.spec.staged_action == StagedAction::Set =>
        {
            o.spec.types = infer_types(&o.spec.ingress, &o.spec.egress);
        }
        Resource::Tier(o) => {
            o.spec.default_action.get_or_insert(Action::Deny);
        }
        Resource::IpPool(o) => {
            let spec = &mut o.spec;
            if let Some(cidr) = spec.cidr {
                spec.block_size
                    .get_or_insert(crate::v3::default_block_size(cidr.ip_version() == 4));
            }
            if spec.allowed_uses.is_empty() {
                spec.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
            }
            spec.assignment_mode
                .get_or_insert(AssignmentMode::Automatic);
        }
        _ => {}
    }
    if namespaced {
        set_default_namespace(&mut resource);
    }
    resource
}

fn set_default_namespace(resource: &mut Resource) {
    let meta = match resource {
        Resource::NetworkPolicy(o) => &mut o.metadata,
        Resource::WorkloadEndpoint(o) => &mut o.metadata,
        Resource::NetworkSet(o) => &mut o.metadata,
        Resource::K8sNetworkPolicy(o) => &mut o.metadata,
        Resource::Pod(o) => &mut o.metadata,
        Resource::Service(o) => &mut o.metadata,
        Resource::EndpointSlice(o) => &mut o.metadata,
        _ => return,
    };
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".to_string());
    }
}
