//! Helpers for kernel tests, shared by every crate whose tests build
//! namespaces: the root check (skip outside CI, fail under `CI=true`) and a
//! guard that sweeps a test's namespaces, also when the test panics.

use crate::ns::{cleanup_prefix, unique_prefix};

/// Whether a test that needs root can run. Without root it panics when
/// `CI=true` (such tests must fail, not skip, in CI) and returns false,
/// after a notice, otherwise. Meant for tests only.
pub fn have_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root to create network namespaces, and CI=true"
    );
    eprintln!("skipping {test}: it needs root to create network namespaces");
    false
}

/// Deletes every namespace whose name starts with its prefix when dropped,
/// also when the test panics.
#[derive(Debug)]
pub struct Cleanup(pub String);

impl Cleanup {
    /// A guard over a fresh [`unique_prefix`].
    pub fn new(tag: &str) -> Cleanup {
        Cleanup(unique_prefix(tag))
    }

    /// `PREFIX-suffix`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.0)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = cleanup_prefix(&self.0) {
            eprintln!("cleanup of {}: {e}", self.0);
        }
    }
}
