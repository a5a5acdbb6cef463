//! New connections through a ClusterIP counted as handshakes: what each
//! dataplane spends on a connection's first packets, with a harness whose
//! own cost per connection is small.
//!
//! The connect loop of [`super::services`] pays, per connection, a socket,
//! a blocking connect, an RST close and an accept on another thread:
//! about 43 µs on the reference machine, more than any dataplane adds.
//! Here the client pod sends TCP SYNs from a raw socket instead, each from
//! its own source port (so each is the first packet of a new flow through
//! the service NAT and every conntrack table on the way), keeping a window
//! of them outstanding; the server pod's kernel answers each with a
//! SYN-ACK from a listening socket; the client counts the SYN-ACKs that
//! come back from the cluster IP (reverse-translated) and acknowledge the
//! SYN of that port. The client's kernel, knowing no such connection,
//! answers each SYN-ACK with an RST, which removes the server's half-open
//! connection; so every handshake is SYN, SYN-ACK, RST through the
//! dataplane, and no connection is ever established. What is counted is
//! handshakes (a new connection's translation, conntrack entry and policy
//! decision, and the reply's reverse translation), not whole connections.
//!
//! One measurement, in fresh namespaces (so every conntrack table and
//! every eBPF map starts empty), after programming as
//! [`super::measure_services`] does:
//!
//! 1. the checks: a SYN to the service (or, for the ceilings, the pod)
//!    must get its SYN-ACK from that address, not from the backend's own;
//!    a SYN to a port the server's policy denies must get nothing at all
//!    through a Manul driver (without policy its reset is recorded);
//! 2. `warmup` handshakes, untimed;
//! 3. the latency: `latency` handshakes one at a time, from the SYN's
//!    `sendto` to the SYN-ACK read;
//! 4. the rate: `handshakes` handshakes with `window` SYNs outstanding,
//!    the rate over the wall time and from the median slice (rounds of
//!    the sending loop with at least `slice` answers, see [`Slices`]: one
//!    over their median time per handshake, which leaves out the slices
//!    in which another process had the CPU); a SYN unanswered after
//!    `timeout` counts as lost. The handshakes of a SYN run inside its
//!    `sendto` (the veths hand packets on in the sender's softirq), so
//!    the window overlaps little more than the reading of answers with
//!    the sending.
//!
//! Every SYN of a measurement has its own source port ([`PortPlan`]), so
//! a measurement sends at most [`MAX_FLOWS`] of them: fewer flows than the
//! eBPF driver's service NAT map holds (131,072 entries, two per flow) and
//! its conntrack map (524,288), and than netfilter's conntrack limit on
//! the reference machine (262,144); the node namespace's netfilter entry
//! count is read after each measurement and reported.

use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use manul_netns::NetNs;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::handshake_stats::{HandshakeReport, HandshakeSample, Slices, summarise_handshakes};
use super::measure::build;
use super::services::{ServiceDataplane, load_average, program, tested_service};
use super::syn::{Answer, PortPlan, classify, parse, syn_segment};
use super::{CLIENT_IP, CLOSED_PORT, CONNECT_PORT, LatencyStats, SERVER_IP, setup};
use crate::{ConformanceError, DriverThread};

/// The most SYNs (source ports) one measurement sends (see the module
/// documentation).
pub const MAX_FLOWS: usize = 60_000;
/// The first source port.
const FIRST_PORT: u16 = 1024;

/// How many handshakes one measurement makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandshakeOptions {
    pub warmup: usize,
    /// Timed one at a time.
    pub latency: usize,
    /// Timed with `window` outstanding.
    pub handshakes: usize,
    pub window: usize,
    /// Handshakes per slice of the median-slice rate (at least; see
    /// [`Slices`]).
    pub slice: usize,
    /// After this long without an answer a SYN counts as lost.
    pub timeout_ms: u64,
}

impl Default for HandshakeOptions {
    fn default() -> Self {
        Self {
            warmup: 2_000,
            latency: 5_000,
            handshakes: 50_000,
            window: 8,
            slice: 8,
            timeout_ms: 200,
        }
    }
}

