//! A file descriptor held in reserve for an HTTP listener, so that its
//! health and metrics endpoints (`/readyz`, `/healthz`, `/metrics`) still
//! answer when the process is out of descriptors.
//!
//! The listeners' slots keep connections below the descriptor limit
//! ([`crate::slots::share`]), but descriptors can still run out: a limit
//! lowered after the start, or the rest of the process using more than
//! [`crate::slots::RESERVED_FDS`]. Then every `accept` fails with EMFILE,
//! and a probe's connection would wait in the kernel's backlog until
//! something else closes. So the HTTP listener keeps one descriptor open
//! on `/dev/null`: when an accept fails for want of a descriptor, it
//! closes that one and accepts again at once, and the connection it gets
//! gives the descriptor back (the reserve is opened again) when it closes.
//! One probe at a time is served so; others wait for it. Another thread
//! may take the freed descriptor first; then the listener waits 50 ms like
//! the others and opens its reserve again once it can.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

/// The reserve: one open descriptor, or none while it is lent out (or
/// could not be opened again yet).
#[derive(Debug)]
pub struct Spare {
    held: Mutex<Option<File>>,
}

/// A connection accepted on the reserve's descriptor holds this; dropping
/// it (after the connection's socket) opens the reserve again.
#[derive(Debug)]
pub struct Lent(Arc<Spare>);

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.restore();
    }
}

impl Spare {
    /// A reserve, opened now (logged when it cannot be).
    pub fn new() -> Arc<Spare> {
        let spare = Spare {
            held: Mutex::new(None),
        };
        if !spare.restore() {
            tracing::warn!(
                "cannot open /dev/null to hold a descriptor in reserve: the HTTP listener has none when the process runs out"
            );
        }
        Arc::new(spare)
    }

    /// Opens the reserve again when it is not held; whether it is held.
    pub fn restore(&self) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_none() {
            *held = File::open("/dev/null").ok();
            tracing::debug!(held = held.is_some(), "reserved descriptor opened again");
        }
        held.is_some()
    }

    /// Closes the reserve, freeing its descriptor, and returns what the
    /// connection accepted on it holds; none when the reserve was not held.
    pub fn release(self: &Arc<Spare>) -> Option<Lent> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.take().map(|file| {
            drop(file);
            tracing::debug!("reserved descriptor closed for an accept");
            Lent(self.clone())
        })
    }

    /// Whether the reserve is held now.
    pub fn held(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// Whether `error` is the process (EMFILE) or the system (ENFILE) being out
/// of file descriptors.
pub fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_reserve_comes_back_when_its_connection_closes() {
        let spare = Spare::new();
        assert!(spare.held());
        let lent = spare.release().expect("held at first");
        assert!(!spare.held());
        assert!(spare.release().is_none(), "lent once at a time");
        drop(lent);
        assert!(spare.held());
    }

    #[test]
    fn only_running_out_of_descriptors_counts() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
