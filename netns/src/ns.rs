//! Named network namespaces: create, open, enter, delete.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use crate::error::{NetnsError, Result};

/// Where named namespaces live, as with iproute2.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Serialises this process's changes to `/run/netns` itself (making it a
/// shared mount point), as two threads racing there would stack mounts.
static RUN_DIR_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace, by the file that pins it.
///
/// An owned namespace (from [`NetNs::create`]) is deleted when dropped:
/// the bind mount is detached and the file removed. The kernel frees the
/// namespace itself once no thread, socket or mount refers to it any more.
/// Errors while dropping are logged, never raised.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    owned: bool,
}

impl NetNs {
    /// Creates `/run/netns/NAME` like `ip netns add NAME`: a scratch thread
    /// unshares a new network namespace and bind-mounts its namespace file
    /// there. Brings `lo` up. The result is owned (deleted on drop).
    pub fn create(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        ensure_run_dir(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|e| NetnsError::io(name, format!("create {}", path.display()), e))?;

        let mounted = std::thread::scope(|s| {
            let scratch = std::thread::Builder::new()
                .name("netns-create".to_owned())
                .spawn_scoped(s, || -> Result<()> {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| NetnsError::nix(name, "unshare(CLONE_NEWNET)", e))?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| {
                        NetnsError::nix(name, format!("bind-mount onto {}", path.display()), e)
                    })
                })
                .map_err(|e| NetnsError::io(name, "spawn the scratch thread", e))?;
            match scratch.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        if let Err(e) = mounted {
            if let Err(rm) = fs::remove_file(&path) {
                tracing::warn!(netns = name, error = %rm, "could not remove the namespace file after a failed create");
            }
            return Err(e);
        }

        let ns = NetNs {
            name: name.to_owned(),
            path,
            owned: true,
        };
        // On error `ns` is dropped, which deletes it again.
        crate::link::link_up(&ns, "lo")?;
        tracing::debug!(netns = name, "created network namespace");
        Ok(ns)
    }

    /// Opens the existing `/run/netns/NAME`. Not owned: dropping it leaves
    /// the namespace alone.
    pub fn open(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        check_nsfs(name, &path)?;
        Ok(NetNs {
            name: name.to_owned(),
            path,
            owned: false,
        })
    }

    /// Opens a namespace by path, such as a CNI `CNI_NETNS`
    /// (`/var/run/netns/x`) or `/proc/PID/ns/net`. Not owned. Its name is
    /// the file name under a netns run directory, else the whole path.
    pub fn from_path(path: &Path) -> Result<NetNs> {
        let parent = path.parent().and_then(Path::to_str);
        let name = match (parent, path.file_name().and_then(|n| n.to_str())) {
            (Some("/run/netns" | "/var/run/netns"), Some(file)) => file.to_owned(),
            _ => path.display().to_string(),
        };
        check_nsfs(&name, path)?;
        Ok(NetNs {
            name,
            path: path.to_owned(),
            owned: false,
        })
    }

    /// Whether `/run/netns/NAME` exists.
    pub fn exists(name: &str) -> bool {
        validate_name(name).is_ok() && Path::new(NETNS_RUN_DIR).join(name).exists()
    }

    /// The namespace's name (see [`NetNs::from_path`] for unnamed ones).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that pins the namespace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether dropping this value deletes the namespace.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Gives up ownership: the namespace outlives this value (for example
    /// a local cluster that must survive its launcher).
    pub fn persist(mut self) -> NetNs {
        self.owned = false;
        self
    }

    /// Runs `f` on a fresh thread that entered this namespace, and returns
    /// its value. A panic in `f` is propagated to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = self.open_file()?;
        let name = self.name.as_str();
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name(format!("netns-{name}"))
                .spawn_scoped(s, move || -> Result<T> {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| NetnsError::nix(name, "setns", e))?;
                    drop(file);
                    Ok(f())
                })
                .map_err(|e| NetnsError::io(name, "spawn a thread", e))?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into this namespace. Meant for binaries at
    /// startup, before they spawn threads (threads inherit it), e.g.
    /// `felix --netns NAME`.
    pub fn enter_current_thread(&self) -> Result<()> {
        let file = self.open_file()?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::nix(&self.name, "setns", e))
    }

    /// Writes a sysctl from inside the namespace: `key` in dotted form
    /// (`net.ipv4.ip_forward`) or, for interface names with dots, in slash
    /// form (`net/ipv4/conf/eth0.100/rp_filter`).
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(&self.name, key)?;
        self.run(|| fs::write(&path, value))?
            .map_err(|e| NetnsError::io(&self.name, format!("write sysctl {key}={value}"), e))
    }

    /// Reads a sysctl from inside the namespace, without the trailing
    /// newline.
    pub fn get_sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(&self.name, key)?;
        let text = self
            .run(|| fs::read_to_string(&path))?
            .map_err(|e| NetnsError::io(&self.name, format!("read sysctl {key}"), e))?;
        Ok(text.trim_end().to_owned())
    }

    /// Deletes the namespace like `ip netns del` (whether owned or not).
    pub fn delete(mut self) -> Result<()> {
        self.owned = false;
        remove_named(&self.name, &self.path)
    }

    fn open_file(&self) -> Result<File> {
        File::open(&self.path)
            .map_err(|e| NetnsError::io(&self.name, format!("open {}", self.path.display()), e))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        match remove_named(&self.name, &self.path) {
            Ok(()) => tracing::debug!(netns = %self.name, "deleted network namespace"),
            Err(e) => {
                tracing::error!(netns = %self.name, error = %e, "could not delete network namespace")
            }
        }
    }
}

