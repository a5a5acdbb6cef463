#![allow(clippy::unwrap_used)]

use axum::http::HeaderValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;

use super::*;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    policy: String,
}

fn registry() -> Registry {
    let mut r = Registry::default();
    let flows = Family::<Labels, Counter>::default();
    flows
        .get_or_create(&Labels {
            // prometheus-client writes label values as they are.
            policy: "default/a # {name}".into(),
        })
        .inc_by(3);
    r.register("x_flows", "Flows", flows);
    let g = Gauge::<i64>::default();
    g.set(7);
    r.register("x_endpoints", "Endpoints", g);
    let h = Histogram::new([0.1, 1.0]);
    h.observe(0.5);
    r.register("x_apply_seconds", "Apply time", h);
    r.register(
        "x_build",
        "Build",
        Info::new(vec![("version".to_string(), "1".to_string())]),
    );
    r
}

fn openmetrics() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry()).unwrap();
    out
}

#[test]
fn counters_and_infos_are_named_by_their_samples_in_the_text_format() {
    let text = to_text_format(&openmetrics());
    for want in [
        // prometheus-client ends every help text with a full stop.
        "# HELP x_flows_total Flows.",
        "# TYPE x_flows_total counter",
        "x_flows_total{policy=\"default/a # {name}\"} 3",
        "# HELP x_endpoints Endpoints.",
        "# TYPE x_endpoints gauge",
        "x_endpoints 7",
        "# TYPE x_apply_seconds histogram",
        "x_apply_seconds_count 1",
        "x_apply_seconds_bucket{le=\"1.0\"} 1",
        "# TYPE x_build_info gauge",
        "x_build_info{version=\"1\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "{want:?} missing from\n{text}"
        );
    }
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("# TYPE x_flows counter"), "{text}");
}

#[test]
fn exemplars_are_cut_after_the_label_set() {
    assert_eq!(
        without_exemplar(r#"x_total{a="b # {c}"} 3 # {trace="1"} 1.0"#),
        r#"x_total{a="b # {c}"} 3"#
    );
    assert_eq!(without_exemplar("x_total 3"), "x_total 3");
    assert_eq!(without_exemplar("# a comment"), "# a comment");
}

#[test]
fn prometheus_gets_openmetrics_and_others_the_text_format() {
    // What Prometheus 2.x sends.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert!(wants_openmetrics(prometheus));
    assert!(!wants_openmetrics("text/plain;version=0.0.4"));
    assert!(!wants_openmetrics("*/*"));
    assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    let r = registry();
    let mut headers = HeaderMap::new();
    let content_type = |resp: &Response| resp.headers()[header::CONTENT_TYPE].clone();
    assert_eq!(content_type(&page(&r, &headers)), TEXT);
    headers.insert(header::ACCEPT, HeaderValue::from_static(prometheus));
    assert_eq!(content_type(&page(&r, &headers)), OPENMETRICS);
}
