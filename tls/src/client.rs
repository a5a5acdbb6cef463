//! The client side: the server's chain verified against a CA file (read
//! again when it changes) and its identity checked by common name or URI
//! SAN, as Calico's Felix checks Typha (`TyphaCN`, `TyphaURISAN`), never by
//! host name; the client's own certificate read again when it changes.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::server::ReloadingCert;
use crate::watch::Watched;
use crate::{Expected, TlsError};

/// Verifies a server's chain against a CA file and checks its identity.
#[derive(Debug)]
pub struct IdentityServerVerifier {
    anchors: Watched<Vec<TrustAnchor<'static>>>,
    expected: Expected,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl IdentityServerVerifier {
    pub fn new(ca_file: PathBuf, expected: Expected) -> Result<IdentityServerVerifier, TlsError> {
        let path = ca_file.clone();
        let anchors = Watched::new(vec![ca_file], move || {
            let roots = crate::pem::roots(&path)?;
            Ok(roots.roots)
        })?;
        Ok(IdentityServerVerifier {
            anchors,
            expected,
            provider: crate::provider(),
        })
    }
}

impl ServerCertVerifier for IdentityServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let anchors = self.anchors.get();
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(webpki_error)?;
        self.expected.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn webpki_error(e: webpki::Error) -> rustls::Error {
    use rustls::CertificateError as C;
    rustls::Error::InvalidCertificate(match e {
        webpki::Error::CertExpired { .. } => C::Expired,
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        other => C::Other(rustls::OtherError(Arc::new(other))),
    })
}

/// The client's own certificate, read again when its files change.
#[derive(Debug)]
struct ReloadingClientCert(ReloadingCert);

impl ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS client's files and the identities its server must carry.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server: Expected,
}

impl ClientSettings {
    /// The rustls configuration: TLS 1.2 or 1.3, HTTP/2 by ALPN, the
    /// client certificate presented.
    pub fn config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let verifier = IdentityServerVerifier::new(self.ca_file.clone(), self.server.clone())?;
        let cert = ReloadingCert::new(self.cert_file.clone(), self.key_file.clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(crate::VERSIONS)
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(ReloadingClientCert(cert)));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}
