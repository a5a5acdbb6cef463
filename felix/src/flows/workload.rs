//! A pod's workload aggregated by owner, as Calico's flow logs name it: the
//! pods of one ReplicaSet, DaemonSet, Job or StatefulSet become `PREFIX-*`
//! (Calico uses the pod's `generateName`; a WorkloadEndpoint does not carry
//! it, so the prefix is read off the name and labels the owner gave).

use std::collections::BTreeMap;

/// The characters of Kubernetes' random name suffixes and template hashes
/// (no vowels, no easily confused digits).
const SAFE: &str = "bcdfghjklmnpqrstvwxz2456789";

fn safe_suffix(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.chars().all(|c| SAFE.contains(c))
}

/// The aggregated workload name of a pod: `PREFIX-*` when its name carries
/// an owner's suffix, its name otherwise.
///
/// - A StatefulSet's pod (label `statefulset.kubernetes.io/pod-name`, name
///   `NAME-ORDINAL`): `NAME-*`.
/// - A ReplicaSet's pod (label `pod-template-hash`, name
///   `DEPLOYMENT-HASH-XXXXX`): `DEPLOYMENT-*`, both suffixes dropped.
/// - Any other pod whose name ends in a 5-character random suffix (a
///   DaemonSet's, a Job's, a bare ReplicaSet's): the name without it.
pub fn aggregated_name(pod: &str, labels: &BTreeMap<String, String>) -> String {
    if labels.contains_key("statefulset.kubernetes.io/pod-name")
        && let Some((prefix, ordinal)) = pod.rsplit_once('-')
        && !ordinal.is_empty()
        && ordinal.chars().all(|c| c.is_ascii_digit())
    {
        return format!("{prefix}-*");
    }
    let Some((rest, random)) = pod.rsplit_once('-') else {
        return pod.to_owned();
    };
    if !safe_suffix(random, 5, 5) || rest.is_empty() {
        return pod.to_owned();
    }
    if let Some(hash) = labels.get("pod-template-hash")
        && let Some(deployment) = rest.strip_suffix(hash.as_str())
        && let Some(deployment) = deployment.strip_suffix('-')
        && !deployment.is_empty()
    {
        return format!("{deployment}-*");
    }
    format!("{rest}-*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn owners_suffixes_are_dropped() {
        let none = labels(&[]);
        let rs = labels(&[("pod-template-hash", "5d7b9f4c8")]);
        let sts = labels(&[("statefulset.kubernetes.io/pod-name", "web-0")]);
        for (pod, labels, want) in [
            ("nginx-5d7b9f4c8-x2k9p", &rs, "nginx-*"),
            ("my-app-5d7b9f4c8-x2k9p", &rs, "my-app-*"),
            ("fluentd-zq7xw", &none, "fluentd-*"),
            ("web-0", &sts, "web-*"),
            ("web-12", &sts, "web-*"),
            // Not an owner's suffix: vowels, wrong length, no dash.
            ("client", &none, "client"),
            ("client-alpha", &none, "client-alpha"),
            ("db-1", &none, "db-1"),
            ("-bcdfg", &none, "-bcdfg"),
        ] {
            assert_eq!(aggregated_name(pod, labels), want, "{pod}");
        }
    }
}
