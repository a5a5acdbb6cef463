//! The stored form of a resource: the JSON that Typha keeps for each key
//! and streams to Felix (`serde_json` of a [`Resource`], with `apiVersion`
//! and `kind`). Decoding it here is a direct typed parse, many times
//! faster than the YAML loader, which matters for an agent taking a
//! snapshot of hundreds of thousands of resources.
//!
//! It is as strict as the loader: unknown fields and unknown kinds are
//! refused, defaults are applied and the result is validated. It does not
//! read YAML, several documents or lists; for those (and for the loader's
//! detailed messages) use [`crate::load`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::resource::{Kind, Resource};
use crate::v3::Object;

/// Why stored bytes are not a resource.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    /// The parser's message is this error's text (not also its source).
    #[error("not a stored resource: {0}")]
    Json(serde_json::Error),
    #[error("unknown resource type {api_version}/{kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error("expected a {expected}, found {api_version}/{kind}")]
    WrongKind {
        expected: Kind,
        api_version: String,
        kind: String,
    },
    #[error("invalid {kind}: {path}: {reason}")]
    Invalid {
        kind: Kind,
        path: String,
        reason: String,
    },
}

/// The type fields, read before the body.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
}

/// A Calico resource as serialized: the type fields beside an [`Object`]'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaggedObject<S> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: S,
}

fn object<S: DeserializeOwned + Default>(
    expected: Kind,
    bytes: &[u8],
) -> Result<Object<S>, StoredError> {
    let t: TaggedObject<S> = serde_json::from_slice(bytes)
        .map_err(|e| wrong_kind(expected, bytes).unwrap_or(StoredError::Json(e)))?;
    if Kind::from_type(&t.api_version, &t.kind) != Some(expected) {
        return Err(StoredError::WrongKind {
            expected,
            api_version: t.api_version,
            kind: t.kind,
        });
    }
    Ok(Object {
        metadata: t.metadata,
        spec: t.spec,
    })
}

fn k8s<T: DeserializeOwned>(expected: Kind, bytes: &[u8]) -> Result<T, StoredError> {
    serde_json::from_slice(bytes)
        .map_err(|e| wrong_kind(expected, bytes).unwrap_or(StoredError::Json(e)))
}

/// After a failed parse: whether the bytes are another kind of resource,
/// which says more than the parser's complaint about its fields.
fn wrong_kind(expected: Kind, bytes: &[u8]) -> Option<StoredError> {
    let meta: TypeMeta = serde_json::from_slice(bytes).ok()?;
    (Kind::from_type(&meta.api_version, &meta.kind) != Some(expected)).then_some(
        StoredError::WrongKind {
            expected,
            api_version: meta.api_version,
            kind: meta.kind,
        },
    )
}

/// Decodes one stored resource, applies defaults and validates it.
pub fn decode(bytes: &[u8]) -> Result<Resource, StoredError> {
    let meta: TypeMeta = serde_json::from_slice(bytes).map_err(StoredError::Json)?;
    let kind = Kind::from_type(&meta.api_version, &meta.kind).ok_or(StoredError::UnknownKind {
        api_version: meta.api_version,
        kind: meta.kind,
    })?;
    decode_as(kind, bytes)
}

