use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;

fn backends(n: u32) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            ip: IpAddr::V4(Ipv4Addr::from(0x0a41_0000 + i)),
            port: 8080,
            local: i % 3 == 0,
            ready: true,
        })
        .collect()
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[test]
fn the_sizes_are_primes_each_at_least_the_one_before_doubled_less_a_little() {
    for w in TABLE_SIZES.windows(2) {
        assert!(w[1] > w[0] * 2 - w[0] / 10, "{w:?}");
    }
    for m in TABLE_SIZES {
        assert!(is_prime(m), "{m}");
    }
    assert_eq!(table_size(1), 101);
    assert_eq!(table_size(100), 12_809);
    assert_eq!(table_size(65_537), 6_553_621);
    for n in [1usize, 2, 7, 64, 65, 100, 999, 10_000, 65_536] {
        assert!(
            u64::from(table_size(n)) >= n as u64 * SLOTS_PER_BACKEND,
            "{n}"
        );
    }
}

#[test]
fn every_backend_gets_about_m_over_n_slots() {
    for n in [1u32, 2, 3, 10, 100, 257] {
        let t = MaglevTable::build(&backends(n));
        assert_eq!(t.size(), table_size(n as usize) as usize);
        let mut count: BTreeMap<u32, usize> = BTreeMap::new();
        for i in t.slots() {
            *count.entry(*i).or_default() += 1;
        }
        assert_eq!(count.len(), n as usize, "every backend has slots");
        let fair = t.size() / n as usize;
        for (i, c) in count {
            // Turns give each backend M/N slots, one more for some.
            assert!(
                c == fair || c == fair + 1,
                "n={n} backend {i}: {c} vs {fair}"
            );
        }
    }
}

#[test]
fn removing_one_of_100_backends_remaps_about_one_percent_of_the_others_flows() {
    let all = backends(100);
    let before = MaglevTable::build(&all);
    let mut worst: f64 = 0.0;
    let mut sum = 0.0;
    for gone in 0..all.len() {
        let mut rest = all.clone();
        rest.remove(gone);
        let after = MaglevTable::build(&rest);
        assert_eq!(after.size(), before.size());
        let f = remapped_fraction(&before, &after);
        worst = worst.max(f);
        sum += f;
        // The removed backend's slots all went to others.
        assert!(after.lookup(0).is_some());
        assert!(after.backends().iter().all(|b| b.ip != all[gone].ip));
    }
    let mean = sum / all.len() as f64;
    assert!(mean <= 0.015, "mean {mean}");
    assert!(worst <= 0.02, "worst {worst}");
    assert!(mean > 0.0, "the measure measures something");
}

#[test]
fn lookups_and_the_empty_table() {
    let t = MaglevTable::build(&[]);
    assert_eq!(t.size(), 0);
    assert_eq!(t.lookup(42), None);
    let bs = backends(3);
    let t = MaglevTable::build(&bs);
    for h in 0..1000u64 {
        let b = t.lookup(h).unwrap();
        assert!(bs.iter().any(|x| x.ip == b.ip));
        assert_eq!(Some(b), t.backends().get(t.index(h).unwrap() as usize));
    }
}

#[test]
fn a_pinned_capacity_keeps_the_size_and_so_the_others_flows() {
    let all = backends(65);
    let mut fewer = all.clone();
    fewer.pop();
    // Across the 64/65 step the size changes: a full remap.
    assert_ne!(
        MaglevTable::build(&all).size(),
        MaglevTable::build(&fewer).size()
    );
    let before = MaglevTable::with_capacity(&all, 100);
    let after = MaglevTable::with_capacity(&fewer, 100);
    assert_eq!(before.size(), after.size());
    assert!(remapped_fraction(&before, &after) <= 0.03);
}

#[test]
fn the_table_is_fixed_across_processes() {
    // A change of the hash functions or the fill would move every node's
    // flows differently from nodes running the previous build; this pins
    // them. (Computed once from this implementation.)
    let t = MaglevTable::build(&backends(3));
    let head: Vec<u32> = t.slots()[..12].to_vec();
    assert_eq!(head, PINNED_HEAD, "{head:?}");
}

const PINNED_HEAD: [u32; 12] = [1, 1, 1, 2, 2, 2, 2, 2, 0, 2, 0, 2];

proptest! {
    #[test]
    fn the_table_is_a_function_of_the_backend_set(
        ips in proptest::collection::btree_set(any::<u32>(), 1..40),
        ports in proptest::collection::vec(1u16..3, 40),
        seed in any::<u64>(),
    ) {
        let bs: Vec<Backend> = ips
            .iter()
            .zip(&ports)
            .map(|(ip, port)| Backend { ip: IpAddr::V4(Ipv4Addr::from(*ip)), port: *port, local: false, ready: true })
            .collect();
        // Another order (a rotation and a reversal by the seed), with
        // another `local`, and one backend listed twice.
        let mut other = bs.clone();
        other.rotate_left((seed % bs.len() as u64) as usize);
        if seed.is_multiple_of(2) {
            other.reverse();
        }
        for b in &mut other {
            b.local = !b.local;
        }
        other.push(other[0]);
        let a = MaglevTable::build(&bs);
        let b = MaglevTable::build(&other);
        prop_assert_eq!(a.slots(), b.slots());
        let key = |b: &Backend| (b.ip, b.port);
        prop_assert_eq!(
            a.backends().iter().map(key).collect::<Vec<_>>(),
            b.backends().iter().map(key).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_flow_hash_is_a_fixed_function_of_the_flow() {
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let lb = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    let h = flow_hash(client, lb, 40000, 80, 6);
    assert_eq!(h, flow_hash(client, lb, 40000, 80, 6));
    // Every field counts.
    for other in [
        flow_hash(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), lb, 40000, 80, 6),
        flow_hash(client, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 40000, 80, 6),
        flow_hash(client, lb, 40001, 80, 6),
        flow_hash(client, lb, 40000, 81, 6),
        flow_hash(client, lb, 40000, 80, 17),
        flow_hash(client, lb, 80, 40000, 6),
    ] {
        assert_ne!(h, other);
    }
}

#[test]
fn flows_from_many_client_ports_spread_over_the_backends() {
    let t = MaglevTable::build(&backends(10));
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    for port in 20_000u16..30_000 {
        let h = flow_hash(client, IpAddr::V4(Ipv4Addr::UNSPECIFIED), port, 30080, 6);
        *count.entry(t.index(h).unwrap()).or_default() += 1;
    }
    assert_eq!(count.len(), 10);
    for c in count.values() {
        // 1,000 expected each; a binomial spread stays well inside this.
        assert!((850..=1150).contains(c), "{count:?}");
    }
}
