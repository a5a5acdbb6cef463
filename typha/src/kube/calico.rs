//! The `projectcalico.org/v3` kinds (and the operator's `Installation`)
//! served as CRDs (`manul_model::crd`):
//! each is watched and stored as the model loads it (strict decoding,
//! Calico's defaults, validation), so a custom resource the API server
//! accepted but the model refuses is skipped, logged and counted like any
//! malformed object. Metadata keeps name, namespace, labels and uid
//! (status, annotations and managed fields would rewrite the key on every
//! change that does not matter to Felix).
//!
//! A custom resource whose key another watcher owns (a Profile named
//! `ksa.*`, a HostEndpoint named `*-auto-hep`) is refused: one owner per
//! key.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use manul_model::convert::ConvertError;
use manul_model::crd;
use manul_model::{Kind, Resource, ResourceKey};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::driver::KubeOptions;
use super::owners::{Owner, owner};
use super::reconcile::{ObjectRef, Source};

/// A `projectcalico.org/v3` kind served as a CRD, as a type.
pub trait CalicoKind: Send + Sync + 'static {
    const KIND: Kind;
}

macro_rules! kinds {
    ($($marker:ident => $kind:ident),* $(,)?) => {
        /// Every kind watched, in the order the driver starts them.
        pub const WATCHED: &[Kind] = &[$(Kind::$kind),*];
        $(
            #[doc = concat!("The `", stringify!($kind), "` custom resource.")]
            #[derive(Debug, Clone, Copy, Default)]
            pub struct $marker;
            impl CalicoKind for $marker {
                const KIND: Kind = Kind::$kind;
            }
        )*
    };
}

kinds! {
    NetworkPolicies => NetworkPolicy,
    GlobalNetworkPolicies => GlobalNetworkPolicy,
    StagedNetworkPolicies => StagedNetworkPolicy,
    StagedGlobalNetworkPolicies => StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicies => StagedKubernetesNetworkPolicy,
    Tiers => Tier,
    HostEndpoints => HostEndpoint,
    NetworkSets => NetworkSet,
    GlobalNetworkSets => GlobalNetworkSet,
    GlobalThreatFeeds => GlobalThreatFeed,
    Profiles => Profile,
    IpPools => IpPool,
    FelixConfigurations => FelixConfiguration,
    Installations => Installation,
}

/// A custom resource as the API server sends it: its metadata and the
/// whole object, judged by the model in [`CalicoSource::convert`].
#[derive(Debug, Clone)]
pub struct CalicoObject<M> {
    meta: ObjectMeta,
    body: Value,
    kind: PhantomData<M>,
}

impl<'de, M> Deserialize<'de> for CalicoObject<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let body = Value::deserialize(d)?;
        let meta = match body.get("metadata") {
            Some(m) => ObjectMeta::deserialize(m).map_err(serde::de::Error::custom)?,
            None => ObjectMeta::default(),
        };
        Ok(CalicoObject {
            meta,
            body,
            kind: PhantomData,
        })
    }
}

fn plural(kind: Kind) -> &'static str {
    crd::crd_of(kind).map_or("", |c| c.plural)
}

impl<M: CalicoKind> kube::Resource for CalicoObject<M> {
    type DynamicType = ();
    type Scope = kube::core::DynamicResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        M::KIND.name().into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        crd::crd_of(M::KIND).map_or("", |c| c.group).into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        crd::crd_of(M::KIND).map_or("", |c| c.version).into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        plural(M::KIND).into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// Stores one CRD kind's custom resources as the model loads them.
#[derive(Debug, Clone, Copy, Default)]
pub struct CalicoSource<M> {
    pub opts: KubeOptions,
    kind: PhantomData<M>,
}

impl<M> CalicoSource<M> {
    pub fn new(opts: KubeOptions) -> CalicoSource<M> {
        CalicoSource {
            opts,
            kind: PhantomData,
        }
    }
}

fn error(path: &str, reason: impl Into<String>) -> ConvertError {
    ConvertError {
        path: path.into(),
        reason: reason.into(),
    }
}

impl<M: CalicoKind> Source for CalicoSource<M> {
    type Object = CalicoObject<M>;

    /// The CRD's name (`networkpolicies.projectcalico.org`): Kubernetes'
    /// own NetworkPolicy watcher is `networkpolicy`.
    fn kind(&self) -> &'static str {
        crd::crd_of(M::KIND).map_or("", |c| c.crd_name)
    }

    fn keys_of(&self, at: &ObjectRef) -> Vec<ResourceKey> {
        vec![ResourceKey {
            kind: M::KIND,
            namespace: M::KIND
                .namespaced()
                .then(|| at.namespace.clone().unwrap_or_default()),
            name: at.name.clone(),
        }]
    }

    fn convert(&self, object: &CalicoObject<M>) -> Result<Vec<Resource>, ConvertError> {
        let mut metadata = json!({"name": object.meta.name});
        if let Some(ns) = &object.meta.namespace {
            metadata["namespace"] = json!(ns);
        }
        if let Some(labels) = object.meta.labels.as_ref().filter(|l| !l.is_empty()) {
            metadata["labels"] = json!(labels);
        }
        if let Some(uid) = &object.meta.uid {
            metadata["uid"] = json!(uid);
        }
        let mut doc = json!({
            "apiVersion": M::KIND.api_version(),
            "kind": M::KIND.name(),
            "metadata": metadata,
        });
        if let Some(spec) = object.body.get("spec").filter(|s| !s.is_null()) {
            doc["spec"] = spec.clone();
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| error("", e.to_string()))?;
        let outcome = manul_model::load(M::KIND.name(), &bytes);
        if let Some(e) = outcome.errors.first() {
            return Err(error(
                e.path.as_deref().unwrap_or_default(),
                e.problem.to_string(),
            ));
        }
        let resources: Vec<Resource> = outcome.resources.into_iter().map(|l| l.resource).collect();
        for r in &resources {
            let key = r.key();
            match owner(&key, self.opts) {
                Some(Owner::Crd) if key.kind == M::KIND => {}
                Some(other) => {
                    return Err(error(
                        "metadata.name",
                        format!("{key} is reserved: {}", other.describe()),
                    ));
                }
                None => return Err(error("", format!("{key} is not a custom resource's key"))),
            }
        }
        Ok(resources)
    }

    fn owns(&self, key: &ResourceKey) -> bool {
        key.kind == M::KIND && owner(key, self.opts) == Some(Owner::Crd)
    }
}

#[cfg(test)]
#[path = "calico_tests.rs"]
mod tests;
