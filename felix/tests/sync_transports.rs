//! Felix's sync client against a real (embedded) Typha over loopback, on
//! each transport: gRPC on the client listener and the lean framed-TCP
//! transport on the sync listener, in plaintext and with TLS and client
//! certificates. The snapshot, a delta, a connection dropped in the
//! middle (a loopback relay cut) and the resume from the last revision
//! without a snapshot, then another delta; with TLS, a certificate Typha
//! does not admit gets no stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manul_felix::sync::{SyncConfig, SyncEvent, SyncTransport, Syncer};
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::{ApplyItem, ApplyRequest, SyncRequest};
use manul_tls::Expected;
use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;
use manul_typha::server::{Running, TyphaConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Loopback ports below 32768 that nothing listens on now.
fn low_ports(n: usize, salt: u32) -> Vec<u16> {
    let base = (std::process::id() + salt * 997) % 4_000;
    let mut out = Vec::new();
    let mut k = 0u32;
    while out.len() < n {
        let p = 22_000 + ((base + k * 13) % 9_000) as u16;
        k += 1;
        if !out.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            out.push(p);
        }
    }
    out
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A loopback relay whose connections can all be cut at once.
struct Relay {
    accept: JoinHandle<()>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(port: u16, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(local(port)).await.unwrap();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(link);
            }
        });
        Relay { accept, links }
    }

    /// Drops every open connection (both ends see it close).
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

fn transport(certs: &Path, who: &str) -> Transport {
    let settings = ClientSettings {
        ca_file: certs.join("ca.crt"),
        cert_file: certs.join(format!("{who}.crt")),
        key_file: certs.join(format!("{who}.key")),
        server: Expected::new(["manul-typha".to_string()], [], "test").unwrap(),
    };
    Transport::Tls(settings.config().unwrap())
}

