//! The crate's error type: every message names the namespace, and the
//! interface or address where there is one.

use std::io;

/// What went wrong, and in which namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A namespace name that cannot be a file under `/run/netns`.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// An argument this crate refuses (empty prefix, bad sysctl key, ...).
    #[error("invalid argument for network namespace {ns}: {reason}")]
    InvalidArgument { ns: String, reason: String },
    /// A system call or file operation failed.
    #[error("network namespace {ns}: {op}")]
    Io {
        ns: String,
        op: String,
        #[source]
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("network namespace {ns}: netlink: {op}")]
    Netlink {
        ns: String,
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// No interface of that name in that namespace.
    #[error("network namespace {ns}: no interface {ifname}")]
    LinkNotFound { ns: String, ifname: String },
    /// The kernel answered something this crate does not understand.
    #[error("network namespace {ns}: unexpected answer: {what}")]
    Unexpected { ns: String, what: String },
}

/// `Result` with [`NetnsError`].
pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

impl NetnsError {
    pub(crate) fn io(ns: &str, op: impl Into<String>, source: io::Error) -> Self {
        NetnsError::Io {
            ns: ns.to_owned(),
            op: op.into(),
            source,
        }
    }

    pub(crate) fn nix(ns: &str, op: impl Into<String>, source: nix::Error) -> Self {
        Self::io(ns, op, io::Error::from(source))
    }

    pub(crate) fn netlink(ns: &str, op: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetnsError::Netlink {
            ns: ns.to_owned(),
            op: op.into(),
            source,
        }
    }

    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetnsError::Io { source, .. } => source.raw_os_error(),
            NetnsError::Netlink { source, .. } => netlink_errno(source),
            _ => None,
        }
    }
}

/// The (positive) errno of a netlink NACK.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}
