//! Flow events: the ring-buffer reader, the per-interval aggregation into
//! JSON-line flow logs, per-policy counters, and the flow observations
//! behind `Driver::take_flows` ([`crate::flow_track`]: starts and denials
//! from the events, updates and ends from the conntrack scans). The kernel
//! emits one event when a flow starts (allowed) and one when a flow is
//! denied, never one per packet; events carry numeric policy and rule ids,
//! resolved here through the labels the driver registered when it wrote
//! the tables.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use serde::Serialize;

use manul_dataplane_api::{FlowObservation, FlowQueue};

use crate::abi;
use crate::conntrack::{self, ConntrackTimeouts};
use crate::flow_track::{self, Resolver, Tracker};
use crate::keys::addr_from;
use crate::service_backends::ServiceBackends;

/// Numeric ids for label strings; 0 is the empty label. Ids are never
/// reused, so an id kept by an aggregate is resolved to its name when the
/// aggregate is read, not per event.
#[derive(Debug, Default)]
pub struct Labels {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Labels {
    pub fn intern(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let name: Arc<str> = Arc::from(s);
        self.names.push(name.clone());
        let id = self.names.len() as u32;
        self.ids.insert(name, id);
        id
    }

    pub fn name(&self, id: u32) -> &str {
        match id.checked_sub(1) {
            None => "",
            Some(i) => self.names.get(i as usize).map_or("(unknown)", |n| n),
        }
    }
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    pub ifindex: u32,
    pub hook: &'static str,
    pub allowed: bool,
    pub reason: &'static str,
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The label id of the deciding policy (`TIER/NAME`), `profile:NAME`,
    /// `TIER/(tier default)` or `(no match)`; see [`Labels::name`].
    pub policy: u32,
    /// The label id of the deciding rule.
    pub rule: u32,
}

impl FlowEvent {
    /// The event's fields; its labels stay ids (resolved by whoever
    /// reads an aggregate, once per aggregate).
    pub fn decode(e: &abi::manul_event) -> Self {
        let reason = match u32::from(e.reason) {
            abi::MANUL_REASON_POLICY => "policy",
            abi::MANUL_REASON_NO_ENDPOINT => "no endpoint",
            abi::MANUL_REASON_NO_TABLE => "no table",
            abi::MANUL_REASON_TO_HOST => "endpoint to host",
            abi::MANUL_REASON_FAILSAFE => "failsafe",
            abi::MANUL_REASON_FORWARD_UNPOLICED => "forwarded, no applyOnForward policy",
            _ => "no rule",
        };
        Self {
            ifindex: e.ifindex,
            hook: if u32::from(e.hook) == abi::MANUL_HOOK_INGRESS {
                "ingress"
            } else {
                "egress"
            },
            allowed: u32::from(e.verdict) == abi::MANUL_VERDICT_ALLOW,
            reason,
            protocol: e.proto,
            src: addr_from(e.version, &e.src),
            dst: addr_from(e.version, &e.dst),
            src_port: e.sport,
            dst_port: e.dport,
            policy: e.policy,
            rule: e.rule,
        }
    }
}

/// One line of the flow log: the flows of one interval with the same
/// endpoints, destination port and decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    /// Unix seconds at the end of the interval.
    pub end_time: u64,
    pub ifindex: u32,
    pub hook: &'static str,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub dst_port: u16,
    pub action: &'static str,
    pub policy: String,
    pub rule: String,
    /// Flows started (allow) or denied packets evaluated (deny).
    pub count: u64,
}

/// Interface, hook, source, destination, protocol, destination port,
/// allowed, policy and rule label ids.
type FlowKey = (u32, &'static str, IpAddr, IpAddr, u8, u16, bool, u32, u32);

/// Aggregates events per interval (no I/O); label ids are resolved to
/// names when the interval is drained.
#[derive(Debug, Default)]
pub struct Aggregator {
    flows: BTreeMap<FlowKey, u64>,
}

impl Aggregator {
    pub fn add(&mut self, e: &FlowEvent) {
        let key = (
            e.ifindex, e.hook, e.src, e.dst, e.protocol, e.dst_port, e.allowed, e.policy, e.rule,
        );
        *self.flows.entry(key).or_default() += 1;
    }

    pub fn drain(&mut self, end_time: u64, labels: &Labels) -> Vec<FlowRecord> {
        std::mem::take(&mut self.flows)
            .into_iter()
            .map(
                |((ifindex, hook, src, dst, protocol, dst_port, allowed, policy, rule), count)| {
                    FlowRecord {
                        end_time,
                        ifindex,
                        hook,
                        src,
                        dst,
                        protocol,
                        dst_port,
                        action: if allowed { "allow" } else { "deny" },
                        policy: labels.name(policy).to_owned(),
                        rule: labels.name(rule).to_owned(),
                        count,
                    }
                },
            )
            .collect()
    }
}

/// Allows and denies decided by one policy (or profile, or tier default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PolicyCounts {
    pub allowed: u64,
    pub denied: u64,
}

