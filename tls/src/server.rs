//! The server side: a certificate that reloads, and a client-certificate
//! verifier that reloads its CA and checks the client's identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::watch::Watched;
use crate::{Expected, TlsError};

/// Loads a certificate chain and its key; refuses a key that is not the
/// certificate's.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = crate::pem::certificates(cert)?;
    let der = crate::pem::private_key(key)?;
    let signing = crate::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::BadKey {
            key: key.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    Ok(certified)
}

/// A certificate and key read from files, read again when they change.
#[derive(Debug)]
pub struct ReloadingCert(Watched<Arc<CertifiedKey>>);

impl ReloadingCert {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<ReloadingCert, TlsError> {
        let files = vec![cert.clone(), key.clone()];
        Ok(ReloadingCert(Watched::new(files, move || {
            certified_key(&cert, &key).map(Arc::new)
        })?))
    }

    /// The certificate for the files as they are now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        (*self.0.get()).clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Requires a client certificate chained to the CA in a file (read again
/// when it changes) and carrying one of the expected identities.
#[derive(Debug)]
pub struct IdentityClientVerifier {
    ca: Watched<Arc<dyn ClientCertVerifier>>,
    expected: Expected,
}

impl IdentityClientVerifier {
    pub fn new(ca_file: PathBuf, expected: Expected) -> Result<IdentityClientVerifier, TlsError> {
        let path = ca_file.clone();
        let ca = Watched::new(vec![ca_file], move || {
            let roots = crate::pem::roots(&path)?;
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider())
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })
        })?;
        Ok(IdentityClientVerifier { ca, expected })
    }
}

impl ClientCertVerifier for IdentityClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA may change under us; clients send the one certificate
        // they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .ca
            .get()
            .verify_client_cert(end_entity, intermediates, now)?;
        self.expected.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.ca.get().supported_verify_schemes()
    }
}

/// The three files a server's TLS reads: the CA its clients' certificates
/// chain to, and its own certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ServerFiles {
    /// All three (TLS), none (`None`: plaintext), or an error naming the
    /// flags (`--ca-file`, `--server-cert-file`, `--server-key-file`, as
    /// Typha and the flow aggregator call them) for a partial set.
    pub fn from_flags(
        ca_file: Option<&PathBuf>,
        cert_file: Option<&PathBuf>,
        key_file: Option<&PathBuf>,
    ) -> Result<Option<ServerFiles>, TlsError> {
        match (ca_file, cert_file, key_file) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(ServerFiles {
                ca_file: ca.clone(),
                cert_file: cert.clone(),
                key_file: key.clone(),
            })),
            _ => Err(TlsError::Incomplete(
                "--ca-file, --server-cert-file",
                "--server-key-file",
            )),
        }
    }

    /// The server's settings with these files, admitting `clients`.
    pub fn server(&self, clients: Expected) -> ServerSettings {
        ServerSettings {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: self.ca_file.clone(),
            clients,
        }
    }
}

/// A TLS server's files and the identities its clients must carry.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    pub clients: Expected,
}

impl ServerSettings {
    /// The rustls configuration: TLS 1.2 or 1.3, HTTP/2 by ALPN, a client
    /// certificate required.
    pub fn config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = IdentityClientVerifier::new(self.ca_file.clone(), self.clients.clone())?;
        let cert = ReloadingCert::new(self.cert_file.clone(), self.key_file.clone())?;
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(crate::VERSIONS)
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(cert));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}
