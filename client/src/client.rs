//! [`Client`]: typed apply, get, list and delete against any Typha replica.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manul_model::{Kind, Resource, ResourceKey};
use manul_proto::v1 as pb;
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::wire;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::error::ClientError;

/// Largest answer accepted (a list of every resource of a kind).
pub(crate) const MAX_MESSAGE: usize = 1024 * 1024 * 1024;

/// How a [`Client`] connects and retries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one connection attempt to one replica may take.
    pub connect_timeout: Duration,
    /// How long one request may take (Typha gives up on a commit after 10 s).
    pub request_timeout: Duration,
    /// How many times an unavailable request goes round the replica list.
    pub rounds: u32,
    /// The pause between rounds.
    pub round_pause: Duration,
    /// Plaintext or TLS (with this client's certificate and the identity
    /// Typha must have).
    pub transport: manul_tls::connect::Transport,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            rounds: 3,
            round_pause: Duration::from_millis(200),
            transport: manul_tls::connect::Transport::Plain,
        }
    }
}

#[derive(Debug)]
struct Current {
    /// Index into the address list of the replica `channel` leads to.
    index: usize,
    channel: Option<Channel>,
}

/// A connection to a Typha cluster. Cheap to clone; clones share the
/// connection.
///
/// Requests that find their replica unavailable move on to the next address
/// and are sent again, so a write whose outcome was unknown may be applied
/// by the first attempt and then report a conflict on the second: after a
/// conflict, re-read.
#[derive(Debug, Clone)]
pub struct Client {
    addresses: Arc<[String]>,
    config: ClientConfig,
    current: Arc<Mutex<Current>>,
    /// The local user writes are made as in plaintext (Typha's
    /// `x-manul-user`; over TLS the certificate names the caller).
    user: Option<Arc<str>>,
}

/// The metadata naming a plaintext client's local user.
pub const USER_HEADER: &str = "x-manul-user";

fn url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// The typed resource and revision of a stored entry.
fn decode(entry: &pb::Entry) -> Result<(Resource, u64), ClientError> {
    wire::decode_entry(entry).map_err(|source| ClientError::Entry { source })
}

impl Client {
    /// Connects to the first replica in `addresses` (`HOST:PORT` or a URL)
    /// that answers.
    pub async fn connect<S: AsRef<str>>(addresses: &[S]) -> Result<Client, ClientError> {
        Client::connect_with(addresses, ClientConfig::default()).await
    }

    /// [`Client::connect`] with explicit timeouts and retries.
    pub async fn connect_with<S: AsRef<str>>(
        addresses: &[S],
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        if addresses.is_empty() {
            return Err(ClientError::NoAddress);
        }
        let addresses: Arc<[String]> = addresses.iter().map(|a| a.as_ref().to_string()).collect();
        for a in addresses.iter() {
            Endpoint::from_shared(url(a)).map_err(|e| ClientError::BadAddress {
                address: a.clone(),
                source: Box::new(e),
            })?;
        }
        let client = Client {
            addresses,
            config,
            current: Arc::new(Mutex::new(Current {
                index: 0,
                channel: None,
            })),
            user: None,
        };
        client.reconnect(0).await?;
        Ok(client)
    }

    /// Names the local user that writes are made as, for Typha's audit
    /// trail when there is no certificate to name it (plaintext). A name
    /// that cannot be sent as metadata is left out.
    pub fn with_user(mut self, user: &str) -> Client {
        self.user = Some(Arc::from(user));
        self
    }

