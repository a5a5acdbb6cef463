//! Name and label rules shared with Kubernetes: DNS-1123 names, qualified
//! label keys, label values and IANA service (port) names.

/// Longest DNS-1123 subdomain (resource names).
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest DNS-1123 label (namespaces, tiers) and label name or value.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest IANA service name (named ports).
pub const MAX_PORT_NAME_LEN: usize = 15;
/// Largest total size of a resource's annotations, as in Kubernetes.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A DNS-1123 label: at most 63 lowercase letters, digits and `-`, starting
/// and ending with a letter or digit.
pub fn validate_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{s:?} is {} characters long; the limit is {MAX_LABEL_LEN}",
            s.len()
        ));
    }
    let b = s.as_bytes();
    if !b.iter().all(|&c| alnum(c) || c == b'-') || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 label: use lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123
/// labels.
pub fn validate_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_SUBDOMAIN_LEN {
        return Err(format!(
            "{:?}... is {} characters long; the limit is {MAX_SUBDOMAIN_LEN}",
            &s[..s.floor_char_boundary(20)],
            s.len()
        ));
    }
    let b = s.as_bytes();
    let ok = b.iter().all(|&c| alnum(c) || c == b'-' || c == b'.')
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && !s.contains("..")
        && !s.contains(".-")
        && !s.contains("-.");
    if !ok {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 subdomain: use lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn label_name_part(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{what} {s:?} must be 1-{MAX_LABEL_LEN} characters long"
        ));
    }
    let b = s.as_bytes();
    let inner = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    if !b.iter().all(|&c| inner(c))
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
    {
        return Err(format!(
            "{what} {s:?} must use letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
pub fn validate_label_key(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((prefix, name)) => {
            validate_dns_subdomain(prefix).map_err(|e| format!("label key prefix: {e}"))?;
            label_name_part(name, "label name")
        }
        None => label_name_part(s, "label name"),
    }
}

/// A label key as a selector names it: at most one `/`, a prefix that is
/// a DNS-1123 subdomain of at most 253 characters, and a name of 1-63
/// characters, as Kubernetes allows label keys to be. A selector naming a
/// longer key could never match, so it is refused, as Calico does.
pub fn validate_selector_label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if name.contains('/') {
        return Err(format!("label key {s:?} has more than one `/`"));
    }
    if let Some(prefix) = prefix {
        validate_dns_subdomain(prefix).map_err(|e| {
            format!(
                "label key prefix {:?}: {e}",
                &prefix[..prefix.floor_char_boundary(40)]
            )
        })?;
    }
    if name.is_empty() {
        return Err(format!("label key {s:?} has no name after the `/`"));
    }
    if name.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label name {:?}... is {} characters long; the limit is {MAX_LABEL_LEN}",
            &name[..name.floor_char_boundary(20)],
            name.len()
        ));
    }
    Ok(())
}

/// A label value: empty, or a label name part.
pub fn validate_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    label_name_part(s, "label value")
}

/// An IANA service name: 1-15 lowercase letters, digits and `-`, with at
/// least one letter, no leading, trailing or doubled `-`.
pub fn validate_port_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !s.is_empty()
        && s.len() <= MAX_PORT_NAME_LEN
        && b.iter().all(|&c| alnum(c) || c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not a valid port name: use 1-{MAX_PORT_NAME_LEN} lowercase letters, digits and '-', \
             with at least one letter"
        ))
    }
}

/// Prefix of every host-side workload interface Manul creates.
pub const WORKLOAD_INTERFACE_PREFIX: &str = "mnl";

/// The host-side interface name of a pod's interface: `mnl` and the first
/// 12 hex digits of SHA-256 of `NAMESPACE.POD`, 15 characters, the kernel's
/// limit. Stable, so the CNI plugin and Felix agree without talking (as
/// Calico's `cali` + hash names).
pub fn workload_interface_name(namespace: &str, pod: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{namespace}.{pod}").as_bytes());
    let mut name = String::with_capacity(15);
    name.push_str(WORKLOAD_INTERFACE_PREFIX);
    for byte in &digest[..6] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "production", "a-1", "0abc"] {
            assert!(validate_dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(validate_dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_subdomains() {
        for ok in [
            "a",
            "security.block-threats",
            "knp.default.x",
            &"a".repeat(253),
        ] {
            assert!(validate_dns_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Frontend",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a.-b",
            &"a".repeat(254),
        ] {
            assert!(validate_dns_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for ok in [
            "app",
            "kubernetes.io/metadata.name",
            "node-role.kubernetes.io/worker",
            "A_b",
        ] {
            assert!(validate_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/app",
            "a/",
            "Bad_Prefix/x",
            "-a",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "true", "v1.2_3-x"] {
            assert!(validate_label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-x", "x y", "x/y", &"v".repeat(64)] {
            assert!(validate_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_names() {
        for ok in ["http", "metrics-2", "h2c"] {
            assert!(validate_port_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "123",
            "HTTP",
            "-http",
            "http-",
            "a--b",
            "sixteen-letters-",
            "a_b",
        ] {
            assert!(validate_port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workload_interface_names_are_stable_and_fit_the_kernel_limit() {
        let a = workload_interface_name("production", "frontend");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with(WORKLOAD_INTERFACE_PREFIX));
        assert_eq!(a, workload_interface_name("production", "frontend"));
        assert_ne!(a, workload_interface_name("production", "api"));
        assert_ne!(a, workload_interface_name("staging", "frontend"));
    }
}
