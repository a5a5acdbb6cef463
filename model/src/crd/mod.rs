//! Kubernetes CustomResourceDefinitions for the `projectcalico.org/v3`
//! kinds, with OpenAPI schemas generated from the model's types (derived
//! with `schemars`; [`primitives`] holds the hand-written schemas of the
//! model's string-typed values; [`structural`] makes them Kubernetes
//! structural schemas). One source of truth: a field added to a spec is in
//! its CRD once `manulctl crds` runs again, and a test fails until the
//! checked-in CRDs under `deploy/kubernetes/base/crds/` are regenerated.
//!
//! Names, group, version and scope are Calico's (`globalnetworkpolicies.
//! projectcalico.org`, `v3`), so documents written for Calico apply
//! unchanged. No I/O: callers write the files.

pub mod primitives;
pub mod structural;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

pub use primitives::case_insensitive;
pub use structural::{StructuralError, structural};

use crate::Kind;
use crate::v3::{
    FelixConfigurationSpec, GlobalNetworkPolicySpec, GlobalThreatFeedSpec, HostEndpointSpec,
    IpPoolSpec, NetworkPolicySpec, NetworkSetSpec, ProfileSpec, StagedGlobalNetworkPolicySpec,
    StagedKubernetesNetworkPolicySpec, StagedNetworkPolicySpec, TierSpec,
};

/// The API group of the CRDs.
pub const GROUP: &str = "projectcalico.org";
/// The one version each CRD serves.
pub const VERSION: &str = "v3";
/// The operator's API group and version (its `Installation`).
pub const OPERATOR_GROUP: &str = "operator.tigera.io";
pub const OPERATOR_VERSION: &str = "v1";

/// A column `kubectl get` prints.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub json_path: &'static str,
    pub typ: &'static str,
}

const AGE: Column = Column {
    name: "Age",
    json_path: ".metadata.creationTimestamp",
    typ: "date",
};
const TIER: Column = Column {
    name: "Tier",
    json_path: ".spec.tier",
    typ: "string",
};
const ORDER: Column = Column {
    name: "Order",
    json_path: ".spec.order",
    typ: "number",
};
const STAGED_ACTION: Column = Column {
    name: "StagedAction",
    json_path: ".spec.stagedAction",
    typ: "string",
};

/// One CRD: a kind, its names, its printer columns, whether it has a
/// `status` subresource, and its spec's schema.
#[derive(Debug, Clone, Copy)]
pub struct CrdSpec {
    pub kind: Kind,
    pub plural: &'static str,
    /// `PLURAL.projectcalico.org`: the CRD's name, also the watcher's
    /// label in Typha's metrics and logs (unlike the kind's name, it does
    /// not collide with Kubernetes' own NetworkPolicy).
    pub crd_name: &'static str,
    /// The API group and version (`projectcalico.org`, `v3`).
    pub group: &'static str,
    pub version: &'static str,
    pub short_names: &'static [&'static str],
    pub columns: &'static [Column],
    /// The schema of `status`, for kinds Calico gives a status subresource.
    status: Option<fn(&mut SchemaGenerator) -> schemars::Schema>,
    spec: fn(&mut SchemaGenerator) -> schemars::Schema,
}

macro_rules! crd {
    ($kind:ident, $plural:literal, [$($short:literal),*], [$($col:expr),*], $spec:ty $(, status $status:ty)?) => {
        CrdSpec {
            kind: Kind::$kind,
            plural: $plural,
            crd_name: concat!($plural, ".projectcalico.org"),
            group: GROUP,
            version: VERSION,
            short_names: &[$($short),*],
            columns: &[$($col,)* AGE],
            status: crd!(@status $($status)?),
            spec: |g| g.subschema_for::<$spec>(),
        }
    };
    (@status) => { None };
    (@status $t:ty) => { Some(|g| g.subschema_for::<$t>()) };
}

