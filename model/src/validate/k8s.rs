//! Validation of Kubernetes NetworkPolicy: whatever would stop its
//! conversion to v3 is an error at the field that causes it.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::Validator;

pub(super) fn network_policy(v: &mut Validator, np: &NetworkPolicy) {
    if let Err(e) = crate::convert::network_policy(np) {
        v.err(e.path, e.reason);
    }
}
