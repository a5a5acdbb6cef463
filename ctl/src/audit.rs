//! `manulctl audit`: the audit history of committed writes, read from the
//! replicated log through any Typha replica (each answers the same): who
//! (the certificate's identity with TLS, the local user in plaintext),
//! when, which verb, and every key created, updated or deleted.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use manul_proto::v1::{AuditEvent, AuditRequest};
use serde_json::json;

use crate::BadInput;
use crate::client::{ServerArgs, is_bad_input, status_error};
use crate::flows::{Output, parse_duration, time};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Writes of the last DURATION (such as 30s, 5m, 1h, 2d).
    #[arg(long)]
    pub since: Option<String>,
    /// Changes of this kind (any spelling manulctl accepts).
    #[arg(long)]
    pub kind: Option<String>,
    /// Changes in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Writes by this identity, exactly.
    #[arg(long)]
    pub identity: Option<String>,
    /// At most this many writes, the newest.
    #[arg(long, default_value_t = 1000)]
    pub last: u32,
    /// Keep printing new writes as they are committed (asks every second).
    #[arg(short, long)]
    pub follow: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The request the flags ask for, at `now_millis`.
pub fn request(args: &AuditArgs, now_millis: u64) -> Result<AuditRequest, BadInput> {
    let since = match &args.since {
        Some(s) => {
            let d = parse_duration(s)?;
            now_millis.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
        None => 0,
    };
    if let Some(k) = &args.kind
        && manul_model::Kind::from_cli(k).is_none()
    {
        return Err(BadInput(format!("--kind {k:?}: unknown kind")));
    }
    if args.last == 0 {
        return Err(BadInput("--last 0: expected at least 1".into()));
    }
    Ok(AuditRequest {
        since_unix_millis: since,
        kind: args.kind.clone().unwrap_or_default(),
        namespace: args.namespace.clone().unwrap_or_default(),
        identity: args.identity.clone().unwrap_or_default(),
        after_revision: 0,
        limit: args.last,
    })
}

/// One line per changed key.
fn rows(e: &AuditEvent) -> Vec<String> {
    let o = e.origin.clone().unwrap_or_default();
    e.changes
        .iter()
        .map(|c| {
            let k = c.key.clone().unwrap_or_default();
            let name = if k.namespace.is_empty() {
                k.name
            } else {
                format!("{}/{}", k.namespace, k.name)
            };
            format!(
                "{:<24} {:>8} {:<7} {:<8} {} {} {} ({}, {})",
                time(o.unix_millis / 1000),
                e.revision,
                o.verb,
                c.action,
                k.kind,
                name,
                if c.previous_revision > 0 {
                    format!("was revision {}", c.previous_revision)
                } else {
                    "new".to_string()
                },
                o.identity,
                o.role
            )
        })
        .collect()
}

/// An event as JSON.
pub fn to_json(e: &AuditEvent) -> serde_json::Value {
    let o = e.origin.clone().unwrap_or_default();
    json!({
        "revision": e.revision,
        "time": time(o.unix_millis / 1000),
        "unix_millis": o.unix_millis,
        "identity": o.identity,
        "role": o.role,
        "verb": o.verb,
        "changes": e.changes.iter().map(|c| {
            let k = c.key.clone().unwrap_or_default();
            json!({
                "action": c.action,
                "kind": k.kind,
                "namespace": k.namespace,
                "name": k.name,
                "previous_revision": c.previous_revision,
            })
        }).collect::<Vec<_>>(),
    })
}

fn print(e: &AuditEvent, output: Output) {
    match output {
        Output::Table => rows(e).iter().for_each(|r| println!("{r}")),
        Output::Json => println!("{}", to_json(e)),
    }
}

pub async fn run(server: &ServerArgs, args: &AuditArgs) -> Result<ExitCode> {
    let mut request = request(args, now_millis())?;
    let client = server.client().await?;
    loop {
        let answer = match server.call(|| client.audit(request.clone())).await {
            Ok(a) => a,
            Err(e) => match e.status() {
                Some(s) if is_bad_input(s) => return Err(BadInput(s.message().to_string()).into()),
                Some(s) => return Err(status_error(s.clone())),
                None => return Err(e.into()),
            },
        };
        if request.after_revision == 0 && matches!(args.output, Output::Table) {
            println!(
                "{:<24} {:>8} {:<7} {:<8} KIND NAME (BEFORE, IDENTITY, ROLE)",
                "TIME", "REVISION", "VERB", "ACTION"
            );
        }
        for e in &answer.events {
            print(e, args.output);
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        request.after_revision = answer
            .events
            .last()
            .map_or(answer.revision.max(request.after_revision), |e| e.revision);
        request.since_unix_millis = 0;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        a: AuditArgs,
    }

    fn args(extra: &[&str]) -> AuditArgs {
        Cli::parse_from(std::iter::once("audit").chain(extra.iter().copied())).a
    }

    #[test]
    fn flags_become_a_request_and_bad_ones_are_named() {
        let r = request(
            &args(&["--since", "2m", "--kind", "gnp", "--identity", "alice"]),
            1_000_000,
        )
        .unwrap();
        assert_eq!(r.since_unix_millis, 1_000_000 - 120_000);
        assert_eq!(r.kind, "gnp");
        assert_eq!(r.identity, "alice");
        let e = request(&args(&["--since", "soon"]), 0).unwrap_err();
        assert!(e.0.starts_with("--since \"soon\""), "{e}");
        let e = request(&args(&["--kind", "widgets"]), 0).unwrap_err();
        assert_eq!(e.0, "--kind \"widgets\": unknown kind");
    }
}