impl HandshakeOptions {
    /// An error naming the problem if these options cannot be measured.
    pub fn check(&self) -> Result<(), ConformanceError> {
        let flows = 2 + self.warmup + self.latency + self.handshakes;
        if flows > MAX_FLOWS {
            return Err(ConformanceError::Driver(format!(
                "a measurement may send at most {MAX_FLOWS} SYNs (one source port each); \
                 {} warmup + {} latency + {} handshakes + 2 checks is {flows}",
                self.warmup, self.latency, self.handshakes
            )));
        }
        if self.window == 0 || self.slice == 0 || self.handshakes < self.slice {
            return Err(ConformanceError::Driver(format!(
                "window ({}) and slice ({}) must be positive, and handshakes ({}) at least one slice",
                self.window, self.slice, self.handshakes
            )));
        }
        Ok(())
    }
}

/// The client pod's raw TCP socket (made in its namespace).
struct Raw {
    socket: Socket,
    buf: Vec<u8>,
}

impl Raw {
    fn open(client: &NetNs) -> Result<Raw, ConformanceError> {
        let socket = client
            .run(|| -> io::Result<Socket> {
                let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))?;
                s.set_nonblocking(true)?;
                // Answers to a whole window, with room (capped by rmem_max).
                s.set_recv_buffer_size(4 << 20)?;
                Ok(s)
            })
            .map_err(setup("raw socket"))?
            .map_err(setup("raw socket"))?;
        Ok(Raw {
            socket,
            buf: vec![0; 2048],
        })
    }

    fn send_syn(&self, port: u16, target: SocketAddrV4) -> io::Result<()> {
        let syn = syn_segment(SocketAddrV4::new(CLIENT_IP, port), target);
        let to = SockAddr::from(SocketAddrV4::new(*target.ip(), 0));
        self.socket.send_to(&syn, &to).map(|_| ())
    }

    /// The next received packet's meaning for SYNs to `target`, `None`
    /// when nothing is queued.
    fn next(&mut self, target: SocketAddrV4) -> io::Result<Option<Answer>> {
        match (&self.socket).read(&mut self.buf) {
            Ok(n) => Ok(Some(
                self.buf
                    .get(..n)
                    .and_then(parse)
                    .map_or(Answer::Unrelated, |s| classify(&s, CLIENT_IP, target)),
            )),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(Answer::Unrelated)),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for something to read.
    fn wait(&self, timeout: Duration) -> io::Result<()> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// One SYN from `port` to `target`: the first answer to it within
    /// `timeout` and how long it took, or `None`.
    fn one(
        &mut self,
        port: u16,
        target: SocketAddrV4,
        timeout: Duration,
    ) -> io::Result<Option<(Answer, Duration)>> {
        let started = Instant::now();
        self.send_syn(port, target)?;
        loop {
            while let Some(a) = self.next(target)? {
                match a {
                    Answer::SynAck(p) | Answer::Reset(p) | Answer::Stranger(p) if p == port => {
                        return Ok(Some((a, started.elapsed())));
                    }
                    _ => {}
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Ok(None);
            }
            self.wait(timeout - waited)?;
        }
    }
}

/// The rate phase's counts.
#[derive(Debug, Default)]
struct Windowed {
    answered: usize,
    lost: usize,
    resets: usize,
    strangers: usize,
    took: Duration,
}

/// SYNs from every port of `ports` to `target`, `window` outstanding.
fn windowed(
    raw: &mut Raw,
    ports: std::ops::Range<u16>,
    target: SocketAddrV4,
    window: usize,
    timeout: Duration,
    slices: &mut Slices,
) -> io::Result<Windowed> {
    let first = ports.start;
    let n = ports.len();
    let mut sent_at: Vec<Option<Instant>> = vec![None; n];
    let (mut next, mut oldest, mut outstanding) = (0usize, 0usize, 0usize);
    let mut w = Windowed::default();
    let started = Instant::now();
    let mut last = started;
    while next < n || outstanding > 0 {
        while outstanding < window && next < n {
            sent_at[next] = Some(Instant::now());
            raw.send_syn(first + next as u16, target)?;
            next += 1;
            outstanding += 1;
        }
        let mut got = false;
        while let Some(a) = raw.next(target)? {
            let (port, kind) = match a {
                Answer::SynAck(p) => (p, 0),
                Answer::Reset(p) => (p, 1),
                Answer::Stranger(p) => (p, 2),
                Answer::Unrelated => continue,
            };
            let Some(i) = port.checked_sub(first).map(usize::from) else {
                continue;
            };
            if i >= n || sent_at[i].take().is_none() {
                continue;
            }
            got = true;
            outstanding -= 1;
            match kind {
                0 => {
                    w.answered += 1;
                    last = Instant::now();
                }
                1 => w.resets += 1,
                _ => w.strangers += 1,
            }
        }
        if got {
            slices.round_end(w.answered, Instant::now());
        }
        if !got && (outstanding >= window || next >= n) {
            raw.wait(Duration::from_millis(1))?;
        }
        // Give up on SYNs unanswered for `timeout`.
        let now = Instant::now();
        while oldest < next {
            match sent_at[oldest] {
                None => oldest += 1,
                Some(t) if now.saturating_duration_since(t) >= timeout => {
                    sent_at[oldest] = None;
                    w.lost += 1;
                    outstanding -= 1;
                    oldest += 1;
                }
                Some(_) => break,
            }
        }
    }
    w.took = last.saturating_duration_since(started);
    Ok(w)
}

/// The namespaces, listener and driver of one measurement; field order
/// is drop order.
struct Bench {
    driver: Option<DriverThread>,
    _listener: Socket,
    client: NetNs,
    _server: NetNs,
    node: NetNs,
}

fn read_u64(ns: &NetNs, key: &str) -> Option<u64> {
    ns.get_sysctl(key).ok().and_then(|v| v.trim().parse().ok())
}

fn answer_name(a: Option<Answer>) -> &'static str {
    match a {
        None | Some(Answer::Unrelated) => "nothing",
        Some(Answer::SynAck(_)) => "syn-ack",
        Some(Answer::Reset(_)) => "reset",
        Some(Answer::Stranger(_)) => "stranger",
    }
}

