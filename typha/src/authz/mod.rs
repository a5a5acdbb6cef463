//! Who may write what: a caller's role (from its certificate, [`roles`])
//! and the decision for one write. No I/O: the gRPC layer (`api.rs`) reads
//! the stored value the decision needs, calls [`decide`] for every key of a
//! request and refuses the whole request when any key is refused.
//!
//! The roles:
//! - **admin** (and a **replica** forwarding a write it already
//!   authorized): everything;
//! - a node's **CNI** identity: the WorkloadEndpoints on its own node and
//!   the IPAM blocks affine to its own node (`host:NODE`; the CNI plugin's
//!   IPAM writes nothing else, see `manul_client::ipam`), both the value
//!   written and the value it replaces (or deletes). An identity shared by
//!   every node's plugin (a template without `{node}`) may write those
//!   kinds on every node, still nothing else;
//! - **Felix**: reads, and writes its own node's status: an update of its
//!   Node that changes nothing but the WireGuard public key annotation
//!   (Calico's `status.wireguardPublicKey`; Manul's resources carry no
//!   status, so the key is an annotation, see [`Change`]). Its endpoint
//!   status goes to local files the CNI plugin reads;
//! - **read-only**, and any identity the client listener admits that maps
//!   to no role: reads only.
//!
//! Reads (get, list, the Sync stream) are open to every caller the TLS
//! handshake admitted. Without TLS (plaintext, development) there is no
//! identity and every write is allowed, as before authorization existed.

pub mod roles;

#[cfg(test)]
mod tests;

use manul_model::Kind;

/// How far a node-scoped role reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One node's resources.
    Node(String),
    /// Every node's (an identity shared by every node).
    AnyNode,
}

/// What a caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No TLS: no identity, every write allowed (development).
    Plaintext,
    Admin,
    /// Another replica: it forwards writes it authorized itself.
    Replica,
    Cni(Scope),
    Felix(Scope),
    ReadOnly,
    /// Admitted by the listener, but named by no role: reads only.
    Unmapped,
}

impl Role {
    /// The `role` label of metrics and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            Role::Plaintext => "plaintext",
            Role::Admin => "admin",
            Role::Replica => "replica",
            Role::Cni(_) => "cni",
            Role::Felix(_) => "felix",
            Role::ReadOnly => "read_only",
            Role::Unmapped => "none",
        }
    }

    /// Whether every write is allowed without looking at it.
    pub fn writes_anything(&self) -> bool {
        matches!(self, Role::Plaintext | Role::Admin | Role::Replica)
    }
}

/// A caller: the identity that gave it its role (the URI SAN or common
/// name that matched, or what the certificate carries when none did) and
/// the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: String,
    pub role: Role,
}

impl Caller {
    pub fn plaintext() -> Caller {
        Caller {
            identity: "plaintext client".into(),
            role: Role::Plaintext,
        }
    }
}

/// A write's verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Apply,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Apply => "apply",
            Verb::Delete => "delete",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verb::Apply => "write",
            Verb::Delete => "delete",
        }
    }
}

/// Where a value (written or stored) is, for the node-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// No such value (a delete writes none; nothing is stored).
    Absent,
    /// On this node (a WorkloadEndpoint's `spec.node`, an IPAM block's
    /// `host:NODE` affinity).
    Node(String),
    /// A value that names no node.
    NoNode,
}

impl Placement {
    /// The placement of a stored or written value of `kind` (its JSON
    /// form); `NoNode` for kinds without one or a value that does not
    /// parse.
    pub fn of(kind: Kind, value: &[u8]) -> Placement {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(value) else {
            return Placement::NoNode;
        };
        let spec = &v["spec"];
        let node = match kind {
            Kind::WorkloadEndpoint => spec["node"].as_str(),
            Kind::IpamBlock => spec["affinity"]
                .as_str()
                .and_then(|a| a.strip_prefix(manul_model::v3::HOST_AFFINITY_PREFIX)),
            _ => None,
        };
        match node.filter(|n| !n.is_empty()) {
            Some(n) => Placement::Node(n.to_string()),
            None => Placement::NoNode,
        }
    }
}

/// What a write changes, for the one write a Felix identity may make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Only this Node's status: its WireGuard public key annotation is
    /// set, changed or removed, and nothing else differs.
    StatusOf(String),
    /// Anything else (a create, a delete, any other field or kind).
    Other,
}

