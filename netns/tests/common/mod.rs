//! Shared by the kernel tests: the root check and a cleanup guard.

#![allow(dead_code)]

use manul_netns::cleanup_prefix;

/// Whether to run a test that needs root. Without root it fails when
/// `CI=true` and is skipped (with a notice) otherwise.
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
pub struct Cleanup(pub String);

impl Cleanup {
    pub fn new(tag: &str) -> Cleanup {
        Cleanup(manul_netns::unique_prefix(tag))
    }

    /// `PREFIX-suffix`
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