/// A snapshot of the flow counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounters {
    pub per_policy: BTreeMap<String, PolicyCounts>,
    pub events: u64,
    pub flow_log_errors: u64,
    /// Allowed connections whose start event was lost (the ring buffer
    /// full) and whose start a conntrack scan recovered.
    pub starts_recovered: u64,
}

/// The flow counters as the reader thread keeps them: per policy label
/// id, named when read ([`Counts::snapshot`]).
#[derive(Debug, Default)]
pub struct Counts {
    pub per_policy: HashMap<u32, PolicyCounts>,
    pub events: u64,
    pub flow_log_errors: u64,
    pub starts_recovered: u64,
}

impl Counts {
    /// Counts one event of the policy with label id `policy`.
    pub fn event(&mut self, policy: u32, allowed: bool) {
        self.events += 1;
        let c = self.per_policy.entry(policy).or_default();
        if allowed {
            c.allowed += 1;
        } else {
            c.denied += 1;
        }
    }

    /// The counters with policy names.
    pub fn snapshot(&self, labels: &Labels) -> FlowCounters {
        let mut per_policy: BTreeMap<String, PolicyCounts> = BTreeMap::new();
        for (id, c) in &self.per_policy {
            let named = per_policy.entry(labels.name(*id).to_owned()).or_default();
            named.allowed += c.allowed;
            named.denied += c.denied;
        }
        FlowCounters {
            per_policy,
            events: self.events,
            flow_log_errors: self.flow_log_errors,
            starts_recovered: self.starts_recovered,
        }
    }
}

/// State shared between the driver and the reader thread.
#[derive(Debug, Default)]
pub struct Shared {
    pub labels: Labels,
    pub counters: Counts,
    pub aggregator: Aggregator,
    /// Live conntrack entries after the last garbage collection (`None`
    /// before the first one).
    pub conntrack_entries: Option<u64>,
    /// Slot owners and interfaces, for flow observations.
    pub resolver: Resolver,
    /// Flow observations until `Driver::take_flows` drains them.
    pub flows: FlowQueue,
    /// Which destinations may be a service backend (the NAT lookups).
    pub backends: ServiceBackends,
}

pub fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// How often the flow log is written; shared with the background thread,
/// so it can be changed while the driver runs.
#[derive(Debug, Clone)]
pub struct FlowLogInterval(Arc<AtomicU64>);

impl FlowLogInterval {
    pub fn new(interval: Duration) -> FlowLogInterval {
        let handle = FlowLogInterval(Arc::new(AtomicU64::new(0)));
        handle.set(interval);
        handle
    }

    /// Takes effect at the background thread's next pass.
    pub fn set(&self, interval: Duration) {
        let micros = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        self.0.store(micros, Ordering::Release);
    }

    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Acquire))
    }
}

/// What the background thread does besides reading events.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub flow_log: Option<PathBuf>,
    pub flow_log_interval: FlowLogInterval,
    pub gc_interval: Duration,
    pub timeouts: ConntrackTimeouts,
    /// How many connections the flow observations follow at most.
    pub tracked_flows: usize,
    /// Whether flow observations are made at all (`Driver::take_flows`);
    /// off, events still feed the flow log and the counters.
    pub observe: bool,
}

/// The service NAT's conntrack, read for the frontend of a translated
/// connection.
pub type NatMap = BpfHashMap<MapData, abi::manul_nat_key, abi::manul_nat_value>;
/// The IPv6 service NAT's conntrack (`manul_nat6`).
pub type NatMap6 = BpfHashMap<MapData, abi::manul_nat6_key, abi::manul_nat6_value>;

/// Both families' service NAT maps (either absent when not pinned).
#[derive(Default)]
pub struct NatMaps {
    pub v4: Option<NatMap>,
    pub v6: Option<NatMap6>,
}