/// One measurement in fresh namespaces named after
/// `manul_netns::unique_prefix(tag)` (2 characters): `services` services
/// programmed through `dataplane` (none for the ceilings, whose SYNs go
/// to the server pod's IP), the checks, then the handshakes of `options`
/// (see the module documentation). Everything it created is removed when
/// it returns.
pub fn measure_handshakes(
    tag: &str,
    dataplane: &ServiceDataplane,
    services: usize,
    options: &HandshakeOptions,
) -> Result<HandshakeSample, ConformanceError> {
    options.check()?;
    let services = if dataplane.has_services() {
        if services == 0 {
            return Err(ConformanceError::Driver(
                "the number of services must be positive".into(),
            ));
        }
        services
    } else {
        0
    };
    let prefix = manul_netns::unique_prefix(tag);
    let (node, client, server) = build(&prefix)?;
    let listener = server
        .run(|| -> io::Result<Socket> {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.bind(&SockAddr::from(SocketAddr::new(
                IpAddr::V4(SERVER_IP),
                CONNECT_PORT,
            )))?;
            s.listen(4096)?;
            Ok(s)
        })
        .map_err(setup("listener"))?
        .map_err(setup("listener"))?;
    let mut bench = Bench {
        driver: None,
        _listener: listener,
        client,
        _server: server,
        node,
    };
    let (driver, program_ms) = program(&bench.node, &prefix, dataplane, services)?;
    bench.driver = driver;
    let target = if services == 0 {
        SocketAddrV4::new(SERVER_IP, CONNECT_PORT)
    } else {
        match tested_service(services) {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(v6) => {
                return Err(ConformanceError::Driver(format!(
                    "the tested service {v6} is not IPv4"
                )));
            }
        }
    };
    let fail = |what: String| ConformanceError::Driver(format!("{}: {what}", dataplane.name()));
    let mut raw = Raw::open(&bench.client)?;
    let mut plan = PortPlan::new(FIRST_PORT, u16::MAX);
    let mut ports = |count: usize| {
        let left = plan.left();
        plan.take(count).ok_or_else(|| {
            ConformanceError::Driver(format!("{count} source ports wanted, {left} left"))
        })
    };

    // The checks: translated both ways, and the policy in force.
    let check = ports(2)?;
    let reached = raw
        .one(check.start, target, Duration::from_secs(1))
        .map_err(setup("the reachability check"))?;
    match reached {
        Some((Answer::SynAck(_), _)) => {}
        other => {
            return Err(fail(format!(
                "a SYN to {target} got {} (a SYN-ACK from {target} was expected)",
                answer_name(other.map(|(a, _)| a))
            )));
        }
    }
    let denied = SocketAddrV4::new(SERVER_IP, CLOSED_PORT);
    let denied_answer = raw
        .one(check.start + 1, denied, Duration::from_millis(300))
        .map_err(setup("the policy check"))?
        .map(|(a, _)| a);
    let denied_port = answer_name(denied_answer).to_string();
    let has_policy = matches!(
        dataplane,
        ServiceDataplane::Driver { .. } | ServiceDataplane::DriverNoServices { .. }
    );
    if has_policy && denied_port != "nothing" {
        return Err(fail(format!(
            "the policy is not enforced: a SYN to {denied}, which it denies, got {denied_port}"
        )));
    }

    let timeout = Duration::from_millis(options.timeout_ms);
    let warm = ports(options.warmup)?;
    windowed(
        &mut raw,
        warm,
        target,
        options.window,
        timeout,
        &mut Slices::new(options.slice, Instant::now()),
    )
    .map_err(setup("warmup"))?;

    let mut latencies = Vec::with_capacity(options.latency);
    let mut latency_failures = 0;
    for port in ports(options.latency)? {
        match raw.one(port, target, timeout).map_err(setup("latency"))? {
            Some((Answer::SynAck(_), took)) => latencies.push(took),
            _ => latency_failures += 1,
        }
    }
    let latency = LatencyStats::from_samples(&mut latencies, latency_failures);

    let load_average = load_average();
    let rate_ports = ports(options.handshakes)?;
    let mut slices = Slices::new(options.slice, Instant::now());
    let w = windowed(
        &mut raw,
        rate_ports,
        target,
        options.window,
        timeout,
        &mut slices,
    )
    .map_err(setup("handshakes"))?;
    if w.strangers > 0 {
        return Err(fail(format!(
            "{} SYN-ACKs did not come from {target} (not translated back)",
            w.strangers
        )));
    }
    Ok(HandshakeSample {
        dataplane: dataplane.name().to_string(),
        services,
        program_ms,
        handshakes_per_sec: w.answered as f64 / w.took.as_secs_f64().max(1e-9),
        handshakes_per_sec_p50_slice: slices.median_rate(),
        sent: options.handshakes,
        answered: w.answered,
        lost: w.lost,
        resets: w.resets,
        latency,
        denied_port,
        nf_conntrack_entries: read_u64(&bench.node, "net.netfilter.nf_conntrack_count"),
        nf_conntrack_max: read_u64(&bench.node, "net.netfilter.nf_conntrack_max"),
        load_average,
    })
}

