//! A development CA and the certificates a cluster needs, with `rcgen`.
//! Not for production: the CA key is written beside the certificates.
//!
//! Identities (what Typha's `--client-cn`/`--client-uri-san`, Felix's
//! `TyphaCN`/`TyphaURISAN` and the peer settings name):
//!
//! | file | common name | URI SAN | use |
//! |---|---|---|---|
//! | `typha.crt` | the Typha name (`manul-typha`) | `spiffe://manul/typha` | Typha's server certificate, and its client certificate towards other replicas |
//! | `felix-NODE.crt` | `manul-felix` | `spiffe://manul/node/NODE/felix` | Felix on NODE |
//! | `cni-NODE.crt` | `manul-cni` | `spiffe://manul/node/NODE/cni` | the CNI plugin on NODE |
//! | `admin.crt` | `manul-admin` | `spiffe://manul/admin` | `manulctl`, administrators |
//! | `flows.crt` | `manul-flows` | `spiffe://manul/flows` | the flow aggregator's server certificate |

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::TlsError;

/// The default Typha common name.
pub const TYPHA_CN: &str = "manul-typha";
pub const TYPHA_URI: &str = "spiffe://manul/typha";
pub const FELIX_CN: &str = "manul-felix";
pub const CNI_CN: &str = "manul-cni";
pub const ADMIN_CN: &str = "manul-admin";
pub const ADMIN_URI: &str = "spiffe://manul/admin";
/// The flow aggregator's (`manul-flows`) common name and URI SAN.
pub const FLOWS_CN: &str = "manul-flows";
pub const FLOWS_URI: &str = "spiffe://manul/flows";

/// A node component's URI SAN (`felix` or `cni`).
pub fn node_uri(node: &str, component: &str) -> String {
    format!("spiffe://manul/node/{node}/{component}")
}

/// What one issued certificate says.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    pub common_name: String,
    pub uri_sans: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Usable as a server certificate (TLS server auth).
    pub server: bool,
    /// Days it is valid from now.
    pub days: i64,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed development CA.
#[derive(Debug)]
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days.max(1));
}

impl DevCa {
    /// A fresh CA named `name`, valid for `days`.
    pub fn new(name: &str, days: i64) -> Result<DevCa, TlsError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let key_pem = key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(TlsError::Generate)?;
        Ok(DevCa { issuer, key_pem })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// A certificate for `leaf`, signed by this CA, with a fresh key.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, TlsError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.as_str());
        for dns in &leaf.dns_names {
            let name = dns.as_str().try_into().map_err(TlsError::Generate)?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for uri in &leaf.uri_sans {
            let name = uri.as_str().try_into().map_err(TlsError::Generate)?;
            params.subject_alt_names.push(SanType::URI(name));
        }
        for ip in &leaf.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if leaf.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, leaf.days);
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(TlsError::Generate)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to `path` through a temporary file and a rename (a
/// reader never sees half a file; the inode changes, so a watcher notices),
/// with `mode`.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents.as_bytes())?;
            f.sync_all()
        })
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes `STEM.crt` (0644) and `STEM.key` (0600) in `dir`; returns the
/// two paths.
pub fn write_pair(dir: &Path, stem: &str, issued: &Issued) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    write_atomic(&key, &issued.key_pem, 0o600)?;
    write_atomic(&cert, &issued.cert_pem, 0o644)?;
    Ok((cert, key))
}

/// What `manulctl certs dev` makes.
#[derive(Debug, Clone)]
pub struct DevSet {
    /// Names Typha is reached by (DNS SANs; addresses become IP SANs).
    pub typha_names: Vec<String>,
    pub typha_cn: String,
    pub nodes: Vec<String>,
    pub days: i64,
}

/// Creates a CA and every certificate of `set` in `dir` (created if
/// missing); returns the files written.
pub fn write_dev_set(dir: &Path, set: &DevSet) -> Result<Vec<PathBuf>, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = DevCa::new("Manul development CA", set.days)?;
    let mut written = Vec::new();
    write_atomic(&dir.join("ca.key"), &ca.key_pem(), 0o600)?;
    write_atomic(&dir.join("ca.crt"), &ca.cert_pem(), 0o644)?;
    written.extend([dir.join("ca.crt"), dir.join("ca.key")]);
    let (ips, dns_names): (Vec<_>, Vec<_>) = set
        .typha_names
        .iter()
        .partition(|n| n.parse::<IpAddr>().is_ok());
    let typha = Leaf {
        common_name: set.typha_cn.clone(),
        uri_sans: vec![TYPHA_URI.into()],
        dns_names: dns_names.into_iter().cloned().collect(),
        ips: ips.iter().filter_map(|n| n.parse().ok()).collect(),
        server: true,
        days: set.days,
    };
    let mut leaves = vec![("typha".to_string(), typha)];
    leaves.push((
        "admin".into(),
        Leaf {
            common_name: ADMIN_CN.into(),
            uri_sans: vec![ADMIN_URI.into()],
            days: set.days,
            ..Leaf::default()
        },
    ));
    leaves.push((
        "flows".into(),
        Leaf {
            common_name: FLOWS_CN.into(),
            uri_sans: vec![FLOWS_URI.into()],
            server: true,
            days: set.days,
            ..Leaf::default()
        },
    ));
    for node in &set.nodes {
        for (component, cn) in [("felix", FELIX_CN), ("cni", CNI_CN)] {
            leaves.push((
                format!("{component}-{node}"),
                Leaf {
                    common_name: cn.into(),
                    uri_sans: vec![node_uri(node, component)],
                    days: set.days,
                    ..Leaf::default()
                },
            ));
        }
    }
    for (stem, leaf) in &leaves {
        let (c, k) = write_pair(dir, stem, &ca.issue(leaf)?)?;
        written.extend([c, k]);
    }
    Ok(written)
}
