//! The [`Driver`] trait and its errors.
//!
//! A driver applies ordered batches of [`Operation`]s. The contract it
//! enforces, and that Felix's calculation graph must keep:
//!
//! - an IP set exists (`IpSetUpdate`) before a policy or profile rule names
//!   it, and a rule uses a `Net` set only in `ip_sets`/`not_ip_sets` and a
//!   `NamedPort` set only in `named_port_sets`/`not_named_port_sets`;
//! - a policy or profile exists before an endpoint names it, and a policy is
//!   listed under its own tier (`PolicyId::tier == TierPolicies::name`);
//! - removals go in reverse: an endpoint stops naming a policy or profile
//!   before that policy or profile is removed, a rule stops naming a set
//!   before the set is removed;
//! - `IpSetDelta` only changes a set that exists, with members of the set's
//!   kind, never adding and removing one member in the same delta;
//! - a removal names something that exists.
//!
//! # After an error
//!
//! Every driver gives the same guarantees when [`Driver::apply`] returns an
//! error, whatever the cause (a batch that breaks the contract, a kernel
//! that refuses a write, a lost connection):
//!
//! 1. **The driver is out of sync.** Everything it holds becomes *stale*,
//!    exactly as after a restart ([`Driver::mark_stale`]): it keeps
//!    enforcing it, reports itself not in sync, and the next
//!    [`Operation::InSync`] removes every item that was not sent again
//!    since. Items named by a later update (an `IpSetUpdate`, not a delta)
//!    are fresh again.
//! 2. **The caller resyncs it before anything else:** it sends the whole
//!    desired state (in one or more batches, in contract order, as at
//!    start-up), then `InSync`, after calling [`Driver::mark_stale`]. Only when that succeeds is the driver in
//!    sync again; an incremental batch sent instead is not enough, since
//!    it may build on an operation the kernel never took. A failed resync
//!    is an error like any other: resync again (with a backoff).
//! 3. **The kernel fails closed in the meantime.** From the failed batch
//!    until the resync's `InSync` is applied, whenever no `apply` is
//!    running, each policed interface enforces, as a whole (its rules
//!    together with the members of the IP sets they name), one of: the
//!    state after the last batch applied without error, the state of a
//!    later batch or resync batch that was applied without error, or
//!    nothing (it drops every packet, as an unprogrammed workload
//!    interface does). A failed batch never leaves an interface enforcing
//!    rules of one state with set members of another, and an interface
//!    that was policed stays policed. What was enforced before a resync
//!    keeps being enforced, interface by interface, until the resync
//!    replaces it. (While an `apply` runs, each driver moves an interface
//!    from one state to the next as its own documentation says: the
//!    iptables driver in one transaction, the eBPF driver write by write,
//!    each write safe on its own.)
//!
//! How the drivers meet 3: the null driver refuses a contract-breaking
//! batch whole (nothing of it is recorded). The iptables driver writes each
//! batch as one `nft` transaction, which the kernel applies whole or not at
//! all; after a refused one it leaves the table as it was and holds later
//! batches until the resync's `InSync`, then replaces the whole table in one
//! transaction. The eBPF driver checks capacity and compiles before it
//! writes (an error there leaves the kernel as it was); a map write that
//! fails part-way through a batch may have changed the address space of
//! tables in use, so every endpoint whose tables use a space the batch
//! wrote into stops being programmed (its interface drops everything) until
//! the resync rebuilds it; the others keep their old tables. The remote
//! driver's server marks its driver stale at every new connection, and the
//! client connects again in `mark_stale` after a broken connection.
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::flows::FlowObservation;
use crate::ops::{Action, EndpointId, IpSetId, IpSetKind, IpSetMember, Operation, PolicyId};

/// A dataplane driver: something that applies the calculation graph's
/// operations to a kernel (or records them).
pub trait Driver: Send {
    /// Applies one ordered batch. A batch that breaks the contract (an
    /// endpoint naming a policy or profile the driver was never given, a
    /// policy rule naming an unknown IP set, a delta on a set that does not
    /// exist, removing a policy still referenced by an endpoint) is an
    /// error, as is a kernel that refuses a write. After any error the
    /// driver is out of sync and must be resynced with the whole desired
    /// state, then [`Operation::InSync`], before any further incremental
    /// batch; until then its kernel state fails closed (see the
    /// [module documentation](self), "After an error").
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError>;

