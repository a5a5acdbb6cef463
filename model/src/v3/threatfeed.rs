//! `GlobalThreatFeed`: a list of addresses or networks pulled on a period
//! from a file or an HTTP(S) URL and kept in a labelled `GlobalNetworkSet`
//! (`threatfeed.NAME`), so that a policy denying that label blocks what the
//! feed lists. Calico Enterprise's schema; Manul pulls IP sets only (a
//! `DomainNameSet` feed is refused) and also accepts `file://` URLs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;

/// Prefix of the GlobalNetworkSet a feed writes: `threatfeed.NAME`.
pub const THREAT_FEED_SET_PREFIX: &str = "threatfeed.";

/// Calico's default pull period.
pub const THREAT_FEED_DEFAULT_PERIOD: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

/// Spec of a `GlobalThreatFeed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalThreatFeedSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ThreatFeedContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ThreatFeedMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_type: Option<ThreatFeedType>,
    /// Where the pulled entries are kept; without it the feed is pulled
    /// into nothing (Calico keeps it for alerting only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_network_set: Option<GlobalNetworkSetSync>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<ThreatFeedPull>,
}

impl GlobalThreatFeedSpec {
    /// Whether the feed is pulled (`mode` defaults to `Enabled`).
    pub fn enabled(&self) -> bool {
        self.mode != Some(ThreatFeedMode::Disabled)
    }
}

/// What a feed lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ThreatFeedContent {
    #[serde(rename = "IPSet")]
    IpSet,
    DomainNameSet,
}

/// Whether a feed is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ThreatFeedMode {
    Enabled,
    Disabled,
}

/// Who maintains a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ThreatFeedType {
    Builtin,
    Custom,
}

/// The labels of the GlobalNetworkSet a feed keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkSetSync {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How and how often a feed is pulled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThreatFeedPull {
    /// Calico's default is 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<GoDuration>,
    pub http: HttpPull,
}

/// Where a feed is pulled from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPull {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ThreatFeedFormat>,
    /// `http://`, `https://`, or `file:///PATH` on the Typha leader.
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

/// How a feed's body is read; newline-delimited when none is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThreatFeedFormat {
    /// `newlineDelimited: {}`: one entry a line, `#` comments.
    #[serde(
        default,
        rename = "newlineDelimited",
        skip_serializing_if = "Option::is_none"
    )]
    pub newline_delimited: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvFormat>,
}

/// An empty object (`{}`), the form of a format without options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A JSON body: a JSONPath selecting the entries (strings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonFormat {
    pub path: String,
}

/// A CSV body: the column holding the entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsvFormat {
    /// The column by number (from 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_num: Option<u32>,
    /// The column by its header name (needs `header: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// One character; `,` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_delimiter: Option<String>,
    /// One character; lines starting with it are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_delimiter: Option<String>,
    /// The number of fields every record must have (0: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_record_size_validation: Option<bool>,
}

/// A header sent with the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderValueSource>,
}

/// A header value kept in a ConfigMap or a Secret (Calico's schema; Manul
/// reads neither, so a feed naming one is not pulled and says why).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValueSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
}

/// A key of a ConfigMap or a Secret in Manul's namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}
