//! Reaching the flow aggregator (`manul-flows`), for `manulctl flows` and
//! `manulctl report`: `--aggregator` over `http://` (plaintext) or
//! `https://` (TLS with the user's certificate, `--ca-file`, `--cert-file`
//! and `--key-file`, and the aggregator's certificate checked for
//! `--aggregator-cn`, default `manul-flows`, or `--aggregator-uri-san`,
//! never a host name), and the aggregator's errors as exit codes.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use manul_proto::flows::flows_client::FlowsClient;
use manul_tls::connect::Transport;
use tonic::transport::{Channel, Endpoint};

use crate::BadInput;
use crate::client::ServerArgs;

/// How long connecting to the aggregator may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags that say where the aggregator is and who it must be.
#[derive(Debug, Clone, Args)]
pub struct AggregatorArgs {
    /// The flow aggregator, such as http://127.0.0.1:7443; https:// for
    /// TLS with --ca-file, --cert-file and --key-file (your certificate).
    #[arg(
        long = "aggregator",
        env = "MANUL_FLOWS",
        default_value = "http://127.0.0.1:7443"
    )]
    pub url: String,
    /// Common name the aggregator's certificate must have (default with
    /// https://: manul-flows, unless --aggregator-uri-san is given).
    #[arg(long, env = "MANUL_FLOWS_CN")]
    pub aggregator_cn: Option<String>,
    /// URI SAN the aggregator's certificate must have.
    #[arg(long, env = "MANUL_FLOWS_URI_SAN")]
    pub aggregator_uri_san: Option<String>,
}

impl AggregatorArgs {
    /// Plaintext for `http://`; for `https://`, TLS with the user's
    /// certificate and the aggregator's identity checked. Any other URL,
    /// identity flags without TLS or a missing certificate file flag is
    /// bad input.
    pub fn transport(&self, server: &ServerArgs) -> Result<Transport, BadInput> {
        let url = &self.url;
        let tls = url.starts_with("https://");
        if !tls && !url.starts_with("http://") {
            return Err(BadInput(format!(
                "--aggregator {url:?}: expected an http:// or https:// URL, such as http://127.0.0.1:7443"
            )));
        }
        if !tls {
            if self.aggregator_cn.is_some() || self.aggregator_uri_san.is_some() {
                return Err(BadInput(
                    "--aggregator-cn/--aggregator-uri-san need an https:// aggregator".into(),
                ));
            }
            return Ok(Transport::Plain);
        }
        let (Some(ca), Some(cert), Some(key)) =
            (&server.ca_file, &server.cert_file, &server.key_file)
        else {
            return Err(BadInput(format!(
                "--aggregator {url:?} is https://: give --ca-file, --cert-file and --key-file"
            )));
        };
        let cn = match (&self.aggregator_cn, &self.aggregator_uri_san) {
            (None, None) => Some(manul_tls::dev::FLOWS_CN.to_owned()),
            (cn, _) => cn.clone(),
        };
        let chain = |e: manul_tls::TlsError| BadInput(manul_model::error::chain(&e));
        let expected = manul_tls::Expected::new(
            cn,
            self.aggregator_uri_san.clone(),
            "--aggregator-cn/--aggregator-uri-san",
        )
        .map_err(chain)?;
        let config = manul_tls::client::ClientSettings {
            ca_file: ca.clone(),
            cert_file: cert.clone(),
            key_file: key.clone(),
            server: expected,
        }
        .config()
        .map_err(chain)?;
        Ok(Transport::Tls(config))
    }

    /// A client of the aggregator's `Flows` service over [`Self::transport`].
    pub async fn client(&self, server: &ServerArgs) -> anyhow::Result<FlowsClient<Channel>> {
        let transport = self.transport(server)?;
        // The transport does the TLS; the endpoint names the address.
        let address = match self.url.strip_prefix("https://") {
            Some(rest) => format!("http://{rest}"),
            None => self.url.clone(),
        };
        let endpoint = Endpoint::from_shared(address)
            .map_err(|e| BadInput(format!("--aggregator {:?}: {e}", self.url)))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = transport
            .connect(endpoint)
            .await
            .with_context(|| format!("cannot reach the flow aggregator at {}", self.url))?;
        Ok(FlowsClient::new(channel))
    }
}

/// An error the aggregator answered: a filter it refused is bad input
/// (exit 2), anything else a failure.
pub fn status_error(e: tonic::Status) -> anyhow::Error {
    if e.code() == tonic::Code::InvalidArgument {
        BadInput(e.message().to_owned()).into()
    } else {
        anyhow::anyhow!("the flow aggregator: {}", e.message())
    }
}
