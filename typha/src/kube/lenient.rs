//! A watched object whose body may fail to decode: the watcher then still
//! yields it, with its metadata, so one malformed object is skipped and
//! counted instead of failing the whole list or watch.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use super::reconcile::{ObjectRef, Watched};

/// An object of type `K` as the API server sent it.
#[derive(Debug, Clone)]
pub struct Lenient<K> {
    meta: ObjectMeta,
    /// The decoded object, or why it does not decode as `K`.
    pub body: Result<K, String>,
}

impl<K> Lenient<K> {
    /// The object as the reconcile core takes it.
    pub fn into_watched(self) -> Watched<K> {
        Watched {
            at: ObjectRef {
                namespace: self.meta.namespace.clone(),
                name: self.meta.name.clone().unwrap_or_default(),
            },
            body: self.body,
        }
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        // Without readable metadata there is no name to skip it by.
        let meta: ObjectMeta = match value.get("metadata") {
            Some(m) => serde_json::from_value(m.clone()).map_err(D::Error::custom)?,
            None => return Err(D::Error::custom("object without metadata")),
        };
        let body = serde_json::from_value::<K>(value).map_err(|e| e.to_string());
        Ok(Lenient { meta, body })
    }
}

impl<K> kube::Resource for Lenient<K>
where
    K: kube::Resource<DynamicType = ()>,
{
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}
