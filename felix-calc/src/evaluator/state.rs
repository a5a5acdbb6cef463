//! The cluster state the evaluator reads: resources normalised into
//! endpoints with their effective labels, labelled address sets, policies,
//! tiers, profiles and service backends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;
use manul_model::convert::{
    NAMESPACE_LABEL_PREFIX, NAMESPACE_NAME_LABEL, NAMESPACE_PROFILE_PREFIX, ORCHESTRATOR_LABEL,
    namespace_profile, network_policy,
};
use manul_model::selector::{NAMESPACE_LABEL, Selector};
use manul_model::v3::{
    Action, DEFAULT_TIER, EndpointPort, GlobalNetworkPolicySpec, NetworkSetSpec, Object,
    PolicyType, ProfileSpec, Protocol, Rule, StagedAction, TierSpec,
};
use manul_model::{Kind, Resource};

/// A label set.
pub type Labels = BTreeMap<String, String>;

pub use manul_model::v3::DEFAULT_TIER_ORDER;

pub use manul_model::convert::{SERVICE_ACCOUNT_LABEL_PREFIX, SERVICE_ACCOUNT_PROFILE_PREFIX};
/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A workload endpoint as the evaluator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadEndpoint {
    pub namespace: String,
    /// The WorkloadEndpoint's name.
    pub name: String,
    /// `spec.pod` (may be empty).
    pub pod: String,
    /// Effective labels (profiles, own labels, namespace and orchestrator).
    pub labels: Labels,
    /// The addresses of its `ipNetworks`, in order.
    pub addresses: Vec<IpAddr>,
    /// Its `ipNetworks`.
    pub networks: Vec<IpNet>,
    pub profiles: Vec<String>,
    pub ports: Vec<EndpointPort>,
    pub service_account: Option<String>,
}

impl WorkloadEndpoint {
    /// `NAMESPACE/NAME`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether `ip` is one of its addresses (inside one of its networks).
    pub fn owns(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// A labelled group of addresses rule selectors can match: a NetworkSet, a
/// GlobalNetworkSet or a host endpoint (by its expected IPs).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledNets {
    /// `NetworkSet`, `GlobalNetworkSet` or `HostEndpoint`.
    pub kind: &'static str,
    /// `NAMESPACE/NAME` or `NAME`.
    pub name: String,
    pub namespace: Option<String>,
    /// Effective labels.
    pub labels: Labels,
    pub nets: Vec<IpNet>,
    /// Named ports (host endpoints only).
    pub ports: Vec<EndpointPort>,
}

impl LabelledNets {
    /// Whether one of its nets contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// A policy in the form the evaluator uses (v3 NetworkPolicy,
/// GlobalNetworkPolicy, or converted Kubernetes NetworkPolicy).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The kind it came from: a policy kind, or (in a pending view) a
    /// staged one.
    pub kind: Kind,
    /// `NAMESPACE/NAME` for namespaced policies, `NAME` for global ones.
    pub name: String,
    /// Set for namespaced policies.
    pub namespace: Option<String>,
    pub tier: String,
    pub order: Option<f64>,
    pub selector: Selector,
    /// GlobalNetworkPolicy only.
    pub namespace_selector: Option<Selector>,
    pub service_account_selector: Option<Selector>,
    pub types: Vec<PolicyType>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// A tier: explicit (a Tier resource), the implicit `default`, or one only
/// named by policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    pub order: Option<f64>,
    pub default_action: Action,
}

/// The backends of a Kubernetes Service, from its EndpointSlices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceBackends {
    pub namespace: String,
    pub name: String,
    /// Every address of its slices' endpoints.
    pub addresses: BTreeSet<IpAddr>,
    /// (address, protocol number, port): each address with each port of
    /// the slice it is in.
    pub sockets: BTreeSet<(IpAddr, u8, u16)>,
}

/// The whole cluster state, ready to be traced against.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub(super) endpoints: Vec<WorkloadEndpoint>,
    pub(super) namespaces: BTreeMap<String, Labels>,
    pub(super) profiles: BTreeMap<String, ProfileSpec>,
    pub(super) tiers: BTreeMap<String, TierSpec>,
    pub(super) policies: Vec<Policy>,
    pub(super) sets: Vec<LabelledNets>,
    pub(super) services: BTreeMap<(String, String), ServiceBackends>,
    pub(super) notes: Vec<String>,
}

