//! ServiceAccount → the profile `ksa.NAMESPACE.NAME`, which carries the
//! account's labels (prefixed `pcsa.`, plus `pcsa.projectcalico.org/name`)
//! for `serviceAccountSelector`s. Unlike a namespace's profile it has no
//! rules: it only labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{
    ConvertError, NAMESPACE_NAME_LABEL, SERVICE_ACCOUNT_LABEL_PREFIX,
    SERVICE_ACCOUNT_PROFILE_PREFIX, fail,
};
use crate::v3::{Object, ProfileSpec};

/// The profile name of service account `namespace/name`.
pub fn service_account_profile_name(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{name}")
}

/// The profile standing for a service account.
pub fn service_account_profile(sa: &ServiceAccount) -> Result<Object<ProfileSpec>, ConvertError> {
    let name = sa.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return fail("metadata.name", "a service account needs a name");
    }
    let Some(namespace) = sa.metadata.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return fail("metadata.namespace", "a service account needs a namespace");
    };
    let mut labels: BTreeMap<String, String> = sa
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{NAMESPACE_NAME_LABEL}"),
        name.to_string(),
    );
    Ok(Object::new(
        &service_account_profile_name(namespace, name),
        None,
        ProfileSpec {
            labels_to_apply: labels,
            ..ProfileSpec::default()
        },
    ))
}
