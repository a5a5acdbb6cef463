//! Handshakes between real rustls endpoints on loopback, certificates
//! made by [`crate::dev`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{ClientSettings, IdentityServerVerifier};
use crate::dev::{DevCa, Leaf, write_atomic, write_pair};
use crate::identity::PeerIdentity;
use crate::server::ServerSettings;
use crate::{Expected, accept};

/// A loopback listener on a free port below 32768.
async fn listener() -> TcpListener {
    let base = std::process::id() % 5_000;
    for k in 0..5_000u32 {
        let port = 21_000 + ((base + k * 7) % 10_000) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
    }
    panic!("no free loopback port");
}

struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA", 1).unwrap();
        write_atomic(&dir.path().join("ca.crt"), &ca.cert_pem(), 0o644).unwrap();
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn issue(&self, stem: &str, cn: &str, uri: &str, server: bool) -> (PathBuf, PathBuf) {
        self.issue_by(&self.ca, stem, cn, uri, server)
    }

    fn issue_by(
        &self,
        ca: &DevCa,
        stem: &str,
        cn: &str,
        uri: &str,
        server: bool,
    ) -> (PathBuf, PathBuf) {
        let leaf = Leaf {
            common_name: cn.into(),
            uri_sans: vec![uri.into()],
            server,
            days: 1,
            ..Leaf::default()
        };
        write_pair(self.dir.path(), stem, &ca.issue(&leaf).unwrap()).unwrap()
    }
}

fn expected(cns: &[&str], uris: &[&str]) -> Expected {
    Expected::new(
        cns.iter().map(|s| s.to_string()),
        uris.iter().map(|s| s.to_string()),
        "test",
    )
    .unwrap()
}

