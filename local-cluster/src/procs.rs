//! Processes of the cluster: started inside a namespace, found by the
//! namespace they run in (so a crashed run's leftovers can be stopped),
//! and sampled for CPU and memory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manul_netns::NetNs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::ClusterError;

/// Where the cluster's programs are: next to the running executable (the
/// cargo target directory), or in `MANUL_BIN_DIR`.
pub fn bin_dir() -> Result<PathBuf, ClusterError> {
    if let Ok(dir) = std::env::var("MANUL_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| ClusterError::Binaries(e.to_string()))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test binaries live in target/PROFILE/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of program `name`, which must exist.
pub fn program(name: &str) -> Result<PathBuf, ClusterError> {
    let path = bin_dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ClusterError::Binaries(format!(
            "{} not found; build the workspace's programs first (cargo build --bins)",
            path.display()
        )))
    }
}

/// Starts `command` inside `ns` (the child inherits the namespace of the
/// thread that forks it), logging to `log`.
pub fn spawn_in(ns: &NetNs, command: Command, log: &Path) -> Result<Child, ClusterError> {
    let out = std::fs::File::create(log).map_err(|e| ClusterError::io(log, e))?;
    spawn_logging(ns, command, log, out)
}

/// Like [`spawn_in`], appending to `log` (a restarted process keeps its
/// earlier runs' lines).
pub fn spawn_in_appending(ns: &NetNs, command: Command, log: &Path) -> Result<Child, ClusterError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ClusterError::io(log, e))?;
    spawn_logging(ns, command, log, out)
}

fn spawn_logging(
    ns: &NetNs,
    mut command: Command,
    log: &Path,
    out: std::fs::File,
) -> Result<Child, ClusterError> {
    let err = out.try_clone().map_err(|e| ClusterError::io(log, e))?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    ns.run(move || command.spawn())
        .map_err(|e| ClusterError::Netns(e.to_string()))?
        .map_err(|e| ClusterError::Spawn(e.to_string()))
}

/// The inode of a network namespace file: processes in that namespace
/// show it in `/proc/PID/ns/net`.
fn ns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Every process whose network namespace is `ns_path`.
pub fn processes_in(ns_path: &Path) -> Vec<i32> {
    let Some(ino) = ns_inode(ns_path) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .and_then(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("net:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                == Some(ino)
        })
        .collect()
}

/// Stops every process in a namespace: SIGTERM, then SIGKILL after
/// `grace`.
pub fn stop_processes_in(ns_path: &Path, grace: Duration) {
    let pids = processes_in(ns_path);
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !processes_in(ns_path).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in processes_in(ns_path) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`; reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// CPU time (seconds) and resident memory (bytes) of a process.
pub fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    let ticks = 100.0;
    Some(((utime + stime) / ticks, rss_pages * 4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_this_process_is_readable() {
        let (cpu, rss) = usage(std::process::id()).unwrap();
        assert!(cpu >= 0.0);
        assert!(rss > 1024 * 1024, "rss {rss}");
    }
}
