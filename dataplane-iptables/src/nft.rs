//! Running `nft`: applying a script as one transaction, and reading the
//! table back for the refresh. Acts in the network namespace of the
//! calling thread (a child process inherits it).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::names::TABLE;

/// Why `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft refused the transaction (nothing of it was applied): {stderr}")]
    Refused { stderr: String },
    #[error("netlink: {context}")]
    Netlink {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read `nft -j list table inet {TABLE}`: {0}")]
    BadListing(String),
}

/// The `nft` program to run.
#[derive(Debug, Clone)]
pub struct Nft {
    program: String,
}

impl Default for Nft {
    fn default() -> Self {
        Self {
            program: "nft".into(),
        }
    }
}

/// What the kernel holds in the table, as far as the refresh compares it:
/// each chain's rule comments in order, each set's element count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub chains: BTreeMap<String, Vec<String>>,
    pub sets: BTreeMap<String, usize>,
}

impl Nft {
    /// Uses `program` instead of `nft` from `PATH`.
    pub fn with_program(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
        }
    }

    fn command(&self) -> Command {
        Command::new(&self.program)
    }

    /// Applies a script as one transaction (`nft -f -`).
    pub fn apply(&self, script: &str) -> Result<(), NftError> {
        if script.is_empty() {
            return Ok(());
        }
        let spawn = |source| NftError::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(spawn)?;
        }
        let output = child.wait_with_output().map_err(spawn)?;
        if output.status.success() {
            Ok(())
        } else {
            let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if stderr.len() > 4000 {
                stderr.truncate(4000);
                stderr.push_str("...");
            }
            Err(NftError::Refused { stderr })
        }
    }

    /// The messages `nft` would send for `script`, checked by the kernel
    /// but not applied (`nft --check --debug=mnl`; see `compiled.rs`):
    /// the text of its message dump.
    pub fn compile(&self, script: &str) -> Result<String, NftError> {
        let spawn = |source| NftError::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = self
            .command()
            .args(["--check", "--debug=mnl", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let writer = child.stdin.take().map(|mut stdin| {
            let script = script.to_string();
            std::thread::spawn(move || stdin.write_all(script.as_bytes()))
        });
        let output = child.wait_with_output().map_err(spawn)?;
        // A refused script may stop nft reading: then the status says why.
        let written = writer.map_or(Ok(()), |w| {
            w.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")))
        });
        if output.status.success() {
            written.map_err(spawn)?;
            String::from_utf8(output.stdout).map_err(|e| NftError::Refused {
                stderr: format!("nft's message dump is not text: {e}"),
            })
        } else {
            let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if stderr.len() > 4000 {
                stderr.truncate(4000);
                stderr.push_str("...");
            }
            Err(NftError::Refused { stderr })
        }
    }

    /// Whether the table exists.
    pub fn table_exists(&self) -> Result<bool, NftError> {
        Ok(self.list()?.is_some())
    }

    /// The table as the kernel holds it, or `None` if there is none.
    pub fn list(&self) -> Result<Option<Observed>, NftError> {
        let output = self
            .command()
            .args(["-j", "list", "table", "inet", TABLE])
            .output()
            .map_err(|source| NftError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NftError::Refused {
                stderr: stderr.into_owned(),
            });
        }
        parse_listing(&output.stdout).map(Some)
    }
}

/// Parses `nft -j list table` output.
pub fn parse_listing(json: &[u8]) -> Result<Observed, NftError> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|e| NftError::BadListing(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NftError::BadListing("no \"nftables\" array".into()))?;
    let mut observed = Observed::default();
    for item in items {
        if let Some(chain) = item.get("chain") {
            let name = str_field(chain, "name")?;
            observed.chains.entry(name).or_default();
        } else if let Some(rule) = item.get("rule") {
            let chain = str_field(rule, "chain")?;
            let comment = rule
                .get("comment")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            observed.chains.entry(chain).or_default().push(comment);
        } else if let Some(set) = item.get("set").or_else(|| item.get("map")) {
            let name = str_field(set, "name")?;
            let count = set
                .get("elem")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            observed.sets.insert(name, count);
        }
    }
    Ok(observed)
}

fn str_field(v: &Value, field: &str) -> Result<String, NftError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| NftError::BadListing(format!("an object without {field:?}: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_parsed_into_comments_and_counts() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "manul", "handle": 1}},
            {"set": {"family": "inet", "name": "s", "table": "manul", "type": "ipv4_addr", "handle": 2, "elem": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}]}},
            {"set": {"family": "inet", "name": "empty", "table": "manul", "type": "ipv4_addr", "handle": 3}},
            {"map": {"family": "inet", "name": "m", "table": "manul", "type": "ifname", "map": "verdict", "handle": 4, "elem": [["a", {"jump": {"target": "c"}}]]}},
            {"chain": {"family": "inet", "table": "manul", "name": "c", "handle": 5}},
            {"chain": {"family": "inet", "table": "manul", "name": "d", "handle": 6}},
            {"rule": {"family": "inet", "table": "manul", "chain": "c", "handle": 7, "comment": "x 1234", "expr": []}},
            {"rule": {"family": "inet", "table": "manul", "chain": "c", "handle": 8, "expr": []}}]}"#;
        let o = parse_listing(json).unwrap();
        assert_eq!(o.sets.get("s"), Some(&2));
        assert_eq!(o.sets.get("empty"), Some(&0));
        assert_eq!(o.sets.get("m"), Some(&1));
        assert_eq!(
            o.chains.get("c"),
            Some(&vec!["x 1234".to_string(), String::new()])
        );
        assert_eq!(o.chains.get("d"), Some(&Vec::new()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_listing(b"not json").is_err());
        assert!(parse_listing(b"{}").is_err());
        assert!(parse_listing(br#"{"nftables": [{"chain": {}}]}"#).is_err());
    }
}