/// Every CRD Manul installs.
pub const CRDS: &[CrdSpec] = &[
    crd!(
        NetworkPolicy,
        "networkpolicies",
        ["cnp", "caliconetworkpolicy"],
        [TIER, ORDER],
        NetworkPolicySpec
    ),
    crd!(
        GlobalNetworkPolicy,
        "globalnetworkpolicies",
        ["gnp", "cgnp"],
        [TIER, ORDER],
        GlobalNetworkPolicySpec
    ),
    crd!(
        StagedNetworkPolicy,
        "stagednetworkpolicies",
        ["snp"],
        [TIER, ORDER, STAGED_ACTION],
        StagedNetworkPolicySpec
    ),
    crd!(
        StagedGlobalNetworkPolicy,
        "stagedglobalnetworkpolicies",
        ["sgnp"],
        [TIER, ORDER, STAGED_ACTION],
        StagedGlobalNetworkPolicySpec
    ),
    crd!(
        StagedKubernetesNetworkPolicy,
        "stagedkubernetesnetworkpolicies",
        ["sknp"],
        [STAGED_ACTION],
        StagedKubernetesNetworkPolicySpec
    ),
    crd!(
        Tier,
        "tiers",
        [],
        [
            ORDER,
            Column { name: "DefaultAction", json_path: ".spec.defaultAction", typ: "string" }
        ],
        TierSpec,
        status TierStatus
    ),
    crd!(
        HostEndpoint,
        "hostendpoints",
        ["hep"],
        [
            Column {
                name: "Node",
                json_path: ".spec.node",
                typ: "string"
            },
            Column {
                name: "Interface",
                json_path: ".spec.interfaceName",
                typ: "string"
            }
        ],
        HostEndpointSpec
    ),
    crd!(NetworkSet, "networksets", ["netset"], [], NetworkSetSpec),
    crd!(
        GlobalNetworkSet,
        "globalnetworksets",
        [],
        [],
        NetworkSetSpec
    ),
    crd!(
        GlobalThreatFeed,
        "globalthreatfeeds",
        [],
        [
            Column {
                name: "Mode",
                json_path: ".spec.mode",
                typ: "string"
            },
            Column {
                name: "Period",
                json_path: ".spec.pull.period",
                typ: "string"
            },
            Column {
                name: "LastSync",
                json_path: ".status.lastSuccessfulSync",
                typ: "date"
            }
        ],
        GlobalThreatFeedSpec,
        status ThreatFeedStatus
    ),
    crd!(Profile, "profiles", [], [], ProfileSpec),
    crd!(
        IpPool,
        "ippools",
        [],
        [
            Column {
                name: "CIDR",
                json_path: ".spec.cidr",
                typ: "string"
            },
            Column {
                name: "VXLAN",
                json_path: ".spec.vxlanMode",
                typ: "string"
            },
            Column {
                name: "IPIP",
                json_path: ".spec.ipipMode",
                typ: "string"
            },
            Column {
                name: "Disabled",
                json_path: ".spec.disabled",
                typ: "boolean"
            }
        ],
        IpPoolSpec
    ),
    crd!(
        FelixConfiguration,
        "felixconfigurations",
        [],
        [],
        FelixConfigurationSpec
    ),
    // The operator's Installation, for its `linuxDataplane` (Felix's
    // dataplane). Its spec holds the operator's whole reference, much of
    // it Kubernetes' own pod-template types: the schema keeps it open and
    // Typha judges it with the model, skipping and counting what it
    // refuses.
    CrdSpec {
        kind: Kind::Installation,
        plural: "installations",
        crd_name: "installations.operator.tigera.io",
        group: OPERATOR_GROUP,
        version: OPERATOR_VERSION,
        short_names: &[],
        columns: &[
            Column {
                name: "Dataplane",
                json_path: ".spec.calicoNetwork.linuxDataplane",
                typ: "string",
            },
            AGE,
        ],
        status: None,
        spec: |_| schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    },
];

/// The `projectcalico.org/v3` kinds without a CRD, and why.
pub const NOT_CRDS: &[(Kind, &str)] = &[
    (
        Kind::WorkloadEndpoint,
        "derived from Pods (by Typha's Pod watcher in Kubernetes mode); Calico serves no CRD for it either",
    ),
    (
        Kind::Node,
        "derived from Kubernetes Nodes (by Typha's Node watcher in Kubernetes mode)",
    ),
    (
        Kind::IpamBlock,
        "written by the CNI plugin's IPAM through Typha; its layout is Manul's own, not Calico's IPAMBlock",
    ),
    (
        Kind::ClusterInformation,
        "written by Typha (datastoreReady once the pods are listed and IPAM rebuilt from them), never by users",
    ),
];

/// The CRD of `kind`, if it has one.
pub fn crd_of(kind: Kind) -> Option<&'static CrdSpec> {
    CRDS.iter().find(|c| c.kind == kind)
}

/// `status` of a Tier, as Calico has it: standard conditions. Nothing in
/// Manul writes it yet; the schema lets a controller do so.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TierStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
}

