//! Namespaces come and go: created, opened, entered, deleted on drop (also
//! when the test body panics), and swept by prefix.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Cleanup, have_root};
use manul_netns::{NETNS_RUN_DIR, NetNs, NetnsError, cleanup_prefix, link_exists, list_addresses};

fn inode_of_current_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

fn inode_of(ns: &NetNs) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(ns.path()).unwrap().ino()
}

#[test]
fn create_run_and_drop() {
    if !have_root("create_run_and_drop") {
        return;
    }
    let cleanup = Cleanup::new("ml");
    let name = cleanup.name("one");
    let path = Path::new(NETNS_RUN_DIR).join(&name);
    {
        let ns = NetNs::create(&name).unwrap();
        assert!(ns.is_owned());
        assert_eq!(ns.name(), name);
        assert_eq!(ns.path(), path);
        assert!(path.exists());
        assert!(NetNs::exists(&name));

        // Code in `run` is inside it, and the caller is not.
        let outside = inode_of_current_netns();
        let inside = ns.run(inode_of_current_netns).unwrap();
        assert_eq!(inside, inode_of(&ns));
        assert_ne!(inside, outside);
        assert_eq!(inode_of_current_netns(), outside);

        // lo is up with its address; nothing else exists.
        assert!(link_exists(&ns, "lo").unwrap());
        assert!(!link_exists(&ns, "eth0").unwrap());
        let lo = list_addresses(&ns, "lo").unwrap();
        assert!(lo.contains(&"127.0.0.1/8".parse().unwrap()), "{lo:?}");

        // Creating it twice fails and leaves the first alone.
        assert!(NetNs::create(&name).is_err());
        assert!(path.exists());

        // Sysctls are the namespace's own.
        ns.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(ns.get_sysctl("net.ipv4.ip_forward").unwrap(), "1");
        let other = NetNs::create(&cleanup.name("two")).unwrap();
        other.set_sysctl("net.ipv4.ip_forward", "0").unwrap();
        assert_eq!(ns.get_sysctl("net.ipv4.ip_forward").unwrap(), "1");
        assert!(
            ns.set_sysctl("net.ipv4.conf.nosuchif.proxy_arp", "1")
                .is_err()
        );

        // Opening it by name or path does not own it.
        let opened = NetNs::open(&name).unwrap();
        assert!(!opened.is_owned());
        drop(opened);
        let by_path = NetNs::from_path(&path).unwrap();
        assert_eq!(by_path.name(), name);
        drop(by_path);
        let by_var_run = NetNs::from_path(&Path::new("/var/run/netns").join(&name)).unwrap();
        assert_eq!(by_var_run.name(), name);
        assert!(path.exists());

        // A /proc/PID/ns/net path works too (here, a thread of ours).
        let proc_path = format!(
            "/proc/{}/task/{}/ns/net",
            std::process::id(),
            nix::unistd::gettid()
        );
        let here = NetNs::from_path(Path::new(&proc_path)).unwrap();
        assert_eq!(here.run(inode_of_current_netns).unwrap(), outside);

        // Panics inside run reach the caller.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ns.run(|| panic!("inside")).unwrap();
        }));
        assert!(panicked.is_err());
    }
    assert!(!path.exists(), "dropping an owned namespace deletes it");
}

#[test]
fn enter_current_thread_moves_only_that_thread() {
    if !have_root("enter_current_thread_moves_only_that_thread") {
        return;
    }
    let cleanup = Cleanup::new("ml");
    let ns = NetNs::create(&cleanup.name("enter")).unwrap();
    let outside = inode_of_current_netns();
    let (entered, child) = std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_current_thread().unwrap();
            // Threads spawned afterwards inherit it.
            let child = std::thread::spawn(inode_of_current_netns).join().unwrap();
            (inode_of_current_netns(), child)
        })
        .join()
        .unwrap()
    });
    assert_eq!(entered, inode_of(&ns));
    assert_eq!(child, inode_of(&ns));
    assert_eq!(inode_of_current_netns(), outside);
}

#[test]
fn dropped_on_panic_and_deleted_explicitly() {
    if !have_root("dropped_on_panic_and_deleted_explicitly") {
        return;
    }
    let cleanup = Cleanup::new("ml");
    let name = cleanup.name("panics");
    let path = Path::new(NETNS_RUN_DIR).join(&name);
    let thread_name = name.clone();
    let result = std::thread::spawn(move || {
        let _ns = NetNs::create(&thread_name).unwrap();
        assert!(Path::new(NETNS_RUN_DIR).join(&thread_name).exists());
        panic!("test body fails while holding a namespace");
    })
    .join();
    assert!(result.is_err());
    assert!(!path.exists(), "unwinding deletes the namespace");

    let ns = NetNs::create(&name).unwrap();
    ns.delete().unwrap();
    assert!(!path.exists());

    // Opening what is gone fails and names it.
    let err = NetNs::open(&name).unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");

    // persist() keeps it past drop; delete() removes it even when not owned.
    let kept = NetNs::create(&name).unwrap().persist();
    drop(kept);
    assert!(path.exists());
    NetNs::open(&name).unwrap().delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn cleanup_prefix_sweeps_leftovers_only() {
    if !have_root("cleanup_prefix_sweeps_leftovers_only") {
        return;
    }
    let crashed = Cleanup::new("ml");
    let bystander = Cleanup::new("ml");
    for suffix in ["a", "b", "c"] {
        // A crashed run: nothing deletes these.
        let _ = NetNs::create(&crashed.name(suffix)).unwrap().persist();
    }
    let other = NetNs::create(&bystander.name("a")).unwrap();

    assert_eq!(cleanup_prefix(&crashed.0).unwrap(), 3);
    for suffix in ["a", "b", "c"] {
        assert!(!NetNs::exists(&crashed.name(suffix)));
    }
    assert!(NetNs::exists(other.name()), "another prefix is left alone");
    assert_eq!(cleanup_prefix(&crashed.0).unwrap(), 0);
    assert!(matches!(
        cleanup_prefix(""),
        Err(NetnsError::InvalidArgument { .. })
    ));
}

#[test]
fn bad_names_are_refused() {
    for bad in ["", "a/b", "..", "."] {
        assert!(
            matches!(NetNs::create(bad), Err(NetnsError::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(NetNs::open(bad).is_err());
    }
    // Not a namespace file.
    assert!(NetNs::from_path(Path::new("/etc/hostname")).is_err());
}
