//! A slow disk under one Typha replica: its data directory is an ext4 file
//! system on a loop device of its own (backed by a file in the cluster's
//! work directory), and a fault moves the replica's process into a cgroup
//! of the cluster's that throttles its writes to that device (cgroup v2
//! `io.max`, or cgroup v1 `blkio.throttle.*` where the `io` controller is
//! not available). Only the replica's own writes are throttled; the
//! limits go when the fault heals.
//!
//! It refuses to run without a loop device, `mkfs.ext4` or a cgroup
//! controller that can throttle I/O: setting up says which is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::warn;

use crate::ClusterError;

/// A replica whose data directory is on a loop device that a fault can
/// slow down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowDisk {
    /// The replica, 0-based.
    pub replica: usize,
    /// The file system's size.
    pub mib: u64,
}

impl SlowDisk {
    /// Whether this machine can make a slow disk: a cgroup controller that
    /// throttles I/O, `losetup` and `mkfs.ext4`; the error names what is
    /// missing.
    pub fn check() -> Result<(), ClusterError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")
            .map_err(|e| ClusterError::io(Path::new("/proc/self/mounts"), e))?;
        available_controller(&mounts)?;
        run(Command::new("losetup").arg("--version"))?;
        run(Command::new("mkfs.ext4").arg("-V"))?;
        Ok(())
    }
}

fn available_controller(mounts: &str) -> Result<Controller, ClusterError> {
    pick_controller(mounts, |p| {
        std::fs::read_to_string(p.join("cgroup.controllers")).ok()
    })
    .ok_or_else(|| {
        ClusterError::Invalid(
            "no cgroup controller can throttle a disk: neither cgroup v2 with the io controller nor cgroup v1 blkio is mounted".into(),
        )
    })
}

/// How a slow disk is slowed: the writes of the replica's process to the
/// device, per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub write_iops: u64,
    pub write_bytes: u64,
}

/// The cgroup controller that throttles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Controller {
    /// cgroup v2, mounted here, with `io` available.
    V2(PathBuf),
    /// cgroup v1's `blkio` hierarchy, mounted here.
    V1(PathBuf),
}

impl Controller {
    fn root(&self) -> &Path {
        match self {
            Controller::V2(p) | Controller::V1(p) => p,
        }
    }
}

/// The controller to use, from `/proc/self/mounts` and each cgroup v2
/// mount's `cgroup.controllers` (`v2_controllers`): v2 with `io` first.
pub(super) fn pick_controller(
    mounts: &str,
    v2_controllers: impl Fn(&Path) -> Option<String>,
) -> Option<Controller> {
    let mut v1 = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, point, fstype, options, ..] = fields[..] else {
            continue;
        };
        let point = PathBuf::from(point);
        match fstype {
            "cgroup2"
                if v2_controllers(&point)
                    .is_some_and(|c| c.split_whitespace().any(|name| name == "io")) =>
            {
                return Some(Controller::V2(point));
            }
            "cgroup" if options.split(',').any(|o| o == "blkio") => {
                v1.get_or_insert(Controller::V1(point));
            }
            _ => {}
        }
    }
    v1
}

/// What to write, and where under the cgroup, to set `throttle` on device
/// `dev` (`MAJOR:MINOR`), or to lift it (`None`).
pub(super) fn limit_writes(
    controller: &Controller,
    dev: &str,
    throttle: Option<Throttle>,
) -> Vec<(&'static str, String)> {
    match (controller, throttle) {
        (Controller::V2(_), Some(t)) => vec![(
            "io.max",
            format!("{dev} wiops={} wbps={}", t.write_iops, t.write_bytes),
        )],
        (Controller::V2(_), None) => vec![("io.max", format!("{dev} wiops=max wbps=max"))],
        (Controller::V1(_), Some(t)) => vec![
            (
                "blkio.throttle.write_iops_device",
                format!("{dev} {}", t.write_iops),
            ),
            (
                "blkio.throttle.write_bps_device",
                format!("{dev} {}", t.write_bytes),
            ),
        ],
        // 0 removes a v1 rule.
        (Controller::V1(_), None) => vec![
            ("blkio.throttle.write_iops_device", format!("{dev} 0")),
            ("blkio.throttle.write_bps_device", format!("{dev} 0")),
        ],
    }
}

