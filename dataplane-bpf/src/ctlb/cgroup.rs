//! Where the cgroup v2 hierarchy is: the cgroup the programs attach to
//! when no path is configured is its root, so every process of the node,
//! host-networked or in a pod, gets connect-time load balancing.

use std::path::{Path, PathBuf};

use crate::error::BpfError;

/// Where Manul mounts cgroup v2 when it is not mounted (Calico mounts it
/// at `/run/calico/cgroup`).
pub const MOUNT_POINT: &str = "/run/manul/cgroup";

/// The mount point of the first cgroup v2 file system in
/// `/proc/self/mountinfo`'s text (fields: id, parent, dev, root, mount
/// point, options, optional fields, `-`, type, source, options), if it
/// mounts the hierarchy's root.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(sep + 1)?;
        let root = fields.get(3)?;
        let point = fields.get(4)?;
        (*fstype == "cgroup2" && *root == "/").then(|| PathBuf::from(unescape(point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup to attach to: `configured`, or the cgroup v2 root (mounted
/// at [`MOUNT_POINT`] first when the node has no cgroup v2 mount).
pub fn resolve(configured: Option<&Path>) -> Result<PathBuf, BpfError> {
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| BpfError::Io {
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    if let Some(p) = cgroup2_mount(&info) {
        return Ok(p);
    }
    std::fs::create_dir_all(MOUNT_POINT).map_err(|source| BpfError::Io {
        path: MOUNT_POINT.into(),
        source,
    })?;
    nix::mount::mount(
        Some("none"),
        MOUNT_POINT,
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| BpfError::Mount {
        path: MOUNT_POINT.into(),
        source,
    })?;
    Ok(PathBuf::from(MOUNT_POINT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_root_mount() {
        let info = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup/cpu rw shared:13 - cgroup cgroup rw,cpu
36 25 0:31 /sub /elsewhere rw shared:14 - cgroup2 cgroup2 rw
37 25 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:15 - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("25 30 0:23 / /sys rw - sysfs sysfs rw\n"),
            None
        );
        assert_eq!(cgroup2_mount("garbage\n\n"), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        let info = "37 25 0:31 / /run/my\\040cgroup rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(info), Some(PathBuf::from("/run/my cgroup")));
    }
}
