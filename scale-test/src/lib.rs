//! The local cluster (nodes and pods as network namespaces) and the
//! time-to-first-ping scale test that runs on it.
//!
//! It refuses to touch the host's own network: every link, address and route
//! it makes lives in namespaces it creates and removes.