/// The set-up slow disk: the loop device, its mount, the cgroup.
#[derive(Debug)]
pub(super) struct Mounted {
    pub(super) disk: SlowDisk,
    point: PathBuf,
    loop_dev: String,
    /// `MAJOR:MINOR` of the loop device.
    dev: String,
    controller: Controller,
    cgroup: PathBuf,
    /// Where the throttled process came from, to move it back.
    moved: Option<(u32, PathBuf)>,
}

fn run(cmd: &mut Command) -> Result<String, ClusterError> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| ClusterError::Spawn(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(ClusterError::Spawn(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn write(path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(|e| ClusterError::io(path, e))
}

/// The name of a cluster's throttling cgroup.
pub(super) fn cgroup_name(cluster: &str) -> String {
    format!("{cluster}-slow-disk")
}

impl Mounted {
    /// Makes the file system at `point` (an empty directory) from an image
    /// `image` and the cgroup `cgroup_name` under the controller's root.
    pub(super) fn set_up(
        disk: SlowDisk,
        point: &Path,
        image: &Path,
        cgroup_name: &str,
    ) -> Result<Mounted, ClusterError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")
            .map_err(|e| ClusterError::io(Path::new("/proc/self/mounts"), e))?;
        let controller = available_controller(&mounts)?;
        let file = std::fs::File::create(image).map_err(|e| ClusterError::io(image, e))?;
        file.set_len(disk.mib * 1024 * 1024)
            .map_err(|e| ClusterError::io(image, e))?;
        drop(file);
        let loop_dev = run(Command::new("losetup").arg("-f").arg("--show").arg(image))?;
        let mut mounted = Mounted {
            disk,
            point: point.to_path_buf(),
            loop_dev: loop_dev.clone(),
            dev: String::new(),
            cgroup: controller.root().join(cgroup_name),
            controller,
            moved: None,
        };
        // From here on, dropping `mounted` undoes what was done.
        let sys = PathBuf::from("/sys/block")
            .join(loop_dev.trim_start_matches("/dev/"))
            .join("dev");
        mounted.dev = std::fs::read_to_string(&sys)
            .map_err(|e| ClusterError::io(&sys, e))?
            .trim()
            .to_string();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&loop_dev))?;
        std::fs::create_dir_all(point).map_err(|e| ClusterError::io(point, e))?;
        nix::mount::mount(
            Some(loop_dev.as_str()),
            point,
            Some("ext4"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| ClusterError::io(point, std::io::Error::from(e)))?;
        if let Controller::V2(root) = &mounted.controller {
            // The io controller must be enabled for the root's children.
            let control = root.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "io") {
                write(&control, "+io")?;
            }
        }
        match std::fs::create_dir(&mounted.cgroup) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ClusterError::io(&mounted.cgroup, e)),
        }
        Ok(mounted)
    }

    /// Throttles process `pid`'s writes to the disk.
    pub(super) fn slow(&mut self, pid: u32, throttle: Throttle) -> Result<(), ClusterError> {
        for (file, text) in limit_writes(&self.controller, &self.dev, Some(throttle)) {
            write(&self.cgroup.join(file), &text)?;
        }
        let from = own_cgroup(&self.controller, pid)?;
        write(&self.cgroup.join("cgroup.procs"), &pid.to_string())?;
        self.moved = Some((pid, from));
        Ok(())
    }

    /// Lifts the limits and moves the process back where it was (a
    /// process that has exited meanwhile is left alone).
    pub(super) fn heal(&mut self) -> Result<(), ClusterError> {
        for (file, text) in limit_writes(&self.controller, &self.dev, None) {
            write(&self.cgroup.join(file), &text)?;
        }
        if let Some((pid, from)) = self.moved.take()
            && let Err(e) = std::fs::write(from.join("cgroup.procs"), pid.to_string())
        {
            warn!("cannot move {pid} back to {}: {e}", from.display());
        }
        Ok(())
    }
}

