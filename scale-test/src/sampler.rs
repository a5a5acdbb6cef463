//! Samples the CPU and memory of Typha and Felix while a run goes on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use manul_local_cluster::procs::usage;

use crate::report::ResourceSample;

/// A background sampler; [`Sampler::stop`] returns the samples.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<ResourceSample>>>,
}

impl Sampler {
    /// Samples `processes` (name, pid) every `every`, times relative to
    /// `start`.
    pub fn start(processes: Vec<(String, u32)>, start: Instant, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut last: BTreeMap<u32, (f64, Instant)> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                for (name, pid) in &processes {
                    let Some((cpu, rss)) = usage(*pid) else {
                        continue;
                    };
                    let now = Instant::now();
                    if let Some((prev, at)) = last.insert(*pid, (cpu, now)) {
                        let dt = now.duration_since(at).as_secs_f64();
                        if dt > 0.0 {
                            out.push(ResourceSample {
                                at_s: now.duration_since(start).as_secs_f64(),
                                process: name.clone(),
                                cpu_percent: ((cpu - prev) / dt * 100.0).max(0.0),
                                rss_bytes: rss,
                            });
                        }
                    }
                }
                std::thread::sleep(every);
            }
            out
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Vec<ResourceSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}
