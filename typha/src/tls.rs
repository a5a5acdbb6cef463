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
//!
//! With TLS the verified certificate also gives the caller its role for
//! writes ([`crate::authz`]): `--admin-*` and `--peer-*` as above,
//! `--cni-*` (a node's CNI plugin: its node's endpoints and IPAM),
//! `--felix-*` (reads, and its own node's WireGuard key on its Node) and
//! `--read-only-*` (reads only). Those flags only map
//! identities to roles: which clients connect at all is still
//! `--client-cn`/`--client-uri-san` (and the administrators).
//!
//! `--metrics-tls-cert`/`--metrics-tls-key` (or `--metrics-tls-server-cert`,
//! the server certificate) serve `/metrics`, `/healthz` and `/readyz` over
//! HTTPS; scrapers verify the certificate against the CA, no client
//! certificate is asked for.

use std::path::PathBuf;
use std::sync::Arc;

use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;
use manul_tls::https::HttpsSettings;
use manul_tls::identity::or_default;
use manul_tls::server::ServerFiles;
use manul_tls::{Expected, TlsError, dev};

use crate::authz::roles::{Identities, RoleError, RoleMap, RoleSettings};

/// The default CNI and Felix URI SAN templates (the development
/// certificates' identities).
pub const CNI_URI_TEMPLATE: &str = "spiffe://manul/node/{node}/cni";
pub const FELIX_URI_TEMPLATE: &str = "spiffe://manul/node/{node}/felix";

/// Why Typha's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TyphaTlsError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("--metrics-tls-server-cert needs --server-cert-file and --server-key-file")]
    NoServerCert,
    #[error(
        "--metrics-tls-server-cert and --metrics-tls-cert/--metrics-tls-key exclude each other"
    )]
    TwoMetricsCerts,
}

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
    /// URI SANs of the CNI plugin, which writes its node's
    /// WorkloadEndpoints and IPAM blocks; `{node}` stands for the node (a
    /// value without it is a plugin identity shared by every node).
    /// Default: spiffe://manul/node/{node}/cni.
    #[arg(long, env = "TYPHA_CNIURISAN", value_delimiter = ',')]
    pub cni_uri_san: Vec<String>,
    /// Common names of the CNI plugin (the fallback when no URI SAN maps;
    /// `{node}` allowed). Default: none.
    #[arg(long, env = "TYPHA_CNICN", value_delimiter = ',')]
    pub cni_cn: Vec<String>,
    /// URI SANs of Felix (reads, and its own Node's WireGuard key). Default:
    /// spiffe://manul/node/{node}/felix.
    #[arg(long, env = "TYPHA_FELIXURISAN", value_delimiter = ',')]
    pub felix_uri_san: Vec<String>,
    /// Common names of Felix (reads, and its own Node's WireGuard key).
    /// Default: manul-felix.
    #[arg(long, env = "TYPHA_FELIXCN", value_delimiter = ',')]
    pub felix_cn: Vec<String>,
    /// URI SANs of read-only clients. Default: none (an admitted identity
    /// no role names reads only anyway).
    #[arg(long, env = "TYPHA_READONLYURISAN", value_delimiter = ',')]
    pub read_only_uri_san: Vec<String>,
    /// Common names of read-only clients. Default: none.
    #[arg(long, env = "TYPHA_READONLYCN", value_delimiter = ',')]
    pub read_only_cn: Vec<String>,
    /// Serve /metrics, /healthz and /readyz over HTTPS with this
    /// certificate (chain), PEM; with --metrics-tls-key.
    #[arg(long, env = "TYPHA_METRICSTLSCERT")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// The metrics certificate's private key, PEM.
    #[arg(long, env = "TYPHA_METRICSTLSKEY")]
    pub metrics_tls_key: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz over HTTPS with the server
    /// certificate (--server-cert-file, --server-key-file).
    #[arg(long, env = "TYPHA_METRICSTLSSERVERCERT")]
    pub metrics_tls_server_cert: bool,
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
    /// Which role each verified certificate has, for writes.
    pub roles: RoleMap,
}

impl TlsArgs {
    /// The configurations, or none for plaintext; an error for a partial
    /// or unusable configuration.
    pub fn build(&self) -> Result<Option<TyphaTls>, TyphaTlsError> {
        let Some(files) = ServerFiles::from_flags(
            self.ca_file.as_ref(),
            self.server_cert_file.as_ref(),
            self.server_key_file.as_ref(),
        )?
        else {
            return Ok(None);
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
        let roles = self.roles()?;
        let server = |admitted: Expected| files.server(admitted).config();
        let dial = ClientSettings {
            ca_file: files.ca_file.clone(),
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
            server: peers.clone(),
        }
        .config()?;
        Ok(Some(TyphaTls {
            client: server(clients.or(&admins))?,
            peer: server(peers.or(&admins))?,
            dial: Transport::Tls(dial),
            roles,
        }))
    }

    /// The role of each identity, the development certificates' values
    /// where a role's flags are unset.
    pub fn roles(&self) -> Result<RoleMap, RoleError> {
        let ids = |cns: Vec<String>, uris: Vec<String>| Identities {
            common_names: cns,
            uri_sans: uris,
        };
        RoleMap::new(&RoleSettings {
            admin: ids(
                or_default(&self.admin_cn, dev::ADMIN_CN),
                or_default(&self.admin_uri_san, dev::ADMIN_URI),
            ),
            replica: ids(
                or_default(&self.peer_cn, dev::TYPHA_CN),
                or_default(&self.peer_uri_san, dev::TYPHA_URI),
            ),
            cni: ids(
                self.cni_cn.clone(),
                or_default(&self.cni_uri_san, CNI_URI_TEMPLATE),
            ),
            felix: ids(
                or_default(&self.felix_cn, dev::FELIX_CN),
                or_default(&self.felix_uri_san, FELIX_URI_TEMPLATE),
            ),
            read_only: ids(self.read_only_cn.clone(), self.read_only_uri_san.clone()),
        })
    }

    /// The metrics listener's HTTPS configuration, or none for HTTP.
    pub fn metrics_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TyphaTlsError> {
        let own = HttpsSettings::from_pair(
            self.metrics_tls_cert.clone(),
            self.metrics_tls_key.clone(),
            ("--metrics-tls-cert", "--metrics-tls-key"),
        )?;
        let settings = match (own, self.metrics_tls_server_cert) {
            (Some(_), true) => return Err(TyphaTlsError::TwoMetricsCerts),
            (Some(s), false) => s,
            (None, true) => match (&self.server_cert_file, &self.server_key_file) {
                (Some(c), Some(k)) => HttpsSettings {
                    cert_file: c.clone(),
                    key_file: k.clone(),
                },
                _ => return Err(TyphaTlsError::NoServerCert),
            },
            (None, false) => return Ok(None),
        };
        Ok(Some(settings.config()?))
    }
}
