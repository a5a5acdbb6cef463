//! Endpoint status files: once the dataplane has programmed a workload
//! endpoint, Felix writes `DIR/NAMESPACE.NAME.json`; the CNI plugin waits
//! for it (Calico's endpoint-status directory and `policy_setup_timeout`).
//!
//! A file is written atomically (a temporary file renamed over it), so a
//! reader never sees half of one. Namespaces cannot contain `.`, so the
//! file name is unambiguous.

use std::io;
use std::path::{Path, PathBuf};

use manul_dataplane_api::{EndpointId, WorkloadEndpoint};
use serde::{Deserialize, Serialize};

/// What a status file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub namespace: String,
    pub name: String,
    pub interface: String,
    /// The datastore revision the programmed state reflects: at least the
    /// revision of the endpoint's last write.
    pub revision: u64,
    pub status: String,
}

/// Writes and removes status files in one directory.
#[derive(Debug, Clone)]
pub struct StatusReporter {
    dir: PathBuf,
}

/// The file for an endpoint.
pub fn status_path(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!("{namespace}.{name}.json"))
}

impl StatusReporter {
    /// Creates `dir` and removes status files left by an earlier run:
    /// endpoints are reported again once they are programmed again.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<StatusReporter> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(StatusReporter { dir })
    }

    /// Reports `endpoint` programmed at `revision`.
    pub fn programmed(&self, endpoint: &WorkloadEndpoint, revision: u64) -> io::Result<()> {
        let status = EndpointStatus {
            namespace: endpoint.id.namespace.clone(),
            name: endpoint.id.name.clone(),
            interface: endpoint.interface_name.clone(),
            revision,
            status: "up".into(),
        };
        let path = status_path(&self.dir, &status.namespace, &status.name);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(&status).map_err(io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)
    }

    /// Removes an endpoint's file; absent is fine.
    pub fn removed(&self, id: &EndpointId) -> io::Result<()> {
        match std::fs::remove_file(status_path(&self.dir, &id.namespace, &id.name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> WorkloadEndpoint {
        WorkloadEndpoint {
            id: EndpointId {
                namespace: "production".into(),
                name: "api".into(),
            },
            interface_name: "mnlx".into(),
            nets: vec![],
            mac: None,
            tiers: vec![],
            profiles: vec![],
        }
    }

    #[test]
    fn files_appear_change_and_go() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.pod.json"), "{}").unwrap();
        let r = StatusReporter::new(dir.path()).unwrap();
        assert!(
            !dir.path().join("old.pod.json").exists(),
            "stale files are cleared"
        );
        r.programmed(&endpoint(), 7).unwrap();
        let path = status_path(dir.path(), "production", "api");
        let s: EndpointStatus = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!((s.revision, s.interface.as_str()), (7, "mnlx"));
        r.programmed(&endpoint(), 9).unwrap();
        let s: EndpointStatus = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(s.revision, 9);
        r.removed(&endpoint().id).unwrap();
        assert!(!path.exists());
        r.removed(&endpoint().id).unwrap();
    }
}