    /// Makes everything the driver holds stale, as a restart would: it
    /// keeps enforcing it, is no longer in sync, and the next
    /// [`Operation::InSync`] removes what was not sent again. A driver
    /// does this itself when `apply` fails; the caller calls it at the
    /// start of every resync (the remote driver connects again here after a
    /// broken connection), and the remote driver's server for every new
    /// connection.
    fn mark_stale(&mut self);

    /// A short, stable name for logs and metrics (`null`, `remote`, `bpf`,
    /// `iptables`).
    fn name(&self) -> &'static str;

    /// Checks that the kernel still holds what was programmed and repairs
    /// it if something else changed it. Felix calls this periodically.
    /// Returns whether anything was repaired. Drivers without kernel state
    /// have nothing to check.
    fn refresh(&mut self) -> Result<bool, DriverError> {
        Ok(false)
    }

    /// New flows allowed and denied per deciding policy since the driver
    /// started, for drivers that see flows (the eBPF driver's flow
    /// events). Felix exports them as metrics.
    fn policy_counters(&self) -> Vec<PolicyCounter> {
        Vec::new()
    }

    /// How full the driver's own connection-tracking table is, for drivers
    /// that keep one (the eBPF driver's conntrack map); `None` for the
    /// others. Felix exports it as metrics.
    fn conntrack_usage(&self) -> Option<ConntrackUsage> {
        None
    }

    /// The kernel's service NAT totals since its maps were created, for
    /// drivers that count them (the eBPF driver). Felix exports them as
    /// metrics.
    fn service_counters(&self) -> Option<ServiceCounters> {
        None
    }

    /// How full the driver's sized service maps are (the eBPF driver's
    /// frontend, backend, Maglev and affinity maps), one entry a map;
    /// empty for drivers without such maps. Felix exports them as
    /// metrics.
    fn map_usage(&self) -> Vec<MapUsage> {
        Vec::new()
    }

    /// The flow observations made since the last call, oldest first, for
    /// drivers that see connections (see [`crate::flows`]). A driver keeps a
    /// bounded queue and counts what it had to drop
    /// ([`Driver::flows_dropped`]); Felix drains it every few seconds.
    fn take_flows(&mut self) -> Vec<FlowObservation> {
        Vec::new()
    }

    /// Observations dropped because the queue behind
    /// [`Driver::take_flows`] was full, since the driver started.
    fn flows_dropped(&self) -> u64 {
        0
    }

    /// Flow events the kernel could not hand over (the eBPF driver's ring
    /// buffer full), since the driver's maps were created: their flows are
    /// missing from the per-policy counters and the flow log, and from the
    /// observations unless a conntrack scan recovered their start. 0 for
    /// drivers without such events.
    fn flow_events_lost(&self) -> u64 {
        0
    }
}

/// Entries in a driver's connection-tracking table and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackUsage {
    /// Live entries when last counted.
    pub entries: u64,
    /// The most entries the table holds.
    pub capacity: u64,
}

/// Entries in one of a driver's sized maps and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapUsage {
    /// The map's name (`manul_svc_fe`, ...).
    pub map: &'static str,
    /// Entries the driver holds in it (as it programmed them, or as the
    /// kernel counts them for maps the programs write).
    pub entries: u64,
    /// The most entries it holds.
    pub capacity: u64,
}

/// Service NAT totals of a node's dataplane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// New connections to a frontend translated to a backend.
    pub translated: u64,
    /// New connections to a frontend without backends, rejected at once
    /// (the NAT misses).
    pub rejected_no_backend: u64,
    /// New connections from a pod to a Service it backs.
    pub hairpin: u64,
    /// Packets of TCP connections whose backend was removed, reset.
    pub reset: u64,
    /// Packets carrying a direct server return option or header naming a
    /// frontend no other node sends (not a node port at another cluster
    /// node's address, nor an external address's), dropped: a forged
    /// frontend.
    pub dsr_untrusted_dropped: u64,
    /// Entries in the session affinity map.
    pub affinity_entries: u64,
}

