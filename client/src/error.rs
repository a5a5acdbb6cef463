//! What can go wrong talking to Typha, sorted by what the caller should do.

use tonic::{Code, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed request. [`ClientError::Conflict`], [`ClientError::NoLeader`]
/// and [`ClientError::Unavailable`] are worth retrying (after re-reading, for
/// a conflict); the others are not.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no Typha address given")]
    NoAddress,
    #[error("{address:?} is not a Typha address (HOST:PORT)")]
    BadAddress {
        address: String,
        #[source]
        source: BoxError,
    },
    /// No replica answered, or a write's outcome is unknown (it may have
    /// committed).
    #[error("Typha is unavailable ({addresses}): {message}")]
    Unavailable {
        addresses: String,
        message: String,
        /// Typha's answer, when it gave one (`message` is its message).
        status: Option<Status>,
        #[source]
        source: Option<BoxError>,
    },
    /// A write was sent but no answer came back (the connection dropped,
    /// the request timed out, or Typha could not commit it in time): it may
    /// or may not have been committed. It is not sent again (another try
    /// could fail on a conflict with itself, or write twice); read the keys
    /// back to see which.
    #[error(
        "the write's outcome is unknown: {cause} (Typha at {address}); it may or may not have been committed: read the keys back to see whether they hold it before writing again"
    )]
    OutcomeUnknown {
        address: String,
        cause: String,
        status: Option<Status>,
    },
    /// The replica asked knows no leader: none is elected yet (a cluster
    /// just started, or lost its quorum), or leadership is changing. The
    /// request was refused before it was proposed, so sending it again is
    /// always safe.
    ///
    /// These variants hold Typha's answer (`status`), whose message is
    /// theirs: an answer, not a cause.
    #[error("Typha has no leader ({addresses}): {message}")]
    NoLeader {
        addresses: String,
        message: String,
        status: Status,
    },
    /// An expected revision did not match: someone else wrote first.
    #[error("revision conflict: {}", .status.message())]
    Conflict { status: Status },
    #[error("not found: {}", .status.message())]
    NotFound { status: Status },
    /// Typha's validation rejected the request; nothing was written.
    #[error("invalid request: {}", .status.message())]
    Invalid { status: Status },
    #[error("Typha failed the request ({:?}): {}", .status.code(), .status.message())]
    Server { status: Status },
    #[error("cannot encode {key}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Typha sent an undecodable entry")]
    Entry {
        #[source]
        source: manul_proto::wire::WireError,
    },
    #[error("Typha's answer for {key} is incomplete: {reason}")]
    Decode { key: String, reason: String },
}

impl ClientError {
    /// Sorts a status from the `Resources` service.
    /// `addresses` names the replicas asked, for the message.
    pub fn from_status(status: Status, addresses: &str) -> ClientError {
        match status.code() {
            Code::FailedPrecondition | Code::Aborted => ClientError::Conflict { status },
            Code::NotFound => ClientError::NotFound { status },
            Code::InvalidArgument | Code::OutOfRange => ClientError::Invalid { status },
            Code::Unavailable if names_no_leader(status.message()) => ClientError::NoLeader {
                addresses: addresses.to_string(),
                message: status.message().to_string(),
                status,
            },
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                ClientError::Unavailable {
                    addresses: addresses.to_string(),
                    message: status.message().to_string(),
                    status: Some(status),
                    source: None,
                }
            }
            _ => ClientError::Server { status },
        }
    }

    /// Someone else wrote first; re-read and decide again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Conflict { .. })
    }

    /// A write was sent and may or may not have been committed.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ClientError::OutcomeUnknown { .. })
    }

    /// Nobody could serve the request right now; trying later may work.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. } | ClientError::NoLeader { .. }
        )
    }

    /// The cluster has no leader yet: the request was not executed, and
    /// waiting for an election then sending it again is safe.
    pub fn is_no_leader(&self) -> bool {
        matches!(self, ClientError::NoLeader { .. })
    }

    /// Typha's answer, when the error is one (for callers that show it as
    /// Typha gave it).
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::NoLeader { status, .. }
            | ClientError::Conflict { status }
            | ClientError::NotFound { status }
            | ClientError::Invalid { status }
            | ClientError::Server { status } => Some(status),
            ClientError::Unavailable { status, .. } => status.as_ref(),
            _ => None,
        }
    }

    /// The request itself is wrong; retrying it cannot help.
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            ClientError::Invalid { .. }
                | ClientError::BadAddress { .. }
                | ClientError::NoAddress
                | ClientError::Encode { .. }
        )
    }
}

