//! How Felix reaches Typha: plaintext, or TLS when `TyphaCAFile`,
//! `TyphaCertFile` and `TyphaKeyFile` are set (Calico's local-only
//! settings: flags and `FELIX_*` environment, never the datastore). Typha's
//! certificate must chain to the CA and carry `TyphaCN` as its common name
//! or `TyphaURISAN` among its URI SANs (at least one must be set); Felix
//! presents its own certificate. The files are read again when they
//! change.

use std::path::PathBuf;

use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;
use manul_tls::{Expected, TlsError};

use crate::config::FelixConfig;

/// The transport the settings ask for, or why they cannot be used.
pub fn transport(config: &FelixConfig) -> Result<Transport, TlsError> {
    let files = [
        &config.typha_ca_file.value,
        &config.typha_cert_file.value,
        &config.typha_key_file.value,
    ];
    if files.iter().all(|f| f.is_empty()) {
        if !config.typha_cn.value.is_empty() || !config.typha_uri_san.value.is_empty() {
            return Err(TlsError::Incomplete(
                "TyphaCN/TyphaURISAN",
                "TyphaCAFile, TyphaCertFile and TyphaKeyFile",
            ));
        }
        return Ok(Transport::Plain);
    }
    if files.iter().any(|f| f.is_empty()) {
        return Err(TlsError::Incomplete(
            "TyphaCAFile, TyphaCertFile",
            "TyphaKeyFile",
        ));
    }
    let server = Expected::new(
        [config.typha_cn.value.clone()],
        [config.typha_uri_san.value.clone()],
        "TyphaCN/TyphaURISAN",
    )?;
    let settings = ClientSettings {
        ca_file: PathBuf::from(files[0]),
        cert_file: PathBuf::from(files[1]),
        key_file: PathBuf::from(files[2]),
        server,
    };
    Ok(Transport::Tls(settings.config()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Inputs, merge};

    fn config(env: &[(&str, String)]) -> FelixConfig {
        let vars = env.iter().map(|(k, v)| (k.to_string(), v.clone()));
        merge(&Inputs::default().with_env(vars)).unwrap()
    }

    #[test]
    fn plaintext_without_files_and_tls_with_all_of_them() {
        assert!(!transport(&config(&[])).unwrap().is_tls());
        let dir = tempfile::tempdir().unwrap();
        manul_tls::dev::write_dev_set(
            dir.path(),
            &manul_tls::dev::DevSet {
                typha_names: vec!["localhost".into()],
                typha_cn: "manul-typha".into(),
                nodes: vec!["n1".into()],
                days: 1,
            },
        )
        .unwrap();
        let file = |f: &str| dir.path().join(f).display().to_string();
        let full = [
            ("FELIX_TYPHACAFILE", file("ca.crt")),
            ("FELIX_TYPHACERTFILE", file("felix-n1.crt")),
            ("FELIX_TYPHAKEYFILE", file("felix-n1.key")),
            ("felix_typhacn", "manul-typha".to_string()),
        ];
        let c = config(&full);
        assert_eq!(c.typha_cn.value, "manul-typha");
        assert_eq!(c.typha_cn.source, crate::config::Source::Environment);
        assert!(transport(&c).unwrap().is_tls());
        // No name to check: refused, not "any certificate of the CA".
        let no_name = transport(&config(&full[..3])).unwrap_err();
        assert!(
            no_name.to_string().contains("TyphaCN/TyphaURISAN"),
            "{no_name}"
        );
        // A partial set of files is refused, never plaintext.
        let partial = transport(&config(&full[..2])).unwrap_err();
        assert!(matches!(partial, TlsError::Incomplete(..)), "{partial}");
        let name_only = transport(&config(&full[3..])).unwrap_err();
        assert!(matches!(name_only, TlsError::Incomplete(..)), "{name_only}");
    }
}
