//! The Kubernetes datastore: what watched Kubernetes objects become in the
//! store.
//!
//! - [`reconcile`]: the pure core, watch events to batches of puts and
//!   deletes (a relist ends in one batch that also deletes what vanished);
//! - [`sources`]: what each watched kind becomes and which keys it owns.
pub mod reconcile;
pub mod sources;