/// Deletes every `/run/netns/PREFIX*` (the leftovers of a crashed run) and
/// returns how many it deleted. Refuses an empty prefix. Tries them all;
/// if any failed, returns the first error.
pub fn cleanup_prefix(prefix: &str) -> Result<usize> {
    if prefix.is_empty() {
        return Err(NetnsError::InvalidArgument {
            ns: "(none)".to_owned(),
            reason: "cleanup_prefix refuses an empty prefix: it would delete every named namespace"
                .to_owned(),
        });
    }
    validate_name(prefix)?;
    let entries = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(NetnsError::io(prefix, format!("list {NETNS_RUN_DIR}"), e)),
    };
    let mut deleted = 0;
    let mut first_error = None;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                first_error.get_or_insert(NetnsError::io(
                    prefix,
                    format!("list {NETNS_RUN_DIR}"),
                    e,
                ));
                continue;
            }
        };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        match remove_named(&name, &entry.path()) {
            Ok(()) => {
                tracing::info!(netns = %name, "removed leftover network namespace");
                deleted += 1;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(deleted),
    }
}

/// A short name prefix unique to this process and call, for tests:
/// `tag` + 4 base-36 characters of the pid + 2 of a per-process counter
/// (wrapping after 1296 calls). With a 2-character tag the result has 8
/// characters, so `PREFIX-podNN` still fits the kernel's 15-character limit
/// for interface names. Fixed width, so no result is a prefix of another
/// with the same tag.
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % (36 * 36);
    let pid = std::process::id() % (36 * 36 * 36 * 36);
    format!("{tag}{}{}", base36(pid, 4), base36(n, 2))
}

fn base36(mut value: u32, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value % 36) as usize];
        value /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('/') {
        "contains '/'"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(NetnsError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Makes sure `/run/netns` exists and is a shared mount point, like
/// iproute2, so that deleting a namespace file unmounts it in every mount
/// namespace.
fn ensure_run_dir(name: &str) -> Result<()> {
    let _guard = RUN_DIR_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    fs::create_dir_all(NETNS_RUN_DIR)
        .map_err(|e| NetnsError::io(name, format!("create {NETNS_RUN_DIR}"), e))?;
    let make_shared = || {
        mount(
            Some(""),
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then retry.
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| NetnsError::nix(name, format!("mount --bind {NETNS_RUN_DIR}"), e))?;
            make_shared().map_err(|e| {
                NetnsError::nix(name, format!("mount --make-shared {NETNS_RUN_DIR}"), e)
            })
        }
        Err(e) => Err(NetnsError::nix(
            name,
            format!("mount --make-shared {NETNS_RUN_DIR}"),
            e,
        )),
    }
}

fn check_nsfs(name: &str, path: &Path) -> Result<()> {
    let stat =
        statfs(path).map_err(|e| NetnsError::nix(name, format!("open {}", path.display()), e))?;
    if stat.filesystem_type() != NSFS_MAGIC {
        return Err(NetnsError::InvalidArgument {
            ns: name.to_owned(),
            reason: format!("{} is not a namespace file", path.display()),
        });
    }
    Ok(())
}

/// `ip netns del`: detach the bind mount, remove the file. A file that is
/// not mounted any more is still removed; a missing file is an error.
fn remove_named(name: &str, path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(e) => {
            return Err(NetnsError::nix(
                name,
                format!("umount {}", path.display()),
                e,
            ));
        }
    }
    fs::remove_file(path).map_err(|e| NetnsError::io(name, format!("remove {}", path.display()), e))
}

fn sysctl_path(ns: &str, key: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = if key.contains('/') {
        key.trim_matches('/').split('/').collect()
    } else {
        key.split('.').collect()
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(NetnsError::InvalidArgument {
            ns: ns.to_owned(),
            reason: format!("bad sysctl key {key:?}"),
        });
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(parts);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("mt0001-a").is_ok());
        for bad in ["", "a/b", ".", ".."] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sysctl_keys_become_paths() {
        assert_eq!(
            sysctl_path("x", "net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("x", "net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert!(sysctl_path("x", "net..ipv4").is_err());
        assert!(sysctl_path("x", "net/../../etc").is_err());
    }

    #[test]
    fn unique_prefixes_are_short_and_distinct() {
        let a = unique_prefix("mt");
        let b = unique_prefix("mt");
        assert_eq!(a.len(), 8);
        assert_eq!(b.len(), 8);
        assert_ne!(a, b);
        assert!(format!("{a}-pod12").len() <= 15);
    }

    #[test]
    fn empty_cleanup_prefix_is_refused() {
        assert!(matches!(
            cleanup_prefix(""),
            Err(NetnsError::InvalidArgument { .. })
        ));
    }
}
