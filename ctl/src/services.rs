//! `manulctl services`: the Services one node's dataplane is programmed
//! with, read from that node's Felix (`/services` on its debug listener,
//! plain HTTP): each frontend and the backends it selects.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use manul_dataplane_api::{Frontend, FrontendKind, ServiceFrontends};

use crate::BadInput;

/// How long Felix has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_BODY: usize = 256 << 20;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// Felix's debug listener, such as http://127.0.0.1:9091 (its `--metrics` address).
    #[arg(long, env = "MANUL_FELIX")]
    pub felix: String,
    /// One Service, as NAMESPACE/NAME; every Service when omitted.
    pub service: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `NAMESPACE/NAME`, or why not.
fn parse_name(s: &str) -> Result<(String, String), BadInput> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(BadInput(format!(
            "service {s:?}: expected NAMESPACE/NAME, such as default/kubernetes"
        ))),
    }
}

/// Felix's `/services` URL from `--felix`.
fn services_url(felix: &str) -> Result<http::Uri, BadInput> {
    let base = felix.trim_end_matches('/');
    let bad = |why: &str| BadInput(format!("--felix {felix:?}: {why}"));
    if !base.starts_with("http://") {
        return Err(bad(
            "expected an http:// URL of Felix's debug listener, such as http://127.0.0.1:9091",
        ));
    }
    format!("{base}/services")
        .parse::<http::Uri>()
        .map_err(|e| bad(&e.to_string()))
}

async fn fetch(felix: &str) -> anyhow::Result<Vec<ServiceFrontends>> {
    let uri = services_url(felix)?;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let answer = async {
        let response = client
            .get(uri.clone())
            .await
            .with_context(|| format!("cannot reach Felix at {felix}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer of {uri}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            bail!(
                "GET {uri}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {uri}: the answer is not a list of Services"))
    };
    match tokio::time::timeout(TIMEOUT, answer).await {
        Ok(r) => r,
        Err(_) => bail!("Felix at {felix} did not answer within {TIMEOUT:?}"),
    }
}

pub async fn run(args: &ServicesArgs) -> anyhow::Result<ExitCode> {
    let wanted = args.service.as_deref().map(parse_name).transpose()?;
    let mut services = fetch(&args.felix).await?;
    if let Some((ns, name)) = &wanted {
        services.retain(|s| &s.namespace == ns && &s.name == name);
        if services.is_empty() {
            return Err(BadInput(format!(
                "service {ns}/{name} is not programmed on the node of {}",
                args.felix
            ))
            .into());
        }
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&services)?),
        Output::Table => print!("{}", table(&services)),
    }
    Ok(ExitCode::SUCCESS)
}

fn frontend_text(f: &Frontend) -> String {
    match (f.kind, f.address) {
        (FrontendKind::NodePort, _) | (_, None) => format!("*:{}/{}", f.port, f.protocol),
        (_, Some(std::net::IpAddr::V6(a))) => format!("[{a}]:{}/{}", f.port, f.protocol),
        (_, Some(a)) => format!("{a}:{}/{}", f.port, f.protocol),
    }
}

/// One line per frontend: the Service, the frontend, its kind and policy,
/// then the backends it selects (`none (rejected)` when empty).
fn table(services: &[ServiceFrontends]) -> String {
    let mut out = format!(
        "{:<32} {:<28} {:<14} {:<8} {:<9} BACKENDS\n",
        "SERVICE", "FRONTEND", "KIND", "POLICY", "AFFINITY"
    );
    for s in services {
        let affinity = match s.affinity_timeout_seconds {
            Some(t) => format!("{t}s"),
            None => "-".into(),
        };
        for f in &s.frontends {
            let backends = if f.backends.is_empty() {
                "none (rejected)".to_string()
            } else {
                f.backends
                    .iter()
                    .map(|b| match b.ip {
                        std::net::IpAddr::V6(a) => format!("[{a}]:{}", b.port),
                        a => format!("{a}:{}", b.port),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out.push_str(&format!(
                "{:<32} {:<28} {:<14} {:<8} {:<9} {}\n",
                format!("{}/{}", s.namespace, s.name),
                frontend_text(f),
                format!("{:?}", f.kind),
                format!("{:?}", f.traffic_policy),
                affinity,
                backends
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls_are_checked() {
        assert_eq!(
            parse_name("default/web").unwrap(),
            ("default".into(), "web".into())
        );
        for bad in ["web", "/web", "default/", "a/b/c"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            services_url("http://127.0.0.1:9091/").unwrap().to_string(),
            "http://127.0.0.1:9091/services"
        );
        let e = services_url("127.0.0.1:9091").unwrap_err();
        assert!(e.0.contains("127.0.0.1:9091"), "{}", e.0);
    }
}
