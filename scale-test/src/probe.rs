//! Probing like tiger-bench: from the moment a pod's sandbox is ready, a
//! TCP connect to an allowed target after 1 ms, then at growing intervals,
//! until the first success. Each attempt is a fresh connection with a
//! short timeout, so a dataplane that starts allowing mid-attempt is seen
//! at the next attempt rather than after a SYN retransmission (1 s).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use manul_netns::NetNs;

/// The first attempt goes this long after the start.
pub const FIRST_PROBE: Duration = Duration::from_millis(1);
/// Intervals grow by this factor...
pub const GROWTH: f64 = 1.5;
/// ...up to this.
pub const MAX_INTERVAL: Duration = Duration::from_millis(50);
/// An attempt gives up after at least this long.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(5);

/// Connects from inside `ns` to `target` until it works or `give_up`
/// passes; the time from `start` to the first success.
pub fn time_to_first_success(
    ns: &NetNs,
    target: SocketAddr,
    start: Instant,
    give_up: Duration,
) -> Option<Duration> {
    ns.run(move || {
        let mut interval = FIRST_PROBE;
        let mut next = start + FIRST_PROBE;
        loop {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            let attempt = Instant::now();
            if TcpStream::connect_timeout(&target, interval.max(MIN_ATTEMPT)).is_ok() {
                return Some(attempt.max(start) - start);
            }
            if start.elapsed() > give_up {
                return None;
            }
            interval = Duration::from_secs_f64(
                (interval.as_secs_f64() * GROWTH).min(MAX_INTERVAL.as_secs_f64()),
            );
            next = attempt + interval;
        }
    })
    .ok()
    .flatten()
}

/// Connects from inside `ns` to `target` until an attempt fails (times
/// out or is refused); the time from `start` to the start of that attempt.
pub fn time_to_first_block(
    ns: &NetNs,
    target: SocketAddr,
    start: Instant,
    give_up: Duration,
) -> Option<Duration> {
    ns.run(move || {
        loop {
            let attempt = Instant::now();
            if TcpStream::connect_timeout(&target, Duration::from_millis(20)).is_err() {
                return Some(attempt.max(start) - start);
            }
            if start.elapsed() > give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .ok()
    .flatten()
}

/// One connect from inside `ns`: whether it got through.
pub fn connects(ns: &NetNs, target: SocketAddr, timeout: Duration) -> bool {
    ns.run(move || TcpStream::connect_timeout(&target, timeout).is_ok())
        .unwrap_or(false)
}
