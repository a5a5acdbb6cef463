//! CNI errors: a code from the spec (or 100+ for this plugin), a short
//! message and details, printed as CNI's JSON error on stdout.

use serde::Serialize;

/// CNI's well-known error codes (spec 1.0, "Error").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Plugin-specific: the datastore refused or lacks something (the pod).
    pub const DATASTORE: u32 = 100;
    /// Plugin-specific: no address could be allocated.
    pub const IPAM: u32 = 101;
    /// Plugin-specific: interfaces, addresses or routes could not be set up.
    pub const NETWORK: u32 = 102;
    /// Plugin-specific: Felix did not report the endpoint programmed in time.
    pub const POLICY_TIMEOUT: u32 = 103;
    /// Plugin-specific: CHECK found something missing or different.
    pub const CHECK_FAILED: u32 = 104;
}

/// A CNI error. `msg` says what failed; `details` why (the cause chain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

#[derive(Serialize)]
struct Json<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

pub use manul_model::error::chain;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// An error with `cause`'s whole chain as details.
    pub fn caused(
        code: u32,
        msg: impl Into<String>,
        cause: &(dyn std::error::Error + 'static),
    ) -> CniError {
        CniError::new(code, msg, chain(cause))
    }

    /// The JSON error CNI runtimes read from stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        let json = Json {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&json).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{cni_version}\",\"code\":{},\"msg\":\"error\"}}",
                self.code
            )
        })
    }
}

impl From<manul_client::ClientError> for CniError {
    fn from(e: manul_client::ClientError) -> CniError {
        let code = if e.is_unavailable() || e.is_conflict() {
            code::TRY_AGAIN_LATER
        } else {
            code::DATASTORE
        };
        CniError::caused(code, "datastore request failed", &e)
    }
}

impl From<manul_client::ipam::IpamError> for CniError {
    fn from(e: manul_client::ipam::IpamError) -> CniError {
        let code = if e.is_transient() {
            code::TRY_AGAIN_LATER
        } else {
            code::IPAM
        };
        CniError::caused(code, "cannot allocate an address", &e)
    }
}

impl From<manul_netns::NetnsError> for CniError {
    fn from(e: manul_netns::NetnsError) -> CniError {
        CniError::caused(code::NETWORK, "cannot set up the pod network", &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_follows_the_spec() {
        let e = CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set", "");
        assert_eq!(
            e.to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_COMMAND is not set"}"#
        );
        let e = CniError::new(code::DATASTORE, "pod \"a\" not found", "say \"why\"\n");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap_or_default();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], 100);
        assert_eq!(v["msg"], "pod \"a\" not found");
        assert_eq!(v["details"], "say \"why\"\n");
    }

    #[test]
    fn chains_skip_repeated_text() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        let e = CniError::caused(code::IO_FAILURE, "reading", &e);
        assert_eq!(e.details, "outer: inner");
    }
}
