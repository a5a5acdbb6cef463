//! The machine a run happened on, as recorded in the report: CPUs, memory,
//! kernel and OS. Read from `/proc` and `/etc/os-release`; anything that
//! cannot be read is left at a neutral value ("unknown", 0) rather than
//! failing the report.

use std::fs;
use std::thread;

use serde::{Deserialize, Serialize};

/// What a run's numbers were measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs this process may run on (respects affinity and cgroup quotas).
    pub cpus: usize,
    /// The CPU model, from `/proc/cpuinfo`, or "unknown".
    pub cpu_model: String,
    /// Total memory, from `/proc/meminfo` (0 if unknown).
    pub memory_bytes: u64,
    /// The kernel release, e.g. "6.8.0-45-generic".
    pub kernel: String,
    /// The OS's `PRETTY_NAME`, e.g. "Debian GNU/Linux 13 (trixie)".
    pub os: String,
}

const UNKNOWN: &str = "unknown";

impl Machine {
    /// Reads the current machine's description.
    pub fn detect() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpus = thread::available_parallelism()
            .map(usize::from)
            .ok()
            .or_else(|| cpuinfo_processors(&cpuinfo))
            .unwrap_or(1);
        let cpu_model = cpuinfo_model(&cpuinfo).unwrap_or_else(|| UNKNOWN.to_owned());
        let memory_bytes = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| meminfo_total_bytes(&s))
            .unwrap_or(0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| UNKNOWN.to_owned());
        let os = fs::read_to_string("/etc/os-release")
            .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
            .ok()
            .and_then(|s| os_release_pretty_name(&s))
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        Machine {
            cpus,
            cpu_model,
            memory_bytes,
            kernel,
            os,
        }
    }
}

/// The number of `processor` entries in `/proc/cpuinfo` text.
pub(crate) fn cpuinfo_processors(cpuinfo: &str) -> Option<usize> {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    (n > 0).then_some(n)
}

/// The first `model name` (x86) or `Model`/`CPU part` (Arm) in `/proc/cpuinfo` text.
pub(crate) fn cpuinfo_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "CPU part"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
        })
    })
}

/// `MemTotal` from `/proc/meminfo` text, in bytes.
pub(crate) fn meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.trim_start_matches("MemTotal:").split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    let multiplier = match fields.next() {
        Some("kB") | Some("KB") => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(multiplier)
}

/// `PRETTY_NAME` (falling back to `NAME`) from os-release text, unquoted.
pub(crate) fn os_release_pretty_name(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            (!unquoted.is_empty()).then(|| unquoted.replace("\\\"", "\""))
        })
    };
    field("PRETTY_NAME").or_else(|| field("NAME"))
}
