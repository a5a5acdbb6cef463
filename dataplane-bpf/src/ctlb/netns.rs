//! The network namespaces a socket the programs translated may live in. A
//! socket iterator sees the sockets of the namespace of the thread that
//! creates it, so destroying a pod's socket means entering the pod's
//! namespace: the candidates are the caller's own namespace first (the
//! node's: host-networked processes), then every namespace bound under
//! `/run/netns` (where container runtimes and `ip netns` keep pods'),
//! then every process's, each once.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Paths naming network namespaces, the calling thread's first, without
/// duplicates (by device and inode of the namespace).
pub fn candidates() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("/proc/thread-self/ns/net")];
    for dir in ["/run/netns", "/var/run/netns"] {
        paths.extend(entries(Path::new(dir)));
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        paths.extend(
            procs
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .map(|e| e.path().join("ns/net")),
        );
    }
    let mut seen = HashSet::new();
    paths
        .into_iter()
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| seen.insert((m.dev(), m.ino())))
                .unwrap_or(false)
        })
        .collect()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Runs `visit` in each namespace of `paths`, in order, on a thread of its
/// own (the caller's thread keeps its namespace), until `visit` returns
/// false. A namespace that cannot be entered (gone meanwhile) is skipped.
/// Returns how many were visited.
pub fn visit_each(paths: &[PathBuf], mut visit: impl FnMut() -> bool + Send) -> usize {
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut visited = 0;
            for p in paths {
                let Ok(f) = File::open(p) else { continue };
                if nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                    continue;
                }
                visited += 1;
                if !visit() {
                    break;
                }
            }
            visited
        })
        .join()
        .unwrap_or(0)
    })
}
