//! Whose certificate it is: the leaf's common name and URI SANs, and the
//! check against the configured identities (Calico's rule: the common name
//! equals one of the configured names, or one of the URI SANs equals one of
//! the configured URIs).

use rustls_pki_types::CertificateDer;

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    pub common_name: Option<String>,
    pub uri_sans: Vec<String>,
}

impl PeerIdentity {
    /// Reads the subject's common name and the URI SANs of a DER
    /// certificate; `None` when it does not parse.
    pub fn of(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let common_name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut uri_sans = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    uri_sans.push((*uri).to_string());
                }
            }
        }
        Some(PeerIdentity {
            common_name,
            uri_sans,
        })
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.common_name {
            Some(cn) => write!(f, "CN={cn}")?,
            None => f.write_str("no CN")?,
        }
        for uri in &self.uri_sans {
            write!(f, ", URI={uri}")?;
        }
        Ok(())
    }
}

/// An identity setting's values, or `default` alone when none is set
/// (every value empty or blank): the development certificates' identity
/// stands in for an unset flag.
pub fn or_default(values: &[String], default: &str) -> Vec<String> {
    if values.iter().all(|v| v.trim().is_empty()) {
        vec![default.to_string()]
    } else {
        values.to_vec()
    }
}

/// The identities a peer's certificate must carry one of. Never empty:
/// [`Expected::new`] refuses a configuration that names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    common_names: Vec<String>,
    uri_sans: Vec<String>,
}

impl Expected {
    /// From configured values (empty strings are unset); `setting` names
    /// the configuration in the error when nothing is set.
    pub fn new(
        common_names: impl IntoIterator<Item = String>,
        uri_sans: impl IntoIterator<Item = String>,
        setting: &'static str,
    ) -> Result<Expected, crate::TlsError> {
        let keep = |v: String| {
            let t = v.trim().to_string();
            (!t.is_empty()).then_some(t)
        };
        let common_names: Vec<String> = common_names.into_iter().filter_map(keep).collect();
        let uri_sans: Vec<String> = uri_sans.into_iter().filter_map(keep).collect();
        if common_names.is_empty() && uri_sans.is_empty() {
            return Err(crate::TlsError::NoIdentity { setting });
        }
        Ok(Expected {
            common_names,
            uri_sans,
        })
    }

    /// Either's identities.
    pub fn or(&self, other: &Expected) -> Expected {
        let mut out = self.clone();
        out.common_names.extend(other.common_names.iter().cloned());
        out.uri_sans.extend(other.uri_sans.iter().cloned());
        out
    }

    /// Whether `id` carries one of the expected identities.
    pub fn admits(&self, id: &PeerIdentity) -> bool {
        id.common_name
            .as_ref()
            .is_some_and(|cn| self.common_names.iter().any(|c| c == cn))
            || id
                .uri_sans
                .iter()
                .any(|u| self.uri_sans.iter().any(|e| e == u))
    }

    /// The leaf `cert` checked: its identity, or an error naming what it
    /// carries and what was expected.
    pub fn check(&self, cert: &CertificateDer<'_>) -> Result<PeerIdentity, rustls::Error> {
        let id = PeerIdentity::of(cert).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if self.admits(&id) {
            return Ok(id);
        }
        tracing::warn!(presented = %id, expected = %self, "certificate identity refused");
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(std::sync::Arc::new(
                WrongIdentity {
                    presented: id.to_string(),
                    expected: self.to_string(),
                },
            ))),
        ))
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self
            .common_names
            .iter()
            .map(|c| format!("CN={c}"))
            .chain(self.uri_sans.iter().map(|u| format!("URI={u}")))
            .collect();
        f.write_str(&all.join(" or "))
    }
}

/// A certificate whose identity is not one of the expected ones.
#[derive(Debug, thiserror::Error)]
#[error("certificate identity {presented} is not {expected}")]
pub struct WrongIdentity {
    pub presented: String,
    pub expected: String,
}