/// A single-replica Typha with its sync listener, TLS when `certs`.
async fn typha(data: &Path, certs: Option<&Path>, salt: u32) -> Running {
    let ports = low_ports(3, salt);
    let mut config = TyphaConfig::single(data.to_path_buf(), local(ports[0]));
    config.peer_listen = local(ports[1]);
    config.peers = [(1, local(ports[1]).to_string())].into();
    config.sync_listen = Some(local(ports[2]));
    if let Some(certs) = certs {
        let args = manul_typha::tls::TlsArgs {
            ca_file: Some(certs.join("ca.crt")),
            server_cert_file: Some(certs.join("typha.crt")),
            server_key_file: Some(certs.join("typha.key")),
            client_cn: vec!["manul-felix".into()],
            ..Default::default()
        };
        config.tls = args.build().unwrap();
    }
    let running = manul_typha::server::start(config).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while running.node.status().leader_id != running.node.id() {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A replica serves Sync once it has known a leader and applied what
    // it knows committed (typha's serving gate); a client opening a
    // stream before that is refused, as Felix is told to retry.
    while !running.fanout.serving() {
        assert!(tokio::time::Instant::now() < deadline, "never serving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
}

async fn apply_tier(addr: SocketAddr, t: &Transport, name: &str) -> u64 {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = t.connect(endpoint).await.unwrap();
    let doc = format!("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: {name}\n");
    ResourcesClient::new(channel)
        .apply(ApplyRequest {
            items: vec![ApplyItem {
                document: doc.into_bytes().into(),
                origin: "test".into(),
                expected_revision: None,
            }],
            deletes: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revision
}

async fn next(rx: &mut mpsc::Receiver<SyncEvent>) -> SyncEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an event within 20 s")
        .expect("the sync client runs")
}

fn names(event: &SyncEvent) -> Vec<String> {
    match event {
        SyncEvent::Updates { updates, .. } => updates.iter().map(|u| u.key.name.clone()).collect(),
        _ => Vec::new(),
    }
}

/// The snapshot, a delta, a cut and a resume without a snapshot, a delta.
async fn follows_resumes_and_goes_on(tcp: bool, tls: bool, salt: u32) {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    if tls {
        manul_tls::dev::write_dev_set(
            &certs,
            &manul_tls::dev::DevSet {
                typha_names: vec!["127.0.0.1".into()],
                typha_cn: "manul-typha".into(),
                nodes: vec!["n1".into()],
                days: 1,
            },
        )
        .unwrap();
    }
    let running = typha(&dir.path().join("data"), tls.then_some(&*certs), salt).await;
    let (admin, felix) = if tls {
        (transport(&certs, "admin"), transport(&certs, "felix-n1"))
    } else {
        (Transport::Plain, Transport::Plain)
    };
    let first = apply_tier(running.local_addr, &admin, "a").await;

    let relay_port = low_ports(1, salt + 7)[0];
    let target = if tcp {
        running.sync_addr.unwrap()
    } else {
        running.local_addr
    };
    let relay = Relay::start(relay_port, target).await;
    let (typhas, carried) = if tcp {
        (
            vec!["127.0.0.1:1".to_string()],
            SyncTransport::Tcp { port: relay_port },
        )
    } else {
        (vec![format!("127.0.0.1:{relay_port}")], SyncTransport::Grpc)
    };
    let syncer = Syncer::new(SyncConfig {
        typhas,
        node: "n1".into(),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        transport: carried,
    })
    .with_transport(felix.clone());
    let (tx, mut rx) = mpsc::channel(64);
    let client = tokio::spawn(syncer.run(tx));

    // The snapshot, then in sync.
    let mut seen = Vec::new();
    let in_sync = loop {
        match next(&mut rx).await {
            SyncEvent::InSync { revision } => break revision,
            SyncEvent::Disconnected { error } => panic!("disconnected: {error}"),
            e => seen.extend(names(&e)),
        }
    };
    assert!(seen.contains(&"a".to_string()), "{seen:?}");
    assert!(in_sync >= first);

    // A delta.
    let second = apply_tier(running.local_addr, &admin, "b").await;
    let event = next(&mut rx).await;
    assert_eq!(names(&event), ["b"], "{event:?}");
    assert!(matches!(event, SyncEvent::Updates { revision, .. } if revision == second));

    // The connection drops; the client resumes from `second`: no
    // snapshot is replayed, in sync again at once.
    relay.cut();
    let event = next(&mut rx).await;
    assert!(matches!(event, SyncEvent::Disconnected { .. }), "{event:?}");
    let event = next(&mut rx).await;
    assert!(
        matches!(event, SyncEvent::InSync { revision } if revision == second),
        "resumed without a snapshot: {event:?}"
    );
    let third = apply_tier(running.local_addr, &admin, "c").await;
    let event = next(&mut rx).await;
    assert_eq!(names(&event), ["c"], "{event:?}");
    assert!(matches!(event, SyncEvent::Updates { revision, .. } if revision == third));

    // The dropped stream was let go: one stream is open.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.fanout.connections() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} streams open after the resume",
            running.fanout.connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    if tls {
        // A CNI plugin's certificate is not a Sync client Typha admits.
        let cni = transport(&certs, "cni-n1");
        let refused = refused_stream(&running, tcp, &cni).await;
        assert!(refused, "a certificate Typha does not admit got a stream");
    }
    client.abort();
    drop(relay);
    running.shutdown_now().await;
}

/// Whether a client presenting `t`'s certificate is refused a stream.
async fn refused_stream(running: &Running, tcp: bool, t: &Transport) -> bool {
    let request = SyncRequest {
        node_name: "n1".into(),
        client_version: manul_proto::PROTOCOL_VERSION.into(),
        resume_revision: 0,
        accepted_compression: Vec::new(),
    };
    if tcp {
        let addr = running.sync_addr.unwrap();
        let Ok(io) = t
            .connect_stream("127.0.0.1", addr.port(), manul_proto::frame::ALPN)
            .await
        else {
            return true;
        };
        let Ok(mut stream) = manul_proto::frame::open(io, &request, 1 << 20).await else {
            return true;
        };
        let got = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        return matches!(got, Ok(Err(_) | Ok(None)));
    }
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.local_addr)).unwrap();
    let Ok(channel) = t.connect(endpoint).await else {
        return true;
    };
    manul_proto::v1::sync_client::SyncClient::new(channel)
        .sync(request)
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_follows_and_resumes_after_a_dropped_connection() {
    follows_resumes_and_goes_on(false, false, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_tcp_follows_and_resumes_after_a_dropped_connection() {
    follows_resumes_and_goes_on(true, false, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_client_certificates() {
    follows_resumes_and_goes_on(false, true, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_tcp_over_tls_with_client_certificates() {
    follows_resumes_and_goes_on(true, true, 4).await;
}
