//! Flow observations on nftables (`Driver::take_flows`), from what the
//! kernel offers:
//!
//! - **nflog**: with flows on, every rule that decides carries a `log
//!   group G` statement whose prefix names the decider ([`prefix`]). The
//!   policy chains only see a connection's first packet (established and
//!   related packets are accepted before them), so an allowing rule logs
//!   once per connection and side (`Start`) and a denying one once per
//!   dropped packet (folded into `Denied` bursts). Established packets pay
//!   nothing. Each record carries its packet's conntrack entry ([`ct`]),
//!   whose original destination is the Service frontend a translated
//!   connection came through (the packet itself is logged after DNAT), so
//!   a `Start` names it as the eBPF dataplane's does; on a kernel that
//!   cannot attach entries to records, the record of the connection's
//!   first packet gives it: every chain that picks a Service backend logs
//!   it before DNAT ([`prefix::FRONTEND`]), so its destination is the
//!   frontend ([`track`]).
//! - **conntrack**: periodic dumps (every [`FlowLog::update_interval`]),
//!   with accounting (`nf_conntrack_acct`, turned on in the driver's
//!   namespace), give the followed connections' packets and bytes each
//!   way (`Update`), their service frontend, and their `End` (closed, or
//!   gone from the table: [`track`]). No conntrack events are subscribed
//!   to: ctnetlink would build each one in the packet path.
//!
//! `packet.rs`, `ct.rs` and `track.rs` are pure (time passed in);
//! `netlink.rs` is the
//! I/O, through `netlink-packet-netfilter`. What it refuses: untracked
//! (`doNotTrack`) policy is not logged (it judges every packet, so logging
//! it would cost per packet), nor are drops of traffic on unknown workload
//! interfaces (no endpoint, no rule). A `Denied` burst carries no Service
//! frontend.

pub mod ct;
pub mod netlink;
pub mod packet;
pub mod prefix;
pub mod track;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use manul_dataplane_api::{DesiredState, FlowObservation};
use tracing::{debug, warn};

pub use netlink::{FlowSocketError, FlowSockets, FrontendSource, RawLog};
pub use prefix::FlowIndex;
pub use track::{CtEntry, Limits, LogRecord, Tracker};

/// Flow observations' configuration: whether they are on, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLog {
    /// The nflog group of this node's driver.
    pub group: u16,
    /// How often live connections' counters are read (a conntrack dump at
    /// the first `take_flows` after this much time); connections end at a
    /// dump, so an `End` comes up to this much late.
    pub update_interval: Duration,
}

impl Default for FlowLog {
    fn default() -> Self {
        FlowLog {
            group: 20,
            update_interval: Duration::from_secs(5),
        }
    }
}

/// The sysctl that makes conntrack count packets and bytes (per network
/// namespace).
const ACCT: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";

/// A driver's flow observations: its sockets, tracker and index.
#[derive(Debug)]
pub struct Flows {
    config: FlowLog,
    sockets: FlowSockets,
    tracker: Tracker,
    index: Option<FlowIndex>,
    last_dump: Option<Instant>,
    names: HashMap<u32, String>,
    acct: Acct,
}

/// Whether conntrack accounting is on in the driver's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acct {
    On,
    /// Not yet: conntrack was not loaded (its sysctls are missing until
    /// it is); tried again at each take.
    Pending {
        warned: bool,
    },
}

/// Turns conntrack accounting on in this thread's namespace.
fn turn_acct_on() -> std::io::Result<()> {
    std::fs::write(ACCT, "1")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Flows {
    /// Opens the sockets in this thread's network namespace and turns
    /// conntrack accounting on there (connections that exist already stay
    /// without counters).
    pub fn open(config: FlowLog) -> Result<Flows, FlowSocketError> {
        let sockets = FlowSockets::open(config.group)?;
        // The sysctl is missing until nf_conntrack is loaded: the sockets
        // load it where they can (the group's conntrack flag), the
        // table's `ct` rules do at the latest. Until it works, each take
        // tries again.
        let acct = match turn_acct_on() {
            Ok(()) => Acct::On,
            Err(e) => {
                debug!("turning on {ACCT}: {e}; trying again at the next take");
                Acct::Pending { warned: false }
            }
        };
        Ok(Flows {
            config,
            sockets,
            tracker: Tracker::new(Limits::default()),
            index: None,
            last_dump: None,
            names: HashMap::new(),
            acct,
        })
    }

    /// Whether conntrack accounting is on (connections counted since).
    pub fn accounting(&self) -> bool {
        self.acct == Acct::On
    }

    fn retry_acct(&mut self) {
        if let Acct::Pending { warned } = self.acct {
            match turn_acct_on() {
                Ok(()) => self.acct = Acct::On,
                Err(e) if !warned => {
                    warn!("turning on {ACCT}: {e}; flows carry no counters until it works");
                    self.acct = Acct::Pending { warned: true };
                }
                Err(_) => {}
            }
        }
    }

    /// The table was written (the desired state may have changed): the
    /// index is rebuilt at the next take, and accounting, if still off,
    /// is tried again (the table's `ct` rules load conntrack).
    pub fn state_changed(&mut self) {
        self.index = None;
        self.retry_acct();
    }

    fn name(&mut self, index: Option<u32>) -> Option<String> {
        let i = index?;
        if let Some(n) = self.names.get(&i) {
            return Some(n.clone());
        }
        let name = nix::net::if_::if_indextoname(i)
            .ok()?
            .to_string_lossy()
            .into_owned();
        self.names.insert(i, name.clone());
        Some(name)
    }

    /// The observations since the last call (see the module doc).
    pub fn take(&mut self, state: &DesiredState) -> Vec<FlowObservation> {
        self.retry_acct();
        let now = now_ms();
        let index = self.index.take().unwrap_or_else(|| FlowIndex::build(state));
        // Interface indexes are reused: names are looked up afresh each
        // time.
        self.names.clear();
        let records = self.sockets.drain();
        // A connection's frontend record comes before its policy records
        // (one group, in hook order).
        self.tracker.expire_frontends(now);
        for raw in records {
            let record = LogRecord {
                prefix: raw.prefix,
                in_if: self.name(raw.in_ifindex),
                out_if: self.name(raw.out_ifindex),
                packet: raw.packet,
                frontend: raw.frontend,
            };
            self.tracker.log(&record, &index, now);
        }
        self.tracker.flush_denied(now);
        let due = self
            .last_dump
            .is_none_or(|t| t.elapsed() >= self.config.update_interval);
        if due && self.tracker.live() > 0 {
            match self.sockets.dump() {
                Ok(entries) => {
                    self.tracker.dump(&entries, now);
                    self.last_dump = Some(Instant::now());
                }
                Err(e) => warn!("{}", manul_dataplane_api::chain(&e)),
            }
        }
        self.index = Some(index);
        self.tracker.take()
    }

    /// Where a connection's start finds its Service frontend (fixed at
    /// open: what the kernel offers).
    pub fn frontend_source(&self) -> FrontendSource {
        self.sockets.frontend_source()
    }

    /// Observations and events dropped since the start.
    pub fn dropped(&self) -> u64 {
        self.tracker.dropped() + self.sockets.dropped()
    }
}
