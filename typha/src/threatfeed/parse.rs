//! A feed's body to networks, by its format. No I/O.
//!
//! Entries are addresses (kept as `/32` or `/128`) or CIDRs (host bits
//! cleared). Blank entries and comments are not entries; an entry that is
//! neither an address nor a CIDR is skipped and counted, never fatal: one
//! bad line in a feed of thousands must not drop the other lines. A body
//! that cannot be read at all in its format (invalid JSON, a JSONPath that
//! does not parse, a CSV record of the wrong size) is an error, and the
//! feed's previous set stays.

use std::collections::BTreeSet;

use manul_model::v3::{Cidr, CsvFormat, ThreatFeedFormat};

/// What a body held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub nets: BTreeSet<Cidr>,
    /// Entries that are neither an address nor a CIDR.
    pub skipped: usize,
    /// The first of them, for the log.
    pub first_skipped: Option<String>,
}

impl Parsed {
    fn add(&mut self, entry: &str) {
        let entry = entry.trim();
        if entry.is_empty() {
            return;
        }
        match entry.parse::<Cidr>() {
            Ok(c) => {
                self.nets.insert(Cidr(c.net()));
            }
            Err(_) => {
                self.skipped += 1;
                if self.first_skipped.is_none() {
                    self.first_skipped = Some(entry.chars().take(80).collect());
                }
            }
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("JSONPath {path:?}: {reason}")]
    JsonPath { path: String, reason: String },
    #[error("CSV record {record}: {reason}")]
    Csv { record: u64, reason: String },
    #[error("CSV: no column named {0:?} in the header")]
    NoColumn(String),
}

/// The networks `body` lists, read as `format` says (newline-delimited
/// when it says nothing).
pub fn parse(format: Option<&ThreatFeedFormat>, body: &str) -> Result<Parsed, ParseError> {
    match format {
        Some(ThreatFeedFormat { json: Some(j), .. }) => json(&j.path, body),
        Some(ThreatFeedFormat { csv: Some(c), .. }) => csv(c, body),
        _ => Ok(lines(body)),
    }
}

/// One entry a line; `#` starts a comment (whole line or trailing).
fn lines(body: &str) -> Parsed {
    let mut out = Parsed::default();
    for line in body.lines() {
        let entry = line.split('#').next().unwrap_or_default();
        out.add(entry);
    }
    out
}

fn json(path: &str, body: &str) -> Result<Parsed, ParseError> {
    use jsonpath_rust::JsonPath;
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let found = value.query(path).map_err(|e| ParseError::JsonPath {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    let mut out = Parsed::default();
    for v in found {
        match v {
            serde_json::Value::String(s) => out.add(s),
            // `$.ips` naming the list itself rather than its items.
            serde_json::Value::Array(items) => {
                for item in items {
                    match item.as_str() {
                        Some(s) => out.add(s),
                        None => out.add(&item.to_string()),
                    }
                }
            }
            other => out.add(&other.to_string()),
        }
    }
    Ok(out)
}

fn one_byte(value: &Option<String>, default: u8) -> u8 {
    value
        .as_deref()
        .and_then(|s| s.bytes().next())
        .unwrap_or(default)
}

fn csv(format: &CsvFormat, body: &str) -> Result<Parsed, ParseError> {
    let header = format.header == Some(true);
    let fixed_size = format
        .record_size
        .filter(|n| *n > 0)
        .filter(|_| format.disable_record_size_validation != Some(true));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(header)
        .delimiter(one_byte(&format.column_delimiter, b','))
        .comment(
            format
                .comment_delimiter
                .as_ref()
                .map(|_| one_byte(&format.comment_delimiter, b'#')),
        )
        // Record sizes are checked below, against recordSize when given.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body.as_bytes());
    let column = match (&format.field_name, format.field_num) {
        (Some(name), _) => {
            let headers = reader.headers().map_err(|e| csv_error(0, &e))?;
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| ParseError::NoColumn(name.clone()))?
        }
        (None, Some(n)) => n as usize,
        (None, None) => 0,
    };
    let mut out = Parsed::default();
    for (i, record) in reader.records().enumerate() {
        let number = i as u64 + 1;
        let record = record.map_err(|e| csv_error(number, &e))?;
        if let Some(size) = fixed_size
            && record.len() != size as usize
        {
            return Err(ParseError::Csv {
                record: number,
                reason: format!("{} fields, recordSize is {size}", record.len()),
            });
        }
        match record.get(column) {
            Some(field) => out.add(field),
            None => out.add(""),
        }
    }
    Ok(out)
}

fn csv_error(record: u64, e: &csv::Error) -> ParseError {
    ParseError::Csv {
        record,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use manul_model::v3::JsonFormat;

    use super::*;

    fn nets(p: &Parsed) -> Vec<String> {
        p.nets.iter().map(|c| c.to_string()).collect()
    }

    fn with_csv(c: CsvFormat) -> ThreatFeedFormat {
        ThreatFeedFormat {
            csv: Some(c),
            ..ThreatFeedFormat::default()
        }
    }

    #[test]
    fn newline_delimited_with_comments_blanks_and_bad_lines() {
        let body = "# abuse list\n198.51.100.7\n\n203.0.113.0/24  # a range\n10.1.2.3/8\nnot-an-ip\n2001:db8::1\n198.51.100.7\n";
        let p = parse(None, body).unwrap();
        assert_eq!(
            nets(&p),
            [
                "10.0.0.0/8",
                "198.51.100.7/32",
                "203.0.113.0/24",
                "2001:db8::1/128"
            ]
        );
        assert_eq!(
            (p.skipped, p.first_skipped.as_deref()),
            (1, Some("not-an-ip"))
        );
    }

    #[test]
    fn json_by_path() {
        let f = |path: &str| ThreatFeedFormat {
            json: Some(JsonFormat { path: path.into() }),
            ..ThreatFeedFormat::default()
        };
        let body = r#"{"ips": ["192.0.2.1", "192.0.2.0/28", 5], "meta": {"n": 2}}"#;
        let p = parse(Some(&f("$.ips[*]")), body).unwrap();
        assert_eq!(nets(&p), ["192.0.2.0/28", "192.0.2.1/32"]);
        assert_eq!(p.skipped, 1);
        // The list itself, not its items: the same entries.
        assert_eq!(nets(&parse(Some(&f("$.ips")), body).unwrap()), nets(&p));
        assert!(matches!(
            parse(Some(&f("$.ips[*]")), "{not json"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse(Some(&f("$.[[")), body),
            Err(ParseError::JsonPath { .. })
        ));
    }

    #[test]
    fn csv_by_number_name_delimiters_and_record_size() {
        let body = "# generated\nfirst;198.51.100.1;x\nsecond;198.51.100.0/30;y\n";
        let p = parse(
            Some(&with_csv(CsvFormat {
                field_num: Some(1),
                column_delimiter: Some(";".into()),
                comment_delimiter: Some("#".into()),
                record_size: Some(3),
                ..CsvFormat::default()
            })),
            body,
        )
        .unwrap();
        assert_eq!(nets(&p), ["198.51.100.0/30", "198.51.100.1/32"]);

        let named = "name,ip\na,192.0.2.9\nb,bogus\n";
        let p = parse(
            Some(&with_csv(CsvFormat {
                field_name: Some("ip".into()),
                header: Some(true),
                ..CsvFormat::default()
            })),
            named,
        )
        .unwrap();
        assert_eq!((nets(&p), p.skipped), (vec!["192.0.2.9/32".to_string()], 1));

        let missing = parse(
            Some(&with_csv(CsvFormat {
                field_name: Some("addr".into()),
                header: Some(true),
                ..CsvFormat::default()
            })),
            named,
        );
        assert_eq!(missing, Err(ParseError::NoColumn("addr".into())));

        let sized = CsvFormat {
            record_size: Some(2),
            ..CsvFormat::default()
        };
        let short = "192.0.2.1,a\n192.0.2.2\n";
        assert!(matches!(
            parse(Some(&with_csv(sized.clone())), short),
            Err(ParseError::Csv { record: 2, .. })
        ));
        let relaxed = CsvFormat {
            disable_record_size_validation: Some(true),
            ..sized
        };
        assert_eq!(
            nets(&parse(Some(&with_csv(relaxed)), short).unwrap()),
            ["192.0.2.1/32", "192.0.2.2/32"]
        );
    }
}
