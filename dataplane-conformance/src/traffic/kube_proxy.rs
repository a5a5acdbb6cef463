//! kube-proxy's iptables mode for the services of [`super::services`]: the
//! `iptables-restore` input it writes, and loading it into a namespace.
//!
//! The shape follows current kube-proxy (`pkg/proxy/iptables/proxier.go`)
//! for ClusterIP services whose endpoints are all ready, run with
//! `--cluster-cidr` (its local-traffic detector: traffic to a cluster IP
//! from outside the cluster CIDR is masqueraded), the default masquerade
//! bit 14 and localhost node ports on:
//!
//! - `filter`: its top-level chains (`KUBE-SERVICES`,
//!   `KUBE-EXTERNAL-SERVICES`, `KUBE-FORWARD`, `KUBE-NODEPORTS`,
//!   `KUBE-PROXY-FIREWALL`) hooked where kube-proxy hooks them (each jump
//!   prepended, so the last one it ensures comes first), kubelet's
//!   `KUBE-FIREWALL`, and `KUBE-FORWARD`'s rules (the `INVALID` drop, as
//!   `nf_conntrack_tcp_be_liberal` is off in a fresh namespace). With every
//!   service having endpoints, `KUBE-SERVICES` and `KUBE-EXTERNAL-SERVICES`
//!   stay empty, as in kube-proxy;
//! - `nat`: `KUBE-SERVICES` with one rule per service port (in the order of
//!   the list; kube-proxy's order is that of a Go map, so the service in the
//!   middle of the list is the expected position), then the node-ports
//!   rule last; a `KUBE-SVC-` chain per service port with the masquerade
//!   rule for off-cluster sources and one `statistic --mode random` rule
//!   per endpoint but the last; a `KUBE-SEP-` chain per endpoint (hairpin
//!   masquerade, then DNAT); `KUBE-MARK-MASQ` and `KUBE-POSTROUTING`.
//!   Above 1,000 endpoints in all kube-proxy's large-cluster mode leaves
//!   the comments out of the `KUBE-SVC-` endpoint rules and the `KUBE-SEP-`
//!   rules, and so does this.
//!
//! Chain names hash the same inputs as kube-proxy with another hash (the
//! same length); names do not matter to the per-packet path.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::process::{Command, Stdio};

use manul_netns::NetNs;

use super::services::{SERVICE_PORT, backends, cluster_ip};
use super::setup;
use crate::ConformanceError;

/// The cluster CIDR kube-proxy is told (`--cluster-cidr`): traffic to a
/// service from outside it is masqueraded.
pub const CLUSTER_CIDR: &str = "10.64.0.0/10";
/// kube-proxy's masquerade mark (bit 14, its default).
const MASQ_MARK: &str = "0x4000";
/// Above this many endpoints in all kube-proxy leaves the per-endpoint
/// comments out (`largeClusterEndpointsThreshold`).
const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

fn chain_hash(kind: &str, text: &str) -> String {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    format!("{kind}-{:016X}", h.finish())
}

