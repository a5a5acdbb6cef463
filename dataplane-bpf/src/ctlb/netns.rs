//! The network namespaces a socket the programs translated may live in. A
//! socket iterator sees the sockets of the namespace of the thread that
//! creates it, so destroying a pod's socket means entering the pod's
//! namespace: the candidates are the caller's own namespace first (the
//! node's: host-networked processes), then every namespace bound under
//! `/run/netns` (where container runtimes and `ip netns` keep pods'),
//! then every process's, each once.
//!
//! It also tells which namespaces the programs serve (`manul_ctlb_netns`):
//! a namespace is known to them by its cookie, which a socket opened in it
//! answers (`SO_NETNS_COOKIE`, Linux 5.14+; the programs read the same
//! with `bpf_get_netns_cookie`). The served ones are the driver's own (the
//! node's: host-networked processes) and its pods', the namespaces at the
//! far end of the node's workload interfaces (veth peers, by the id the
//! node's namespace has for each).

use std::collections::{BTreeSet, HashSet};
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

/// `SO_NETNS_COOKIE` (Linux's `asm-generic/socket.h`: 71 on every
/// architecture Manul builds for).
const SO_NETNS_COOKIE: nix::libc::c_int = 71;

use nix::libc;
use nix::{getsockopt_impl, sockopt_impl};

sockopt_impl!(
    /// The cookie of the network namespace a socket lives in.
    NetnsCookie,
    GetOnly,
    nix::libc::SOL_SOCKET,
    SO_NETNS_COOKIE,
    u64
);

/// The cookie of the calling thread's network namespace.
pub fn cookie_here() -> std::io::Result<u64> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, getsockopt, socket};
    let s = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    Ok(getsockopt(&s, NetnsCookie)?)
}

/// The cookies of the namespaces `paths` name (each entered on a thread of
/// its own); one that cannot be entered (gone meanwhile) is left out.
pub fn cookies_of(paths: &[PathBuf]) -> BTreeSet<u64> {
    let mut cookies = BTreeSet::new();
    visit_each(paths, || {
        if let Ok(c) = cookie_here() {
            cookies.insert(c);
        }
        true
    });
    cookies
}

/// The namespaces at the far end of the calling thread's namespace's
/// links named in `workloads` (its pods): their cookies.
pub fn pod_cookies(workloads: &BTreeSet<String>) -> Result<BTreeSet<u64>, manul_netns::NetnsError> {
    if workloads.is_empty() {
        return Ok(BTreeSet::new());
    }
    let here = manul_netns::NetNs::from_path(Path::new("/proc/thread-self/ns/net"))?;
    // The candidates but the caller's own (the first).
    let others: Vec<PathBuf> = candidates().into_iter().skip(1).collect();
    let pods = manul_netns::link_peer_namespaces(&here, workloads, &others)?;
    Ok(cookies_of(&pods))
}
