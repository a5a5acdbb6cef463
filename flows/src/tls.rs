//! The aggregator's TLS, with the flags Typha uses (`--ca-file`,
//! `--server-cert-file`, `--server-key-file`; `FLOWS_*` in the
//! environment). With the three files the gRPC listener speaks TLS 1.2 or
//! 1.3 only and requires a client certificate chained to the CA whose
//! common name or URI SAN is one of:
//! - Felix's (`--felix-cn`, default `manul-felix`; `--felix-uri-san`):
//!   they may push records (`FlowIngest`);
//! - a reader's (`--client-cn`, default `manul-admin`;
//!   `--client-uri-san`): they may query (`Flows`, `manulctl flows`).
//!
//! The files are read again when they change (`manul_tls::watch`). Without
//! them the listener is plaintext, which is for development, and the log
//! says so. `--ui-tls-cert`/`--ui-tls-key` serve the web UI over HTTPS (no
//! client certificate: a browser shows it).

use std::path::PathBuf;
use std::sync::Arc;

use manul_tls::https::HttpsSettings;
use manul_tls::identity::or_default;
use manul_tls::server::ServerFiles;
use manul_tls::{Expected, PeerIdentity, TlsError, dev};

/// The TLS flags of `manul-flows`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA bundle client certificates must chain to. With
    /// --server-cert-file and --server-key-file: TLS on the gRPC listener.
    #[arg(long, env = "FLOWS_CAFILE")]
    pub ca_file: Option<PathBuf>,
    /// The aggregator's certificate (chain), PEM.
    #[arg(long, env = "FLOWS_SERVERCERTFILE")]
    pub server_cert_file: Option<PathBuf>,
    /// Its private key, PEM.
    #[arg(long, env = "FLOWS_SERVERKEYFILE")]
    pub server_key_file: Option<PathBuf>,
    /// Common names that may push records (Felix), comma-separated.
    /// Default: manul-felix.
    #[arg(long, env = "FLOWS_FELIXCN", value_delimiter = ',')]
    pub felix_cn: Vec<String>,
    /// URI SANs that may push records (Felix), comma-separated.
    #[arg(long, env = "FLOWS_FELIXURISAN", value_delimiter = ',')]
    pub felix_uri_san: Vec<String>,
    /// Common names that may query records, comma-separated. Default:
    /// manul-admin.
    #[arg(long, env = "FLOWS_CLIENTCN", value_delimiter = ',')]
    pub client_cn: Vec<String>,
    /// URI SANs that may query records, comma-separated.
    #[arg(long, env = "FLOWS_CLIENTURISAN", value_delimiter = ',')]
    pub client_uri_san: Vec<String>,
    /// Serve the web UI over HTTPS with this certificate (chain), PEM; with
    /// --ui-tls-key.
    #[arg(long, env = "FLOWS_UITLSCERT")]
    pub ui_tls_cert: Option<PathBuf>,
    /// The UI certificate's private key, PEM.
    #[arg(long, env = "FLOWS_UITLSKEY")]
    pub ui_tls_key: Option<PathBuf>,
}

/// Who may call which service, from the verified client certificate.
#[derive(Debug, Clone)]
pub struct Gates {
    pub ingest: Expected,
    pub query: Expected,
}

impl Gates {
    /// Whether the leaf certificate of a call is admitted by `which`; no
    /// certificate is never admitted.
    pub fn admits(which: &Expected, leaf: Option<&rustls::pki_types::CertificateDer<'_>>) -> bool {
        leaf.and_then(PeerIdentity::of)
            .is_some_and(|id| which.admits(&id))
    }
}

/// The gRPC listener's TLS.
#[derive(Debug, Clone)]
pub struct FlowsTls {
    pub config: Arc<rustls::ServerConfig>,
    pub gates: Gates,
}

impl TlsArgs {
    /// The gRPC listener's configuration, or none for plaintext; an error
    /// for a partial or unusable one.
    pub fn build(&self) -> Result<Option<FlowsTls>, TlsError> {
        let Some(files) = ServerFiles::from_flags(
            self.ca_file.as_ref(),
            self.server_cert_file.as_ref(),
            self.server_key_file.as_ref(),
        )?
        else {
            return Ok(None);
        };
        // An explicit URI SAN alone replaces the default common name.
        let felix_cn = if self.felix_uri_san.is_empty() {
            or_default(&self.felix_cn, dev::FELIX_CN)
        } else {
            self.felix_cn.clone()
        };
        let client_cn = if self.client_uri_san.is_empty() {
            or_default(&self.client_cn, dev::ADMIN_CN)
        } else {
            self.client_cn.clone()
        };
        let ingest = Expected::new(
            felix_cn,
            self.felix_uri_san.clone(),
            "--felix-cn/--felix-uri-san",
        )?;
        let query = Expected::new(
            client_cn,
            self.client_uri_san.clone(),
            "--client-cn/--client-uri-san",
        )?;
        let config = files.server(ingest.or(&query)).config()?;
        Ok(Some(FlowsTls {
            config,
            gates: Gates { ingest, query },
        }))
    }

    /// The UI listener's HTTPS configuration, or none for HTTP.
    pub fn ui(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        HttpsSettings::from_pair(
            self.ui_tls_cert.clone(),
            self.ui_tls_key.clone(),
            ("--ui-tls-cert", "--ui-tls-key"),
        )?
        .map(|s| s.config())
        .transpose()
    }
}
