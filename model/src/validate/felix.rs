//! Validation of a FelixConfiguration beyond what its types check: the
//! ranges and forms Calico's schema gives its plain numbers and strings.

use super::Validator;
use crate::v3::FelixConfigurationSpec;

fn one_of(value: &str, accepted: &[&str]) -> Result<(), String> {
    if accepted.iter().any(|a| a.eq_ignore_ascii_case(value)) {
        Ok(())
    } else {
        Err(format!(
            "unknown value {value:?}; expected one of {}",
            accepted.join(", ")
        ))
    }
}

/// The most entries a sized eBPF map may be given.
const MAX_BPF_MAP_SIZE: i64 = 1 << 26;

fn range(value: i64, min: i64, max: i64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else if max == i64::MAX {
        Err(format!("{value} is below the minimum, {min}"))
    } else {
        Err(format!("{value} is out of range {min}-{max}"))
    }
}

/// `N/unit`, N of 1-9999, unit second, minute, hour or day.
fn rate_limit(value: &str) -> Result<(), String> {
    let ok = value.split_once('/').is_some_and(|(n, unit)| {
        n.parse::<u16>().is_ok_and(|n| (1..=9999).contains(&n))
            && !n.starts_with('0')
            && matches!(unit, "second" | "minute" | "hour" | "day")
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a rate such as 10/second (1-9999 per second, minute, hour or day)"
        ))
    }
}

/// `key=value,key=value`; for feature detection overrides the values are
/// `true`, `false` or empty.
fn key_values(value: &str, booleans: bool) -> Result<(), String> {
    let good_key = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    };
    let ok = value
        .split(',')
        .filter(|item| !item.is_empty())
        .all(|item| match item.split_once('=') {
            Some((k, v)) if booleans => good_key(k) && matches!(v, "true" | "false" | ""),
            Some((k, v)) => good_key(k) && !v.is_empty() && !v.contains('='),
            None => false,
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a comma-separated list of key=value"
        ))
    }
}

pub(super) fn configuration(v: &mut Validator, name: &str, s: &FelixConfigurationSpec) {
    let at = |field: &str| format!("spec.{field}");
    if let Some(b) = &s.iptables_backend {
        v.check(at("iptablesBackend"), one_of(b, &["Legacy", "NFT", "Auto"]));
    }
    if let Some(l) = &s.bpf_log_level
        && !l.is_empty()
    {
        v.check(at("bpfLogLevel"), one_of(l, &["Off", "Info", "Debug"]));
    }
    if s.node_selector.is_some() && (name == "default" || name.starts_with("node.")) {
        v.err(
            at("nodeSelector"),
            "only a FelixConfiguration not named `default` or `node.NAME` may have a node selector",
        );
    }
    if let Some(r) = &s.log_action_rate_limit {
        v.check(at("logActionRateLimit"), rate_limit(r));
    }
    if let Some(b) = s.log_action_rate_limit_burst {
        v.check(at("logActionRateLimitBurst"), range(b.into(), 0, 9999));
    }
    if let Some(f) = &s.feature_detect_override {
        v.check(at("featureDetectOverride"), key_values(f, true));
    }
    if let Some(f) = &s.feature_gates {
        v.check(at("featureGates"), key_values(f, false));
    }
    if let Some(r) = &s.route_table_range {
        if r.min < 1 || r.max < r.min || r.max > 250 {
            v.err(
                at("routeTableRange"),
                "must be a range of route table indices within 1-250",
            );
        }
        if s.route_table_ranges.is_some() {
            v.err(
                at("routeTableRanges"),
                "routeTableRange and routeTableRanges cannot both be set",
            );
        }
    }
    for (i, r) in s.route_table_ranges.iter().flatten().enumerate() {
        if r.min < 1 || r.max < r.min {
            v.err(
                format!("spec.routeTableRanges[{i}]"),
                "min must be at least 1 and not above max",
            );
        }
    }
    for (field, value) in [
        ("goGCThreshold", s.go_gc_threshold),
        ("goMemoryLimitMB", s.go_memory_limit_mb),
        ("goMaxProcs", s.go_max_procs),
    ] {
        if let Some(n) = value {
            v.check(at(field), range(n, -1, i64::MAX));
        }
    }
    if let Some(p) = s.wireguard_routing_rule_priority {
        v.check(
            at("wireguardRoutingRulePriority"),
            range(p.into(), 1, 32765),
        );
    }
    for (field, value) in [
        ("ipv4NormalRoutePriority", s.ipv4_normal_route_priority),
        ("ipv4ElevatedRoutePriority", s.ipv4_elevated_route_priority),
        ("ipv6NormalRoutePriority", s.ipv6_normal_route_priority),
        ("ipv6ElevatedRoutePriority", s.ipv6_elevated_route_priority),
    ] {
        if let Some(n) = value {
            v.check(at(field), range(n.into(), 1, 2_147_483_646));
        }
    }
    for (field, value) in [
        (
            "bpfMaglevMaxEndpointsPerService",
            s.bpf_maglev_max_endpoints_per_service,
        ),
        ("bpfMaglevMaxServices", s.bpf_maglev_max_services),
    ] {
        if let Some(n) = value {
            v.check(at(field), range(n.into(), 1, 3000));
        }
    }
    // The eBPF maps Manul sizes from these: 1 entry to 64 Mi (beyond, the
    // kernel would be asked for gigabytes; `manul_dataplane_bpf::MAX_MAP_SIZE`).
    for (field, value) in [
        ("bpfMapSizeNATFrontend", s.bpf_map_size_nat_frontend),
        ("bpfMapSizeNATBackend", s.bpf_map_size_nat_backend),
        ("bpfMapSizeNATAffinity", s.bpf_map_size_nat_affinity),
        ("bpfMapSizeConntrack", s.bpf_map_size_conntrack),
    ] {
        if let Some(n) = value {
            v.check(at(field), range(n.into(), 1, MAX_BPF_MAP_SIZE));
        }
    }
    if let Some(n) = s.bpf_map_size_conntrack_cleanup_queue {
        v.check(
            at("bpfMapSizeConntrackCleanupQueue"),
            range(n.into(), 1, i64::MAX),
        );
    }
    if s.kube_node_port_ranges
        .as_ref()
        .is_some_and(|r| r.len() > 7)
    {
        v.err(at("kubeNodePortRanges"), "at most 7 ranges");
    }
}
