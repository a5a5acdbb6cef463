//! Which records a query wants ([`FlowFilter`]), with no I/O. Empty fields
//! match everything; a filter that cannot be understood is an error naming
//! the field.

use manul_proto::flows::FlowFilter;

use crate::flow::{Endpoint, Flow, Hit};

/// A filter that does not make sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("label {0:?} is not KEY=VALUE")]
    Label(String),
    #[error("action {0:?} is neither allow nor deny")]
    Action(String),
    #[error("pending action {0:?} is neither allow nor deny")]
    PendingAction(String),
    #[error("since {since} is after until {until}")]
    Window { since: u64, until: u64 },
}

/// A checked filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    raw: FlowFilter,
    labels: Vec<(String, String)>,
}

impl Filter {
    pub fn new(raw: FlowFilter) -> Result<Filter, FilterError> {
        let labels = raw
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(FilterError::Label(l.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !matches!(raw.action.as_str(), "" | "allow" | "deny") {
            return Err(FilterError::Action(raw.action.clone()));
        }
        if !matches!(raw.pending_action.as_str(), "" | "allow" | "deny") {
            return Err(FilterError::PendingAction(raw.pending_action.clone()));
        }
        if raw.since_unix_s != 0 && raw.until_unix_s != 0 && raw.since_unix_s > raw.until_unix_s {
            return Err(FilterError::Window {
                since: raw.since_unix_s,
                until: raw.until_unix_s,
            });
        }
        Ok(Filter { raw, labels })
    }

    pub fn matches(&self, r: &Flow) -> bool {
        let f = &self.raw;
        let (src, dst) = (r.src.as_deref(), r.dst.as_deref());
        let either = |p: &dyn Fn(&Endpoint) -> bool| src.is_some_and(p) || dst.is_some_and(p);
        if !f.namespace.is_empty() && !either(&|e| *e.namespace == *f.namespace) {
            return false;
        }
        if !f.pod.is_empty() && !either(&|e| pod_matches(&f.pod, e)) {
            return false;
        }
        if !f.from_pod.is_empty() && !src.is_some_and(|e| pod_matches(&f.from_pod, e)) {
            return false;
        }
        if !f.to_pod.is_empty() && !dst.is_some_and(|e| pod_matches(&f.to_pod, e)) {
            return false;
        }
        for (k, v) in &self.labels {
            if !either(&|e| e.label(k) == Some(v.as_str())) {
                return false;
            }
        }
        if !f.action.is_empty() && *r.action != *f.action {
            return false;
        }
        if !f.policy.is_empty() && !r.enforced.iter().any(|h| policy_matches(&f.policy, h)) {
            return false;
        }
        if !f.pending_action.is_empty() && *r.pending_action != *f.pending_action {
            return false;
        }
        if !f.pending_policy.is_empty()
            && !r
                .pending
                .iter()
                .any(|h| policy_matches(&f.pending_policy, h))
        {
            return false;
        }
        if f.port != 0 && r.dst_port != f.port {
            return false;
        }
        if f.since_unix_s != 0 && r.end_unix_s < f.since_unix_s {
            return false;
        }
        if f.until_unix_s != 0 && r.start_unix_s >= f.until_unix_s {
            return false;
        }
        true
    }
}

/// `NS/NAME` or `NAME`; NAME is the workload (`web-*`) or a pod name it
/// stands for (`web-6d4cf56db6-x2k9p` matches `web-*`).
fn pod_matches(want: &str, e: &Endpoint) -> bool {
    let (ns, name) = match want.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, want),
    };
    if ns.is_some_and(|ns| ns != &*e.namespace) {
        return false;
    }
    if &*e.workload == name {
        return true;
    }
    match e.workload.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => false,
    }
}

