//! Handles on the cluster's processes and links for fault injection:
//! signals, kills and restarts of Typha replicas and Felix agents, cuts
//! between replicas (nftables drop rules inside the replicas' own
//! namespaces), a full disk under one replica and a slow one under
//! another.
//!
//! Every fault stays inside the cluster's namespaces and work directory.

use std::process::{Command, ExitStatus, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::ClusterError;
use crate::procs::spawn_in_appending;

use super::*;

/// The nftables table that holds a partition's drop rules.
const PARTITION_TABLE: &str = "manul_partition";

fn send(pid: u32, signal: Signal) -> Result<(), ClusterError> {
    let pid = i32::try_from(pid).map_err(|_| ClusterError::Invalid(format!("pid {pid}")))?;
    kill(Pid::from_raw(pid), signal)
        .map_err(|e| ClusterError::Spawn(format!("{signal} to {pid}: {e}")))
}

/// The nftables script that drops every packet between this namespace
/// and `peers` (both directions, so neither side's packets or answers
/// pass).
fn partition_script(peers: &[Ipv4Addr]) -> String {
    let set: Vec<String> = peers.iter().map(ToString::to_string).collect();
    let set = set.join(", ");
    format!(
        "table inet {PARTITION_TABLE} {{\n  chain input {{\n    type filter hook input priority -300; policy accept;\n    ip saddr {{ {set} }} drop\n  }}\n  chain output {{\n    type filter hook output priority -300; policy accept;\n    ip daddr {{ {set} }} drop\n  }}\n}}\n"
    )
}

impl LocalCluster {
    /// Replica `k`'s (0-based) process id.
    pub fn typha_pid(&self, k: usize) -> Option<u32> {
        self.typhas.get(k).map(|r| r.child.id())
    }

    /// Replica `k`'s own namespace (clusters of three and more replicas).
    pub fn typha_netns(&self, k: usize) -> Option<&NetNs> {
        self.typhas.get(k).and_then(|r| r.netns.as_ref())
    }

    fn replica_mut(&mut self, k: usize) -> Result<&mut Replica, ClusterError> {
        self.typhas
            .get_mut(k)
            .ok_or_else(|| ClusterError::Invalid(format!("no Typha replica {k}")))
    }

    /// Sends `signal` to replica `k`.
    pub fn signal_typha(&self, k: usize, signal: Signal) -> Result<(), ClusterError> {
        let pid = self
            .typha_pid(k)
            .ok_or_else(|| ClusterError::Invalid(format!("no Typha replica {k}")))?;
        send(pid, signal)
    }

    /// SIGKILLs replica `k` and reaps it.
    pub fn kill_typha(&mut self, k: usize) -> Result<(), ClusterError> {
        let replica = self.replica_mut(k)?;
        let _ = replica.child.kill();
        replica
            .child
            .wait()
            .map_err(|e| ClusterError::Spawn(format!("reaping Typha replica {k}: {e}")))?;
        Ok(())
    }

    /// Whether replica `k` has exited (and how), reaping it.
    pub fn typha_exited(&mut self, k: usize) -> Option<ExitStatus> {
        self.replica_mut(k).ok()?.child.try_wait().ok().flatten()
    }

    /// Starts replica `k` again, on the same data directory, after it
    /// was killed or exited (its log is appended to).
    pub fn restart_typha(&mut self, k: usize) -> Result<(), ClusterError> {
        if self.typha_exited(k).is_none() {
            return Err(ClusterError::Invalid(format!(
                "Typha replica {k} is still running"
            )));
        }
        let cmd = self.typha_command(k)?;
        let log = self.typha_log(k);
        let ns = self.typha_netns(k).unwrap_or(&self.cp);
        let child = spawn_in_appending(ns, cmd, &log)?;
        self.replica_mut(k)?.child = child;
        Ok(())
    }

    /// Cuts replica `k` off from the replicas in `others`: drop rules in
    /// `k`'s namespace and in each of theirs. Clients (the control plane
    /// and the nodes) still reach every replica.
    pub fn partition_typha(&self, k: usize, others: &[usize]) -> Result<(), ClusterError> {
        let peers: Vec<Ipv4Addr> = others.iter().map(|&o| self.typha_ip(o)).collect();
        self.nft_in(k, &partition_script(&peers))?;
        for &o in others {
            self.nft_in(o, &partition_script(&[self.typha_ip(k)]))?;
        }
        Ok(())
    }

    /// Removes every partition's drop rules.
    pub fn heal_partitions(&self) -> Result<(), ClusterError> {
        for k in 0..self.typhas.len() {
            // Declaring the table first makes the delete succeed whether
            // or not a partition added it.
            self.nft_in(
                k,
                &format!("table inet {PARTITION_TABLE}\ndelete table inet {PARTITION_TABLE}\n"),
            )?;
        }
        Ok(())
    }

    /// Runs an `nft -f -` script inside replica `k`'s namespace.
    fn nft_in(&self, k: usize, script: &str) -> Result<(), ClusterError> {
        let ns = self.typha_netns(k).ok_or_else(|| {
            ClusterError::Invalid(format!(
                "Typha replica {k} has no namespace of its own (run three or more replicas)"
            ))
        })?;
        let script = script.to_string();
        let output = ns
            .run(move || -> std::io::Result<std::process::Output> {
                use std::io::Write as _;
                let mut child = Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(script.as_bytes())?;
                }
                child.wait_with_output()
            })
            .map_err(netns_err)?
            .map_err(|e| ClusterError::Spawn(format!("nft: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ClusterError::Spawn(format!(
                "nft in {}: {}",
                ns.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Fills the small disk ([`SmallDisk`]); returns the bytes written.
    pub fn fill_small_disk(&self) -> Result<u64, ClusterError> {
        let (path, _) = self
            .small_disk
            .as_ref()
            .ok_or_else(|| ClusterError::Invalid("the cluster has no small disk".into()))?;
        disk::fill(path)
    }

    /// Frees what [`Self::fill_small_disk`] wrote.
    pub fn free_small_disk(&self) -> Result<(), ClusterError> {
        match &self.small_disk {
            Some((path, _)) => disk::free(path),
            None => Ok(()),
        }
    }

    /// The replica whose data directory is the small disk.
    pub fn small_disk(&self) -> Option<SmallDisk> {
        self.small_disk.as_ref().map(|(_, d)| *d)
    }

    /// Throttles the writes of the slow disk's replica ([`SlowDisk`]) to
    /// its disk.
    pub fn slow_down_disk(&mut self, throttle: Throttle) -> Result<(), ClusterError> {
        let replica = self
            .slow_disk()
            .ok_or_else(|| ClusterError::Invalid("the cluster has no slow disk".into()))?
            .replica;
        let pid = self
            .typha_pid(replica)
            .ok_or_else(|| ClusterError::Invalid(format!("no Typha replica {replica}")))?;
        match self.slow_disk.as_mut() {
            Some(d) => d.slow(pid, throttle),
            None => Err(ClusterError::Invalid("the cluster has no slow disk".into())),
        }
    }

    /// Lifts [`Self::slow_down_disk`]'s limits.
    pub fn heal_slow_disk(&mut self) -> Result<(), ClusterError> {
        match self.slow_disk.as_mut() {
            Some(d) => d.heal(),
            None => Ok(()),
        }
    }

    /// The replica whose data directory is the slow disk.
    pub fn slow_disk(&self) -> Option<SlowDisk> {
        self.slow_disk.as_ref().map(|d| d.disk)
    }

    /// Sends `signal` to node `i`'s (0-based) Felix.
    pub fn signal_felix(&self, i: usize, signal: Signal) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get(i)
            .ok_or_else(|| ClusterError::Invalid(format!("no node with index {i}")))?;
        send(node.felix.id(), signal)
    }

    /// SIGKILLs node `i`'s Felix and starts it again (its eBPF maps stay
    /// pinned in the meantime and keep enforcing).
    pub fn restart_felix(&mut self, i: usize) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get_mut(i)
            .ok_or_else(|| ClusterError::Invalid(format!("no node with index {i}")))?;
        let _ = node.felix.kill();
        let _ = node.felix.wait();
        let name = node.name.clone();
        let node = &self.nodes[i];
        let felix = self.spawn_felix(&name, &node.netns, true)?;
        self.nodes[i].felix = felix;
        Ok(())
    }

    /// Whether node `i`'s Felix has exited.
    pub fn felix_exited(&mut self, i: usize) -> Option<ExitStatus> {
        self.nodes.get_mut(i)?.felix.try_wait().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_drops_both_directions_to_every_peer() {
        let s = partition_script(&[
            Ipv4Addr::new(192, 168, 220, 3),
            Ipv4Addr::new(192, 168, 220, 4),
        ]);
        assert!(s.contains("ip saddr { 192.168.220.3, 192.168.220.4 } drop"));
        assert!(s.contains("ip daddr { 192.168.220.3, 192.168.220.4 } drop"));
        assert!(s.contains("hook input") && s.contains("hook output"));
    }
}
