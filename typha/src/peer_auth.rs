//! Who may use the peer listener (Raft traffic, cluster administration and
//! writes forwarded between replicas): holders of the cluster's shared peer
//! token, sent as gRPC metadata on every call.
//!
//! The check sits in one place, [`PeerGate`], a tonic interceptor in front
//! of every service of the peer listener. With TLS ([`crate::tls`]) mutual
//! TLS replaces the token: the handshake admits only a replica's or an
//! administrator's certificate, and the gate requires that a verified
//! certificate came with the call. Without TLS (development) the token is
//! the only check. The token is never logged: its `Debug` form is redacted.

use std::path::Path;
use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The metadata key that carries the token.
pub use manul_proto::PEER_TOKEN_HEADER as TOKEN_HEADER;
/// Shortest token accepted: short shared secrets are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the peer token file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the peer token file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort,
    #[error("the peer token may hold only visible ASCII characters")]
    BadCharacter,
}

/// The shared secret of a cluster's replicas and administrators.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerToken(Arc<str>);

impl std::fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerToken(<redacted>)")
    }
}

impl PeerToken {
    /// A token from text (surrounding whitespace ignored).
    pub fn new(text: &str) -> Result<PeerToken, TokenError> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort);
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacter);
        }
        Ok(PeerToken(t.into()))
    }

    /// Reads a token file.
    pub fn load(path: &Path) -> Result<PeerToken, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        PeerToken::new(&text)
    }

    /// A fresh random token: 32 bytes of the kernel's randomness, as hex.
    pub fn generate() -> Result<PeerToken, TokenError> {
        use std::io::Read as _;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|source| TokenError::Read {
                path: "/dev/urandom".into(),
                source,
            })?;
        PeerToken::new(&hex::encode(bytes))
    }

    /// Reads `path`, or creates it (readable by its owner only) with a
    /// fresh token when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<PeerToken, TokenError> {
        if path.exists() {
            return PeerToken::load(path);
        }
        let token = PeerToken::generate()?;
        let write_err = |source| TokenError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        use std::io::Write as _;
        options
            .open(path)
            .and_then(|mut f| f.write_all(format!("{}\n", token.0).as_bytes()))
            .map_err(write_err)?;
        Ok(token)
    }

    /// The token's text, to hand to a client (write it to a file); never
    /// log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Adds the token to an outgoing request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        if let Ok(v) = MetadataValue::try_from(&*self.0) {
            request.metadata_mut().insert(TOKEN_HEADER, v);
        }
    }

    /// A request carrying `inner` and the token.
    pub fn request<T>(&self, inner: T) -> Request<T> {
        let mut r = Request::new(inner);
        self.attach(&mut r);
        r
    }

    /// Whether `presented` is this token, in time independent of where
    /// they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != presented.len() {
            return false;
        }
        mine.iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Admits a request that carries the token; refuses anything else.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match request.metadata().get(TOKEN_HEADER) {
            None => Err(Status::unauthenticated(format!(
                "the peer listener requires the cluster's peer token in {TOKEN_HEADER}"
            ))),
            Some(v) if self.matches(v.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong peer token")),
        }
    }
}

/// The interceptor in front of every service on the peer listener.
impl tonic::service::Interceptor for PeerToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

/// Who may use the peer listener: the token's holders (plaintext) or the
/// holders of a certificate the TLS handshake verified (a replica's or an
/// administrator's identity, checked there).
#[derive(Debug, Clone)]
pub enum PeerGate {
    Token(PeerToken),
    Certificate,
}

impl tonic::service::Interceptor for PeerGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self {
            PeerGate::Token(t) => t.check(&request)?,
            PeerGate::Certificate => {
                if request.peer_certs().is_none_or(|c| c.is_empty()) {
                    return Err(Status::unauthenticated(
                        "the peer listener requires a replica's or an administrator's certificate",
                    ));
                }
            }
        }
        Ok(request)
    }
}

/// A client-side interceptor that adds the token to every call, for
/// clients of the peer listener (`manulctl cluster`, tests, tools).
#[derive(Debug, Clone)]
pub struct AttachToken(pub PeerToken);

impl tonic::service::Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.0.attach(&mut request);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_odd_tokens_are_refused() {
        assert!(matches!(PeerToken::new("short"), Err(TokenError::TooShort)));
        assert!(matches!(
            PeerToken::new("0123456789abcdef 0123"),
            Err(TokenError::BadCharacter)
        ));
        assert!(PeerToken::new("  0123456789abcdef\n").is_ok());
    }

    #[test]
    fn check_admits_only_the_token() {
        let t = PeerToken::new("0123456789abcdef").unwrap();
        assert!(t.check(&t.request(())).is_ok());
        let none = t.check(&Request::new(())).unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        let other = PeerToken::new("0123456789abcdeX").unwrap();
        let wrong = t.check(&other.request(())).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!t.matches(b"0123456789abcde"));
    }

    #[test]
    fn a_created_token_file_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/peer-token");
        let made = PeerToken::load_or_create(&path).unwrap();
        let again = PeerToken::load_or_create(&path).unwrap();
        assert_eq!(made, again);
        assert_eq!(format!("{made:?}"), "PeerToken(<redacted>)");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
