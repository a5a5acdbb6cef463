//! HTTPS for the metrics and health listeners: a server configuration
//! with a certificate that reloads and no client certificate (Prometheus
//! and kubelet probes verify the server, as any HTTPS client does), and an
//! [`axum::serve::Listener`] that hands axum authenticated connections
//! (handshakes concurrent and time-limited, [`crate::accept`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::TlsError;
use crate::server::ReloadingCert;

/// An HTTPS server's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl HttpsSettings {
    /// From optional flags: none when neither is set, an error when only
    /// one is (`names` are the two settings, for the error).
    pub fn from_pair(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        names: (&'static str, &'static str),
    ) -> Result<Option<HttpsSettings>, TlsError> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => Ok(Some(HttpsSettings {
                cert_file,
                key_file,
            })),
            _ => Err(TlsError::Incomplete(names.0, names.1)),
        }
    }

    /// The rustls configuration: TLS 1.2 or 1.3, HTTP/1.1, no client
    /// certificate asked for; the files are read again when they change.
    pub fn config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let cert = ReloadingCert::new(self.cert_file.clone(), self.key_file.clone())?;
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(crate::VERSIONS)
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(cert));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

type Accepted = Pin<Box<dyn Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send>>;

/// A TCP listener whose connections axum receives after a completed TLS
/// handshake; failed handshakes are logged and never reach axum.
pub struct HttpsListener {
    local: SocketAddr,
    accepted: Accepted,
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl HttpsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<HttpsListener> {
        let local = listener.local_addr()?;
        Ok(HttpsListener {
            local,
            accepted: Box::pin(crate::accept::incoming(listener, config)),
        })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.accepted.next().await {
                Some(Ok(stream)) => {
                    let peer = stream
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (stream, peer);
                }
                Some(Err(e)) => tracing::warn!("HTTPS accept failed: {e}"),
                // The acceptor ended: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Why [`get`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0:?} is not a host name or address")]
    Name(String),
    #[error("not an HTTP response: {0:?}")]
    Response(String),
}

/// A minimal HTTPS GET (HTTP/1.1, `Connection: close`) of `path` on
/// `addr`, verifying the server's certificate for `host` against the CA in
/// `ca_file`, as a scraper or probe would: the status code and the body.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    ca_file: &std::path::Path,
    path: &str,
) -> Result<(u16, String), GetError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let roots = crate::pem::roots(ca_file)?;
    let config = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(crate::VERSIONS)
        .map_err(|e| GetError::Tls(TlsError::Config(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| GetError::Name(host.to_string()))?;
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    // A server may close without close_notify once it has answered.
    if let Err(e) = tls.read_to_end(&mut raw).await
        && raw.is_empty()
    {
        return Err(e.into());
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| GetError::Response(text.chars().take(80).collect()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| GetError::Response(head.chars().take(80).collect()))?;
    Ok((status, body.to_string()))
}
