//! Names of everything the driver creates, with stable prefixes an
//! operator recognises (Calico's `cali-pi-`, `cali-tw-` scheme, with `mnl`).

use manul_dataplane_api::PolicyId;
use sha2::{Digest, Sha256};

/// The nftables table the driver owns (family `inet`: IPv4 and IPv6).
pub const TABLE: &str = "manul";
/// Mark bit a policy or profile sets when it allows a packet.
pub const MARK_ACCEPT: u32 = 0x0001_0000;
/// Mark bit a policy sets when a Pass rule matched.
pub const MARK_PASS: u32 = 0x0002_0000;

/// Mark bit of a packet to masquerade in postrouting (kube-proxy's
/// `mark-for-masquerade`, on a bit of its own).
pub const MARK_MASQ: u32 = 0x0004_0000;

/// Mark bit of a packet to masquerade in postrouting only when it leaves
/// through no workload interface: a pod of another node reaching an
/// `externalTrafficPolicy: Local` external frontend (a backend here sees
/// the pod; one elsewhere sees this node, so its reply comes back here).
pub const MARK_MASQ_OFF_NODE: u32 = 0x0008_0000;

/// Longest name this driver uses (the kernel allows 255 bytes).
const MAX_NAME: usize = 200;

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..6])
}

/// `prefix` + `body` with characters nft does not accept in identifiers
/// replaced; a hash suffix keeps names unique when anything was replaced
/// or the name had to be cut.
fn ident(prefix: &str, body: &str) -> String {
    let clean: String = body
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == body && prefix.len() + body.len() <= MAX_NAME {
        format!("{prefix}{body}")
    } else {
        let keep = MAX_NAME - prefix.len() - 13;
        let cut: String = clean.chars().take(keep).collect();
        format!("{prefix}{cut}_{}", short_hash(body))
    }
}

/// The chain of a policy's rules for one direction: `mnl-pi-TIER/NAME`
/// (inbound) or `mnl-po-TIER/NAME` (outbound).
pub fn policy_chain(id: &PolicyId, inbound: bool) -> String {
    let prefix = if inbound { "mnl-pi-" } else { "mnl-po-" };
    ident(prefix, &format!("{}/{}", id.tier, id.name))
}

/// The chain of a profile's rules: `mnl-pri-NAME` or `mnl-pro-NAME`.
pub fn profile_chain(name: &str, inbound: bool) -> String {
    let prefix = if inbound { "mnl-pri-" } else { "mnl-pro-" };
    ident(prefix, name)
}

/// A workload endpoint's chain: `mnl-tw-IFACE` (to the workload, its
/// inbound policy) or `mnl-fw-IFACE` (from it, outbound).
pub fn workload_chain(interface: &str, inbound: bool) -> String {
    let prefix = if inbound { "mnl-tw-" } else { "mnl-fw-" };
    ident(prefix, interface)
}

/// Which of a host endpoint's chains: the kinds of policy Calico applies
/// to traffic through a host interface, each at its own hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChain {
    /// Normal policy on traffic to or from the host itself (filter).
    Normal,
    /// `applyOnForward` policy on traffic forwarded through the interface.
    Forward,
    /// `doNotTrack` policy, before connection tracking (raw).
    Untracked,
    /// `preDNAT` policy, before destination NAT (ingress only).
    PreDnat,
}

/// A host endpoint's chain: `mnl-th-IFACE` (to the host, its inbound
/// policy), `mnl-fh-IFACE` (from the host, outbound), `mnl-thfw-`/`mnl-fhfw-`
/// for forwarded traffic, `mnl-thu-`/`mnl-fhu-` for untracked policy and
/// `mnl-thd-` for pre-DNAT policy. The all-interfaces endpoint (`*`) gets
/// `mnl-th/all` and so on: no interface name contains `/`, so these never
/// collide with a named interface's chains.
pub fn host_chain(interface: &str, inbound: bool, kind: HostChain) -> String {
    let prefix = match (inbound, kind) {
        (true, HostChain::Normal) => "mnl-th-",
        (false, HostChain::Normal) => "mnl-fh-",
        (true, HostChain::Forward) => "mnl-thfw-",
        (false, HostChain::Forward) => "mnl-fhfw-",
        (true, HostChain::Untracked) => "mnl-thu-",
        (false, HostChain::Untracked) => "mnl-fhu-",
        // Pre-DNAT policy is ingress only; there is no outbound chain.
        (_, HostChain::PreDnat) => "mnl-thd-",
    };
    if interface == ALL_INTERFACES {
        format!("{}/all", prefix.trim_end_matches('-'))
    } else {
        ident(prefix, interface)
    }
}

