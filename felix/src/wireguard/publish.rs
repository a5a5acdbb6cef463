//! Keeps this node's WireGuard public key on its Node resource (the
//! annotation `projectcalico.org/WireguardPublicKey`), or removes it when
//! WireGuard is off, so other nodes route to this one in plaintext again.
//! It reads the Node, changes only the annotation, and writes it back
//! conditionally on the revision read; a conflict reads again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use manul_client::{Client, ClientConfig, ClientError};
use manul_model::resource::{Kind, Resource, ResourceKey};
use manul_model::v3::WIREGUARD_PUBLIC_KEY_ANNOTATION;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Where and what to publish.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub typhas: Vec<String>,
    pub transport: manul_tls::connect::Transport,
    pub node: String,
    /// The key to publish; `None` removes it.
    pub key: Option<String>,
}

/// What one attempt did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The Node does not exist (yet).
    NoNode,
}

/// The Node with its annotation set to `key` (or removed); `None` when it
/// already is.
fn with_key(node: &Resource, key: Option<&str>) -> Option<Resource> {
    let Resource::Node(n) = node else {
        return None;
    };
    let current = n
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WIREGUARD_PUBLIC_KEY_ANNOTATION))
        .map(String::as_str);
    if current == key {
        return None;
    }
    let mut n = n.clone();
    let annotations = n.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match key {
        Some(k) => {
            annotations.insert(WIREGUARD_PUBLIC_KEY_ANNOTATION.to_string(), k.to_string());
        }
        None => {
            annotations.remove(WIREGUARD_PUBLIC_KEY_ANNOTATION);
        }
    }
    if annotations.is_empty() {
        n.metadata.annotations = None;
    }
    Some(Resource::Node(n))
}

impl Publisher {
    async fn attempt(&self, client: &Client) -> Result<Outcome, ClientError> {
        let key = ResourceKey {
            kind: Kind::Node,
            namespace: None,
            name: self.node.clone(),
        };
        loop {
            let Some((node, revision)) = client.get(&key).await? else {
                return Ok(Outcome::NoNode);
            };
            let Some(changed) = with_key(&node, self.key.as_deref()) else {
                return Ok(Outcome::Done);
            };
            match client.apply_if(&changed, revision).await {
                Ok(_) => {
                    match &self.key {
                        Some(k) => {
                            info!(node = %self.node, key = %k, "published the WireGuard public key")
                        }
                        None => info!(node = %self.node, "removed the WireGuard public key"),
                    }
                    return Ok(Outcome::Done);
                }
                // Someone else wrote the Node meanwhile: read it again.
                Err(ClientError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishes now and whenever `wake` is notified (the agent saw this
    /// node's Node without the key), retrying with a backoff until done.
    pub async fn run(self, wake: Arc<Notify>) {
        loop {
            let mut backoff = Duration::from_millis(100);
            loop {
                let config = ClientConfig {
                    transport: self.transport.clone(),
                    ..ClientConfig::default()
                };
                let result = match Client::connect_with(&self.typhas, config).await {
                    Ok(client) => self.attempt(&client).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(Outcome::Done) => break,
                    Ok(Outcome::NoNode) => {
                        warn!(node = %self.node, "no Node resource for this node yet: the WireGuard key waits for it");
                    }
                    Err(e) => {
                        warn!(node = %self.node, "cannot write the WireGuard key to the Node: {e}")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotations: &str) -> Resource {
        manul_model::load::load(
            "t",
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: n1{annotations}}}\nspec: {{bgp: {{ipv4Address: 10.0.0.1/24}}}}\n"
            )
            .as_bytes(),
        )
        .into_result()
        .unwrap()
        .remove(0)
        .resource
    }

    fn key_of(r: &Resource) -> Option<String> {
        let Resource::Node(n) = r else { return None };
        n.metadata
            .annotations
            .as_ref()?
            .get(WIREGUARD_PUBLIC_KEY_ANNOTATION)
            .cloned()
    }

    #[test]
    fn only_the_annotation_changes_and_an_equal_one_is_left_alone() {
        let plain = node(", annotations: {other: x}");
        let set = with_key(&plain, Some("abc=")).unwrap();
        assert_eq!(key_of(&set).as_deref(), Some("abc="));
        let Resource::Node(n) = &set else { panic!() };
        assert_eq!(n.metadata.annotations.as_ref().unwrap()["other"], "x");
        assert_eq!(with_key(&set, Some("abc=")), None);
        let removed = with_key(&set, None).unwrap();
        assert_eq!(key_of(&removed), None);
        assert_eq!(removed, plain);
        // No annotations left: none at all, as the Node was written.
        let bare = node("");
        let back = with_key(&with_key(&bare, Some("k")).unwrap(), None).unwrap();
        assert_eq!(back, bare);
        assert_eq!(with_key(&bare, None), None);
    }
}
