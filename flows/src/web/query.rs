//! The JSON API's query strings, with no I/O: the same filters as the gRPC
//! `FlowFilter` (`namespace`, `pod`, `from_pod`, `to_pod`, `label`
//! (repeatable), `verdict`, `policy`, `port`, `since`) and `limit`. A
//! parameter that cannot be understood is an error naming it; so is one
//! this API does not know.

use manul_proto::flows::FlowFilter;

/// A query string that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("unknown parameter {0:?}")]
    Unknown(String),
    #[error("{name}={value:?}: {expected}")]
    Value {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the query string is not UTF-8 once decoded")]
    Encoding,
}

/// What a request asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub filter: FlowFilter,
    /// 0: the default.
    pub limit: usize,
}

/// `%XX` and `+` decoded.
fn decode(s: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding)
}

/// `30s`, `5m`, `2h`, `1d` or plain seconds.
fn seconds(s: &str) -> Option<u64> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Parses `raw` (without the `?`) at `now_s` (Unix seconds, for `since`).
pub fn parse(raw: &str, now_s: u64) -> Result<Query, QueryError> {
    let mut q = Query::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if v.is_empty() {
            // An empty form field filters nothing.
            continue;
        }
        let bad = |name: &'static str, expected: &'static str| QueryError::Value {
            name,
            value: v.clone(),
            expected,
        };
        let f = &mut q.filter;
        match k.as_str() {
            "namespace" => f.namespace = v,
            "pod" => f.pod = v,
            "from_pod" => f.from_pod = v,
            "to_pod" => f.to_pod = v,
            "label" => {
                if v.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                    return Err(bad("label", "expected KEY=VALUE"));
                }
                f.labels.push(v);
            }
            "verdict" => {
                f.action = match v.to_ascii_lowercase().as_str() {
                    "allow" | "allowed" | "forwarded" => "allow".into(),
                    "deny" | "denied" | "dropped" => "deny".into(),
                    _ => return Err(bad("verdict", "expected allowed or denied")),
                }
            }
            "policy" => f.policy = v,
            "port" => {
                f.port = match v.parse::<u16>() {
                    Ok(p) if p > 0 => u32::from(p),
                    _ => return Err(bad("port", "expected a port, 1 to 65535")),
                }
            }
            "since" => {
                let s = seconds(&v)
                    .ok_or_else(|| bad("since", "expected a duration such as 30s, 5m, 1h or 2d"))?;
                f.since_unix_s = now_s.saturating_sub(s);
            }
            "limit" => {
                q.limit = match v.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(bad("limit", "expected a positive number")),
                }
            }
            _ => return Err(QueryError::Unknown(k)),
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_of_the_grpc_api() {
        let q = parse(
            "namespace=prod&pod=&from_pod=prod%2Fweb-*&to_pod=db&label=app%3Ddb&label=tier=back\
             &verdict=DENIED&policy=prod/db-allow&port=5432&since=5m&limit=20",
            1000,
        )
        .unwrap();
        let f = &q.filter;
        assert_eq!(f.namespace, "prod");
        assert_eq!(f.pod, "");
        assert_eq!(
            (f.from_pod.as_str(), f.to_pod.as_str()),
            ("prod/web-*", "db")
        );
        assert_eq!(f.labels, ["app=db", "tier=back"]);
        assert_eq!(
            (f.action.as_str(), f.policy.as_str()),
            ("deny", "prod/db-allow")
        );
        assert_eq!((f.port, f.since_unix_s, q.limit), (5432, 700, 20));
        assert_eq!(parse("", 5).unwrap(), Query::default());
        assert_eq!(parse("pod=a+b%2", 5).unwrap().filter.pod, "a b%2");
    }

    #[test]
    fn nonsense_is_refused_by_name() {
        let err = |s: &str| parse(s, 0).unwrap_err().to_string();
        assert_eq!(err("colour=red"), "unknown parameter \"colour\"");
        assert_eq!(err("port=0"), "port=\"0\": expected a port, 1 to 65535");
        assert_eq!(
            err("verdict=maybe"),
            "verdict=\"maybe\": expected allowed or denied"
        );
        assert_eq!(err("label=app"), "label=\"app\": expected KEY=VALUE");
        assert_eq!(
            err("since=5y"),
            "since=\"5y\": expected a duration such as 30s, 5m, 1h or 2d"
        );
        assert_eq!(err("limit=-1"), "limit=\"-1\": expected a positive number");
        assert_eq!(err("pod=%ff"), "the query string is not UTF-8 once decoded");
    }
}