/// Like [`decode`], when the kind is already known (from the entry's
/// key): one pass over the bytes instead of two. A resource of another
/// kind is refused.
pub fn decode_as(kind: Kind, bytes: &[u8]) -> Result<Resource, StoredError> {
    let resource = match kind {
        Kind::NetworkPolicy => Resource::NetworkPolicy(object(kind, bytes)?),
        Kind::GlobalNetworkPolicy => Resource::GlobalNetworkPolicy(object(kind, bytes)?),
        Kind::StagedNetworkPolicy => Resource::StagedNetworkPolicy(object(kind, bytes)?),
        Kind::StagedGlobalNetworkPolicy => {
            Resource::StagedGlobalNetworkPolicy(object(kind, bytes)?)
        }
        Kind::StagedKubernetesNetworkPolicy => {
            Resource::StagedKubernetesNetworkPolicy(object(kind, bytes)?)
        }
        Kind::Tier => Resource::Tier(object(kind, bytes)?),
        Kind::HostEndpoint => Resource::HostEndpoint(object(kind, bytes)?),
        Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(object(kind, bytes)?),
        Kind::NetworkSet => Resource::NetworkSet(object(kind, bytes)?),
        Kind::GlobalNetworkSet => Resource::GlobalNetworkSet(object(kind, bytes)?),
        Kind::GlobalThreatFeed => Resource::GlobalThreatFeed(object(kind, bytes)?),
        Kind::Profile => Resource::Profile(object(kind, bytes)?),
        Kind::Node => Resource::Node(object(kind, bytes)?),
        Kind::IpPool => Resource::IpPool(object(kind, bytes)?),
        Kind::IpamBlock => Resource::IpamBlock(object(kind, bytes)?),
        Kind::ClusterInformation => Resource::ClusterInformation(object(kind, bytes)?),
        Kind::FelixConfiguration => Resource::FelixConfiguration(Box::new(object(kind, bytes)?)),
        Kind::Installation => Resource::Installation(Box::new(object(kind, bytes)?)),
        Kind::K8sNetworkPolicy => Resource::K8sNetworkPolicy(k8s(kind, bytes)?),
        Kind::Namespace => Resource::Namespace(k8s(kind, bytes)?),
        Kind::Pod => Resource::Pod(k8s(kind, bytes)?),
        Kind::Service => Resource::Service(k8s(kind, bytes)?),
        Kind::EndpointSlice => Resource::EndpointSlice(k8s(kind, bytes)?),
    };
    let resource = crate::defaults::apply(resource);
    if let Some(e) = crate::validate::validate(&resource).into_iter().next() {
        return Err(StoredError::Invalid {
            kind,
            path: e.path,
            reason: e.reason,
        });
    }
    Ok(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_stored_bytes_are_refused_with_the_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not a stored resource"),
            (b"[1, 2]", "not a stored resource"),
            (b"{\"kind\": \"NetworkPolicy\"}", "apiVersion"),
            (
                b"{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"Gadget\", \"metadata\": {}}",
                "unknown resource type projectcalico.org/v3/Gadget",
            ),
            (
                b"{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"GlobalNetworkSet\", \"metadata\": {\"name\": \"a\"}, \"spec\": {\"nets\": [\"10.0.0.0/8\"]}, \"extra\": 1}",
                "unknown field `extra`",
            ),
            (
                b"{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"GlobalNetworkSet\", \"metadata\": {\"name\": \"a\"}, \"spec\": {\"nets\": [\"10.0.0.300/8\"]}}",
                "not a stored resource",
            ),
            (
                b"{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"GlobalNetworkSet\", \"metadata\": {\"name\": \"Not_A_Name\"}, \"spec\": {}}",
                "invalid GlobalNetworkSet: metadata.name",
            ),
        ];
        let set = b"{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"GlobalNetworkSet\", \"metadata\": {\"name\": \"a\"}, \"spec\": {}}";
        assert!(decode(set).is_ok());
        let err = decode_as(Kind::Tier, set).expect_err("a set is not a tier");
        assert_eq!(
            err.to_string(),
            "expected a Tier, found projectcalico.org/v3/GlobalNetworkSet"
        );
        let err = decode_as(Kind::Namespace, set).expect_err("a set is not a namespace");
        assert_eq!(
            err.to_string(),
            "expected a Namespace, found projectcalico.org/v3/GlobalNetworkSet"
        );
        for (bytes, want) in cases {
            let err = decode(bytes).expect_err(&String::from_utf8_lossy(bytes));
            assert!(
                err.to_string().contains(want),
                "{}: {err} (wanted {want})",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
