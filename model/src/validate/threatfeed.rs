//! Validation of a GlobalThreatFeed: what Manul can pull and keep.

use super::Validator;
use crate::v3::{CsvFormat, GlobalThreatFeedSpec, ThreatFeedContent, ThreatFeedFormat};

/// The shortest pull period accepted (a feed is a remote server's list).
pub const MIN_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) fn feed(v: &mut Validator, s: &GlobalThreatFeedSpec) {
    if s.content == Some(ThreatFeedContent::DomainNameSet) {
        v.err(
            "spec.content",
            "DomainNameSet feeds are not supported: Manul enforces IP sets only (use IPSet)",
        );
    }
    if let Some(set) = &s.global_network_set {
        v.labels("spec.globalNetworkSet.labels", &set.labels);
    }
    let Some(pull) = &s.pull else {
        return;
    };
    if let Some(p) = pull.period
        && p.0 < MIN_PERIOD
    {
        v.err(
            "spec.pull.period",
            format!("{p} is shorter than the minimum, {}s", MIN_PERIOD.as_secs()),
        );
    }
    let url = pull.http.url.as_str();
    let scheme_ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|p| url.len() > p.len() && url.starts_with(p));
    if !scheme_ok {
        v.err(
            "spec.pull.http.url",
            format!("{url:?} must be an http://, https:// or file:/// URL"),
        );
    }
    for (i, h) in pull.http.headers.iter().enumerate() {
        let path = format!("spec.pull.http.headers[{i}]");
        if h.name.is_empty() || !h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            v.err(
                format!("{path}.name"),
                format!("{:?} is not a header name", h.name),
            );
        }
        if h.value.is_some() == h.value_from.is_some() {
            v.err(path, "set exactly one of value and valueFrom");
        }
    }
    if let Some(f) = &pull.http.format {
        format(v, f);
    }
}

fn format(v: &mut Validator, f: &ThreatFeedFormat) {
    let set = [
        f.newline_delimited.is_some(),
        f.json.is_some(),
        f.csv.is_some(),
    ];
    if set.iter().filter(|b| **b).count() > 1 {
        v.err(
            "spec.pull.http.format",
            "set one of newlineDelimited, json and csv",
        );
    }
    if let Some(j) = &f.json
        && !j.path.starts_with('$')
    {
        v.err(
            "spec.pull.http.format.json.path",
            format!("{:?} is not a JSONPath (it starts with $)", j.path),
        );
    }
    if let Some(c) = &f.csv {
        csv(v, c);
    }
}

fn csv(v: &mut Validator, c: &CsvFormat) {
    let path = "spec.pull.http.format.csv";
    match (&c.field_num, &c.field_name) {
        (Some(_), Some(_)) => v.err(path, "set fieldNum or fieldName, not both"),
        (None, Some(_)) if c.header != Some(true) => {
            v.err(format!("{path}.fieldName"), "needs header: true")
        }
        _ => {}
    }
    for (field, value) in [
        ("columnDelimiter", &c.column_delimiter),
        ("commentDelimiter", &c.comment_delimiter),
    ] {
        if let Some(d) = value
            && (d.len() != 1 || !d.is_ascii() || d == "\n" || d == "\"")
        {
            v.err(
                format!("{path}.{field}"),
                format!("{d:?} is not one ASCII character (other than a newline or a quote)"),
            );
        }
    }
    if c.column_delimiter.is_some() && c.column_delimiter == c.comment_delimiter {
        v.err(path, "columnDelimiter and commentDelimiter must differ");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    fn errors(spec: &str) -> Vec<String> {
        let doc = format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalThreatFeed\nmetadata:\n  name: f\nspec:\n{spec}"
        );
        match crate::load("t.yaml", doc.as_bytes()).into_result() {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }

    const PULL: &str =
        "  pull:\n    period: 10s\n    http:\n      url: http://127.0.0.1:8080/feed\n";

    #[test]
    fn feeds_manul_can_pull_load() {
        for extra in [
            "",
            "      format: {newlineDelimited: {}}\n",
            "      format: {json: {path: '$.ips[*]'}}\n",
            "      format: {csv: {fieldNum: 1, columnDelimiter: ';', commentDelimiter: '#'}}\n",
            "      format: {csv: {fieldName: ip, header: true, recordSize: 3}}\n",
            "      headers: [{name: Authorization, value: Bearer x}]\n",
        ] {
            let spec = format!(
                "  content: IPSet\n  globalNetworkSet: {{labels: {{feed: x}}}}\n{PULL}{extra}"
            );
            assert_eq!(errors(&spec), Vec::<String>::new(), "{extra}");
        }
        let file = "  pull:\n    http:\n      url: file:///var/lib/feeds/list.txt\n";
        assert_eq!(errors(file), Vec::<String>::new());
    }

    #[test]
    fn what_cannot_be_pulled_is_an_error_naming_the_field() {
        let cases = [
            ("  content: DomainNameSet\n", "spec.content"),
            (
                "  globalNetworkSet: {labels: {'bad key': x}}\n",
                "spec.globalNetworkSet.labels",
            ),
            (
                "  pull:\n    period: 100ms\n    http: {url: 'http://a/b'}\n",
                "spec.pull.period",
            ),
            (
                "  pull:\n    http: {url: 'ftp://a/b'}\n",
                "spec.pull.http.url",
            ),
            (
                "  pull:\n    http: {url: 'file://relative'}\n",
                "spec.pull.http.url",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      headers: [{name: 'a b', value: x}]\n",
                "spec.pull.http.headers[0].name",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      headers: [{name: a}]\n",
                "spec.pull.http.headers[0]",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      format: {json: {path: '$'}, csv: {}}\n",
                "spec.pull.http.format",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      format: {json: {path: 'ips'}}\n",
                "spec.pull.http.format.json.path",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      format: {csv: {fieldNum: 1, fieldName: ip, header: true}}\n",
                "spec.pull.http.format.csv",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      format: {csv: {fieldName: ip}}\n",
                "spec.pull.http.format.csv.fieldName",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      format: {csv: {columnDelimiter: ';;'}}\n",
                "spec.pull.http.format.csv.columnDelimiter",
            ),
            (
                "  pull:\n    http:\n      url: http://a/b\n      format: {newlineDelimited: {x: 1}}\n",
                "newlineDelimited",
            ),
        ];
        for (spec, path) in cases {
            let errs = errors(spec);
            assert!(
                errs.iter().any(|e| e.contains(path)),
                "{spec}: expected an error at {path}, got {errs:?}"
            );
        }
    }
}
