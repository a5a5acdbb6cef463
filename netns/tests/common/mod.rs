//! Shared by the kernel tests: the root check and a cleanup guard.

#![allow(dead_code)]

pub use manul_netns::testing::{Cleanup, have_root};
