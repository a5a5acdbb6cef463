//! Semantic validation: everything a well-typed resource can still get
//! wrong. Each error names the field path and the reason.
//!
//! Decoding already rejects unknown fields, bad selectors, CIDRs, ports,
//! protocols and actions (see [`crate::load`]); this pass checks names,
//! labels, lengths and the rules that tie fields together.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::FieldError;
use crate::names;
use crate::resource::{Kind, Resource};
use crate::v3::{
    Action, EndpointPort, EntityRule, GlobalNetworkPolicySpec, PolicyType, Rule, StagedAction,
};

mod felix;
mod k8s;
mod threatfeed;

/// Every problem with `resource` (the first
/// [`crate::load_typed::MAX_ERRORS`] of them); empty when it is valid.
pub fn validate(resource: &Resource) -> Vec<FieldError> {
    let mut v = Validator::default();
    v.metadata(resource.kind(), resource.metadata());
    match resource {
        Resource::NetworkPolicy(o) => {
            let s = &o.spec;
            v.policy_common(&s.tier, s.order, &s.types, &s.ingress, &s.egress);
        }
        Resource::GlobalNetworkPolicy(o) => {
            let s = &o.spec;
            v.policy_common(&s.tier, s.order, &s.types, &s.ingress, &s.egress);
            v.global_policy_flags(s);
        }
        Resource::StagedNetworkPolicy(o) => {
            let s = &o.spec;
            if s.staged_action == StagedAction::Delete {
                v.staged_delete(s.is_empty_but_tier(), "every field but tier");
            } else {
                v.policy_common(&s.tier, s.order, &s.types, &s.ingress, &s.egress);
            }
        }
        Resource::StagedGlobalNetworkPolicy(o) => {
            let s = &o.spec;
            if s.staged_action == StagedAction::Delete {
                v.staged_delete(s.is_empty_but_tier(), "every field but tier");
            } else {
                v.policy_common(&s.tier, s.order, &s.types, &s.ingress, &s.egress);
                v.global_policy_flags(&s.enforced());
            }
        }
        Resource::StagedKubernetesNetworkPolicy(o) => {
            let s = &o.spec;
            if s.staged_action == StagedAction::Delete {
                v.staged_delete(s.is_empty(), "every field");
            } else {
                let enforced = k8s_openapi::api::networking::v1::NetworkPolicy {
                    metadata: o.metadata.clone(),
                    spec: Some(s.enforced()),
                };
                if let Err(e) = crate::convert::network_policy(&enforced) {
                    v.err(
                        "spec",
                        format!("does not convert as a Kubernetes NetworkPolicy: {e}"),
                    );
                }
            }
        }
        Resource::Tier(o) => {
            v.order("spec.order", o.spec.order);
            if let Some(a) = o.spec.default_action
                && !matches!(a, Action::Deny | Action::Pass)
            {
                v.err(
                    "spec.defaultAction",
                    format!("must be Deny or Pass, not {a:?}"),
                );
            }
            if let Some(name) = &o.metadata.name
                && let Err(e) = names::validate_dns_label(name)
            {
                v.err(
                    "metadata.name",
                    format!("a tier name must be a DNS-1123 label: {e}"),
                );
            }
        }
        Resource::Profile(o) => {
            v.rules("spec.ingress", &o.spec.ingress);
            v.rules("spec.egress", &o.spec.egress);
            v.labels("spec.labelsToApply", &o.spec.labels_to_apply);
        }
        Resource::HostEndpoint(o) => {
            let s = &o.spec;
            if s.node.is_empty() {
                v.err("spec.node", "required: the node the interface belongs to");
            }
            if s.interface_name.is_empty() && s.expected_ips.is_empty() {
                v.err(
                    "spec",
                    "set interfaceName (or \"*\"), expectedIPs, or both, to say which interface this is",
                );
            }
            v.endpoint_ports("spec.ports", &s.ports);
        }
        Resource::WorkloadEndpoint(o) => {
            let s = &o.spec;
            if s.node.is_empty() {
                v.err("spec.node", "required: the node the workload runs on");
            }
            v.endpoint_ports("spec.ports", &s.ports);
        }
        Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => {
            for (i, d) in o.spec.allowed_egress_domains.iter().enumerate() {
                let name = d.strip_prefix("*.").unwrap_or(d);
                if let Err(e) = names::validate_dns_subdomain(name) {
                    v.err(format!("spec.allowedEgressDomains[{i}]"), e);
                }
            }
        }
        Resource::GlobalThreatFeed(o) => threatfeed::feed(&mut v, &o.spec),
        Resource::IpPool(o) => v.ip_pool(&o.spec),
        Resource::IpamBlock(o) => v.ipam_block(o.name(), &o.spec),
        Resource::ClusterInformation(o) => {
            if o.metadata.name.as_deref() != Some(crate::v3::CLUSTER_INFORMATION_NAME) {
                v.err(
                    "metadata.name",
                    "a ClusterInformation must be named \"default\"",
                );
            }
        }
        Resource::Installation(o) => {
            if o.metadata.name.as_deref() != Some("default") {
                v.err("metadata.name", "an Installation must be named \"default\"");
            }
        }
        Resource::K8sNetworkPolicy(p) => k8s::network_policy(&mut v, p),
        Resource::FelixConfiguration(o) => felix::configuration(&mut v, o.name(), &o.spec),
        Resource::Node(_)
        | Resource::Namespace(_)
        | Resource::Pod(_)
        | Resource::Service(_)
        | Resource::EndpointSlice(_) => {}
    }
    v.errors
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// Records a problem; past [`crate::load_typed::MAX_ERRORS`] of them,
    /// the rest are not kept (the loader says the list stops there).
    fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        if self.errors.len() >= crate::load_typed::MAX_ERRORS {
            return;
        }
        self.errors.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn check(&mut self, path: impl Into<String>, result: Result<(), String>) {
        if let Err(reason) = result {
            self.err(path, reason);
        }
    }

    /// [`Self::check`] with the path built only on failure (for checks run
    /// once per label or port of every endpoint).
    fn check_at(&mut self, path: impl FnOnce() -> String, result: Result<(), String>) {
        if let Err(reason) = result {
            self.err(path(), reason);
        }
    }

    fn metadata(&mut self, kind: Kind, meta: &ObjectMeta) {
        match meta.name.as_deref() {
            None | Some("") => self.err("metadata.name", "required"),
            Some(name) => self.check("metadata.name", names::validate_dns_subdomain(name)),
        }
        match (kind.namespaced(), meta.namespace.as_deref()) {
            (true, Some(ns)) => self.check("metadata.namespace", names::validate_dns_label(ns)),
            (false, Some(ns)) if !ns.is_empty() => self.err(
                "metadata.namespace",
                format!("{kind} is cluster-scoped; remove the namespace {ns:?}"),
            ),
            _ => {}
        }
        if let Some(labels) = &meta.labels {
            self.labels("metadata.labels", labels);
        }
        if let Some(annotations) = &meta.annotations {
            let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > names::MAX_ANNOTATIONS_BYTES {
                self.err(
                    "metadata.annotations",
                    format!(
                        "annotations total {size} bytes; the limit is {}",
                        names::MAX_ANNOTATIONS_BYTES
                    ),
                );
            }
        }
    }

    fn labels(&mut self, path: &str, labels: &BTreeMap<String, String>) {
        for (k, val) in labels {
            self.check_at(|| format!("{path}.{k}"), names::validate_label_key(k));
            self.check_at(|| format!("{path}.{k}"), names::validate_label_value(val));
        }
    }

    fn order(&mut self, path: &str, order: Option<f64>) {
        if let Some(o) = order
            && !o.is_finite()
        {
            self.err(path, format!("order must be a finite number, not {o}"));
        }
    }

    fn policy_common(
        &mut self,
        tier: &str,
        order: Option<f64>,
        types: &[PolicyType],
        ingress: &[Rule],
        egress: &[Rule],
    ) {
        self.check("spec.tier", names::validate_dns_label(tier));
        self.order("spec.order", order);
        for (i, t) in types.iter().enumerate() {
            if types[..i].contains(t) {
                self.err(format!("spec.types[{i}]"), format!("{t:?} is listed twice"));
            }
        }
        if !ingress.is_empty() && !types.contains(&PolicyType::Ingress) {
            self.err(
                "spec.ingress",
                "ingress rules are present but types does not include Ingress, so they would never apply",
            );
        }
        if !egress.is_empty() && !types.contains(&PolicyType::Egress) {
            self.err(
                "spec.egress",
                "egress rules are present but types does not include Egress, so they would never apply",
            );
        }
        self.rules("spec.ingress", ingress);
        self.rules("spec.egress", egress);
    }

    /// A staged `Delete` names the enforced policy to delete: anything
    /// else it sets would never apply (Calico refuses it too).
    fn staged_delete(&mut self, empty: bool, what: &str) {
        if !empty {
            self.err(
                "spec",
                format!("with stagedAction Delete, {what} must be left unset: a staged Delete only removes the enforced policy of the same name"),
            );
        }
    }

    fn global_policy_flags(&mut self, s: &GlobalNetworkPolicySpec) {
        if s.pre_dnat && !s.apply_on_forward {
            self.err("spec.preDNAT", "preDNAT requires applyOnForward: true");
        }
        if s.do_not_track && !s.apply_on_forward {
            self.err(
                "spec.doNotTrack",
                "doNotTrack requires applyOnForward: true",
            );
        }
        if s.pre_dnat && s.do_not_track {
            self.err("spec.preDNAT", "preDNAT and doNotTrack cannot both be set");
        }
        if s.pre_dnat && (!s.egress.is_empty() || s.types.contains(&PolicyType::Egress)) {
            self.err("spec.egress", "a preDNAT policy applies to ingress only");
        }
    }

    fn rules(&mut self, path: &str, rules: &[Rule]) {
        for (i, r) in rules.iter().enumerate() {
            self.rule(&format!("{path}[{i}]"), r);
        }
    }

    fn rule(&mut self, path: &str, r: &Rule) {
        if let Some(v) = r.ip_version
            && v != 4
            && v != 6
        {
            self.err(
                format!("{path}.ipVersion"),
                format!("must be 4 or 6, not {v}"),
            );
        }
        for (field, icmp) in [("icmp", &r.icmp), ("notICMP", &r.not_icmp)] {
            let Some(icmp) = icmp else { continue };
            let p = format!("{path}.{field}");
            match r.protocol {
                Some(proto) if proto.is_icmp() => {
                    if r.ip_version == Some(4) && proto.number() == 58
                        || r.ip_version == Some(6) && proto.number() == 1
                    {
                        self.err(&p, format!("protocol {proto} does not match ipVersion"));
                    }
                }
                Some(proto) => self.err(
                    &p,
                    format!(
                        "ICMP fields need protocol ICMP or ICMPv6, but the protocol is {proto}"
                    ),
                ),
                None => self.err(&p, "ICMP fields need protocol ICMP or ICMPv6"),
            }
            if icmp.icmp_type == Some(255) {
                self.err(format!("{p}.type"), "ICMP type must be 0-254");
            }
            if icmp.code.is_some() && icmp.icmp_type.is_none() {
                self.err(format!("{p}.code"), "an ICMP code needs an ICMP type");
            }
        }
        self.entity(&format!("{path}.source"), r, &r.source);
        self.entity(&format!("{path}.destination"), r, &r.destination);
    }

    fn entity(&mut self, path: &str, r: &Rule, e: &EntityRule) {
        for (field, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
            if ports.is_empty() {
                continue;
            }
            match r.protocol {
                Some(p) if p.supports_ports() => {}
                Some(p) => self.err(
                    format!("{path}.{field}"),
                    format!(
                        "ports need protocol TCP, UDP, SCTP or UDPLite, but the protocol is {p}"
                    ),
                ),
                None => self.err(
                    format!("{path}.{field}"),
                    "ports need a protocol: set protocol to TCP, UDP, SCTP or UDPLite",
                ),
            }
        }
        for (field, nets) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
            for (i, n) in nets.iter().enumerate() {
                if let Some(v) = r.ip_version
                    && n.ip_version() != v
                {
                    self.err(
                        format!("{path}.{field}[{i}]"),
                        format!(
                            "{n} is IPv{}, but the rule's ipVersion is {v}",
                            n.ip_version()
                        ),
                    );
                }
            }
        }
        if let Some(svc) = &e.services {
            if svc.name.is_empty() {
                self.err(format!("{path}.services.name"), "required");
            }
            if !e.nets.is_empty() || e.selector.is_some() || e.namespace_selector.is_some() {
                self.err(
                    format!("{path}.services"),
                    "services cannot be combined with nets, selector or namespaceSelector",
                );
            }
            // A destination Service brings its own ports (Calico's rule).
            if path.ends_with(".destination") {
                for (field, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
                    if !ports.is_empty() {
                        self.err(
                            format!("{path}.{field}"),
                            "a destination with services matches the Service's own ports: ports and notPorts cannot be combined with it",
                        );
                    }
                }
            }
        }
        if let Some(sa) = &e.service_accounts {
            for (i, n) in sa.names.iter().enumerate() {
                self.check(
                    format!("{path}.serviceAccounts.names[{i}]"),
                    names::validate_dns_subdomain(n),
                );
            }
        }
    }

    fn endpoint_ports(&mut self, path: &str, ports: &[EndpointPort]) {
        for (i, p) in ports.iter().enumerate() {
            self.check_at(
                || format!("{path}[{i}].name"),
                names::validate_port_name(&p.name),
            );
            if !p.protocol.supports_ports() {
                self.err(
                    format!("{path}[{i}].protocol"),
                    format!(
                        "a named port needs TCP, UDP, SCTP or UDPLite, not {}",
                        p.protocol
                    ),
                );
            }
        }
    }

    fn ip_pool(&mut self, s: &crate::v3::IpPoolSpec) {
        let Some(cidr) = s.cidr else {
            self.err("spec.cidr", "required: the pool's network");
            return;
        };
        let (lo, hi) = if cidr.ip_version() == 4 {
            (20, 32)
        } else {
            (116, 128)
        };
        if let Some(b) = s.block_size {
            if !(lo..=hi).contains(&b) {
                self.err(
                    "spec.blockSize",
                    format!("must be {lo}-{hi} for this pool, not {b}"),
                );
            } else if cidr.0.prefix_len() > b {
                self.err(
                    "spec.blockSize",
                    format!("a /{b} block does not fit in the pool {cidr}"),
                );
            }
        }
        use crate::v3::EncapMode::Never;
        if s.vxlan_mode != Never && s.ipip_mode != Never {
            self.err("spec", "vxlanMode and ipipMode cannot both be enabled");
        }
    }

    /// A block: a network-aligned CIDR that names it, a `host:NODE`
    /// affinity when set, and allocations inside the CIDR, each address
    /// once, each with a handle.
    fn ipam_block(&mut self, name: &str, s: &crate::v3::IpamBlockSpec) {
        let Some(cidr) = s.cidr else {
            self.err("spec.cidr", "required: the block's network");
            return;
        };
        let net = cidr.0;
        if net.trunc() != net {
            self.err(
                "spec.cidr",
                format!("{net} has host bits set; a block starts at {}", net.trunc()),
            );
        }
        let expected = crate::v3::ipam_block_name(net);
        if !name.is_empty() && name != expected {
            self.err(
                "metadata.name",
                format!(
                    "a block for {} must be named {expected:?}, not {name:?}",
                    net.trunc()
                ),
            );
        }
        if !s.affinity.is_empty() {
            match s.affine_node() {
                Some(node) => self.check("spec.affinity", names::validate_dns_subdomain(node)),
                None => self.err(
                    "spec.affinity",
                    format!("must be \"host:NODE\", not {:?}", s.affinity),
                ),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in s.allocations.iter().enumerate() {
            let path = format!("spec.allocations[{i}]");
            if !net.contains(&a.ip) {
                self.err(
                    format!("{path}.ip"),
                    format!("{} is outside the block {net}", a.ip),
                );
            }
            if !seen.insert(a.ip) {
                self.err(format!("{path}.ip"), format!("{} is allocated twice", a.ip));
            }
            if a.handle.is_empty() {
                self.err(format!("{path}.handle"), "required: who holds the address");
            }
        }
    }
}