/// A TLS server that answers each authenticated client with its
/// identity.
async fn serve(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let mut incoming = Box::pin(accept::incoming(l, config));
    tokio::spawn(async move {
        while let Some(Ok(mut stream)) = incoming.next().await {
            let id = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(PeerIdentity::of)
                .map(|id| id.to_string())
                .unwrap_or_default();
            let _ = stream.write_all(format!("ok {id}").as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    addr
}

fn server_config(pki: &Pki, clients: Expected) -> Arc<rustls::ServerConfig> {
    pki.issue("typha", "manul-typha", "spiffe://manul/typha", true);
    ServerSettings {
        cert_file: pki.path("typha.crt"),
        key_file: pki.path("typha.key"),
        ca_file: pki.path("ca.crt"),
        clients,
    }
    .config()
    .unwrap()
}

fn client_config(
    pki: &Pki,
    cert: (PathBuf, PathBuf),
    server: Expected,
) -> Arc<rustls::ClientConfig> {
    ClientSettings {
        ca_file: pki.path("ca.crt"),
        cert_file: cert.0,
        key_file: cert.1,
        server,
    }
    .config()
    .unwrap()
}

/// What the server answered, or the error that ended the exchange.
async fn exchange(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(answer)
}

fn felix_expects_typha() -> Expected {
    expected(&["manul-typha"], &[])
}

#[tokio::test]
async fn the_right_client_identity_is_accepted_by_cn_or_uri_san() {
    let pki = Pki::new();
    let addr = serve(server_config(
        &pki,
        expected(&["manul-felix"], &["spiffe://manul/admin"]),
    ))
    .await;
    let felix = pki.issue(
        "felix",
        "manul-felix",
        "spiffe://manul/node/n1/felix",
        false,
    );
    let answer = exchange(addr, client_config(&pki, felix, felix_expects_typha())).await;
    assert_eq!(
        answer.unwrap(),
        "ok CN=manul-felix, URI=spiffe://manul/node/n1/felix"
    );
    // Admitted by its URI SAN alone.
    let admin = pki.issue("admin", "someone", "spiffe://manul/admin", false);
    let answer = exchange(addr, client_config(&pki, admin, felix_expects_typha())).await;
    assert_eq!(answer.unwrap(), "ok CN=someone, URI=spiffe://manul/admin");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let addr = serve(server_config(&pki, expected(&["manul-felix"], &[]))).await;
    let verifier = IdentityServerVerifier::new(pki.path("ca.crt"), felix_expects_typha()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(crate::VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let refused = exchange(addr, Arc::new(config)).await.unwrap_err();
    assert!(
        refused.contains("CertificateRequired") || refused.contains("certificate"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let addr = serve(server_config(&pki, expected(&["manul-felix"], &[]))).await;
    let other = DevCa::new("another CA", 1).unwrap();
    let forged = pki.issue_by(
        &other,
        "forged",
        "manul-felix",
        "spiffe://manul/node/n1/felix",
        false,
    );
    let refused = exchange(addr, client_config(&pki, forged, felix_expects_typha()))
        .await
        .unwrap_err();
    assert!(
        refused.contains("UnknownCA") || refused.contains("unknown"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_client_with_the_wrong_cn_or_uri_san_is_refused() {
    let pki = Pki::new();
    let addr = serve(server_config(
        &pki,
        expected(&["manul-felix"], &["spiffe://manul/admin"]),
    ))
    .await;
    let wrong_cn = pki.issue("cni", "manul-cni", "spiffe://manul/node/n1/cni", false);
    let refused = exchange(addr, client_config(&pki, wrong_cn, felix_expects_typha()))
        .await
        .unwrap_err();
    assert!(refused.contains("CertificateUnknown"), "{refused}");
    // Only URI SANs configured: a matching CN does not help.
    let addr = serve(server_config(
        &pki,
        expected(&[], &["spiffe://manul/admin"]),
    ))
    .await;
    let wrong_uri = pki.issue("felix", "manul-felix", "spiffe://manul/adminx", false);
    assert!(
        exchange(addr, client_config(&pki, wrong_uri, felix_expects_typha()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_client_refuses_a_server_with_another_name_or_from_another_ca() {
    let pki = Pki::new();
    let addr = serve(server_config(&pki, expected(&["manul-felix"], &[]))).await;
    let felix = pki.issue(
        "felix",
        "manul-felix",
        "spiffe://manul/node/n1/felix",
        false,
    );
    let wrong_name = expected(&["other-typha"], &["spiffe://manul/other"]);
    let refused = exchange(addr, client_config(&pki, felix.clone(), wrong_name))
        .await
        .unwrap_err();
    assert!(
        refused.contains(r#"expected: "CN=other-typha or URI=spiffe://manul/other""#),
        "{refused}"
    );
    // The server's URI SAN alone is enough.
    let by_uri = expected(&[], &["spiffe://manul/typha"]);
    assert!(
        exchange(addr, client_config(&pki, felix.clone(), by_uri))
            .await
            .is_ok()
    );
    // A server whose certificate another CA signed, with the right name.
    let other = DevCa::new("another CA", 1).unwrap();
    let (cert, key) = pki.issue_by(
        &other,
        "impostor",
        "manul-typha",
        "spiffe://manul/typha",
        true,
    );
    let impostor = ServerSettings {
        cert_file: cert,
        key_file: key,
        ca_file: pki.path("ca.crt"),
        clients: expected(&["manul-felix"], &[]),
    };
    let addr = serve(impostor.config().unwrap()).await;
    let refused = exchange(addr, client_config(&pki, felix, felix_expects_typha()))
        .await
        .unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}

#[test]
fn only_tls_1_2_and_1_3_are_configured_and_an_identity_is_required() {
    let versions: Vec<_> = crate::VERSIONS.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        [
            rustls::ProtocolVersion::TLSv1_3,
            rustls::ProtocolVersion::TLSv1_2
        ]
    );
    let none = Expected::new(Vec::new(), vec![" ".to_string()], "TyphaCN/TyphaURISAN");
    assert!(matches!(none, Err(crate::TlsError::NoIdentity { .. })));
}

/// A TLS 1.1 ClientHello (no extensions) gets a fatal protocol_version
/// alert; a client limited to TLS 1.2 is served.
#[tokio::test]
async fn tls_1_1_is_refused_and_tls_1_2_accepted() {
    let pki = Pki::new();
    let addr = serve(server_config(&pki, expected(&["manul-felix"], &[]))).await;
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend([7u8; 32]); // random
    hello.push(0); // session id
    hello.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x09]); // ECDHE-ECDSA AES-GCM and AES-CBC
    hello.extend([0x01, 0x00]); // null compression
    // Extensions a modern client sends, so that only the version is at
    // fault: signature_algorithms (ECDSA P-256 SHA-256), supported_groups
    // (x25519, P-256), ec_point_formats (uncompressed).
    let extensions: [u8; 24] = [
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, //
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, //
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,
    ];
    hello.extend([0x00, extensions.len() as u8]);
    hello.extend(extensions);
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(&hello);
    let mut record = vec![0x16, 0x03, 0x02, 0x00, handshake.len() as u8];
    record.extend(&handshake);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply).await;
    // An alert record: level fatal (2), description protocol_version (70).
    assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
    assert_eq!(&reply[5..7], &[2, 70], "{reply:?}");

    let felix = pki.issue(
        "felix",
        "manul-felix",
        "spiffe://manul/node/n1/felix",
        false,
    );
    let verifier = IdentityServerVerifier::new(pki.path("ca.crt"), felix_expects_typha()).unwrap();
    let cert = crate::server::ReloadingCert::new(felix.0, felix.1).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![cert.current().cert[0].clone()], {
            rustls_pki_types::pem::PemObject::from_pem_file(pki.path("felix.key")).unwrap()
        })
        .unwrap();
    assert!(
        exchange(addr, Arc::new(config))
            .await
            .unwrap()
            .starts_with("ok CN=manul-felix")
    );
}

/// The leaf certificate the server at `addr` presents.
async fn served_cert(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn file_cert(path: &Path) -> Vec<u8> {
    crate::pem::certificates(path).unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_rotated_server_certificate_is_served_to_new_connections_without_a_restart() {
    let pki = Pki::new();
    let addr = serve(server_config(&pki, expected(&["manul-felix"], &[]))).await;
    let felix = pki.issue(
        "felix",
        "manul-felix",
        "spiffe://manul/node/n1/felix",
        false,
    );
    let client = client_config(&pki, felix, felix_expects_typha());
    let first = served_cert(addr, client.clone()).await;
    assert_eq!(first, file_cert(&pki.path("typha.crt")));

    // Rotation: a new key and certificate written over the old files.
    pki.issue("typha", "manul-typha", "spiffe://manul/typha", true);
    let second = served_cert(addr, client.clone()).await;
    assert_ne!(second, first);
    assert_eq!(second, file_cert(&pki.path("typha.crt")));

    // A certificate written without its key is refused; the last good
    // pair stays in use.
    let other = pki.ca.issue(&Leaf {
        common_name: "manul-typha".into(),
        server: true,
        days: 1,
        ..Leaf::default()
    });
    write_atomic(&pki.path("typha.crt"), &other.unwrap().cert_pem, 0o644).unwrap();
    assert_eq!(served_cert(addr, client).await, second);
}

#[tokio::test]
async fn metrics_are_scraped_over_https_with_the_ca_only() {
    let pki = Pki::new();
    let leaf = Leaf {
        common_name: "manul-typha".into(),
        ips: vec!["127.0.0.1".parse().unwrap()],
        server: true,
        days: 1,
        ..Leaf::default()
    };
    let (cert_file, key_file) =
        write_pair(pki.dir.path(), "metrics", &pki.ca.issue(&leaf).unwrap()).unwrap();
    let settings = crate::https::HttpsSettings::from_pair(
        Some(cert_file),
        Some(key_file),
        ("--metrics-tls-cert", "--metrics-tls-key"),
    )
    .unwrap()
    .unwrap();
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let https = crate::https::HttpsListener::new(l, settings.config().unwrap()).unwrap();
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { "up 1\n" }));
    tokio::spawn(async move { axum::serve(https, app).await });

    let (status, body) = crate::https::get(addr, "127.0.0.1", &pki.path("ca.crt"), "/metrics")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "up 1\n"));

    // A scraper that trusts another CA refuses the certificate.
    let other = DevCa::new("other CA", 1).unwrap();
    write_atomic(&pki.path("other.crt"), &other.cert_pem(), 0o644).unwrap();
    let refused = crate::https::get(addr, "127.0.0.1", &pki.path("other.crt"), "/metrics").await;
    assert!(refused.is_err(), "{refused:?}");
    // Plain HTTP gets no answer.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("up 1"));

    // Half a pair is refused.
    let half = crate::https::HttpsSettings::from_pair(
        Some(pki.path("metrics.crt")),
        None,
        ("--metrics-tls-cert", "--metrics-tls-key"),
    );
    assert!(matches!(half, Err(crate::TlsError::Incomplete(..))));
}

#[test]
fn server_files_are_all_three_or_none_and_unset_identities_take_the_default() {
    use crate::server::ServerFiles;
    let (ca, cert, key) = (
        PathBuf::from("ca.crt"),
        PathBuf::from("s.crt"),
        PathBuf::from("s.key"),
    );
    assert_eq!(ServerFiles::from_flags(None, None, None).unwrap(), None);
    let all = ServerFiles::from_flags(Some(&ca), Some(&cert), Some(&key))
        .unwrap()
        .unwrap();
    assert_eq!(
        (all.ca_file, all.cert_file, all.key_file),
        (ca.clone(), cert.clone(), key)
    );
    for partial in [
        ServerFiles::from_flags(Some(&ca), None, None),
        ServerFiles::from_flags(None, Some(&cert), None),
        ServerFiles::from_flags(Some(&ca), Some(&cert), None),
    ] {
        let e = partial.unwrap_err();
        assert!(matches!(e, crate::TlsError::Incomplete(..)), "{e}");
        assert_eq!(
            e.to_string(),
            "--ca-file, --server-cert-file and --server-key-file must be set together"
        );
    }

    use crate::identity::or_default;
    assert_eq!(or_default(&[], "manul-admin"), ["manul-admin"]);
    assert_eq!(or_default(&[" ".into()], "manul-admin"), ["manul-admin"]);
    assert_eq!(or_default(&["ops".into()], "manul-admin"), ["ops"]);
}