/// `NAME`, `NS/NAME` or `TIER/NAME` (a tier only for global policies).
fn policy_matches(want: &str, h: &Hit) -> bool {
    match want.split_once('/') {
        Some((scope, name)) => name == &*h.name && (scope == &*h.namespace || scope == &*h.tier),
        None => want == &*h.name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intern::Interner;
    use manul_proto::flows::{FlowEndpoint, FlowRecord, PolicyHit};

    fn ep(ns: &str, workload: &str, app: &str) -> Option<FlowEndpoint> {
        Some(FlowEndpoint {
            kind: "pod".into(),
            namespace: ns.into(),
            workload: workload.into(),
            labels: [("app".to_owned(), app.to_owned())].into_iter().collect(),
        })
    }

    fn record() -> FlowRecord {
        FlowRecord {
            start_unix_s: 100,
            end_unix_s: 115,
            src: ep("prod", "web-*", "web"),
            dst: ep("data", "db", "db"),
            dst_port: 5432,
            action: "allow".into(),
            enforced: vec![PolicyHit {
                tier: "default".into(),
                kind: "NetworkPolicy".into(),
                namespace: "data".into(),
                name: "db-allow".into(),
                rule_index: Some(1),
                action: "allow".into(),
            }],
            pending: vec![PolicyHit {
                tier: "default".into(),
                kind: "StagedNetworkPolicy".into(),
                namespace: "data".into(),
                name: "db-lockdown".into(),
                rule_index: Some(0),
                action: "deny".into(),
            }],
            pending_action: "deny".into(),
            ..FlowRecord::default()
        }
    }

    fn matches(f: FlowFilter) -> bool {
        Filter::new(f)
            .unwrap()
            .matches(&Flow::from_record(&record(), &mut Interner::new()))
    }

    #[test]
    fn every_field_filters() {
        let f = FlowFilter::default;
        assert!(matches(f()));
        assert!(matches(FlowFilter {
            namespace: "data".into(),
            ..f()
        }));
        assert!(!matches(FlowFilter {
            namespace: "kube-system".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            pod: "prod/web-6d4cf56db6-x2k9p".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            from_pod: "web-*".into(),
            ..f()
        }));
        assert!(!matches(FlowFilter {
            from_pod: "db".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            to_pod: "data/db".into(),
            ..f()
        }));
        assert!(!matches(FlowFilter {
            to_pod: "prod/db".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            labels: vec!["app=db".into()],
            ..f()
        }));
        assert!(!matches(FlowFilter {
            labels: vec!["app=cache".into()],
            ..f()
        }));
        assert!(matches(FlowFilter {
            action: "allow".into(),
            ..f()
        }));
        assert!(!matches(FlowFilter {
            action: "deny".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            policy: "data/db-allow".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            policy: "default/db-allow".into(),
            ..f()
        }));
        assert!(!matches(FlowFilter {
            policy: "web-allow".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            pending_action: "deny".into(),
            ..f()
        }));
        assert!(!matches(FlowFilter {
            pending_action: "allow".into(),
            ..f()
        }));
        assert!(matches(FlowFilter {
            pending_policy: "data/db-lockdown".into(),
            ..f()
        }));
        // The enforced and pending traces are filtered apart.
        assert!(!matches(FlowFilter {
            pending_policy: "db-allow".into(),
            ..f()
        }));
        assert!(!matches(FlowFilter {
            policy: "db-lockdown".into(),
            ..f()
        }));
        assert!(matches(FlowFilter { port: 5432, ..f() }));
        assert!(!matches(FlowFilter { port: 80, ..f() }));
        assert!(matches(FlowFilter {
            since_unix_s: 110,
            until_unix_s: 120,
            ..f()
        }));
        assert!(!matches(FlowFilter {
            since_unix_s: 116,
            ..f()
        }));
        assert!(!matches(FlowFilter {
            until_unix_s: 100,
            ..f()
        }));
    }

    #[test]
    fn nonsense_is_refused_by_name() {
        let bad = |f: FlowFilter| Filter::new(f).unwrap_err().to_string();
        assert_eq!(
            bad(FlowFilter {
                labels: vec!["app".into()],
                ..FlowFilter::default()
            }),
            "label \"app\" is not KEY=VALUE"
        );
        assert_eq!(
            bad(FlowFilter {
                action: "drop".into(),
                ..FlowFilter::default()
            }),
            "action \"drop\" is neither allow nor deny"
        );
        assert_eq!(
            bad(FlowFilter {
                pending_action: "maybe".into(),
                ..FlowFilter::default()
            }),
            "pending action \"maybe\" is neither allow nor deny"
        );
        assert_eq!(
            bad(FlowFilter {
                since_unix_s: 5,
                until_unix_s: 4,
                ..FlowFilter::default()
            }),
            "since 5 is after until 4"
        );
    }
}
