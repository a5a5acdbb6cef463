//! Manul's TLS, on rustls with the `ring` provider, TLS 1.2 and 1.3 only.
//!
//! - [`server`]: a server configuration that requires a client
//!   certificate chained to the configured CA whose common name or URI SAN
//!   is one of the configured identities (Calico's `ClientCN` and
//!   `ClientURISAN`), and [`accept`]: a stream of accepted TLS connections
//!   for a tonic server (handshakes run concurrently, with a time limit).
//! - [`client`]: a client configuration that verifies the server's chain
//!   against the configured CA and its common name or URI SAN (Calico's
//!   `TyphaCN` and `TyphaURISAN`) instead of a host name, and presents the
//!   client's own certificate; [`connect`] turns it into a tonic channel.
//! - [`watch`]: every certificate, key and CA file is read again when it
//!   changes on disk (modification time, size or inode), at the next
//!   handshake, so a rotated certificate is used by new connections
//!   without a restart; a half-written or mismatched pair is refused and
//!   the previous one kept.
//! - [`https`]: HTTPS for the metrics and health listeners (a reloading
//!   server certificate, no client certificate asked for) as an axum
//!   listener.
//! - [`dev`]: a development CA and certificates (`manulctl certs dev`).
//!
//! It refuses: a configuration that names no identity to check (anyone
//! the CA ever signed would be admitted), TLS below 1.2, a key that does
//! not match its certificate.

pub mod accept;
pub mod client;
pub mod connect;
pub mod dev;
pub mod https;
pub mod identity;
pub mod pem;
pub mod server;
pub mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

pub use identity::{Expected, PeerIdentity};

/// The protocol versions Manul speaks: TLS 1.3 and 1.2, nothing older.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one crypto provider (`ring`, as the rest of the workspace uses).
// rustls marks `ring`'s provider deprecated for its lack of post-quantum key
// exchange; the workspace standardises on `ring`.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{path}: {what}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the key in {key} cannot be used")]
    BadKey {
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the CA file {path} cannot be used: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
    #[error(
        "{setting}: a CA file is set but neither a common name nor a URI SAN to check: set at least one"
    )]
    NoIdentity { setting: &'static str },
    #[error("{0} and {1} must be set together")]
    Incomplete(&'static str, &'static str),
    #[error("cannot generate a certificate")]
    Generate(#[source] rcgen::Error),
}