/// Runs `runs` rounds; each round measures every ceiling once, then every
/// dataplane with services at every number of services, interleaved so
/// that load from elsewhere spreads over all of them. `baseline` names
/// the dataplane the others are compared with. `progress` sees each
/// sample.
pub fn run_service_handshake_benchmark(
    tag: &str,
    dataplanes: &[ServiceDataplane],
    service_counts: &[usize],
    runs: usize,
    options: &HandshakeOptions,
    progress: &mut dyn FnMut(&HandshakeSample),
) -> Result<HandshakeReport, ConformanceError> {
    options.check()?;
    let baseline = dataplanes
        .iter()
        .rev()
        .find(|d| d.has_services())
        .map(|d| d.name().to_string())
        .unwrap_or_default();
    let mut samples = Vec::new();
    for _ in 0..runs.max(1) {
        for d in dataplanes.iter().filter(|d| !d.has_services()) {
            let s = measure_handshakes(tag, d, 0, options)?;
            progress(&s);
            samples.push(s);
        }
        for &n in service_counts {
            for d in dataplanes.iter().filter(|d| d.has_services()) {
                let s = measure_handshakes(tag, d, n, options)?;
                progress(&s);
                samples.push(s);
            }
        }
    }
    Ok(summarise_handshakes(samples, &baseline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_fit_the_port_range() {
        assert!(HandshakeOptions::default().check().is_ok());
        let too_many = HandshakeOptions {
            handshakes: MAX_FLOWS,
            ..HandshakeOptions::default()
        };
        let e = too_many.check().expect_err("too many flows").to_string();
        assert!(e.contains("at most 60000 SYNs"), "{e}");
        let no_window = HandshakeOptions {
            window: 0,
            ..HandshakeOptions::default()
        };
        assert!(no_window.check().is_err());
        // Ports for every phase fit below 65,535 at the most flows.
        let mut plan = PortPlan::new(FIRST_PORT, u16::MAX);
        assert!(plan.take(MAX_FLOWS).is_some());
    }
}
