//! When each feed is pulled and what the store should hold for it. No I/O;
//! time is passed in.
//!
//! A feed is pulled at once when it is new or its spec changed, then every
//! `pull.period` (Calico's default 24h); a failed pull is retried after
//! [`RETRY`] (or the period, if shorter) and the feed's previous set stays
//! meanwhile. A feed that is disabled, has no `pull`, or no
//! `globalNetworkSet` keeps no set: its `threatfeed.NAME` set is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use manul_model::Resource;
use manul_model::v3::{
    Cidr, GlobalThreatFeedSpec, NetworkSetSpec, Object, THREAT_FEED_DEFAULT_PERIOD,
    THREAT_FEED_SET_PREFIX,
};

/// The pause before a failed pull is tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// The set a feed keeps: `threatfeed.NAME`.
pub fn set_name(feed: &str) -> String {
    format!("{THREAT_FEED_SET_PREFIX}{feed}")
}

/// The feed a set name belongs to, if it is a feed's.
pub fn feed_of(set: &str) -> Option<&str> {
    set.strip_prefix(THREAT_FEED_SET_PREFIX)
}

/// Whether the feed is pulled into a set.
pub fn pulled(spec: &GlobalThreatFeedSpec) -> bool {
    spec.enabled() && spec.pull.is_some() && spec.global_network_set.is_some()
}

fn period(spec: &GlobalThreatFeedSpec) -> Duration {
    spec.pull
        .as_ref()
        .and_then(|p| p.period)
        .map_or(THREAT_FEED_DEFAULT_PERIOD, |p| p.0)
}

/// The GlobalNetworkSet for a feed's networks, labelled as it says.
pub fn set_for(feed: &str, spec: &GlobalThreatFeedSpec, nets: &BTreeSet<Cidr>) -> Resource {
    let labels = spec
        .global_network_set
        .as_ref()
        .map(|s| s.labels.clone())
        .filter(|l| !l.is_empty());
    Resource::GlobalNetworkSet(Object {
        metadata: ObjectMeta {
            name: Some(set_name(feed)),
            labels,
            ..ObjectMeta::default()
        },
        spec: NetworkSetSpec {
            nets: nets.iter().copied().collect(),
            ..NetworkSetSpec::default()
        },
    })
}

/// The feed sets in the store (`existing`) that no feed keeps any more.
pub fn stale_sets<'a>(
    feeds: &BTreeMap<String, GlobalThreatFeedSpec>,
    existing: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    existing
        .into_iter()
        .filter(|set| feed_of(set).is_some_and(|feed| !feeds.get(feed).is_some_and(pulled)))
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Clone)]
struct Slot {
    spec: GlobalThreatFeedSpec,
    next: Instant,
}

/// When each feed is next due.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    slots: BTreeMap<String, Slot>,
}

impl Schedule {
    /// The feeds due at `now`: new ones, changed ones, and those whose
    /// time has come. Forgets feeds that are gone or not pulled.
    pub fn due(
        &mut self,
        feeds: &BTreeMap<String, GlobalThreatFeedSpec>,
        now: Instant,
    ) -> Vec<String> {
        self.slots
            .retain(|name, _| feeds.get(name).is_some_and(pulled));
        feeds
            .iter()
            .filter(|(_, spec)| pulled(spec))
            .filter(|(name, spec)| match self.slots.get(*name) {
                None => true,
                Some(slot) => slot.spec != **spec || slot.next <= now,
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Records a pull of `name` (with the spec it used) at `now`.
    pub fn done(&mut self, name: &str, spec: &GlobalThreatFeedSpec, now: Instant, ok: bool) {
        let wait = if ok {
            period(spec)
        } else {
            period(spec).min(RETRY)
        };
        self.slots.insert(
            name.to_string(),
            Slot {
                spec: spec.clone(),
                next: now + wait,
            },
        );
    }

    /// The earliest time a known feed is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots.values().map(|s| s.next).min()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn feed(yaml: &str) -> GlobalThreatFeedSpec {
        serde_json::from_value(
            serde_json::to_value(serde_yaml_ng::from_str::<serde_json::Value>(yaml).unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    fn feeds(list: &[(&str, &str)]) -> BTreeMap<String, GlobalThreatFeedSpec> {
        list.iter().map(|(n, y)| (n.to_string(), feed(y))).collect()
    }

    const PULLED: &str = "{globalNetworkSet: {labels: {feed: x}}, pull: {period: 60s, http: {url: 'http://127.0.0.1:1/f'}}}";

    #[test]
    fn new_changed_and_expired_feeds_are_due() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let mut fs = feeds(&[("a", PULLED), ("b", PULLED)]);
        assert_eq!(s.due(&fs, t0), ["a", "b"]);
        s.done("a", &fs["a"], t0, true);
        s.done("b", &fs["b"], t0, false);
        assert!(s.due(&fs, t0 + Duration::from_secs(5)).is_empty());
        // A failure is retried after RETRY, a success after the period.
        assert_eq!(s.due(&fs, t0 + RETRY), ["b"]);
        assert_eq!(s.next_due(), Some(t0 + RETRY));
        s.done("b", &fs["b"], t0 + RETRY, true);
        assert_eq!(s.due(&fs, t0 + Duration::from_secs(60)), ["a"]);
        // A changed spec is due at once.
        fs.insert(
            "b".into(),
            feed(
                "{globalNetworkSet: {}, pull: {period: 60s, http: {url: 'http://127.0.0.1:2/f'}}}",
            ),
        );
        assert_eq!(s.due(&fs, t0 + Duration::from_secs(11)), ["b"]);
    }

    #[test]
    fn feeds_that_keep_no_set_are_not_pulled_and_their_sets_go() {
        let fs = feeds(&[
            ("on", PULLED),
            (
                "off",
                "{mode: Disabled, globalNetworkSet: {}, pull: {http: {url: 'http://a/b'}}}",
            ),
            ("nowhere", "{pull: {http: {url: 'http://a/b'}}}"),
            ("static", "{globalNetworkSet: {}}"),
        ]);
        let mut s = Schedule::default();
        assert_eq!(s.due(&fs, Instant::now()), ["on"]);
        let stale = stale_sets(
            &fs,
            [
                "threatfeed.on",
                "threatfeed.off",
                "threatfeed.nowhere",
                "threatfeed.gone",
                "mine",
            ],
        );
        assert_eq!(
            stale,
            ["threatfeed.off", "threatfeed.nowhere", "threatfeed.gone"]
        );
    }

    #[test]
    fn the_set_carries_the_feeds_labels_and_networks() {
        let nets: BTreeSet<Cidr> = ["198.51.100.7/32".parse().unwrap()].into();
        let r = set_for("abuse", &feed(PULLED), &nets);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["metadata"]["name"], "threatfeed.abuse");
        assert_eq!(json["metadata"]["labels"]["feed"], "x");
        assert_eq!(json["spec"]["nets"][0], "198.51.100.7/32");
        assert!(manul_model::validate::validate(&r).is_empty());
    }
}
