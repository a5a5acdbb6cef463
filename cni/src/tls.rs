//! How the plugin reaches Typha: plaintext, or TLS when the network
//! configuration names `typha_ca_file`, `typha_cert_file` and
//! `typha_key_file` (its identity is that certificate's); Typha's
//! certificate must then chain to the CA and carry `typha_cn` or
//! `typha_uri_san` (at least one). A partial configuration is an invalid
//! configuration, never a silent fall back to plaintext.

use manul_tls::Expected;
use manul_tls::client::ClientSettings;
use manul_tls::connect::Transport;

use crate::config::NetConf;
use crate::error::{CniError, code};

fn invalid(msg: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg, "")
}

/// The transport the configuration asks for.
pub fn transport(conf: &NetConf) -> Result<Transport, CniError> {
    let (ca, cert, key) = match (
        &conf.typha_ca_file,
        &conf.typha_cert_file,
        &conf.typha_key_file,
    ) {
        (None, None, None) => {
            if conf.typha_cn.is_some() || conf.typha_uri_san.is_some() {
                return Err(invalid(
                    "\"typha_cn\"/\"typha_uri_san\" need \"typha_ca_file\", \"typha_cert_file\" and \"typha_key_file\"".into(),
                ));
            }
            return Ok(Transport::Plain);
        }
        (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
        _ => {
            return Err(invalid(
                "\"typha_ca_file\", \"typha_cert_file\" and \"typha_key_file\" must be set together".into(),
            ));
        }
    };
    let server = Expected::new(
        conf.typha_cn.clone(),
        conf.typha_uri_san.clone(),
        "typha_cn/typha_uri_san",
    )
    .map_err(|e| invalid(e.to_string()))?;
    let settings = ClientSettings {
        ca_file: ca.clone(),
        cert_file: cert.clone(),
        key_file: key.clone(),
        server,
    };
    let config = settings.config().map_err(|e| {
        CniError::caused(code::INVALID_CONFIG, "cannot set up TLS towards Typha", &e)
    })?;
    Ok(Transport::Tls(config))
}