/// The `filter` table kube-proxy (and kubelet's `KUBE-FIREWALL`) writes
/// when every service has ready endpoints.
fn filter_table() -> String {
    let mut out = String::from("*filter\n");
    for c in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FIREWALL",
    ] {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    let new = "-m conntrack --ctstate NEW";
    let lb_fw = "-m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL";
    let ext = "-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES";
    let svc = "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
    for rule in [
        "-A INPUT -j KUBE-FIREWALL".to_string(),
        format!("-A INPUT {new} {lb_fw}"),
        "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS"
            .to_string(),
        format!("-A INPUT {new} {ext}"),
        format!("-A FORWARD {new} {lb_fw}"),
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"
            .to_string(),
        format!("-A FORWARD {new} {svc}"),
        format!("-A FORWARD {new} {ext}"),
        "-A OUTPUT -j KUBE-FIREWALL".to_string(),
        format!("-A OUTPUT {new} {lb_fw}"),
        format!("-A OUTPUT {new} {svc}"),
        "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".to_string(),
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".to_string(),
        format!("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"),
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
    ] {
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// kube-proxy's iptables-mode `filter` and `nat` tables for `services`
/// services (see the module documentation), as `iptables-restore` input.
pub fn kube_proxy_rules(services: usize) -> String {
    let endpoints: usize = (0..services).map(|i| backends(i, services).len()).sum();
    let large = endpoints > LARGE_CLUSTER_ENDPOINTS;
    let comment = |text: &str| -> String {
        if large {
            String::new()
        } else {
            format!(" -m comment --comment \"{text}\"")
        }
    };
    let mut chains = String::new();
    let mut rules = String::new();
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(chains, ":{c} - [0:0]");
    }
    for r in [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_string(),
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_string(),
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING".to_string(),
        format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
        format!("-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}"),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".to_string(),
        format!("-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"),
    ] {
        rules.push_str(&r);
        rules.push('\n');
    }
    for i in 0..services {
        let name = format!("bench/svc-{i}:http");
        let svc = chain_hash("KUBE-SVC", &format!("{name}tcp"));
        let vip = cluster_ip(i);
        let matches = format!(
            "-m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {vip} --dport {SERVICE_PORT}"
        );
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(rules, "-A KUBE-SERVICES {matches} -j {svc}");
        let _ = writeln!(
            rules,
            "-A {svc} {matches} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
        );
        let eps = backends(i, services);
        let n = eps.len();
        for (b, (ip, port)) in eps.iter().enumerate() {
            let sep = chain_hash("KUBE-SEP", &format!("{name}tcp{ip}:{port}"));
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let pick = if b + 1 < n {
                format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / (n - b) as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                rules,
                "-A {svc}{}{pick} -j {sep}",
                comment(&format!("{name} -> {ip}:{port}"))
            );
            let _ = writeln!(
                rules,
                "-A {sep}{} -s {ip} -j KUBE-MARK-MASQ",
                comment(&name)
            );
            let _ = writeln!(
                rules,
                "-A {sep}{} -m tcp -p tcp -j DNAT --to-destination {ip}:{port}",
                comment(&name)
            );
        }
    }
    rules.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    let mut out = filter_table();
    out.push_str("*nat\n");
    out.push_str(&chains);
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

/// Loads `input` with `program` (an `iptables-restore`) in `node`.
pub(super) fn iptables_restore(
    node: &NetNs,
    program: &str,
    input: &str,
) -> Result<(), ConformanceError> {
    let output = node
        .run(|| -> std::io::Result<std::process::Output> {
            let mut child = Command::new(program)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(input.as_bytes())?;
            }
            child.wait_with_output()
        })
        .map_err(setup("entering the node namespace"))?
        .map_err(setup("running iptables-restore"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ConformanceError::Driver(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .chars()
                .take(2000)
                .collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{CONNECT_PORT, SERVER_IP};

    fn count(rules: &str, f: impl Fn(&str) -> bool) -> usize {
        rules.lines().filter(|l| f(l)).count()
    }

    #[test]
    fn kube_proxy_rules_have_its_shape() {
        let rules = kube_proxy_rules(3);
        assert!(rules.starts_with("*filter\n:KUBE-SERVICES - [0:0]\n"));
        assert!(rules.ends_with("COMMIT\n"));
        assert_eq!(count(&rules, |l| l == "COMMIT"), 2);
        // One KUBE-SERVICES rule per service, then the node ports last.
        let nat = &rules[rules.find("*nat\n").expect("a nat table")..];
        let kube_services: Vec<&str> = nat
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        assert_eq!(kube_services.len(), 4);
        assert!(kube_services[3].ends_with("-j KUBE-NODEPORTS"));
        assert!(kube_services[1].contains("-d 10.96.0.2 --dport 80"));
        // Ten backends for the others, one for the tested one (the middle one).
        assert_eq!(count(&rules, |l| l.contains("-j DNAT")), 21);
        assert!(rules.contains(&format!("--to-destination {SERVER_IP}:{CONNECT_PORT}")));
        assert!(
            rules.contains("-m statistic --mode random --probability 0.1000000000 -j KUBE-SEP-")
        );
        assert!(
            rules.contains("-m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-")
        );
        // Small cluster: the per-endpoint rules carry their comments.
        assert!(rules.contains("-m comment --comment \"bench/svc-0:http -> 10.128.0.1:8080\""));
        // The filter hooks, in kube-proxy's order.
        let forward: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A FORWARD "))
            .map(|l| l.rsplit(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(
            forward,
            [
                "KUBE-PROXY-FIREWALL",
                "KUBE-FORWARD",
                "KUBE-SERVICES",
                "KUBE-EXTERNAL-SERVICES"
            ]
        );
        assert_eq!(count(&rules, |l| l.starts_with("-A KUBE-FORWARD ")), 3);
        // Chains are declared before use, each once per table.
        let declared: Vec<&str> = nat.lines().filter(|l| l.starts_with(':')).collect();
        let mut unique = declared.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(declared.len(), unique.len());
        assert_eq!(declared.len(), 4 + 3 + 21);
    }

    #[test]
    fn a_large_cluster_drops_the_endpoint_comments() {
        let rules = kube_proxy_rules(200);
        assert!(!rules.contains(" -> "));
        assert!(rules.contains("cluster IP\" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j KUBE-SVC-"));
        let sep = rules
            .lines()
            .find(|l| l.starts_with("-A KUBE-SEP-") && l.contains("DNAT"))
            .expect("a DNAT rule");
        assert!(!sep.contains("comment"), "{sep}");
    }
}
