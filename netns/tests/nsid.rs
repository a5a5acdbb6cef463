//! Which namespaces sit at the far end of a node namespace's veths: the
//! pods plumbed into it, by the links named, and neither a namespace
//! joined by a link not named nor one joined to nothing.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use common::{Cleanup, have_root};
use manul_netns::{NetNs, create_veth, link_peer_namespaces, plumb_pod};

#[test]
fn the_far_ends_of_named_veths() {
    if !have_root("the_far_ends_of_named_veths") {
        return;
    }
    let cleanup = Cleanup::new("mi");
    let node = NetNs::create(&cleanup.name("node")).unwrap();
    let pod_a = NetNs::create(&cleanup.name("a")).unwrap();
    let pod_b = NetNs::create(&cleanup.name("b")).unwrap();
    let joined = NetNs::create(&cleanup.name("j")).unwrap();
    let alone = NetNs::create(&cleanup.name("z")).unwrap();
    plumb_pod(&node, &pod_a, "calia", "eth0", Ipv4Addr::new(10, 65, 1, 2)).unwrap();
    plumb_pod(&node, &pod_b, "calib", "eth0", Ipv4Addr::new(10, 65, 1, 3)).unwrap();
    create_veth(&node, "ext0", &joined, "eth0").unwrap();

    let candidates: Vec<PathBuf> = [&node, &pod_a, &pod_b, &joined, &alone]
        .iter()
        .map(|ns| ns.path().to_path_buf())
        .collect();
    let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    let found = |links: &[&str]| link_peer_namespaces(&node, &names(links), &candidates).unwrap();

    assert_eq!(
        found(&["calia", "calib"]),
        vec![pod_a.path().to_path_buf(), pod_b.path().to_path_buf()]
    );
    assert_eq!(found(&["calib"]), vec![pod_b.path().to_path_buf()]);
    assert_eq!(found(&["ext0"]), vec![joined.path().to_path_buf()]);
    assert!(found(&[]).is_empty());
    assert!(found(&["nosuch0"]).is_empty());
    // A path that names no namespace is left out, not an error.
    let mut odd = candidates.clone();
    odd.push(PathBuf::from("/nonexistent/netns"));
    assert_eq!(
        link_peer_namespaces(&node, &names(&["calia"]), &odd).unwrap(),
        vec![pod_a.path().to_path_buf()]
    );
    drop(cleanup);
}
