use std::net::{IpAddr, Ipv4Addr};

use manul_dataplane_api::{Backend, FlowTuple, Service, ServicePort};

use super::*;

fn ip(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 65, 0, d))
}

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))
}

fn backend(d: u8) -> Backend {
    Backend {
        ip: ip(d),
        port: 5353,
        local: false,
        ready: true,
    }
}

fn services(protocol: u8, backends: Vec<Backend>) -> BTreeMap<ServiceKey, Service> {
    let svc = Service::cluster_ip(
        "ns",
        "dns",
        vec![vip()],
        vec![ServicePort {
            name: "dns".into(),
            protocol,
            port: 53,
            node_port: Some(30053),
            backends,
            local_backends: Vec::new(),
        }],
    );
    BTreeMap::from([(("ns".to_string(), "dns".to_string()), svc)])
}

fn entry(protocol: u8, dst: IpAddr, dst_port: u16, reply_src: IpAddr) -> CtEntry {
    CtEntry {
        orig: FlowTuple {
            protocol,
            src: ip(100),
            src_port: 40000,
            dst,
            dst_port,
        },
        reply_src,
        reply_src_port: 5353,
        counts: None,
        closed: false,
    }
}

#[test]
fn a_udp_flow_to_a_backend_that_left_is_stale() {
    let f = UdpFrontends::of(&services(17, vec![backend(2)]));
    let gone = entry(17, vip(), 53, ip(1));
    let kept = entry(17, vip(), 53, ip(2));
    assert_eq!(stale(&f, &[gone, kept]), vec![gone.orig]);
}

#[test]
fn node_ports_match_on_the_port_whatever_the_address() {
    let f = UdpFrontends::of(&services(17, vec![backend(2)]));
    let node = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));
    let gone = entry(17, node, 30053, ip(1));
    let kept = entry(17, node, 30053, ip(2));
    assert_eq!(stale(&f, &[gone, kept]), vec![gone.orig]);
}

#[test]
fn with_no_backends_every_flow_to_the_frontend_is_stale() {
    let f = UdpFrontends::of(&services(17, Vec::new()));
    let untranslated = entry(17, vip(), 53, vip());
    assert_eq!(stale(&f, &[untranslated]), vec![untranslated.orig]);
}

#[test]
fn tcp_other_ports_and_other_addresses_are_left_alone() {
    let f = UdpFrontends::of(&services(17, vec![backend(2)]));
    let entries = [
        entry(6, vip(), 53, ip(1)),
        entry(17, vip(), 54, ip(1)),
        entry(17, ip(50), 53, ip(1)),
    ];
    assert!(stale(&f, &entries).is_empty());
    let tcp = UdpFrontends::of(&services(6, vec![backend(2)]));
    assert!(tcp.is_empty());
    assert!(stale(&tcp, &[entry(6, vip(), 53, ip(1))]).is_empty());
}

#[test]
fn only_batches_changing_a_udp_service_or_syncing_call_for_clearing() {
    let udp = services(UDP, vec![backend(2)]);
    let tcp = services(6, vec![backend(2)]);
    let the = |s: &BTreeMap<ServiceKey, Service>| s.values().next().cloned().unwrap();
    let remove = Operation::ServiceRemove {
        namespace: "ns".into(),
        name: "dns".into(),
    };
    let other = Service::cluster_ip("ns", "web", vec![vip()], Vec::new());
    // A TCP service changed, removed or added: nothing can turn stale.
    assert!(!touched(&tcp, &[Operation::ServiceUpdate(the(&tcp))]));
    assert!(!touched(&tcp, std::slice::from_ref(&remove)));
    assert!(!touched(&udp, &[Operation::ServiceUpdate(other)]));
    assert!(!touched(
        &BTreeMap::new(),
        &[Operation::ServiceUpdate(the(&tcp))]
    ));
    // A UDP service changed, added, removed, or turned TCP; a sync.
    assert!(touched(&udp, &[Operation::ServiceUpdate(the(&udp))]));
    assert!(touched(
        &BTreeMap::new(),
        &[Operation::ServiceUpdate(the(&udp))]
    ));
    assert!(touched(&udp, std::slice::from_ref(&remove)));
    assert!(touched(&udp, &[Operation::ServiceUpdate(the(&tcp))]));
    assert!(touched(&tcp, &[Operation::InSync]));
}
