//! The one adapter between the model's keys and resources and their wire
//! form: a [`ResourceKey`] as a protobuf key and back, the exact kind a
//! key's kind name stands for, and a stored [`pb::Entry`] as a typed
//! [`Resource`] with its revision.
//!
//! Keys on the wire carry a kind's key name (`networkpolicy`,
//! `k8s-networkpolicy`; see [`Kind::key_name`]) and an empty namespace for
//! cluster-scoped kinds. What Typha stores and streams is always in that
//! form, so reading it back is exact: another spelling of a kind is an
//! error here. (The `Resources` API accepts every spelling `manulctl` does
//! and normalises it before storing; that is the API's business, not this
//! adapter's.) Values are decoded with [`manul_model::stored`], which
//! applies defaults and validates.

use manul_model::stored::StoredError;
use manul_model::{Kind, Resource, ResourceKey};

use crate::v1 as pb;

/// Why a wire key or entry is not a model key or resource.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("entry has no key")]
    NoKey,
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    #[error("invalid value for {key}")]
    Value {
        key: ResourceKey,
        #[source]
        source: StoredError,
    },
    #[error("invalid value for {key}: the value is {found}")]
    WrongKey {
        key: ResourceKey,
        found: ResourceKey,
    },
    #[error("{key} is deleted: the entry has no value")]
    Deleted { key: ResourceKey },
}

/// The wire form of `key`.
pub fn key_to_proto(key: &ResourceKey) -> pb::ResourceKey {
    pb::ResourceKey {
        kind: key.kind.key_name().to_string(),
        namespace: key.namespace.clone().unwrap_or_default(),
        name: key.name.clone(),
    }
}

impl From<&ResourceKey> for pb::ResourceKey {
    fn from(key: &ResourceKey) -> pb::ResourceKey {
        key_to_proto(key)
    }
}

/// The kind whose key name is exactly `name`.
pub fn kind(name: &str) -> Result<Kind, WireError> {
    Kind::ALL
        .iter()
        .copied()
        .find(|k| k.key_name() == name)
        .ok_or_else(|| WireError::UnknownKind(name.to_string()))
}

/// The model key of a wire key: its kind exactly (see [`kind`]); a
/// namespace for namespaced kinds only, as [`Resource::key`] has it.
pub fn key_from_proto(key: &pb::ResourceKey) -> Result<ResourceKey, WireError> {
    let kind = kind(&key.kind)?;
    Ok(ResourceKey {
        kind,
        namespace: kind.namespaced().then(|| key.namespace.clone()),
        name: key.name.clone(),
    })
}

/// [`key_from_proto`] taking the wire key: its namespace and name move
/// into the model key instead of being copied (a sync client converts
/// every key of every snapshot).
pub fn key_from_proto_owned(key: pb::ResourceKey) -> Result<ResourceKey, WireError> {
    let kind = kind(&key.kind)?;
    Ok(ResourceKey {
        kind,
        namespace: kind.namespaced().then_some(key.namespace),
        name: key.name,
    })
}

/// The key of a stored or streamed entry.
pub fn entry_key(entry: &pb::Entry) -> Result<ResourceKey, WireError> {
    key_from_proto(entry.key.as_ref().ok_or(WireError::NoKey)?)
}

/// Whether `resource` is stored under `key`, as [`Resource::key`] would
/// say, without building that key.
fn is_stored_under(resource: &Resource, key: &ResourceKey) -> bool {
    let meta = resource.metadata();
    let namespace_matches = match &key.namespace {
        Some(ns) => resource.kind().namespaced() && meta.namespace.as_deref().unwrap_or("") == ns,
        None => !resource.kind().namespaced(),
    };
    resource.kind() == key.kind
        && namespace_matches
        && meta.name.as_deref().unwrap_or("") == key.name
}

/// The typed value stored under `key`: decoded as its kind, with
/// defaults applied and validated, and stored under its own key.
pub fn decode_value(key: &ResourceKey, value: &[u8]) -> Result<Resource, WireError> {
    let resource =
        manul_model::stored::decode_as(key.kind, value).map_err(|source| WireError::Value {
            key: key.clone(),
            source,
        })?;
    if !is_stored_under(&resource, key) {
        return Err(WireError::WrongKey {
            key: key.clone(),
            found: resource.key(),
        });
    }
    Ok(resource)
}