impl std::fmt::Debug for NatMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatMaps")
            .field("v4", &self.v4.is_some())
            .field("v6", &self.v6.is_some())
            .finish()
    }
}

/// The rule map (`manul_rule`), read for the rule of a connection whose
/// start event was lost.
pub type RuleMap = BpfHashMap<MapData, abi::manul_rule_key, abi::manul_rule_value>;

/// Conntrack entries a scan visits between two drains of the ring buffer
/// (a scan of a full table takes long enough to fill it otherwise).
const SCAN_DRAIN_EVERY: u64 = 2_048;

/// The background thread: drains the ring buffer, aggregates, writes the
/// flow log each interval, and collects expired conntrack entries.
#[derive(Debug)]
pub struct Reader {
    stop: Arc<AtomicBool>,
    flush: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    pub fn start(
        mut ring: RingBuf<MapData>,
        mut ct: Option<BpfHashMap<MapData, abi::manul_ct_key, abi::manul_ct_value>>,
        nat: NatMaps,
        rules: Option<RuleMap>,
        shared: Arc<Mutex<Shared>>,
        config: ReaderConfig,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flush = Arc::new(AtomicBool::new(false));
        let (stop2, flush2) = (stop.clone(), flush.clone());
        let handle = std::thread::Builder::new()
            .name("manul-bpf-events".into())
            .spawn(move || {
                let mut last_flush = Instant::now();
                // The first collection runs at once, so the number of
                // conntrack entries is known from the start.
                let mut last_gc: Option<Instant> = None;
                let mut tracker = Tracker::new(config.tracked_flows, monotonic_ns());
                loop {
                    let stopping = stop2.load(Ordering::Acquire);
                    // Every event submitted before this instant is read by
                    // the drain below.
                    let horizon_ns = monotonic_ns();
                    drain(
                        &mut ring,
                        &shared,
                        config.observe.then_some(&mut tracker),
                        &nat,
                    );
                    let flushing = flush2.load(Ordering::Acquire);
                    if stopping
                        || flushing
                        || last_flush.elapsed() >= config.flow_log_interval.get()
                    {
                        write_log(&shared, config.flow_log.as_ref());
                        last_flush = Instant::now();
                        flush2.store(false, Ordering::Release);
                    }
                    if let Some(ct) = ct.as_mut()
                        && last_gc.is_none_or(|t| t.elapsed() >= config.gc_interval)
                    {
                        let now_ms = unix_ms();
                        let offset_ms = now_ms.saturating_sub(monotonic_ms());
                        let mut seen = Vec::new();
                        let mut visited = 0u64;
                        let mut recovered = 0u64;
                        tracker.begin_scan();
                        let result = conntrack::gc_visit(
                            ct,
                            &config.timeouts,
                            conntrack::monotonic_now(),
                            |k, v, expired| {
                                visited += 1;
                                if visited.is_multiple_of(SCAN_DRAIN_EVERY) {
                                    drain(
                                        &mut ring,
                                        &shared,
                                        config.observe.then_some(&mut tracker),
                                        &nat,
                                    );
                                }
                                if !config.observe {
                                    return;
                                }
                                let (key, counts) = flow_track::entry_flow(k, v);
                                let allowed = u32::from(v.state) == abi::MANUL_CT_ALLOWED;
                                if tracker.lost_start(&key, allowed, v.created_ns, horizon_ns)
                                    && let Some(start) = recover_start(
                                        &shared,
                                        rules.as_ref(),
                                        &nat,
                                        key,
                                        v,
                                        offset_ms,
                                    )
                                {
                                    tracker.started(key, &start, v.created_ns);
                                    seen.push(start);
                                    recovered += 1;
                                }
                                seen.extend(tracker.visit(&key, counts, expired, now_ms));
                            },
                        );
                        match result {
                            Ok(stats) => {
                                seen.extend(tracker.end_scan(now_ms));
                                let live = stats.scanned.saturating_sub(stats.removed);
                                let mut s = lock(&shared);
                                s.conntrack_entries = Some(live as u64);
                                s.counters.starts_recovered += recovered;
                                for obs in seen {
                                    s.flows.push(obs);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "conntrack garbage collection failed");
                            }
                        }
                        last_gc = Some(Instant::now());
                    }
                    if stopping {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })?;
        Ok(Self {
            stop,
            flush,
            handle: Some(handle),
        })
    }

    /// Drains pending events and writes the flow log now; waits up to a
    /// second for the thread to do it.
    pub fn flush(&self) {
        self.flush.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.flush.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    shared: &Mutex<Shared>,
    mut tracker: Option<&mut Tracker>,
    nat: &NatMaps,
) {
    let mut raw = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(e) = abi::event_from_bytes(&item) {
            raw.push(e);
        }
    }
    if raw.is_empty() {
        return;
    }
    // The events' clock is CLOCK_MONOTONIC; observations carry Unix time.
    let offset_ms = unix_ms().saturating_sub(monotonic_ms());
    let mut s = lock(shared);
    let mut observed = Vec::with_capacity(raw.len());
    for e in &raw {
        let ev = FlowEvent::decode(e);
        s.counters.event(ev.policy, ev.allowed);
        s.aggregator.add(&ev);
        let Some(tracker) = tracker.as_deref_mut() else {
            continue;
        };
        // Only a connection to a service backend can have been translated:
        // the NAT lookups (system calls) are made for those alone.
        let frontend = if ev.allowed && s.backends.may_be_translated(ev.dst, ev.dst_port) {
            service_frontend(nat, &ev)
        } else {
            None
        };
        let time = (e.ts_ns / 1_000_000).saturating_add(offset_ms);
        let (key, obs) = s.resolver.observe(e, &s.labels, time, frontend);
        if ev.allowed {
            tracker.started(key, &obs, e.ts_ns);
        }
        observed.push((key, obs));
    }
    for obs in flow_track::fold_denials(observed) {
        s.flows.push(obs);
    }
}

/// The `Start` of a connection whose start event was lost, from its
/// conntrack entry and the rule at the entry's table and index (`None`
/// when that rule is gone, or the entry is not a workload's: see
/// [`Resolver::recovered_start`](flow_track::Resolver::recovered_start)).
fn recover_start(
    shared: &Mutex<Shared>,
    rules: Option<&RuleMap>,
    nat: &NatMaps,
    key: flow_track::FlowKey,
    v: &abi::manul_ct_value,
    offset_ms: u64,
) -> Option<FlowObservation> {
    let rule = rules?
        .get(
            &abi::manul_rule_key {
                table: v.table,
                index: v.rule_index,
            },
            0,
        )
        .ok()?;
    let t = key.tuple;
    let ev = FlowEvent {
        ifindex: key.ifindex,
        hook: if u32::from(v.hook) == abi::MANUL_HOOK_INGRESS {
            "ingress"
        } else {
            "egress"
        },
        allowed: true,
        reason: "policy",
        protocol: t.protocol,
        src: t.src,
        dst: t.dst,
        src_port: t.src_port,
        dst_port: t.dst_port,
        policy: rule.policy,
        rule: rule.rule,
    };
    let translated = lock(shared).backends.may_be_translated(t.dst, t.dst_port);
    let frontend = if translated {
        service_frontend(nat, &ev)
    } else {
        None
    };
    let time = (v.created_ns / 1_000_000).saturating_add(offset_ms);
    let s = lock(shared);
    s.resolver.recovered_start(
        key,
        v.hook,
        (rule.policy, rule.rule),
        &s.labels,
        time,
        frontend,
    )
}

/// The frontend a translated connection's client addressed, from the
/// service NAT of the event's family: the reverse entry for (backend,
/// client); for a masqueraded connection (the backend sees a node
/// address) the client first, from the masquerade's reverse entry.
fn service_frontend(nat: &NatMaps, ev: &FlowEvent) -> Option<(IpAddr, u16)> {
    match (ev.src, ev.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let m = nat.v4.as_ref()?;
            frontend_via(ev, src.octets(), dst.octets(), |k| {
                let key = abi::manul_nat_key {
                    src: u32::from_ne_bytes(k.src),
                    dst: u32::from_ne_bytes(k.dst),
                    sport: k.sport.to_be(),
                    dport: k.dport.to_be(),
                    proto: ev.protocol,
                    dir: k.dir,
                    pad: 0,
                };
                let v = m.get(&key, 0).ok()?;
                Some((v.addr.to_ne_bytes(), u16::from_be(v.port)))
            })
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let m = nat.v6.as_ref()?;
            frontend_via(ev, src.octets(), dst.octets(), |k| {
                let key = abi::manul_nat6_key {
                    src: k.src,
                    dst: k.dst,
                    sport: k.sport.to_be(),
                    dport: k.dport.to_be(),
                    proto: ev.protocol,
                    dir: k.dir,
                    pad: 0,
                };
                let v = m.get(&key, 0).ok()?;
                Some((v.addr, u16::from_be(v.port)))
            })
        }
        _ => None,
    }
}

/// A NAT key of either family, ports in host order.
struct NatLookup<A> {
    src: A,
    dst: A,
    sport: u16,
    dport: u16,
    dir: u8,
}

/// The lookups of [`service_frontend`], generic over the address bytes:
/// `get` reads one entry's address and port (host order).
fn frontend_via<A>(
    ev: &FlowEvent,
    client: A,
    backend: A,
    get: impl Fn(NatLookup<A>) -> Option<(A, u16)>,
) -> Option<(IpAddr, u16)>
where
    A: Copy + Into<IpAddr>,
{
    let rev = |client: A, client_port: u16| {
        get(NatLookup {
            src: backend,
            dst: client,
            sport: ev.dst_port,
            dport: client_port,
            dir: abi::MANUL_NAT_REV as u8,
        })
    };
    let found = rev(client, ev.src_port).or_else(|| {
        let (orig, orig_port) = get(NatLookup {
            src: backend,
            dst: client,
            sport: ev.dst_port,
            dport: ev.src_port,
            dir: abi::MANUL_NAT_SNAT_REV as u8,
        })?;
        rev(orig, orig_port)
    })?;
    Some((found.0.into(), found.1))
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn monotonic_ms() -> u64 {
    u64::try_from(conntrack::monotonic_now().as_millis()).unwrap_or(u64::MAX)
}

fn monotonic_ns() -> u64 {
    u64::try_from(conntrack::monotonic_now().as_nanos()).unwrap_or(u64::MAX)
}

/// The observations made since the last call.
pub fn take_flows(shared: &Mutex<Shared>) -> Vec<FlowObservation> {
    lock(shared).flows.take()
}

fn write_log(shared: &Mutex<Shared>, path: Option<&PathBuf>) {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let records = {
        let mut s = lock(shared);
        let s = &mut *s;
        s.aggregator.drain(end, &s.labels)
    };
    let Some(path) = path else { return };
    if records.is_empty() {
        return;
    }
    let mut text = String::new();
    for r in &records {
        if let Ok(line) = serde_json::to_string(r) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let result = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the flow log");
        lock(shared).counters.flow_log_errors += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_aggregate_per_flow_and_resolve_labels() {
        let mut labels = Labels::default();
        let p = labels.intern("default/allow-web");
        let r = labels.intern("default/allow-web/inbound/0");
        let e = abi::manul_event {
            ifindex: 3,
            verdict: abi::MANUL_VERDICT_ALLOW as u8,
            proto: 6,
            version: 4,
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 80,
            policy: p,
            rule: r,
            ..Default::default()
        };
        let ev = FlowEvent::decode(&e);
        assert_eq!(labels.name(ev.policy), "default/allow-web");
        assert_eq!(ev.src.to_string(), "10.0.0.1");
        let mut agg = Aggregator::default();
        agg.add(&ev);
        agg.add(&FlowEvent {
            src_port: 40001,
            ..ev.clone()
        });
        let records = agg.drain(7, &labels);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].policy, "default/allow-web");
        assert_eq!(records[0].rule, "default/allow-web/inbound/0");
        assert_eq!(records[0].count, 2);
        assert_eq!(records[0].action, "allow");
        assert!(agg.drain(8, &labels).is_empty());
        assert_eq!(labels.name(0), "");
        assert_eq!(labels.name(99), "(unknown)");
    }

    #[test]
    fn counters_count_per_policy_id_and_name_when_read() {
        let mut labels = Labels::default();
        let web = labels.intern("default/web");
        let db = labels.intern("default/db");
        assert_eq!(labels.intern("default/web"), web);
        // (policy id, allowed)
        let events = [
            (web, true),
            (web, true),
            (db, false),
            (0, false),
            (web, false),
        ];
        let mut counts = Counts::default();
        for (policy, allowed) in events {
            counts.event(policy, allowed);
        }
        let snap = counts.snapshot(&labels);
        assert_eq!(snap.events, 5);
        let want = [
            (
                "",
                PolicyCounts {
                    allowed: 0,
                    denied: 1,
                },
            ),
            (
                "default/db",
                PolicyCounts {
                    allowed: 0,
                    denied: 1,
                },
            ),
            (
                "default/web",
                PolicyCounts {
                    allowed: 2,
                    denied: 1,
                },
            ),
        ];
        let got: Vec<_> = snap
            .per_policy
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(got, want);
    }
}