/// Typha's answers, all `Unavailable`, for a request it refused because it
/// knows no leader to commit it (see `typha::api`): nothing was proposed.
const NO_LEADER_MESSAGES: [&str; 4] = [
    "no leader is elected yet",
    "this replica is not the leader",
    "forwarded to a replica that is no longer the leader",
    "the leader could not be reached",
];

fn names_no_leader(message: &str) -> bool {
    NO_LEADER_MESSAGES.iter().any(|m| message.starts_with(m))
}

/// What a failed write's status says of it: whether it may have reached
/// Typha and been committed. Typha's own answers say so when it proposed
/// the write and did not see it commit; a connection that broke after the
/// request was sent (tonic's status then carries the transport error as
/// its source) leaves it unknown too, unless it broke before anything was
/// sent (the connection was never made, or the stream was refused).
///
/// An answer from Typha with a "try again" code (unavailable, deadline
/// exceeded, cancelled) that does not say the write was refused before it
/// was proposed (the no-leader answers) is unknown as well: only those
/// answers make sending the write again safe. Sent again after it had
/// committed, an unconditional write would be stored twice, and a
/// conditional one would be answered with a conflict against itself.
pub(crate) fn outcome_unknown(status: &Status) -> bool {
    if status.message().contains("outcome is unknown") {
        return true;
    }
    if names_no_leader(status.message()) {
        return false;
    }
    let Some(source) = std::error::Error::source(status) else {
        return matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        );
    };
    let mut chain = source.to_string();
    let mut next = source.source();
    while let Some(e) = next {
        chain.push_str(": ");
        chain.push_str(&e.to_string());
        next = e.source();
    }
    let chain = chain.to_ascii_lowercase();
    ![
        "connect error",
        "connection refused",
        "dns error",
        "refused_stream",
        "refused stream",
    ]
    .iter()
    .any(|never_sent| chain.contains(never_sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_what_the_caller_should_do() {
        let cases = [
            (Status::failed_precondition("revision conflict"), "conflict"),
            (Status::not_found("x"), "not found"),
            (Status::invalid_argument("bad"), "invalid"),
            (Status::unavailable("no replica answered"), "unavailable"),
            (
                Status::unavailable("no leader is elected yet; retry shortly"),
                "no leader",
            ),
            (
                Status::unavailable("this replica is not the leader; replica 2 at a:2 is"),
                "no leader",
            ),
            (Status::deadline_exceeded("slow"), "unavailable"),
            (Status::internal("boom"), "server"),
        ];
        for (status, want) in cases {
            let e = ClientError::from_status(status, "a:1");
            let got = match &e {
                ClientError::Conflict { .. } => "conflict",
                ClientError::NotFound { .. } => "not found",
                ClientError::Invalid { .. } => "invalid",
                ClientError::Unavailable { .. } => "unavailable",
                ClientError::NoLeader { .. } => "no leader",
                ClientError::Server { .. } => "server",
                _ => "other",
            };
            assert_eq!(got, want, "{e}");
        }
        let e = ClientError::from_status(Status::failed_precondition("revision conflict on k"), "");
        assert!(e.is_conflict() && !e.is_unavailable() && !e.is_invalid());
        assert!(e.to_string().contains("revision conflict on k"), "{e}");
        let e = ClientError::from_status(Status::unavailable("no leader is elected yet"), "a:1");
        assert!(
            e.is_no_leader() && e.is_unavailable() && !e.is_invalid(),
            "{e}"
        );
        let e = ClientError::from_status(Status::unavailable("the write was not committed"), "");
        assert!(!e.is_no_leader() && e.is_unavailable(), "{e}");
    }

    #[test]
    fn only_a_refusal_before_proposing_makes_a_failed_write_safe_to_send_again() {
        // Typha's answers that say nothing was proposed.
        for m in NO_LEADER_MESSAGES {
            assert!(
                !outcome_unknown(&Status::unavailable(format!("{m}; retry"))),
                "{m}"
            );
        }
        // Typha's answers that say it may have been committed, and any
        // other "try again" answer (a replica whose Raft thread stopped
        // while the write waited, a forwarding call that broke).
        for status in [
            Status::unavailable("the write was not committed within 10s; its outcome is unknown"),
            Status::unavailable("the Raft node has stopped"),
            Status::deadline_exceeded("slow"),
            Status::cancelled("gone"),
        ] {
            assert!(outcome_unknown(&status), "{status:?}");
        }
        // Definite answers.
        for status in [
            Status::failed_precondition("revision conflict"),
            Status::invalid_argument("bad"),
            Status::permission_denied("no"),
        ] {
            assert!(!outcome_unknown(&status), "{status:?}");
        }
        // A connection that was never made sent nothing.
        let refused = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert!(!outcome_unknown(&refused), "{refused:?}");
    }
}