/// The cgroup directory of `pid` in `controller`'s hierarchy.
fn own_cgroup(controller: &Controller, pid: u32) -> Result<PathBuf, ClusterError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&path).map_err(|e| ClusterError::io(&path, e))?;
    let relative = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, relative) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match controller {
            Controller::V2(_) => controllers.is_empty(),
            Controller::V1(_) => controllers.split(',').any(|c| c == "blkio"),
        };
        wanted.then(|| relative.trim_start_matches('/').to_string())
    });
    Ok(controller.root().join(relative.unwrap_or_default()))
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.heal();
        if let Err(e) = nix::mount::umount2(&self.point, nix::mount::MntFlags::MNT_DETACH) {
            warn!("cannot unmount {}: {e}", self.point.display());
        }
        if let Err(e) = run(Command::new("losetup").arg("-d").arg(&self.loop_dev)) {
            warn!("cannot detach {}: {e}", self.loop_dev);
        }
        remove_cgroup(&self.cgroup);
    }
}

/// Removes a throttling cgroup, moving what is left in it to its parent.
fn remove_cgroup(cgroup: &Path) {
    if !cgroup.exists() {
        return;
    }
    if let (Ok(procs), Some(parent)) = (
        std::fs::read_to_string(cgroup.join("cgroup.procs")),
        cgroup.parent(),
    ) {
        for pid in procs.lines() {
            let _ = std::fs::write(parent.join("cgroup.procs"), pid);
        }
    }
    if let Err(e) = std::fs::remove_dir(cgroup) {
        warn!("cannot remove the cgroup {}: {e}", cgroup.display());
    }
}

/// Detaches the loop devices and removes the cgroups a killed run of a
/// cluster named `PREFIX…` left behind (its file systems are unmounted
/// with the tmpfs ones).
pub(super) fn remove_leftovers(prefix: &str) {
    let tmp = std::env::temp_dir();
    if let Ok(blocks) = std::fs::read_dir("/sys/block") {
        for b in blocks.flatten() {
            let name = b.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            let Ok(backing) = std::fs::read_to_string(b.path().join("loop/backing_file")) else {
                continue;
            };
            let backing = PathBuf::from(backing.trim());
            let ours = backing
                .parent()
                .filter(|work| work.parent() == Some(tmp.as_path()))
                .and_then(Path::file_name)
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix));
            if ours
                && let Err(e) = run(Command::new("losetup")
                    .arg("-d")
                    .arg(format!("/dev/{name}")))
            {
                warn!("cannot detach /dev/{name}: {e}");
            }
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts")
        && let Ok(c) = available_controller(&mounts)
        && let Ok(entries) = std::fs::read_dir(c.root())
    {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with("-slow-disk") {
                remove_cgroup(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_with_io_comes_first_then_v1_blkio() {
        let mounts = "\
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
        let hugetlb_only = |_: &Path| Some("hugetlb".to_string());
        assert_eq!(
            pick_controller(mounts, hugetlb_only),
            Some(Controller::V1(PathBuf::from("/sys/fs/cgroup/blkio")))
        );
        let with_io = |_: &Path| Some("cpuset cpu io memory pids".to_string());
        assert_eq!(
            pick_controller(mounts, with_io),
            Some(Controller::V2(PathBuf::from("/sys/fs/cgroup/unified")))
        );
        assert_eq!(pick_controller("tmpfs /run tmpfs rw 0 0\n", with_io), None);
    }

    #[test]
    fn limits_are_set_and_lifted_in_each_controllers_syntax() {
        let t = Some(Throttle {
            write_iops: 8,
            write_bytes: 524_288,
        });
        let v2 = Controller::V2(PathBuf::from("/c"));
        assert_eq!(
            limit_writes(&v2, "7:3", t),
            [("io.max", "7:3 wiops=8 wbps=524288".to_string())]
        );
        assert_eq!(
            limit_writes(&v2, "7:3", None),
            [("io.max", "7:3 wiops=max wbps=max".to_string())]
        );
        let v1 = Controller::V1(PathBuf::from("/c"));
        assert_eq!(
            limit_writes(&v1, "7:3", t),
            [
                ("blkio.throttle.write_iops_device", "7:3 8".to_string()),
                ("blkio.throttle.write_bps_device", "7:3 524288".to_string())
            ]
        );
        assert_eq!(
            limit_writes(&v1, "7:3", None)[0],
            ("blkio.throttle.write_iops_device", "7:3 0".to_string())
        );
    }
}
