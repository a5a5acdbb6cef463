//! Promoting a staged policy: what one write must do to make a
//! `StagedNetworkPolicy`, `StagedGlobalNetworkPolicy` or
//! `StagedKubernetesNetworkPolicy` its enforced kind. Pure; `manulctl
//! policy promote` sends the result as one atomic request.
//!
//! - `stagedAction: Set`: the enforced policy of the same namespace and
//!   name is written with the staged spec (created or replaced), and the
//!   staged policy is deleted in the same step.
//! - `stagedAction: Delete`: the enforced policy of the same namespace and
//!   name is deleted, and the staged policy with it.
//!
//! Calico deletes the staged policy when it promotes one; so does Manul,
//! so a promoted change is not staged (and shown as pending) twice. The
//! enforced policy keeps the staged one's labels and annotations.

use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::resource::{Kind, Resource, ResourceKey};
use crate::v3::{Object, StagedAction};

/// What promoting a staged policy writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    /// The enforced policy to write (`Set`), or none (`Delete`).
    pub write: Option<Resource>,
    /// Keys to delete in the same step: the staged policy, and for a
    /// `Delete` the enforced one first.
    pub deletes: Vec<ResourceKey>,
}

/// Why a resource cannot be promoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoteError {
    #[error(
        "{0} is not a staged policy: only StagedNetworkPolicy, StagedGlobalNetworkPolicy and StagedKubernetesNetworkPolicy are promoted"
    )]
    NotStaged(Kind),
}

/// The metadata the enforced policy takes from the staged one: name,
/// namespace, labels and annotations (nothing the server assigns).
fn metadata(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        labels: m.labels.clone(),
        annotations: m.annotations.clone(),
        ..ObjectMeta::default()
    }
}

/// The write that promotes `staged`.
pub fn promote(staged: &Resource) -> Result<Promotion, PromoteError> {
    let key = staged.key();
    let (action, enforced) = match staged {
        Resource::StagedNetworkPolicy(o) => (
            o.spec.staged_action,
            Resource::NetworkPolicy(Object {
                metadata: metadata(&o.metadata),
                spec: o.spec.enforced(),
            }),
        ),
        Resource::StagedGlobalNetworkPolicy(o) => (
            o.spec.staged_action,
            Resource::GlobalNetworkPolicy(Object {
                metadata: metadata(&o.metadata),
                spec: o.spec.enforced(),
            }),
        ),
        Resource::StagedKubernetesNetworkPolicy(o) => (
            o.spec.staged_action,
            Resource::K8sNetworkPolicy(Box::new(K8sNetworkPolicy {
                metadata: metadata(&o.metadata),
                spec: Some(o.spec.enforced()),
            })),
        ),
        other => return Err(PromoteError::NotStaged(other.kind())),
    };
    Ok(match action {
        StagedAction::Set => Promotion {
            write: Some(enforced),
            deletes: vec![key],
        },
        StagedAction::Delete => Promotion {
            write: None,
            deletes: vec![enforced.key(), key],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: &str) -> Resource {
        let out = crate::load("test", yaml.as_bytes());
        match out.into_result() {
            Ok(mut l) => l.remove(0).resource,
            Err(e) => panic!("{e:#?}"),
        }
    }

    #[test]
    fn set_writes_the_enforced_kind_and_deletes_the_staged_one() {
        let staged = one(
            "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: shop, labels: {team: a}}\nspec:\n  order: 5\n  selector: app == 'api'\n  ingress: [{action: Deny}]\n",
        );
        let p = promote(&staged).unwrap();
        let Some(Resource::NetworkPolicy(np)) = &p.write else {
            panic!("{p:?}")
        };
        assert_eq!(np.spec.order, Some(5.0));
        assert_eq!(np.spec.ingress.len(), 1);
        assert_eq!(np.spec.selector.source(), "app == 'api'");
        assert_eq!(
            np.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("a")
        );
        assert_eq!(p.deletes, vec![staged.key()]);
        // What is written is what the loader accepts.
        let text = serde_json::to_string(p.write.as_ref().unwrap()).unwrap();
        assert!(crate::load("promoted", text.as_bytes()).errors.is_empty());

        let global = one(
            "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: g}\nspec: {egress: [{action: Allow}]}\n",
        );
        let p = promote(&global).unwrap();
        assert_eq!(
            p.write.as_ref().map(Resource::kind),
            Some(Kind::GlobalNetworkPolicy)
        );

        let k8s = one(
            "apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: k, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
        );
        let p = promote(&k8s).unwrap();
        let w = p.write.unwrap();
        assert_eq!(w.kind(), Kind::K8sNetworkPolicy);
        assert_eq!(w.key().namespace.as_deref(), Some("shop"));
        let text = serde_json::to_string(&w).unwrap();
        assert!(crate::load("promoted", text.as_bytes()).errors.is_empty());
    }

    #[test]
    fn delete_deletes_the_enforced_policy_and_the_staged_one() {
        let staged = one(
            "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {stagedAction: Delete}\n",
        );
        let p = promote(&staged).unwrap();
        assert_eq!(p.write, None);
        assert_eq!(
            p.deletes,
            vec![
                ResourceKey {
                    kind: Kind::NetworkPolicy,
                    namespace: Some("shop".into()),
                    name: "p".into()
                },
                staged.key()
            ]
        );
        let tier = one("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\n");
        assert_eq!(promote(&tier), Err(PromoteError::NotStaged(Kind::Tier)));
    }

    #[test]
    fn a_staged_delete_must_leave_its_spec_empty() {
        let out = crate::load(
            "t",
            b"apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {stagedAction: Delete, ingress: [{action: Allow}]}\n",
        );
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert!(
            out.errors[0].to_string().contains("stagedAction Delete"),
            "{}",
            out.errors[0]
        );
        let out = crate::load(
            "t",
            b"apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: shop}\nspec: {stagedAction: Remove}\n",
        );
        assert!(!out.errors.is_empty());
    }
}