/// Flows decided by one policy (or profile, or tier default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCounter {
    /// The deciding policy, as flow logs name it.
    pub policy: String,
    pub allowed: u64,
    pub denied: u64,
}

impl<D: Driver + ?Sized> Driver for Box<D> {
    fn apply(&mut self, batch: &[Operation]) -> Result<(), DriverError> {
        (**self).apply(batch)
    }

    fn mark_stale(&mut self) {
        (**self).mark_stale()
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn refresh(&mut self) -> Result<bool, DriverError> {
        (**self).refresh()
    }

    fn policy_counters(&self) -> Vec<PolicyCounter> {
        (**self).policy_counters()
    }

    fn conntrack_usage(&self) -> Option<ConntrackUsage> {
        (**self).conntrack_usage()
    }

    fn service_counters(&self) -> Option<ServiceCounters> {
        (**self).service_counters()
    }

    fn map_usage(&self) -> Vec<MapUsage> {
        (**self).map_usage()
    }

    fn take_flows(&mut self) -> Vec<FlowObservation> {
        (**self).take_flows()
    }

    fn flows_dropped(&self) -> u64 {
        (**self).flows_dropped()
    }

    fn flow_events_lost(&self) -> u64 {
        (**self).flow_events_lost()
    }
}

/// `error` and its sources, joined with `: `: the one way Manul prints an
/// error with its causes (its home is `manul-error`, which the dataplane
/// crates reach without the resource model).
pub use manul_error::chain;

/// Why a driver refused or failed a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The batch breaks the dataplane contract. The driver checks a batch
    /// before it programs anything, so nothing of it reached the kernel;
    /// the driver is out of sync all the same (see "After an error").
    #[error("operation {index} ({operation}) breaks the dataplane contract: {violation}")]
    Contract {
        /// The operation's index in the batch.
        index: usize,
        /// The operation's kind ([`Operation::kind`]).
        operation: &'static str,
        violation: ContractViolation,
    },
    /// A kernel driver could not program what it was asked to.
    #[error("{driver} dataplane: {context}")]
    Dataplane {
        driver: &'static str,
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The remote driver's socket could not be reached.
    #[error("remote driver: cannot connect to {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the remote driver's socket failed.
    #[error("remote driver: {context}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The remote driver did not answer in time. The connection is no
    /// longer usable (an answer may still arrive): connect again and resync.
    #[error("remote driver: no answer within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection.
    #[error("remote driver: the peer closed the connection")]
    Disconnected,
    /// An earlier I/O error, timeout or malformed answer left the connection
    /// in an unknown state: connect again and resync.
    #[error("remote driver: the connection failed earlier and cannot be used; connect again")]
    Broken,
    /// A request or answer line would exceed the configured bound.
    #[error("remote driver: a {what} line of {len} bytes exceeds the limit of {limit} bytes")]
    LineTooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    /// The batch could not be encoded as JSON.
    #[error("remote driver: cannot encode the batch")]
    Encode(#[source] serde_json::Error),
    /// The remote driver answered something that is not a protocol answer.
    #[error("remote driver: malformed answer {line:?}")]
    BadResponse {
        line: String,
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The remote driver refused the batch (its `{"error": ...}` answer).
    #[error("remote driver refused the batch{}: {message}", index.map(|i| format!(" at operation {i}")).unwrap_or_default())]
    Rejected {
        message: String,
        index: Option<usize>,
    },
    /// A remote driver option is out of range.
    #[error("remote driver: invalid option: {0}")]
    InvalidOption(&'static str),
    /// The serving thread panicked.
    #[error("remote driver server thread panicked")]
    ServerPanicked,
}

/// How a batch breaks the dataplane contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractViolation {
    #[error(
        "{owner} rule {rule:?} names IP set {set:?}, which the driver was never given (send its IpSetUpdate first)"
    )]
    UnknownIpSet {
        set: IpSetId,
        owner: String,
        rule: String,
    },
    #[error(
        "{owner} rule {rule:?} uses IP set {set:?} as a {used_as:?} set, but it is a {actual:?} set"
    )]
    SetKindMismatch {
        set: IpSetId,
        owner: String,
        rule: String,
        used_as: IpSetKind,
        actual: IpSetKind,
    },
    #[error("{owner} rule {rule:?} is invalid: {reason}")]
    InvalidRule {
        owner: String,
        rule: String,
        reason: String,
    },
    #[error(
        "{endpoint} names policy {policy}, which the driver was never given (send its PolicyUpdate first)"
    )]
    UnknownPolicy { policy: PolicyId, endpoint: String },
    #[error(
        "{endpoint} names profile {profile:?}, which the driver was never given (send its ProfileUpdate first)"
    )]
    UnknownProfile { profile: String, endpoint: String },
    #[error("{endpoint} lists policy {policy} under tier {tier:?}")]
    PolicyInWrongTier {
        policy: PolicyId,
        tier: String,
        endpoint: String,
    },
    #[error("{endpoint} gives tier {tier:?} the default action {action:?} (only Deny or Pass)")]
    BadDefaultAction {
        tier: String,
        action: Action,
        endpoint: String,
    },
    #[error("IpSetDelta on IP set {set:?}, which does not exist (send its IpSetUpdate first)")]
    DeltaOnUnknownSet { set: IpSetId },
    #[error("IP set {set:?} is a {kind:?} set and cannot hold {member:?}")]
    MemberKindMismatch {
        set: IpSetId,
        kind: IpSetKind,
        member: IpSetMember,
    },
    #[error("IpSetDelta on IP set {set:?} both adds and removes {member:?}")]
    AddedAndRemoved { set: IpSetId, member: IpSetMember },
    #[error(
        "IpSetUpdate changes IP set {set:?} from {from:?} to {to:?} while {user} still uses it"
    )]
    SetKindChangeWhileReferenced {
        set: IpSetId,
        from: IpSetKind,
        to: IpSetKind,
        user: String,
    },
    #[error(
        "IP set {set:?} is removed while {user} still names it (update or remove the policy first)"
    )]
    SetStillReferenced { set: IpSetId, user: String },
    #[error(
        "policy {policy} is removed while {endpoint} still names it (update or remove the endpoint first)"
    )]
    PolicyStillReferenced { policy: PolicyId, endpoint: String },
    #[error(
        "profile {profile:?} is removed while {endpoint} still names it (update or remove the endpoint first)"
    )]
    ProfileStillReferenced { profile: String, endpoint: String },
    #[error("{what} {id} is removed, but the driver does not have it")]
    RemoveUnknown { what: &'static str, id: String },
    #[error(
        "InSync: {what} {id} was not sent again since the driver restarted, so it is removed, but {user} (sent again) still names it"
    )]
    StaleStillReferenced {
        what: &'static str,
        id: String,
        user: String,
    },
    #[error("a state's {what} stored under key {key} has the id {id}")]
    KeyMismatch {
        what: &'static str,
        key: String,
        id: String,
    },
}

impl Operation {
    /// The operation's variant name, as it appears in its JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::IpSetUpdate { .. } => "IpSetUpdate",
            Operation::IpSetDelta { .. } => "IpSetDelta",
            Operation::IpSetRemove { .. } => "IpSetRemove",
            Operation::PolicyUpdate { .. } => "PolicyUpdate",
            Operation::PolicyRemove { .. } => "PolicyRemove",
            Operation::ProfileUpdate { .. } => "ProfileUpdate",
            Operation::ProfileRemove { .. } => "ProfileRemove",
            Operation::WorkloadEndpointUpdate(_) => "WorkloadEndpointUpdate",
            Operation::WorkloadEndpointRemove { .. } => "WorkloadEndpointRemove",
            Operation::HostEndpointUpdate(_) => "HostEndpointUpdate",
            Operation::HostEndpointRemove { .. } => "HostEndpointRemove",
            Operation::ServiceUpdate(_) => "ServiceUpdate",
            Operation::ServiceRemove { .. } => "ServiceRemove",
            Operation::NodeAddresses { .. } => "NodeAddresses",
            Operation::InSync => "InSync",
        }
    }
}

/// `TIER/NAME`.
impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tier, self.name)
    }
}

/// `NAMESPACE/NAME`.
impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
