//! One Sync stream per replica, followed for the whole run: each message
//! goes through [`StreamCheck`]; when the stream breaks (its replica was
//! killed, cut off or dropped it) it is opened again on the same replica,
//! resuming after the last revision it saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manul_client::Client;
use manul_proto::v1::sync_message::Message;
use manul_proto::v1::{EntryList, SyncRequest};
use prost::Message as _;

use crate::stream::StreamCheck;

/// A watcher's shared view.
#[derive(Debug, Default)]
pub struct Watched {
    pub check: Mutex<StreamCheck>,
    /// How many times the stream was opened.
    pub connections: std::sync::atomic::AtomicU64,
}

impl Watched {
    pub fn snapshot(&self) -> StreamCheck {
        self.check.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

fn entries(bytes: &[u8]) -> Vec<manul_proto::v1::Entry> {
    EntryList::decode(bytes)
        .map(|l| l.entries)
        .unwrap_or_default()
}

/// Follows replica `client`'s stream until `stop`.
pub async fn follow(client: Client, name: String, watched: Arc<Watched>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let resume = watched.check.lock().map(|c| c.revision).unwrap_or(0);
        let request = SyncRequest {
            node_name: name.clone(),
            client_version: "manul-chaos".into(),
            resume_revision: resume,
            accepted_compression: vec!["identity".into()],
        };
        let mut stream = match client.sync(request).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        watched.connections.fetch_add(1, Ordering::Relaxed);
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
            let message = match next {
                Err(_) => continue,
                Ok(Ok(Some(m))) => m,
                Ok(_) => break,
            };
            let Ok(mut check) = watched.check.lock() else {
                return;
            };
            match message.message {
                Some(Message::Hello(h)) => check.hello(&h, resume),
                Some(Message::Snapshot(s)) => {
                    check.snapshot_chunk(s.revision, s.index, s.count, &entries(&s.entries))
                }
                Some(Message::InSync(s)) => check.in_sync(s.revision),
                Some(Message::Deltas(d)) => {
                    check.deltas(d.first_revision, d.last_revision, &entries(&d.entries))
                }
                Some(Message::Ping(_) | Message::End(_)) | None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
