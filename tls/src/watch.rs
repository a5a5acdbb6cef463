//! A value loaded from files and loaded again when one of them changes.
//!
//! Each use compares the files' modification time, size and inode with
//! those of the last load (a few `stat` calls per handshake); on a change
//! the loader runs again. If it fails (a certificate written before its
//! key, a truncated file) the previous value stays in use and the failure
//! is logged once per state of the files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::TlsError;

type Stamp = Vec<Option<(SystemTime, u64, u64)>>;
type Loader<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

fn stamp(files: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    files
        .iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    m.ino(),
                )
            })
        })
        .collect()
}

/// The current value of files that may change.
pub struct Watched<T> {
    files: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<(Stamp, Arc<T>)>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("files", &self.files)
            .finish()
    }
}

impl<T> Watched<T> {
    /// Loads once now (an error here is the caller's: a configuration
    /// that does not work at start is refused).
    pub fn new(
        files: Vec<PathBuf>,
        load: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Watched<T>, TlsError> {
        let before = stamp(&files);
        let value = Arc::new(load()?);
        Ok(Watched {
            files,
            load: Box::new(load),
            state: Mutex::new((before, value)),
        })
    }

    /// The value for the files as they are now.
    pub fn get(&self) -> Arc<T> {
        let now = stamp(&self.files);
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.0 != now {
            match (self.load)() {
                Ok(v) => {
                    tracing::info!(files = ?self.files, "TLS files changed: reloaded");
                    state.1 = Arc::new(v);
                }
                Err(e) => {
                    tracing::warn!(
                        files = ?self.files,
                        error = &e as &(dyn std::error::Error + 'static),
                        "TLS files changed but cannot be used, keeping the previous ones"
                    );
                }
            }
            state.0 = now;
        }
        state.1.clone()
    }
}
