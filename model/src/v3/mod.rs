//! Calico `projectcalico.org/v3` resources as Manul stores them.
//!
//! These types are the internal form too: Kubernetes objects are converted
//! into them (see [`crate::convert`]).

mod cluster;
mod endpoints;
mod felix;
mod ipam;
mod policy;
mod primitives;
mod rule;
mod sets;
mod staged;
mod threatfeed;

pub use cluster::*;
pub use endpoints::*;
pub use felix::*;
pub use ipam::*;
pub use policy::*;
pub use primitives::*;
pub use rule::*;
pub use sets::*;
pub use staged::*;
pub use threatfeed::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The API group and version of Calico resources.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// A resource body: standard Kubernetes metadata and a typed spec. The
/// `apiVersion` and `kind` live in [`crate::Resource`]'s variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object<S> {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
}

impl<S> Object<S> {
    /// A resource with only a name (and optional namespace) set.
    pub fn new(name: &str, namespace: Option<&str>, spec: S) -> Object<S> {
        Object {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: namespace.map(str::to_string),
                ..ObjectMeta::default()
            },
            spec,
        }
    }

    /// The name, or `""` when missing (validation reports that).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}