    /// `message` as a request carrying the user's name, when set.
    fn named<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = self.user.as_deref().and_then(|u| u.parse().ok()) {
            request.metadata_mut().insert(USER_HEADER, value);
        }
        request
    }

    /// The replica addresses this client uses, in order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    fn joined(&self) -> String {
        self.addresses.join(", ")
    }

    fn current(&self) -> (usize, Option<Channel>) {
        match self.current.lock() {
            Ok(c) => (c.index, c.channel.clone()),
            Err(p) => {
                let c = p.into_inner();
                (c.index, c.channel.clone())
            }
        }
    }

    fn set_current(&self, index: usize, channel: Option<Channel>) {
        let mut c = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        c.index = index;
        c.channel = channel;
    }

    /// Connects to the first answering replica at or after `start` (going
    /// round the list once).
    async fn reconnect(&self, start: usize) -> Result<Channel, ClientError> {
        let n = self.addresses.len();
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let address = &self.addresses[index];
            let endpoint = Endpoint::from_shared(url(address))
                .map_err(|e| ClientError::BadAddress {
                    address: address.clone(),
                    source: Box::new(e),
                })?
                .connect_timeout(self.config.connect_timeout)
                .tcp_nodelay(true);
            match self.config.transport.connect(endpoint).await {
                Ok(channel) => {
                    debug!(%address, "connected to Typha");
                    self.set_current(index, Some(channel.clone()));
                    return Ok(channel);
                }
                Err(e) => {
                    debug!(%address, error = %e, "cannot connect to Typha");
                    last = Some(e);
                }
            }
        }
        self.set_current(start % n, None);
        Err(ClientError::Unavailable {
            addresses: self.joined(),
            message: "no replica accepted a connection".into(),
            status: None,
            source: Some(match last {
                Some(e) => Box::new(e),
                None => "no addresses".into(),
            }),
        })
    }

    /// Runs one request of the `Resources` API, moving on to the next
    /// replica while the current one is unavailable.
    async fn call<T, F, Fut>(&self, request: F) -> Result<T, ClientError>
    where
        F: Fn(ResourcesClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on_as(false, |channel| {
            request(ResourcesClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
        })
        .await
    }

    /// [`Client::call`] for a write: one that may have been committed is
    /// not sent again ([`ClientError::OutcomeUnknown`]).
    async fn call_write<T, F, Fut>(&self, request: F) -> Result<T, ClientError>
    where
        F: Fn(ResourcesClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on_as(true, |channel| {
            request(ResourcesClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
        })
        .await
    }

    /// Runs one request of any of Typha's APIs over a channel to the
    /// current replica, moving on to the next replica while the current
    /// one is unavailable.
    pub(crate) async fn call_on<T, F, Fut>(&self, request: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on_as(false, request).await
    }

    async fn call_on_as<T, F, Fut>(&self, write: bool, request: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.addresses.len();
        let attempts = n * self.config.rounds.max(1) as usize;
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 && attempt % n == 0 {
                tokio::time::sleep(self.config.round_pause).await;
            }
            let (index, channel) = self.current();
            let channel = match channel {
                Some(c) => c,
                None => match self.reconnect(index).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                },
            };
            let outcome = tokio::time::timeout(self.config.request_timeout, request(channel)).await;
            let error = match outcome {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if write && crate::error::outcome_unknown(&status) => {
                    self.set_current(index, None);
                    return Err(ClientError::OutcomeUnknown {
                        address: self.addresses[index].clone(),
                        cause: status.message().to_string(),
                        status: Some(status),
                    });
                }
                Ok(Err(status)) => ClientError::from_status(status, &self.joined()),
                Err(_) if write => {
                    self.set_current(index, None);
                    return Err(ClientError::OutcomeUnknown {
                        address: self.addresses[index].clone(),
                        cause: format!("no answer within {:?}", self.config.request_timeout),
                        status: None,
                    });
                }
                Err(_) => ClientError::Unavailable {
                    addresses: self.addresses[index].clone(),
                    message: format!(
                        "no answer within {:?}; a write's outcome is unknown",
                        self.config.request_timeout
                    ),
                    status: None,
                    source: Some("request timed out".into()),
                },
            };
            if !error.is_unavailable() {
                return Err(error);
            }
            debug!(address = %self.addresses[index], %error, "replica unavailable; trying the next");
            self.set_current((index + 1) % n, None);
            last = Some(error);
        }
        Err(last.unwrap_or(ClientError::NoAddress))
    }

    /// Writes `items` in one atomic batch, each with an optional expected
    /// revision (0: must not exist yet), and returns the revision each one
    /// was stored at, in order. An empty batch writes nothing.
    pub async fn apply_all(
        &self,
        items: &[(&Resource, Option<u64>)],
    ) -> Result<Vec<u64>, ClientError> {
        self.apply_items(
            items
                .iter()
                .map(|(r, expected)| (*r, r.key().to_string(), *expected)),
        )
        .await
    }

    /// Creates or replaces `items` in one atomic batch, each named by where
    /// it came from (such as a file and document), as Typha's answer names
    /// a problem; returns each one's new revision.
    pub async fn apply_from(&self, items: &[(&Resource, &str)]) -> Result<Vec<u64>, ClientError> {
        self.apply_items(
            items
                .iter()
                .map(|(r, origin)| (*r, (*origin).to_string(), None)),
        )
        .await
    }

    /// Writes `items` (each with an optional expected revision) and
    /// deletes `deletes` in one atomic batch: one Raft entry, all or
    /// nothing. Returns each item's new revision. Typha refuses the deletes
    /// from callers whose role does not write anything.
    pub async fn apply_and_delete(
        &self,
        items: &[(&Resource, Option<u64>)],
        deletes: &[ResourceKey],
    ) -> Result<Vec<u64>, ClientError> {
        self.apply_items_deleting(
            items
                .iter()
                .map(|(r, expected)| (*r, r.key().to_string(), *expected)),
            deletes,
        )
        .await
    }

    async fn apply_items<'a>(
        &self,
        items: impl Iterator<Item = (&'a Resource, String, Option<u64>)>,
    ) -> Result<Vec<u64>, ClientError> {
        self.apply_items_deleting(items, &[]).await
    }

    async fn apply_items_deleting<'a>(
        &self,
        items: impl Iterator<Item = (&'a Resource, String, Option<u64>)>,
        deletes: &[ResourceKey],
    ) -> Result<Vec<u64>, ClientError> {
        let mut request = pb::ApplyRequest {
            items: Vec::new(),
            deletes: deletes.iter().map(wire::key_to_proto).collect(),
            origin: None,
        };
        for (resource, origin, expected) in items {
            let document = serde_json::to_vec(resource).map_err(|source| ClientError::Encode {
                key: resource.key().to_string(),
                source,
            })?;
            request.items.push(pb::ApplyItem {
                document: document.into(),
                origin,
                expected_revision: expected,
            });
        }
        if request.items.is_empty() {
            return Ok(Vec::new());
        }
        let response = self
            .call_write(|mut c| {
                let r = request.clone();
                let r = self.named(r);
                async move { c.apply(r).await }
            })
            .await?;
        Ok(response.entries.iter().map(|e| e.revision).collect())
    }

    /// Creates or replaces `resources` in one atomic batch; returns each
    /// one's new revision.
    pub async fn apply(&self, resources: &[Resource]) -> Result<Vec<u64>, ClientError> {
        let items: Vec<_> = resources.iter().map(|r| (r, None)).collect();
        self.apply_all(&items).await
    }

    /// Writes `resource` only if its stored revision is `expected` (0: only
    /// if it does not exist); a mismatch is [`ClientError::Conflict`].
    /// Returns the new revision.
    pub async fn apply_if(&self, resource: &Resource, expected: u64) -> Result<u64, ClientError> {
        let revisions = self.apply_all(&[(resource, Some(expected))]).await?;
        revisions
            .first()
            .copied()
            .ok_or_else(|| ClientError::Decode {
                key: resource.key().to_string(),
                reason: "the answer has no entry".into(),
            })
    }

    /// The stored resource and its revision, or `None` when absent.
    pub async fn get(&self, key: &ResourceKey) -> Result<Option<(Resource, u64)>, ClientError> {
        let request = pb::GetRequest {
            key: Some(wire::key_to_proto(key)),
        };
        match self
            .call(|mut c| {
                let r = request.clone();
                async move { c.get(r).await }
            })
            .await
        {
            Ok(response) => match response.entry {
                Some(e) => decode(&e).map(Some),
                None => Ok(None),
            },
            Err(ClientError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every stored resource of `kind` (in `namespace`, or in every
    /// namespace), in key order, with revisions.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<(Resource, u64)>, ClientError> {
        self.list_raw(kind.key_name(), namespace).await
    }

    /// Every stored resource of every kind, in key order, with revisions.
    pub async fn list_every_kind(&self) -> Result<Vec<(Resource, u64)>, ClientError> {
        self.list_raw("", None).await
    }

    async fn list_raw(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<(Resource, u64)>, ClientError> {
        let request = pb::ListRequest {
            kind: kind.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
        };
        let response = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.list(r).await }
            })
            .await?;
        response.entries.iter().map(decode).collect()
    }

    /// The audit history of committed writes matching `request`'s
    /// filters, from the replicated log (any replica answers the same).
    pub async fn audit(&self, request: pb::AuditRequest) -> Result<pb::AuditResponse, ClientError> {
        self.call(|mut c| {
            let r = request.clone();
            async move { c.audit(r).await }
        })
        .await
    }

    /// Deletes `key`, only if its revision is `expected` when given.
    /// Returns the revision of the deletion, or `None` when nothing was
    /// stored under the key (not an error: deleting is idempotent).
    pub async fn delete(
        &self,
        key: &ResourceKey,
        expected: Option<u64>,
    ) -> Result<Option<u64>, ClientError> {
        let response = self
            .delete_keys(std::slice::from_ref(key), expected)
            .await?;
        Ok((!response.deleted.is_empty()).then_some(response.revision))
    }

    /// Deletes `keys` in one atomic batch (each only if its revision is
    /// `expected`, when given) and returns the keys that were stored, in
    /// the order Typha deleted them; the others did not exist.
    pub async fn delete_all(
        &self,
        keys: &[ResourceKey],
        expected: Option<u64>,
    ) -> Result<Vec<ResourceKey>, ClientError> {
        let response = self.delete_keys(keys, expected).await?;
        response
            .deleted
            .iter()
            .map(|k| wire::key_from_proto(k).map_err(|source| ClientError::Entry { source }))
            .collect()
    }

    async fn delete_keys(
        &self,
        keys: &[ResourceKey],
        expected: Option<u64>,
    ) -> Result<pb::DeleteResponse, ClientError> {
        let request = pb::DeleteRequest {
            keys: keys.iter().map(wire::key_to_proto).collect(),
            expected_revision: expected,
            origin: None,
        };
        self.call_write(|mut c| {
            let r = self.named(request.clone());
            async move { c.delete(r).await }
        })
        .await
    }
}