/// The typed resource of a stored entry and the revision that last wrote
/// it. A deletion (an entry without a value) is an error here.
pub fn decode_entry(entry: &pb::Entry) -> Result<(Resource, u64), WireError> {
    let key = entry_key(entry)?;
    if entry.deleted {
        return Err(WireError::Deleted { key });
    }
    Ok((decode_value(&key, &entry.value)?, entry.revision))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn wire(kind: &str, namespace: &str, name: &str) -> pb::ResourceKey {
        pb::ResourceKey {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_key_name() {
        for &kind in Kind::ALL {
            let key = ResourceKey {
                kind,
                namespace: kind.namespaced().then(|| "shop".to_string()),
                name: "a".into(),
            };
            let on_wire = key_to_proto(&key);
            assert_eq!(on_wire.kind, kind.key_name());
            assert_eq!(on_wire.namespace.is_empty(), !kind.namespaced());
            assert_eq!(key_from_proto(&on_wire).unwrap(), key);
            assert_eq!(key_from_proto_owned(on_wire).unwrap(), key);
        }
        // A cluster-scoped kind drops a namespace on the wire, either way.
        let stray = wire("tier", "shop", "a");
        assert_eq!(key_from_proto(&stray).unwrap().namespace, None);
        assert_eq!(key_from_proto_owned(stray).unwrap().namespace, None);
        assert_eq!(
            key_from_proto_owned(wire("gnp", "", "a"))
                .unwrap_err()
                .to_string(),
            "unknown kind \"gnp\""
        );
    }

    #[test]
    fn kinds_are_read_exactly_and_an_unknown_one_is_named() {
        assert_eq!(kind("k8s-networkpolicy").unwrap(), Kind::K8sNetworkPolicy);
        for other in ["gnp", "NetworkPolicy", "networkpolicies", ""] {
            let e = key_from_proto(&wire(other, "", "a")).unwrap_err();
            assert_eq!(e.to_string(), format!("unknown kind {other:?}"));
        }
    }

    #[test]
    fn entries_decode_to_typed_resources_under_their_own_key() {
        let set = br#"{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {"name": "a"}, "spec": {"nets": ["10.0.0.0/8"]}}"#;
        let entry = |key: Option<pb::ResourceKey>, deleted: bool| pb::Entry {
            key,
            value: prost::bytes::Bytes::from_static(set),
            revision: 7,
            deleted,
        };
        let (resource, revision) =
            decode_entry(&entry(Some(wire("globalnetworkset", "", "a")), false)).unwrap();
        assert_eq!(resource.key().to_string(), "globalnetworkset/a");
        assert_eq!(revision, 7);

        let e = decode_entry(&entry(None, false)).unwrap_err();
        assert_eq!(e.to_string(), "entry has no key");
        let e = decode_entry(&entry(Some(wire("globalnetworkset", "", "b")), false)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for globalnetworkset/b: the value is globalnetworkset/a"
        );
        let e = decode_entry(&entry(Some(wire("tier", "", "a")), false)).unwrap_err();
        assert_eq!(e.to_string(), "invalid value for tier/a");
        assert_eq!(
            manul_model::error::chain(&e),
            "invalid value for tier/a: expected a Tier, found projectcalico.org/v3/GlobalNetworkSet"
        );
        let e = decode_entry(&entry(Some(wire("globalnetworkset", "", "a")), true)).unwrap_err();
        assert!(matches!(e, WireError::Deleted { .. }), "{e}");
    }

    #[test]
    fn a_namespaced_value_under_another_namespace_is_refused() {
        let set = br#"{"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet", "metadata": {"name": "a", "namespace": "shop"}, "spec": {}}"#;
        let key = |ns: &str, name: &str| ResourceKey {
            kind: Kind::NetworkSet,
            namespace: Some(ns.into()),
            name: name.into(),
        };
        let r = decode_value(&key("shop", "a"), set).unwrap();
        assert_eq!(r.key(), key("shop", "a"));
        for (ns, name) in [("other", "a"), ("shop", "b"), ("", "a")] {
            let e = decode_value(&key(ns, name), set).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid value for {}: the value is networkset/shop/a",
                    key(ns, name)
                )
            );
        }
        // A value that left its namespace out is in `default`.
        let bare = br#"{"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet", "metadata": {"name": "a"}, "spec": {}}"#;
        assert!(decode_value(&key("default", "a"), bare).is_ok());
        assert!(decode_value(&key("", "a"), bare).is_err());
    }
}
