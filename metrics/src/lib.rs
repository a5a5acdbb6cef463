//! The `/metrics` page of Manul's listeners (Felix's and Typha's).
//!
//! `prometheus-client` encodes a registry as OpenMetrics. Prometheus asks
//! for that format in its `Accept` header and gets it; any other client
//! (`curl`, `promtool check metrics`, older scrapers) gets the Prometheus
//! text format 0.0.4, as the Go client library serves it: a counter's
//! `# HELP`/`# TYPE` name carries its `_total` suffix, an info metric is a
//! gauge named with its `_info` suffix, `unknown` is `untyped`, and there
//! are no `# UNIT` lines, exemplars or `# EOF`.
//!
//! It does not change what is measured, and it refuses nothing: a line it
//! does not recognise is passed through as it is.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (with a non-zero
/// quality).
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

/// The page for a request with these headers: OpenMetrics when asked for,
/// else the text format; 500 with the error when encoding fails.
pub fn page(registry: &Registry, headers: &HeaderMap) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(wants_openmetrics);
    if openmetrics {
        (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], out).into_response()
    } else {
        let text = to_text_format(&out);
        (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], text).into_response()
    }
}

/// OpenMetrics text to the Prometheus text format 0.0.4.
pub fn to_text_format(openmetrics: &str) -> String {
    // A family's `# HELP` comes before its `# TYPE`: find every family's
    // type first.
    let mut types = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            types.insert(name, kind.trim());
        }
    }
    let renamed = |name: &str| -> String {
        match types.get(name) {
            Some(&"counter") if !name.ends_with("_total") => format!("{name}_total"),
            Some(&"info") if !name.ends_with("_info") => format!("{name}_info"),
            _ => name.to_string(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = match kind.trim() {
                "info" | "stateset" => "gauge",
                "unknown" => "untyped",
                other => other,
            };
            out.push_str(&format!("# TYPE {} {kind}\n", renamed(name)));
        } else {
            out.push_str(without_exemplar(line));
            out.push('\n');
        }
    }
    out
}

/// A sample line without its exemplar (` # {labels} value`), which the
/// text format does not have. The exemplar follows the label set, whose
/// quoted values may hold anything.
fn without_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    let (mut in_labels, mut in_quotes, mut escaped) = (false, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quotes = false,
                _ => {}
            }
        } else if in_labels {
            match b {
                b'"' => in_quotes = true,
                b'}' => in_labels = false,
                _ => {}
            }
        } else {
            match b {
                b'{' => in_labels = true,
                b'#' if i > 0 && bytes[i - 1] == b' ' => return line[..i - 1].trim_end(),
                _ => {}
            }
        }
        i += 1;
    }
    line
}

#[cfg(test)]
mod tests;