/// The interface name of a host endpoint for every interface of the node.
pub const ALL_INTERFACES: &str = "*";

/// One tier's section of an endpoint chain: `CHAIN.tN`.
pub fn tier_chain(endpoint_chain: &str, index: usize) -> String {
    format!("{endpoint_chain}.t{index}")
}

/// The nft set of an IP set's members of one family: `mnl-s4-HASH` /
/// `mnl-s6-HASH` (the id, a canonical selector, goes in the set's comment).
pub fn ip_set(id: &str, v6: bool) -> String {
    format!("mnl-s{}-{}", if v6 { 6 } else { 4 }, short_hash(id))
}

/// A set's comment: the id, cut to the kernel's 127-byte limit.
pub fn set_comment(id: &str) -> String {
    let mut out = String::new();
    for c in id.chars() {
        let c = if c == '"' || c == '\\' || c.is_control() {
            '\''
        } else {
            c
        };
        if out.len() + c.len_utf8() > 120 {
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out
}

/// What a service object is for; each kind has its own prefix, with the
/// address family (`4`/`6`) in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceObject {
    /// A service port's chain picking among its `Cluster` backends
    /// (`mnl-svc4-`).
    Cluster,
    /// A service port's chain picking among its local backends (`mnl-svl4-`).
    Local,
    /// A service port's chain for external traffic: node ports, external
    /// and load-balancer IPs (`mnl-ext4-`).
    External,
    /// One backend's DNAT chain (`mnl-sep4-`).
    Backend,
    /// One backend's session-affinity set (`mnl-aff4-`).
    Affinity,
}

/// The name of a service object: the prefix of its kind and family, then
/// `body` (`NAMESPACE/NAME/PROTOCOL/PORT`, with `/IP/PORT` for a backend,
/// and `/TIMEOUTs` for an affinity set).
pub fn service_object(kind: ServiceObject, v6: bool, body: &str) -> String {
    let kind = match kind {
        ServiceObject::Cluster => "svc",
        ServiceObject::Local => "svl",
        ServiceObject::External => "ext",
        ServiceObject::Backend => "sep",
        ServiceObject::Affinity => "aff",
    };
    ident(&format!("mnl-{kind}{}-", if v6 { 6 } else { 4 }), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(tier: &str, name: &str) -> PolicyId {
        PolicyId {
            tier: tier.into(),
            name: name.into(),
        }
    }

    #[test]
    fn names_are_readable_when_they_can_be() {
        assert_eq!(
            policy_chain(&pid("default", "production/frontend-to-api"), true),
            "mnl-pi-default/production/frontend-to-api"
        );
        assert_eq!(
            profile_chain("kns.production", false),
            "mnl-pro-kns.production"
        );
        assert_eq!(
            workload_chain("mnl0123456789ab", true),
            "mnl-tw-mnl0123456789ab"
        );
        assert_eq!(tier_chain("mnl-tw-x", 2), "mnl-tw-x.t2");
        assert_eq!(host_chain("eth0", true, HostChain::Normal), "mnl-th-eth0");
        assert_eq!(
            host_chain("eth0", false, HostChain::Untracked),
            "mnl-fhu-eth0"
        );
        assert_eq!(host_chain("eth0", true, HostChain::PreDnat), "mnl-thd-eth0");
        assert_eq!(host_chain("*", true, HostChain::Forward), "mnl-thfw/all");
    }

    #[test]
    fn odd_or_long_names_are_cleaned_and_stay_unique() {
        let a = profile_chain("a b", true);
        let b = profile_chain("a:b", true);
        assert!(a.starts_with("mnl-pri-a_b_"));
        assert_ne!(a, b);
        let long = "x".repeat(300);
        let c = profile_chain(&long, true);
        assert!(c.len() <= MAX_NAME);
        assert_ne!(c, profile_chain(&"x".repeat(299), true));
    }

    #[test]
    fn set_names_depend_on_id_and_family() {
        assert_ne!(ip_set("sel:a == 'x'", false), ip_set("sel:a == 'y'", false));
        assert_ne!(ip_set("sel:a == 'x'", false), ip_set("sel:a == 'x'", true));
        assert_eq!(set_comment("sel:a == \"x\""), "sel:a == 'x'");
        assert!(set_comment(&"y".repeat(500)).len() <= 123);
    }
}
