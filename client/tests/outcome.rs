//! A write whose connection drops after it was sent: a proxy in front of a
//! real single-node Typha passes the request on and then cuts the
//! connection instead of passing the answer back. The client reports the
//! outcome as unknown and does not send the write again (which here would
//! fail on a conflict with itself); reading the key back shows it was
//! committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use manul_client::{Client, ClientConfig};
use manul_model::{Kind, ResourceKey};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Proxies each connection to `upstream`; while `cut` is set, answers stop
/// at the first request bytes after it was set, and the connection is
/// closed shortly after (the request still reaches Typha).
async fn proxy(listener: TcpListener, upstream: String, cut: Arc<AtomicBool>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let server = TcpStream::connect(&upstream).await.unwrap();
        let cut = cut.clone();
        tokio::spawn(async move {
            let (mut cr, cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let answers_stopped = Arc::new(AtomicBool::new(false));
            let close_client = Arc::new(tokio::sync::Notify::new());
            let (stopped, close) = (answers_stopped.clone(), close_client.clone());
            // Typha's side stays open throughout: it sees a client that
            // went quiet, not one that went away.
            tokio::spawn(async move {
                let mut cw = Some(cw);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    tokio::select! {
                        read = sr.read(&mut buf) => {
                            let Ok(n) = read else { return };
                            if n == 0 {
                                return;
                            }
                            if stopped.load(Ordering::SeqCst) {
                                continue;
                            }
                            if let Some(w) = cw.as_mut()
                                && w.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                        () = close.notified() => cw = None,
                    }
                }
            });
            let mut buf = vec![0u8; 16 * 1024];
            let mut deadline = None;
            loop {
                let read = match deadline {
                    // Let the whole request through, then drop the client.
                    Some(at) => match tokio::time::timeout_at(at, cr.read(&mut buf)).await {
                        Ok(read) => read,
                        Err(_) => break,
                    },
                    None => cr.read(&mut buf).await,
                };
                let Ok(n) = read else { break };
                if n == 0 {
                    break;
                }
                if deadline.is_none() && cut.load(Ordering::SeqCst) {
                    answers_stopped.store(true, Ordering::SeqCst);
                    deadline = Some(tokio::time::Instant::now() + Duration::from_millis(300));
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            close_client.notify_one();
            drop(cr);
            // Hold Typha's side open a while longer.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(sw);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_is_reported_unknown_and_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (typha, upstream) = common::typha(dir.path()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cut = Arc::new(AtomicBool::new(false));
    tokio::spawn(proxy(listener, upstream.clone(), cut.clone()));

    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let c = Client::connect_with(&[addr.as_str()], config)
        .await
        .unwrap();
    let set = common::resource(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: dropped\nspec:\n  nets: [10.9.0.0/16]\n",
    );
    cut.store(true, Ordering::SeqCst);
    let e = c.apply_if(&set, 0).await.unwrap_err();
    cut.store(false, Ordering::SeqCst);
    assert!(e.is_outcome_unknown(), "{e}");
    let text = e.to_string();
    assert!(text.contains("outcome is unknown"), "{text}");
    assert!(text.contains("read the keys back"), "{text}");

    // It was committed: a retry would have been refused as a conflict.
    let direct = Client::connect(&[upstream.as_str()]).await.unwrap();
    let key = ResourceKey {
        kind: Kind::GlobalNetworkSet,
        namespace: None,
        name: "dropped".into(),
    };
    let (stored, _) = direct
        .get(&key)
        .await
        .unwrap()
        .expect("the write was committed");
    assert_eq!(stored, set);
    // Reads through the same client still work.
    assert!(c.get(&key).await.unwrap().is_some());
    typha.shutdown().await;
}
