//! From a certificate to a role: the identities each role has, as
//! configured on `typha` (`--admin-*`, `--peer-*`, `--cni-*`, `--felix-*`,
//! `--read-only-*`; see `crate::tls`).
//!
//! A configured value is an exact identity or a template holding `{node}`
//! once, which stands for a node name (one or more characters, no `/`):
//! `spiffe://manul/node/{node}/cni` gives the CNI role for the node the
//! certificate names. URI SANs are looked at first, in the order the
//! certificate lists them, then the common name (Calico's fallback); the
//! first value any role has decides, roles tried in the order admin,
//! replica, CNI, Felix, read-only.

use manul_tls::PeerIdentity;

use super::{Caller, Role, Scope};

/// Why a role's identities cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {value:?}: {problem}")]
pub struct RoleError {
    pub setting: &'static str,
    pub value: String,
    pub problem: &'static str,
}

/// One configured identity.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// Text before and after `{node}`.
    Node(String, String),
}

const NODE: &str = "{node}";

impl Pattern {
    fn parse(setting: &'static str, value: &str) -> Result<Option<Pattern>, RoleError> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let err = |problem| RoleError {
            setting,
            value: v.to_string(),
            problem,
        };
        match v.split_once(NODE) {
            None if v.contains('{') || v.contains('}') => {
                Err(err("the only placeholder is {node}"))
            }
            None => Ok(Some(Pattern::Exact(v.to_string()))),
            Some((_, after)) if after.contains(NODE) => Err(err("{node} may appear once")),
            Some((before, after)) if (before, after) == ("", "") => {
                Err(err("{node} alone would match any identity"))
            }
            Some((before, after)) => Ok(Some(Pattern::Node(before.into(), after.into()))),
        }
    }

    /// `None`: no match; `Some(None)`: an exact match (no node);
    /// `Some(Some(node))`: a template's match.
    fn matches(&self, value: &str) -> Option<Option<String>> {
        match self {
            Pattern::Exact(e) => (e == value).then_some(None),
            Pattern::Node(before, after) => {
                let node = value
                    .strip_prefix(before.as_str())?
                    .strip_suffix(after.as_str())?;
                (!node.is_empty() && !node.contains('/')).then(|| Some(node.to_string()))
            }
        }
    }
}

/// Which role's identities a pattern gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Admin,
    Replica,
    Cni,
    Felix,
    ReadOnly,
}

/// The configured identities of one role.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pub common_names: Vec<String>,
    pub uri_sans: Vec<String>,
}

/// The identities of every role.
#[derive(Debug, Clone, Default)]
pub struct RoleSettings {
    pub admin: Identities,
    pub replica: Identities,
    pub cni: Identities,
    pub felix: Identities,
    pub read_only: Identities,
}

/// The mapping from certificates to roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap {
    uri_sans: Vec<(Kind, Pattern)>,
    common_names: Vec<(Kind, Pattern)>,
}

impl RoleMap {
    /// Builds the mapping; an error names a value that cannot be used.
    pub fn new(settings: &RoleSettings) -> Result<RoleMap, RoleError> {
        let mut map = RoleMap {
            uri_sans: Vec::new(),
            common_names: Vec::new(),
        };
        let roles = [
            (
                Kind::Admin,
                &settings.admin,
                "--admin-cn",
                "--admin-uri-san",
            ),
            (
                Kind::Replica,
                &settings.replica,
                "--peer-cn",
                "--peer-uri-san",
            ),
            (Kind::Cni, &settings.cni, "--cni-cn", "--cni-uri-san"),
            (
                Kind::Felix,
                &settings.felix,
                "--felix-cn",
                "--felix-uri-san",
            ),
            (
                Kind::ReadOnly,
                &settings.read_only,
                "--read-only-cn",
                "--read-only-uri-san",
            ),
        ];
        for (kind, ids, cn_flag, uri_flag) in roles {
            for v in &ids.uri_sans {
                if let Some(p) = Pattern::parse(uri_flag, v)? {
                    map.uri_sans.push((kind, p));
                }
            }
            for v in &ids.common_names {
                if let Some(p) = Pattern::parse(cn_flag, v)? {
                    map.common_names.push((kind, p));
                }
            }
        }
        Ok(map)
    }

    /// The caller a verified certificate's identity makes.
    pub fn caller(&self, id: &PeerIdentity) -> Caller {
        let cn = id.common_name.iter();
        let candidates = id
            .uri_sans
            .iter()
            .map(|u| (u, &self.uri_sans))
            .chain(cn.map(|c| (c, &self.common_names)));
        for (value, patterns) in candidates {
            for (kind, pattern) in patterns {
                if let Some(node) = pattern.matches(value) {
                    let scope = match node {
                        Some(n) => Scope::Node(n),
                        None => Scope::AnyNode,
                    };
                    let role = match kind {
                        Kind::Admin => Role::Admin,
                        Kind::Replica => Role::Replica,
                        Kind::Cni => Role::Cni(scope),
                        Kind::Felix => Role::Felix(scope),
                        Kind::ReadOnly => Role::ReadOnly,
                    };
                    return Caller {
                        identity: value.clone(),
                        role,
                    };
                }
            }
        }
        let identity = id
            .uri_sans
            .first()
            .or(id.common_name.as_ref())
            .cloned()
            .unwrap_or_else(|| id.to_string());
        Caller {
            identity,
            role: Role::Unmapped,
        }
    }
}
