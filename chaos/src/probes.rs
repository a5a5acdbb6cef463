//! Real packets, all run long: every pair is probed in turn with a TCP
//! connect from the source pod's namespace. A denied pair that connects is
//! an unexpected allow; an allowed pair that does not is recorded (it
//! must work again within the convergence bound after a fault heals).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manul_netns::{NetNs, ProbeOutcome};

use crate::setup::{Pair, probe};

/// One probe's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    /// Seconds since the run started.
    pub t: f64,
    pub pair: usize,
    pub allowed: bool,
    pub connected: bool,
}

/// Everything the prober saw.
#[derive(Debug, Default)]
pub struct Probes {
    pub results: Mutex<Vec<ProbeResult>>,
}

impl Probes {
    pub fn all(&self) -> Vec<ProbeResult> {
        self.results.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Probes `pairs` round-robin until `stop`.
pub fn run(pairs: Vec<Pair>, start: Instant, probes: Arc<Probes>, stop: Arc<AtomicBool>) {
    let namespaces: Vec<Option<NetNs>> =
        pairs.iter().map(|p| NetNs::open(&p.from_ns).ok()).collect();
    while !stop.load(Ordering::Relaxed) {
        for (i, (p, ns)) in pairs.iter().zip(&namespaces).enumerate() {
            let Some(ns) = ns else { continue };
            let t = start.elapsed().as_secs_f64();
            let outcome = probe(ns, p, Duration::from_millis(250));
            let Ok(outcome) = outcome else { continue };
            let result = ProbeResult {
                t,
                pair: i,
                allowed: p.allowed,
                connected: outcome == ProbeOutcome::Connected,
            };
            if let Ok(mut r) = probes.results.lock() {
                r.push(result);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