fn labels_of(l: &Option<BTreeMap<String, String>>) -> Labels {
    l.clone().unwrap_or_default()
}

fn strip_prefixed(labels: &Labels, prefix: &str) -> Labels {
    labels
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

fn nets_of(spec: &NetworkSetSpec) -> Vec<IpNet> {
    spec.nets.iter().map(|c| c.net()).collect()
}

impl ClusterState {
    /// Builds the state from every resource of the cluster. Resources that
    /// play no part in policy (pods, services, nodes, pools, ...) are
    /// ignored; a Kubernetes NetworkPolicy that cannot be converted is
    /// left out and reported in [`ClusterState::notes`].
    pub fn from_resources(resources: impl IntoIterator<Item = Resource>) -> ClusterState {
        Self::from_resources_with(resources, false)
    }

    /// [`ClusterState::from_resources`]; with `staged`, staged policies
    /// with `stagedAction: Set` count as their enforced kinds (a pending
    /// view, see [`crate::pending`]); without, they are left out, as
    /// Felix leaves them out of what it enforces.
    pub fn from_resources_with(
        resources: impl IntoIterator<Item = Resource>,
        staged: bool,
    ) -> ClusterState {
        let mut s = ClusterState::default();
        let mut weps = Vec::new();
        let mut heps = Vec::new();
        let mut netsets = Vec::new();
        let mut explicit_profiles = BTreeMap::new();
        for r in resources {
            match r {
                Resource::NetworkPolicy(o) => {
                    let ns = o.metadata.namespace.clone().unwrap_or_default();
                    s.policies
                        .push(namespaced_policy(&ns, &o, Kind::NetworkPolicy));
                }
                Resource::StagedNetworkPolicy(o)
                    if staged && o.spec.staged_action == StagedAction::Set =>
                {
                    let ns = o.metadata.namespace.clone().unwrap_or_default();
                    let enforced = Object {
                        metadata: o.metadata.clone(),
                        spec: o.spec.enforced(),
                    };
                    s.policies
                        .push(namespaced_policy(&ns, &enforced, Kind::StagedNetworkPolicy));
                }
                Resource::StagedGlobalNetworkPolicy(o)
                    if staged && o.spec.staged_action == StagedAction::Set =>
                {
                    let enforced = Object {
                        metadata: o.metadata.clone(),
                        spec: o.spec.enforced(),
                    };
                    s.global_policy(&enforced, Kind::StagedGlobalNetworkPolicy);
                }
                Resource::StagedKubernetesNetworkPolicy(o)
                    if staged && o.spec.staged_action == StagedAction::Set =>
                {
                    let np = K8sNetworkPolicy {
                        metadata: o.metadata.clone(),
                        spec: Some(o.spec.enforced()),
                    };
                    match network_policy(&np) {
                        Ok(p) => {
                            let ns = p.metadata.namespace.clone().unwrap_or_default();
                            s.policies.push(namespaced_policy(
                                &ns,
                                &p,
                                Kind::StagedKubernetesNetworkPolicy,
                            ));
                        }
                        Err(e) => s.notes.push(format!(
                            "StagedKubernetesNetworkPolicy {} left out: {e}",
                            o.name()
                        )),
                    }
                }
                Resource::K8sNetworkPolicy(np) => match network_policy(&np) {
                    Ok(o) => {
                        let ns = o.metadata.namespace.clone().unwrap_or_default();
                        s.policies
                            .push(namespaced_policy(&ns, &o, Kind::K8sNetworkPolicy));
                    }
                    Err(e) => s.notes.push(format!(
                        "Kubernetes NetworkPolicy {}/{} left out: {e}",
                        np.metadata.namespace.as_deref().unwrap_or_default(),
                        np.metadata.name.as_deref().unwrap_or_default()
                    )),
                },
                Resource::GlobalNetworkPolicy(o) => {
                    s.global_policy(&o, Kind::GlobalNetworkPolicy);
                }
                Resource::Tier(o) => {
                    s.tiers.insert(o.name().to_string(), o.spec.clone());
                }
                Resource::Profile(o) => {
                    explicit_profiles.insert(o.name().to_string(), o.spec.clone());
                }
                Resource::Namespace(ns) => {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    s.namespaces.insert(name, labels_of(&ns.metadata.labels));
                    let p = namespace_profile(&ns);
                    s.profiles.insert(p.name().to_string(), p.spec);
                }
                Resource::WorkloadEndpoint(o) => weps.push(o),
                Resource::HostEndpoint(o) => heps.push(o),
                Resource::NetworkSet(o) => netsets.push((true, o)),
                Resource::GlobalNetworkSet(o) => netsets.push((false, o)),
                Resource::EndpointSlice(slice) => {
                    let meta = &slice.metadata;
                    let Some(svc) = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL))
                    else {
                        continue;
                    };
                    let ns = meta.namespace.clone().unwrap_or_default();
                    let b = s
                        .services
                        .entry((ns.clone(), svc.clone()))
                        .or_insert_with(|| ServiceBackends {
                            namespace: ns,
                            name: svc.clone(),
                            ..ServiceBackends::default()
                        });
                    let addresses: Vec<IpAddr> = slice
                        .endpoints
                        .iter()
                        .flat_map(|ep| ep.addresses.iter())
                        .filter_map(|a| a.parse::<IpAddr>().ok())
                        .collect();
                    b.addresses.extend(addresses.iter().copied());
                    for p in slice.ports.iter().flatten() {
                        let proto = p
                            .protocol
                            .as_deref()
                            .unwrap_or("TCP")
                            .parse::<Protocol>()
                            .map(Protocol::number);
                        let port = p.port.and_then(|n| u16::try_from(n).ok());
                        if let (Ok(proto), Some(port)) = (proto, port) {
                            b.sockets
                                .extend(addresses.iter().map(|ip| (*ip, proto, port)));
                        }
                    }
                }
                _ => {}
            }
        }
        // A Namespace's profile replaces an explicit profile of its name.
        for (name, spec) in explicit_profiles {
            s.profiles.entry(name).or_insert(spec);
        }

        for o in weps {
            let ep = s.workload_endpoint(&o);
            s.endpoints.push(ep);
        }
        s.endpoints
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

        for o in heps {
            let mut labels = s.profile_labels(&o.spec.profiles);
            labels.extend(labels_of(&o.metadata.labels));
            s.sets.push(LabelledNets {
                kind: "HostEndpoint",
                name: o.name().to_string(),
                namespace: None,
                labels,
                nets: o
                    .spec
                    .expected_ips
                    .iter()
                    .map(|ip| IpNet::from(*ip))
                    .collect(),
                ports: o.spec.ports.clone(),
            });
        }
        for (namespaced, o) in netsets {
            let own = labels_of(&o.metadata.labels);
            let set = if namespaced {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let mut labels = s.profile_labels(&[format!("{NAMESPACE_PROFILE_PREFIX}{ns}")]);
                labels.extend(own);
                labels.insert(NAMESPACE_LABEL.to_string(), ns.clone());
                LabelledNets {
                    kind: "NetworkSet",
                    name: format!("{ns}/{}", o.name()),
                    namespace: Some(ns),
                    labels,
                    nets: nets_of(&o.spec),
                    ports: Vec::new(),
                }
            } else {
                LabelledNets {
                    kind: "GlobalNetworkSet",
                    name: o.name().to_string(),
                    namespace: None,
                    labels: own,
                    nets: nets_of(&o.spec),
                    ports: Vec::new(),
                }
            };
            s.sets.push(set);
        }
        s.sets
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        s.policies.sort_by(|a, b| a.name.cmp(&b.name));
        s
    }

    fn workload_endpoint(
        &self,
        o: &Object<manul_model::v3::WorkloadEndpointSpec>,
    ) -> WorkloadEndpoint {
        let namespace = o.metadata.namespace.clone().unwrap_or_default();
        let spec = &o.spec;
        let mut labels = self.profile_labels(&spec.profiles);
        labels.extend(labels_of(&o.metadata.labels));
        labels.insert(NAMESPACE_LABEL.to_string(), namespace.clone());
        let orchestrator = if spec.orchestrator.is_empty() {
            "k8s"
        } else {
            spec.orchestrator.as_str()
        };
        labels.insert(ORCHESTRATOR_LABEL.to_string(), orchestrator.to_string());
        let networks: Vec<IpNet> = spec.ip_networks.iter().map(|c| c.0).collect();
        WorkloadEndpoint {
            namespace,
            name: o.name().to_string(),
            pod: spec.pod.clone(),
            labels,
            addresses: networks.iter().map(IpNet::addr).collect(),
            networks,
            profiles: spec.profiles.clone(),
            ports: spec.ports.clone(),
            service_account: Some(spec.service_account_name.clone()).filter(|s| !s.is_empty()),
        }
    }

    /// The endpoint a new pod without labels of its own would be in
    /// `namespace` (its namespace's profile, namespace and orchestrator
    /// labels): a policy that applies to it applies to every pod there,
    /// present and future.
    pub fn new_endpoint_in(&self, namespace: &str) -> WorkloadEndpoint {
        let profiles = vec![format!("{NAMESPACE_PROFILE_PREFIX}{namespace}")];
        let mut labels = self.profile_labels(&profiles);
        labels.insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
        labels.insert(ORCHESTRATOR_LABEL.to_string(), "k8s".to_string());
        WorkloadEndpoint {
            namespace: namespace.to_string(),
            name: String::new(),
            pod: String::new(),
            labels,
            addresses: Vec::new(),
            networks: Vec::new(),
            profiles,
            ports: Vec::new(),
            service_account: None,
        }
    }

    /// Every namespace the state knows: Namespaces (or their `kns.`
    /// profiles), and those of endpoints and namespaced policies.
    pub fn namespace_names(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.namespaces.keys().cloned().collect();
        out.extend(
            self.profiles
                .keys()
                .filter_map(|p| p.strip_prefix(NAMESPACE_PROFILE_PREFIX))
                .map(str::to_string),
        );
        out.extend(self.endpoints.iter().map(|e| e.namespace.clone()));
        out.extend(self.policies.iter().filter_map(|p| p.namespace.clone()));
        out
    }

    /// The labels a list of profiles applies; an earlier profile wins.
    fn profile_labels(&self, profiles: &[String]) -> Labels {
        let mut labels = Labels::new();
        for p in profiles.iter().rev() {
            if let Some(spec) = self.profiles.get(p) {
                labels.extend(spec.labels_to_apply.clone());
            }
        }
        labels
    }

    /// Every workload endpoint, sorted by namespace and name.
    pub fn endpoints(&self) -> &[WorkloadEndpoint] {
        &self.endpoints
    }

    /// Every policy, sorted by name.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Network sets and host endpoints, as labelled address groups.
    pub fn labelled_nets(&self) -> &[LabelledNets] {
        &self.sets
    }

    /// What was left out of the state, and why.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// A profile by name (Namespaces included, as `kns.NAME`).
    pub fn profile(&self, name: &str) -> Option<&ProfileSpec> {
        self.profiles.get(name)
    }

    /// The labels `namespaceSelector`s see for namespace `ns`.
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        let mut labels = match self.namespaces.get(ns) {
            Some(l) => l.clone(),
            None => self
                .profiles
                .get(&format!("{NAMESPACE_PROFILE_PREFIX}{ns}"))
                .map(|p| strip_prefixed(&p.labels_to_apply, NAMESPACE_LABEL_PREFIX))
                .unwrap_or_default(),
        };
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
        labels
    }

    /// The labels service account selectors see for account `sa` in `ns`.
    pub fn service_account_labels(&self, ns: &str, sa: &str) -> Labels {
        let mut labels = self
            .profiles
            .get(&format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{ns}.{sa}"))
            .map(|p| strip_prefixed(&p.labels_to_apply, SERVICE_ACCOUNT_LABEL_PREFIX))
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), sa.to_string());
        labels
    }

    /// Every tier in evaluation order: Tier resources, the implicit
    /// `default` tier, and tiers only named by policies.
    pub fn tiers(&self) -> Vec<Tier> {
        let mut tiers: BTreeMap<String, Tier> = BTreeMap::new();
        let mut add = |name: &str, spec: Option<&TierSpec>| {
            let order = spec.and_then(|s| s.order).or(if name == DEFAULT_TIER {
                Some(DEFAULT_TIER_ORDER)
            } else {
                None
            });
            let default_action = spec.and_then(|s| s.default_action).unwrap_or(Action::Deny);
            tiers.entry(name.to_string()).or_insert(Tier {
                name: name.to_string(),
                order,
                default_action,
            });
        };
        for (name, spec) in &self.tiers {
            add(name, Some(spec));
        }
        add(DEFAULT_TIER, None);
        for p in &self.policies {
            add(&p.tier, None);
        }
        let mut out: Vec<Tier> = tiers.into_values().collect();
        out.sort_by(|a, b| order_cmp(a.order, b.order).then_with(|| a.name.cmp(&b.name)));
        out
    }

    /// The policies of `tier`, in evaluation order.
    pub fn tier_policies(&self, tier: &str) -> Vec<&Policy> {
        let mut out: Vec<&Policy> = self.policies.iter().filter(|p| p.tier == tier).collect();
        out.sort_by(|a, b| order_cmp(a.order, b.order).then_with(|| a.name.cmp(&b.name)));
        out
    }

    /// A workload endpoint by namespace and WorkloadEndpoint or pod name.
    pub fn find_endpoint(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<&WorkloadEndpoint, super::TraceError> {
        let in_ns = || self.endpoints.iter().filter(|e| e.namespace == namespace);
        if let Some(ep) = in_ns().find(|e| e.name == name) {
            return Ok(ep);
        }
        let by_pod: Vec<&WorkloadEndpoint> = in_ns().filter(|e| e.pod == name).collect();
        match by_pod.as_slice() {
            [] => Err(super::TraceError::UnknownEndpoint(format!(
                "{namespace}/{name}"
            ))),
            [one] => Ok(one),
            many => Err(super::TraceError::AmbiguousEndpoint {
                name: format!("{namespace}/{name}"),
                candidates: many
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The workload endpoint owning `ip`, if any (the first by namespace
    /// and name should networks overlap).
    pub fn endpoint_at(&self, ip: IpAddr) -> Option<&WorkloadEndpoint> {
        self.endpoints.iter().find(|e| e.owns(ip))
    }
}

fn namespaced_policy(
    ns: &str,
    o: &Object<manul_model::v3::NetworkPolicySpec>,
    kind: Kind,
) -> Policy {
    let spec = &o.spec;
    Policy {
        kind,
        name: format!("{ns}/{}", o.name()),
        namespace: Some(ns.to_string()),
        tier: spec.tier.clone(),
        order: spec.order,
        selector: spec.selector.clone(),
        namespace_selector: None,
        service_account_selector: spec
            .service_account_selector
            .clone()
            .filter(|s| !s.source().trim().is_empty()),
        types: spec.types.clone(),
        ingress: spec.ingress.clone(),
        egress: spec.egress.clone(),
    }
}

impl ClusterState {
    /// A global policy (left out, with a note, when it applies only to
    /// host endpoints).
    fn global_policy(&mut self, o: &Object<GlobalNetworkPolicySpec>, kind: Kind) {
        let spec = &o.spec;
        if spec.do_not_track || spec.pre_dnat {
            self.notes.push(format!(
                "{kind} {} left out: doNotTrack and preDNAT policies apply only to host endpoints",
                o.name()
            ));
            return;
        }
        self.policies.push(Policy {
            kind,
            name: o.name().to_string(),
            namespace: None,
            tier: spec.tier.clone(),
            order: spec.order,
            selector: spec.selector.clone(),
            namespace_selector: spec
                .namespace_selector
                .clone()
                .filter(|s| !s.source().trim().is_empty()),
            service_account_selector: spec
                .service_account_selector
                .clone()
                .filter(|s| !s.source().trim().is_empty()),
            types: spec.types.clone(),
            ingress: spec.ingress.clone(),
            egress: spec.egress.clone(),
        });
    }
}

/// Ascending order, unset last.
pub(super) fn order_cmp(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}
