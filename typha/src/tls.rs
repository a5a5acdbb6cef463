//! Typha's TLS settings: Calico's names (`CAFile`, `ServerCertFile`,
//! `ServerKeyFile`, `ClientCN`, `ClientURISAN`, as flags and `TYPHA_*`
//! environment variables) plus the peer listener's identities.
//!
//! With the three files set, every listener speaks TLS 1.2 or 1.3 only:
//! - the client listener (Resources, Sync) requires a client certificate
//!   chained to the CA whose CN or URI SAN is one of the client identities
//!   or an administrator's;
//! - the peer listener (Raft, Cluster, forwarded writes) requires one of a
//!   replica's or an administrator's identities: mutual TLS replaces the
//!   peer token there (the token is then neither checked nor written to
//!   disk; it remains the peer listener's only check in plaintext mode,
//!   which is for development);
//! - towards other replicas this replica presents its server certificate
//!   (it carries the client-auth usage) and expects a replica's identity.
//!
//! The files are read again when they change (`manul_tls::watch`). Without
//! them Typha serves plaintext and says so in its log.

use std::path::PathBuf;
use std::sync::Arc;

use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;
use manul_tls::server::ServerSettings;
use manul_tls::{Expected, TlsError, dev};

/// The TLS flags of `typha`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA bundle client and peer certificates must chain to (Calico's
    /// CAFile). With --server-cert-file and --server-key-file: TLS on every
    /// listener.
    #[arg(long, env = "TYPHA_CAFILE")]
    pub ca_file: Option<PathBuf>,
    /// This replica's certificate (chain), PEM (Calico's ServerCertFile).
    #[arg(long, env = "TYPHA_SERVERCERTFILE")]
    pub server_cert_file: Option<PathBuf>,
    /// Its private key, PEM (Calico's ServerKeyFile).
    #[arg(long, env = "TYPHA_SERVERKEYFILE")]
    pub server_key_file: Option<PathBuf>,
    /// Common names admitted on the client listener, comma-separated
    /// (Calico's ClientCN, which takes one).
    #[arg(long, env = "TYPHA_CLIENTCN", value_delimiter = ',')]
    pub client_cn: Vec<String>,
    /// URI SANs admitted on the client listener, comma-separated (Calico's
    /// ClientURISAN).
    #[arg(long, env = "TYPHA_CLIENTURISAN", value_delimiter = ',')]
    pub client_uri_san: Vec<String>,
    /// Common names of the replicas (peer listener, and what this replica
    /// expects of the others). Default: manul-typha.
    #[arg(long, env = "TYPHA_PEERCN", value_delimiter = ',')]
    pub peer_cn: Vec<String>,
    /// URI SANs of the replicas. Default: spiffe://manul/typha.
    #[arg(long, env = "TYPHA_PEERURISAN", value_delimiter = ',')]
    pub peer_uri_san: Vec<String>,
    /// Common names of administrators, admitted on both listeners.
    /// Default: manul-admin.
    #[arg(long, env = "TYPHA_ADMINCN", value_delimiter = ',')]
    pub admin_cn: Vec<String>,
    /// URI SANs of administrators. Default: spiffe://manul/admin.
    #[arg(long, env = "TYPHA_ADMINURISAN", value_delimiter = ',')]
    pub admin_uri_san: Vec<String>,
}

/// Typha's built TLS configurations.
#[derive(Debug, Clone)]
pub struct TyphaTls {
    /// The client listener's.
    pub client: Arc<rustls::ServerConfig>,
    /// The peer listener's.
    pub peer: Arc<rustls::ServerConfig>,
    /// How this replica reaches the others' peer listeners.
    pub dial: Transport,
}

fn or_default(values: &[String], default: &str) -> Vec<String> {
    if values.iter().all(|v| v.trim().is_empty()) {
        vec![default.to_string()]
    } else {
        values.to_vec()
    }
}

impl TlsArgs {
    /// The configurations, or none for plaintext; an error for a partial
    /// or unusable configuration.
    pub fn build(&self) -> Result<Option<TyphaTls>, TlsError> {
        let (ca, cert, key) = match (&self.ca_file, &self.server_cert_file, &self.server_key_file) {
            (None, None, None) => return Ok(None),
            (Some(ca), Some(cert), Some(key)) => (ca.clone(), cert.clone(), key.clone()),
            _ => {
                return Err(TlsError::Incomplete(
                    "--ca-file, --server-cert-file",
                    "--server-key-file",
                ));
            }
        };
        let clients = Expected::new(
            self.client_cn.iter().cloned(),
            self.client_uri_san.iter().cloned(),
            "ClientCN/ClientURISAN",
        )?;
        let peers = Expected::new(
            or_default(&self.peer_cn, dev::TYPHA_CN),
            or_default(&self.peer_uri_san, dev::TYPHA_URI),
            "PeerCN/PeerURISAN",
        )?;
        let admins = Expected::new(
            or_default(&self.admin_cn, dev::ADMIN_CN),
            or_default(&self.admin_uri_san, dev::ADMIN_URI),
            "AdminCN/AdminURISAN",
        )?;
        let server = |admitted: Expected| {
            ServerSettings {
                cert_file: cert.clone(),
                key_file: key.clone(),
                ca_file: ca.clone(),
                clients: admitted,
            }
            .config()
        };
        let dial = ClientSettings {
            ca_file: ca.clone(),
            cert_file: cert.clone(),
            key_file: key.clone(),
            server: peers.clone(),
        }
        .config()?;
        Ok(Some(TyphaTls {
            client: server(clients.or(&admins))?,
            peer: server(peers.or(&admins))?,
            dial: Transport::Tls(dial),
        }))
    }
}
