//! Threat feeds: on the Raft leader, each enabled `GlobalThreatFeed` is
//! pulled on its period and its addresses kept in the GlobalNetworkSet
//! `threatfeed.NAME` with the feed's labels, so a policy denying that label
//! blocks what the feed lists (Calico Enterprise's behaviour for IP-set
//! feeds with `globalNetworkSet`).
//!
//! - [`parse`]: a body to networks by format (newline, JSON, CSV); pure;
//! - [`plan`]: when each feed is due, the set it keeps, the sets no feed
//!   keeps any more; pure, time passed in;
//! - [`fetch`]: `file://`, `http://`, `https://`, bounded in size and time;
//! - [`driver`]: the leader's loop, proposing through the node;
//! - [`metrics`]: the `typha_threatfeed_*` metrics.
//!
//! It refuses domain-name feeds (validation says so), header values kept
//! in ConfigMaps or Secrets (the pull fails and says so), and to widen
//! anything on failure: a failed pull keeps the feed's previous set.

pub mod driver;
pub mod fetch;
pub mod metrics;
pub mod parse;
pub mod plan;

use manul_model::{Kind, ResourceKey};

/// Whether `key` is a set the puller writes (no other writer may take it).
pub fn owns(key: &ResourceKey) -> bool {
    key.kind == Kind::GlobalNetworkSet && plan::feed_of(&key.name).is_some()
}