/// Calico's GlobalThreatFeed status.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ThreatFeedStatus {
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    last_successful_sync: Option<String>,
    #[serde(default)]
    error_conditions: Vec<ThreatFeedError>,
}

/// One of a GlobalThreatFeed's errors.
#[allow(dead_code)]
#[derive(JsonSchema)]
struct ThreatFeedError {
    #[serde(rename = "type")]
    error_type: String,
    message: String,
}

/// A standard Kubernetes condition.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(rename = "type")]
    #[schemars(length(max = 316))]
    condition_type: String,
    status: ConditionStatus,
    #[serde(default)]
    observed_generation: Option<i64>,
    #[schemars(extend("format" = "date-time"))]
    last_transition_time: String,
    #[schemars(length(min = 1, max = 1024))]
    reason: String,
    #[schemars(length(max = 32768))]
    message: String,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
enum ConditionStatus {
    True,
    False,
    Unknown,
}

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
}

impl CrdSpec {
    /// The `openAPIV3Schema` of the CRD.
    pub fn schema(&self) -> Result<Value, StructuralError> {
        let mut g = generator();
        let spec = structural(&(self.spec)(&mut g).to_value())?;
        let mut props = json!({
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
        });
        if let Some(status) = self.status {
            props["status"] = structural(&status(&mut g).to_value())?;
        }
        Ok(json!({
            "type": "object",
            "description": format!(
                "A Calico {} ({}), as Manul accepts it.",
                self.kind.name(),
                self.kind.api_version()
            ),
            "properties": props,
        }))
    }

    /// The CustomResourceDefinition object.
    pub fn definition(&self) -> Result<Value, StructuralError> {
        let kind = self.kind.name();
        let mut names = json!({
            "kind": kind,
            "listKind": format!("{kind}List"),
            "plural": self.plural,
            "singular": kind.to_ascii_lowercase(),
        });
        if !self.short_names.is_empty() {
            names["shortNames"] = json!(self.short_names);
        }
        let columns: Vec<Value> = self
            .columns
            .iter()
            .map(|c| json!({"name": c.name, "jsonPath": c.json_path, "type": c.typ}))
            .collect();
        let mut version = json!({
            "name": self.version,
            "served": true,
            "storage": true,
            "additionalPrinterColumns": columns,
            "schema": {"openAPIV3Schema": self.schema()?},
        });
        if self.status.is_some() {
            version["subresources"] = json!({"status": {}});
        }
        Ok(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.crd_name},
            "spec": {
                "group": self.group,
                "names": names,
                "scope": if self.kind.namespaced() { "Namespaced" } else { "Cluster" },
                "versions": [version],
            },
        }))
    }

    /// The file the CRD is written to: `GROUP_PLURAL.yaml`.
    pub fn file_name(&self) -> String {
        format!("{}_{}.yaml", self.group, self.plural)
    }

    /// The CRD as the YAML file checked in: a header and the object with
    /// keys in a fixed (sorted) order, whatever the JSON map's order.
    pub fn yaml(&self) -> Result<String, StructuralError> {
        let body = serde_yaml_ng::to_string(&sorted(&self.definition()?))
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        Ok(format!(
            "# Generated from manul-model's types by `manulctl crds`: do not edit.\n{body}"
        ))
    }
}

/// Every file of the CRD folder (`deploy/kubernetes/base/crds/`): one
/// per CRD and the `kustomization.yaml` that lists them, by file name.
pub fn files() -> Result<Vec<(String, String)>, StructuralError> {
    let mut out = Vec::new();
    let mut kustomization = String::from(
        "# Generated by `manulctl crds`: do not edit.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n",
    );
    for crd in CRDS {
        kustomization.push_str(&format!("  - {}\n", crd.file_name()));
        out.push((crd.file_name(), crd.yaml()?));
    }
    out.push(("kustomization.yaml".to_string(), kustomization));
    Ok(out)
}

/// `v` as a YAML value whose mappings are in sorted key order.
fn sorted(v: &Value) -> serde_yaml_ng::Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_yaml_ng::Mapping::new();
            for k in keys {
                out.insert(serde_yaml_ng::Value::String(k.clone()), sorted(&m[k]));
            }
            serde_yaml_ng::Value::Mapping(out)
        }
        Value::Array(a) => serde_yaml_ng::Value::Sequence(a.iter().map(sorted).collect()),
        other => serde_yaml_ng::to_value(other).unwrap_or(serde_yaml_ng::Value::Null),
    }
}

#[cfg(test)]
mod tests;
