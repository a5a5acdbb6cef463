//! `typha_threatfeed_*`: pulls by feed and result, entries kept per feed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullLabels {
    pub feed: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabel {
    pub feed: String,
}

/// The puller's metrics; cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct ThreatFeedMetrics {
    pub pulls: Family<PullLabels, Counter>,
    pub entries: Family<FeedLabel, Gauge>,
    pub skipped: Family<FeedLabel, Counter>,
}

impl ThreatFeedMetrics {
    pub fn register(registry: &mut Registry) -> ThreatFeedMetrics {
        let m = ThreatFeedMetrics::default();
        let r = registry.sub_registry_with_prefix("typha_threatfeed");
        r.register("pulls", "Feed pulls by result", m.pulls.clone());
        r.register(
            "entries",
            "Networks in the feed's GlobalNetworkSet after its last good pull",
            m.entries.clone(),
        );
        r.register(
            "skipped_entries",
            "Feed entries that were neither an address nor a CIDR",
            m.skipped.clone(),
        );
        m
    }
}
