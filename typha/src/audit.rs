//! The audit trail of writes: every apply and delete a replica is asked to
//! make, allowed or refused, as JSON lines (`typha --audit-log PATH`, like
//! the Kubernetes API server's audit log), and the metrics of
//! authorization.
//!
//! One line per key of a request: `time` (RFC 3339, UTC), `identity`,
//! `role`, `verb` (`apply`/`delete`), `kind`, `namespace`, `name`,
//! `outcome` (`applied`, `denied`: refused by authorization, `failed`:
//! invalid, conflicting, owned by a watcher or not committed), `reason`
//! (for `denied` and `failed`), `revision` (for `applied`). A request
//! refused before its keys are known (it does not parse) is one line
//! without kind and name.
//!
//! Records go through a bounded queue ([`QUEUE`] records) to one task that
//! appends them to the file, off the request path: a write never waits
//! for the disk. When the queue is full the record is dropped and counted
//! (`typha_audit_dropped_total{reason="queue_full"}`), as is a record the
//! task could not write (`reason="write_error"`, also logged). The file is
//! opened for appending (created `0600`); rotate it by renaming it and
//! restarting, or with `copytruncate`.
//!
//! Writes a replica forwards to the leader are recorded by the replica the
//! client called (with the client's identity), not again by the leader.

use std::path::{Path, PathBuf};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

/// Records the queue holds before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Labels of `typha_authz_refusals_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub role: &'static str,
    pub verb: &'static str,
}

/// Labels of `typha_audit_dropped_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full` or `write_error`.
    pub reason: &'static str,
}

/// Authorization's metrics; clones share them.
#[derive(Debug, Clone, Default)]
pub struct AuthzMetrics {
    pub refusals: Family<RefusalLabels, Counter>,
    pub audit_dropped: Family<DropLabels, Counter>,
}

impl AuthzMetrics {
    pub fn register(registry: &mut Registry) -> AuthzMetrics {
        let m = AuthzMetrics::default();
        registry.register(
            "typha_authz_refusals",
            "Write requests refused by authorization, by the caller's role and the verb",
            m.refusals.clone(),
        );
        registry.register(
            "typha_audit_dropped",
            "Audit records not written: the queue was full, or the file could not be written",
            m.audit_dropped.clone(),
        );
        m
    }
}

/// One audit line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub time: String,
    pub identity: String,
    pub role: &'static str,
    pub verb: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// The current time as the audit log writes it.
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The origin a write carries into its Raft entry: who, in what role,
/// which verb, stamped now on this replica's clock.
pub fn stamp(identity: &str, role: &str, verb: &str) -> manul_proto::v1::Origin {
    let unix_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    manul_proto::v1::Origin {
        identity: identity.to_string(),
        role: role.to_string(),
        verb: verb.to_string(),
        unix_millis,
    }
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Where records go; cloning shares the queue. Without a file, records
/// are discarded (the metrics are kept either way).
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Record>>,
    pub metrics: AuthzMetrics,
}

impl Audit {
    /// An audit trail that keeps no records.
    pub fn disabled(metrics: AuthzMetrics) -> Audit {
        Audit { tx: None, metrics }
    }

    /// Opens `path` for appending and starts the task that writes to it.
    pub async fn open(path: &Path, metrics: AuthzMetrics) -> Result<Audit, AuditError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .await
            .map_err(|source| AuditError {
                path: path.to_path_buf(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_records(
            rx,
            tokio::io::BufWriter::new(file),
            path.to_path_buf(),
            metrics.clone(),
        ));
        Ok(Audit {
            tx: Some(tx),
            metrics,
        })
    }

    /// Queues `record`; never waits: a full queue drops it (counted).
    pub fn record(&self, record: Record) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(record).is_err() {
            self.metrics
                .audit_dropped
                .get_or_create(&DropLabels {
                    reason: "queue_full",
                })
                .inc();
        }
    }
}

/// Appends every queued record, flushing whenever the queue is empty.
async fn write_records(
    mut rx: mpsc::Receiver<Record>,
    mut out: tokio::io::BufWriter<tokio::fs::File>,
    path: PathBuf,
    metrics: AuthzMetrics,
) {
    let failed = |e: &dyn std::fmt::Display, n: u64| {
        tracing::error!(path = %path.display(), "cannot write the audit log: {e}");
        metrics
            .audit_dropped
            .get_or_create(&DropLabels {
                reason: "write_error",
            })
            .inc_by(n);
    };
    let mut pending = 0u64;
    while let Some(record) = rx.recv().await {
        let mut line = match serde_json::to_vec(&record) {
            Ok(l) => l,
            Err(e) => {
                failed(&e, 1);
                continue;
            }
        };
        line.push(b'\n');
        if let Err(e) = out.write_all(&line).await {
            failed(&e, 1);
            continue;
        }
        pending += 1;
        if rx.is_empty() {
            if let Err(e) = out.flush().await {
                failed(&e, pending);
            }
            pending = 0;
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(name: &str) -> Record {
        Record {
            time: now(),
            identity: "spiffe://manul/admin".into(),
            role: "admin",
            verb: "apply",
            kind: "Tier".into(),
            namespace: String::new(),
            name: name.into(),
            outcome: "applied",
            reason: String::new(),
            revision: Some(7),
        }
    }

    #[tokio::test]
    async fn records_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let audit = Audit::open(&path, AuthzMetrics::default()).await.unwrap();
        audit.record(record("a"));
        audit.record(record("b"));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() == 3 || tokio::time::Instant::now() > deadline {
                break lines;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(lines.len(), 3, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(v["name"], "b");
        assert_eq!(v["revision"], 7);
        assert_eq!(v["outcome"], "applied");
        assert!(v.get("namespace").is_none() && v.get("reason").is_none());
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let made = dir.path().join("new.log");
            let _ = Audit::open(&made, AuthzMetrics::default()).await.unwrap();
            let mode = std::fs::metadata(&made).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = AuthzMetrics::default();
        let (tx, _rx) = mpsc::channel(2);
        let audit = Audit {
            tx: Some(tx),
            metrics: metrics.clone(),
        };
        for i in 0..5 {
            audit.record(record(&i.to_string()));
        }
        let dropped = metrics
            .audit_dropped
            .get_or_create(&DropLabels {
                reason: "queue_full",
            })
            .get();
        assert_eq!(dropped, 3);
    }
}
