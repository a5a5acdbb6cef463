//! The puller's loop on the Raft leader: reads the feeds from the store,
//! deletes the sets no feed keeps, pulls the feeds that are due and
//! proposes each changed set as one Raft entry. A follower does nothing;
//! a new leader pulls every feed at once (its schedule starts empty), so a
//! feed is never more than one period behind across a leader change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manul_model::v3::GlobalThreatFeedSpec;
use manul_model::{Kind, Resource, ResourceKey};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use super::fetch::Fetcher;
use super::metrics::{FeedLabel, PullLabels, ThreatFeedMetrics};
use super::parse::parse;
use super::plan::{self, Schedule};
use crate::kube::driver::{command, is_leader};
use crate::kube::reconcile::Batch;
use crate::node::Node;

/// How often the loop looks at the store and the leadership.
const TICK: Duration = Duration::from_millis(500);

/// The stored feeds, and the feed sets the store holds (name → JSON).
fn read_store(
    node: &Node,
) -> (
    BTreeMap<String, GlobalThreatFeedSpec>,
    BTreeMap<String, Vec<u8>>,
) {
    let Ok(state) = node.shared().state.read() else {
        return Default::default();
    };
    let mut feeds = BTreeMap::new();
    for e in state.list(Kind::GlobalThreatFeed.key_name(), "") {
        if let Ok((Resource::GlobalThreatFeed(o), _)) = manul_proto::wire::decode_entry(&e)
            && let Some(name) = o.metadata.name
        {
            feeds.insert(name, o.spec);
        }
    }
    let sets = state
        .list(Kind::GlobalNetworkSet.key_name(), "")
        .into_iter()
        .filter_map(|e| {
            let name = e.key?.name;
            plan::feed_of(&name)?;
            Some((name, e.value.to_vec()))
        })
        .collect();
    (feeds, sets)
}

fn set_key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::GlobalNetworkSet,
        namespace: None,
        name: name.to_string(),
    }
}

async fn propose(node: &Node, batch: Batch) -> bool {
    let mut command = command(batch);
    command.origin = Some(crate::audit::stamp(
        "typha threat feed puller",
        "typha",
        "apply",
    ));
    match node.propose(command).await {
        Ok(_) => true,
        Err(e) => {
            warn!("cannot write a threat feed's set: {e}");
            false
        }
    }
}

/// Pulls one feed and writes its set if it changed; whether it succeeded.
async fn pull_one(
    node: &Node,
    fetcher: &Fetcher,
    metrics: &ThreatFeedMetrics,
    name: &str,
    spec: &GlobalThreatFeedSpec,
    stored: Option<&Vec<u8>>,
) -> bool {
    let Some(pull) = &spec.pull else {
        return true;
    };
    let feed = FeedLabel {
        feed: name.to_string(),
    };
    let parsed = match fetcher.fetch(&pull.http).await {
        Ok(body) => parse(pull.http.format.as_ref(), &body).map_err(|e| e.to_string()),
        Err(e) => Err(manul_model::error::chain(&e)),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            warn!(feed = name, "pull failed, keeping the previous set: {e}");
            metrics
                .pulls
                .get_or_create(&PullLabels {
                    feed: name.to_string(),
                    result: "error",
                })
                .inc();
            return false;
        }
    };
    if parsed.skipped > 0 {
        warn!(
            feed = name,
            skipped = parsed.skipped,
            first = parsed.first_skipped.as_deref().unwrap_or_default(),
            "entries that are neither an address nor a CIDR were skipped"
        );
        metrics
            .skipped
            .get_or_create(&feed)
            .inc_by(parsed.skipped as u64);
    }
    let set = plan::set_for(name, spec, &parsed.nets);
    let Ok(json) = serde_json::to_vec(&set) else {
        return false;
    };
    let unchanged = stored.is_some_and(|old| {
        manul_model::stored::decode_as(Kind::GlobalNetworkSet, old)
            .ok()
            .as_ref()
            == Some(&set)
    });
    if !unchanged {
        let batch = Batch {
            puts: vec![(set_key(&plan::set_name(name)), json)],
            deletes: Vec::new(),
        };
        if !propose(node, batch).await {
            return false;
        }
        info!(
            feed = name,
            entries = parsed.nets.len(),
            "threat feed set updated"
        );
    }
    metrics
        .pulls
        .get_or_create(&PullLabels {
            feed: name.to_string(),
            result: "ok",
        })
        .inc();
    metrics
        .entries
        .get_or_create(&feed)
        .set(parsed.nets.len() as i64);
    true
}

/// Runs until `stop` turns true.
pub async fn run(node: Node, metrics: ThreatFeedMetrics, mut stop: watch::Receiver<bool>) {
    let fetcher = match Fetcher::new() {
        Ok(f) => f,
        Err(e) => {
            warn!(
                "threat feeds are not pulled: {}",
                manul_model::error::chain(&e)
            );
            return;
        }
    };
    let mut schedule = Schedule::default();
    loop {
        if *stop.borrow() {
            return;
        }
        if is_leader(&node) {
            let (feeds, sets) = read_store(&node);
            let stale = plan::stale_sets(&feeds, sets.keys().map(String::as_str));
            if !stale.is_empty() {
                let deletes = stale.iter().map(|s| set_key(s)).collect();
                if propose(
                    &node,
                    Batch {
                        puts: Vec::new(),
                        deletes,
                    },
                )
                .await
                {
                    info!(sets = ?stale, "deleted the sets of removed or disabled threat feeds");
                }
            }
            let now = Instant::now();
            for name in schedule.due(&feeds, now) {
                let spec = &feeds[&name];
                let span = info_span!("threat_feed_pull", feed = %name);
                let ok = pull_one(
                    &node,
                    &fetcher,
                    &metrics,
                    &name,
                    spec,
                    sets.get(&plan::set_name(&name)),
                )
                .instrument(span)
                .await;
                schedule.done(&name, spec, Instant::now(), ok);
            }
        } else {
            schedule = Schedule::default();
        }
        let wait = schedule.next_due().map_or(TICK, |t| {
            t.saturating_duration_since(Instant::now()).min(TICK)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}
