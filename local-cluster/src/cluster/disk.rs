//! A small tmpfs under one Typha replica's data directory: mounted before
//! the replica starts, filled and freed by a fault, unmounted with the
//! cluster (and, after a killed run, by [`super::LocalCluster::cleanup`],
//! with the slow disk's file system).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use tracing::warn;

use crate::ClusterError;

/// The file a full disk is filled with.
const FILLER: &str = "chaos-filler";

/// Mounts a tmpfs of `mib` MiB at `path`.
pub(super) fn mount_tmpfs(path: &Path, mib: u64) -> Result<(), ClusterError> {
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={mib}m,mode=0700").as_str()),
    )
    .map_err(|e| ClusterError::io(path, std::io::Error::from(e)))
}

/// Unmounts `path` (lazily: a replica still holding files there does not
/// keep it mounted).
pub(super) fn unmount(path: &Path) {
    if let Err(e) = nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        warn!("cannot unmount {}: {e}", path.display());
    }
}

/// Unmounts the tmpfs mounts a killed run of a cluster named `PREFIX…`
/// left in its work directory (`TMPDIR/PREFIX…/typha-K`).
pub(super) fn unmount_leftovers(prefix: &str) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let tmp = std::env::temp_dir();
    for point in leftover_points(&mounts, &tmp, prefix) {
        unmount(&point);
    }
}

/// The tmpfs mount points in `mounts` (the format of `/proc/self/mounts`)
/// that are a cluster's replica data directories under `tmp`.
fn leftover_points(mounts: &str, tmp: &Path, prefix: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            // The small disk's tmpfs, or the slow disk's loop device.
            let ours = fstype == "tmpfs" || (fstype == "ext4" && device.starts_with("/dev/loop"));
            ours.then(|| PathBuf::from(point))
        })
        .filter(|point| {
            let work = point.parent();
            point
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("typha-"))
                && work.and_then(Path::parent) == Some(tmp)
                && work
                    .and_then(Path::file_name)
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

/// Fills the file system at `dir` until it refuses a write; returns the
/// bytes written.
pub(super) fn fill(dir: &Path) -> Result<u64, ClusterError> {
    let path = dir.join(FILLER);
    let mut file = std::fs::File::create(&path).map_err(|e| ClusterError::io(&path, e))?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(ClusterError::io(&path, e)),
        }
    }
    Ok(written)
}

/// Removes what [`fill`] wrote.
pub(super) fn free(dir: &Path) -> Result<(), ClusterError> {
    let path = dir.join(FILLER);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClusterError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_the_clusters_replica_tmpfs_only() {
        let mounts = "\
tmpfs /tmp/ch12-abc/typha-3 tmpfs rw,size=65536k 0 0
tmpfs /tmp/other-abc/typha-3 tmpfs rw 0 0
tmpfs /tmp/ch12-abc/elsewhere tmpfs rw 0 0
/dev/sda1 /tmp/ch12-abc/typha-2 ext4 rw 0 0
/dev/loop3 /tmp/ch12-abc/typha-1 ext4 rw 0 0
tmpfs /run tmpfs rw 0 0
";
        assert_eq!(
            leftover_points(mounts, Path::new("/tmp"), "ch12-"),
            [
                PathBuf::from("/tmp/ch12-abc/typha-3"),
                PathBuf::from("/tmp/ch12-abc/typha-1")
            ]
        );
    }
}