impl Change {
    /// What writing `written` over `stored` (both in the stored form)
    /// changes for a key of `kind`.
    pub fn of(kind: Kind, stored: Option<&[u8]>, written: Option<&[u8]>) -> Change {
        use manul_model::Resource;
        use manul_model::stored::decode_as;
        let (Some(stored), Some(written)) = (stored, written) else {
            return Change::Other;
        };
        if kind != Kind::Node {
            return Change::Other;
        }
        let without_key = |bytes: &[u8]| match decode_as(Kind::Node, bytes) {
            Ok(Resource::Node(mut n)) => {
                if let Some(a) = n.metadata.annotations.as_mut() {
                    a.remove(manul_model::v3::WIREGUARD_PUBLIC_KEY_ANNOTATION);
                    if a.is_empty() {
                        n.metadata.annotations = None;
                    }
                }
                Some(n)
            }
            _ => None,
        };
        match (without_key(stored), without_key(written)) {
            (Some(a), Some(b)) if a == b => {
                Change::StatusOf(a.metadata.name.clone().unwrap_or_default())
            }
            _ => Change::Other,
        }
    }
}

/// One key of a write request, with what the decision needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub verb: Verb,
    pub kind: Kind,
    /// `NAMESPACE/NAME` or `NAME`.
    pub name: String,
    /// The value written (`Absent` for a delete).
    pub written: Placement,
    /// The value stored now, which the write replaces or deletes.
    pub stored: Placement,
    /// What the write changes (for Felix's status writes).
    pub change: Change,
}

/// A refused write: the message names the identity, the verb, the key and
/// the missing permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{identity} may not {verb} {kind} {name}: {reason}")]
pub struct Refusal {
    pub identity: String,
    pub verb: &'static str,
    pub kind: Kind,
    pub name: String,
    pub reason: String,
}

/// Whether `caller` may make the write `target` describes.
pub fn decide(caller: &Caller, target: &Target) -> Result<(), Refusal> {
    let refuse = |reason: String| {
        Err(Refusal {
            identity: caller.identity.clone(),
            verb: target.verb.word(),
            kind: target.kind,
            name: target.name.clone(),
            reason,
        })
    };
    match &caller.role {
        Role::Plaintext | Role::Admin | Role::Replica => Ok(()),
        Role::Felix(scope) => felix(scope, target).map_or(Ok(()), refuse),
        Role::ReadOnly => refuse("a read-only identity reads only".into()),
        Role::Unmapped => refuse(
            "this identity has no role that writes (admin, or a node's CNI identity for its node's endpoints and IPAM)"
                .into(),
        ),
        Role::Cni(scope) => cni(scope, target).map_or(Ok(()), refuse),
    }
}

/// Why a Felix identity of `scope` may not make this write, if it may not.
fn felix(scope: &Scope, target: &Target) -> Option<String> {
    match (&target.change, scope) {
        (Change::StatusOf(_), Scope::AnyNode) => None,
        (Change::StatusOf(n), Scope::Node(own)) if n == own => None,
        (Change::StatusOf(n), Scope::Node(_)) => Some(format!(
            "it is node {n}'s status; a Felix identity writes its own node's status only"
        )),
        (Change::Other, _) => Some(
            "a Felix identity reads, and writes only its own node's status (the Node's WireGuard public key annotation)"
                .into(),
        ),
    }
}

/// Why a CNI identity of `scope` may not make this write, if it may not.
fn cni(scope: &Scope, target: &Target) -> Option<String> {
    let what = match target.kind {
        Kind::WorkloadEndpoint => "its own node's endpoints",
        Kind::IpamBlock => "the IPAM blocks affine to its own node",
        _ => {
            return Some("a CNI identity writes WorkloadEndpoints and IPAM blocks only".into());
        }
    };
    let own = match scope {
        Scope::Node(n) => Some(n.as_str()),
        Scope::AnyNode => None,
    };
    for (placement, which) in [(&target.written, "it"), (&target.stored, "the stored one")] {
        match placement {
            Placement::Absent => {}
            Placement::NoNode => {
                return Some(format!(
                    "{which} names no node; a CNI identity writes {what} only"
                ));
            }
            Placement::Node(n) if own.is_some_and(|o| o != n) => {
                return Some(format!(
                    "{which} is on node {n}; a CNI identity writes {what} only"
                ));
            }
            Placement::Node(_) => {}
        }
    }
    None
}
