//! Which load-balancer IPs are allowed sources of themselves.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::Service;

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().expect("address")).collect()
}

#[test]
fn a_load_balancer_ip_is_its_own_source_when_a_node_address_of_its_family_is_in_range() {
    let lb4 = "198.51.100.7";
    let lb6 = "2001:db8:1::7";
    // (ranges, this node's addresses, the IPs that are their own source)
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        // No ranges: every source is allowed anyway; nothing to add.
        (&[], &["10.0.0.1"], &[]),
        (&["10.0.0.0/24"], &["10.0.0.1"], &[lb4]),
        (&["10.0.0.0/24"], &["10.0.1.1"], &[]),
        // One address of several in a range is enough.
        (&["10.0.0.0/24"], &["10.0.1.1", "10.0.0.9"], &[lb4]),
        (&["203.0.113.0/24", "10.0.0.0/8"], &["10.9.0.1"], &[lb4]),
        // No node address known: nothing.
        (&["10.0.0.0/24"], &[], &[]),
        // Family by family: an IPv6 node address in an IPv6 range makes
        // the IPv6 load-balancer IP its own source, not the IPv4 one.
        (&["10.0.0.0/24", "fd00::/64"], &["fd00::1"], &[lb6]),
        (
            &["10.0.0.0/24", "fd00::/64"],
            &["10.0.0.1", "fd00::1"],
            &[lb4, lb6],
        ),
        (&["fd00::/64"], &["10.0.0.1"], &[]),
    ];
    for (ranges, local, want) in cases {
        let mut svc = Service::cluster_ip("ns", "lb", ips(&["10.96.0.1"]), Vec::new());
        svc.load_balancer_ips = ips(&[lb4, lb6]);
        svc.load_balancer_source_ranges =
            ranges.iter().map(|r| r.parse().expect("range")).collect();
        let local: BTreeSet<IpAddr> = ips(local).into_iter().collect();
        let got: Vec<IpAddr> = svc.self_sourced_load_balancer_ips(&local).collect();
        assert_eq!(got, ips(want), "ranges {ranges:?}, node {local:?}");
    }
}
