//! `manulctl report policy` and `manulctl report compliance`: reports over
//! a window from the flow aggregator's statistics and records, the cluster
//! state of a Typha replica (read with Felix's reference evaluator, so a
//! policy's selection is what Felix enforces) and, for compliance, the
//! audit history of the replicated log. Printed as text or JSON, or
//! written as one self-contained HTML page with charts (`--html FILE`).
//! The aggregator is reached as `manulctl flows` reaches it
//! ([`crate::aggregator`]: `http://`, or `https://` with the user's
//! certificate).
//!
//! The reports themselves (`policy.rs`, `compliance.rs`) are pure
//! functions of their inputs, with the window passed in; this module
//! fetches the inputs and writes the outputs.

pub mod compliance;
pub mod html;
pub mod policy;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use manul_felix_calc::evaluator::ClusterState;
use manul_proto::flows::flows_client::FlowsClient;
use manul_proto::flows::{FlowFilter, FlowRecord, ListRequest, RuleStats, StatsRequest};
use manul_proto::v1::{AuditEvent, AuditRequest};
use serde::Serialize;
use tonic::transport::Channel;

use crate::BadInput;
use crate::aggregator::{AggregatorArgs, status_error as aggregator_error};
use crate::client::{ServerArgs, is_bad_input, status_error};
use crate::flows::parse_duration;

/// The most flow records a compliance report reads.
pub const MAX_RECORDS: u32 = 100_000;

/// The window a report covers, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub since_unix_s: u64,
    pub until_unix_s: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub aggregator: AggregatorArgs,
    /// The window: the last DURATION (such as 30m, 1h, 2d).
    #[arg(long, default_value = "1h")]
    pub since: String,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
    /// Also write the report as one self-contained HTML page with charts.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Hits per policy and rule, rules never hit, policies that select
    /// nothing, endpoints no policy selects.
    Policy(ReportArgs),
    /// Per namespace: default deny in and out, what it exposes, policy changes.
    Compliance(ReportArgs),
}

/// The window the flags ask for, ending at `now` (seconds).
pub fn window(args: &ReportArgs, now: u64) -> Result<Window, BadInput> {
    let d = parse_duration(&args.since)?;
    if d.as_secs() == 0 {
        return Err(BadInput(format!(
            "--since {:?}: the window must be at least one second",
            args.since
        )));
    }
    if let Some(p) = &args.html
        && (p.as_os_str().is_empty() || p.is_dir())
    {
        return Err(BadInput(format!(
            "--html {}: expected a file name",
            p.display()
        )));
    }
    Ok(Window {
        since_unix_s: now.saturating_sub(d.as_secs()),
        until_unix_s: now,
    })
}

/// The aggregator's client, over plaintext or TLS as `manulctl flows`
/// reaches it; a compliance report's records may be many.
async fn aggregator(server: &ServerArgs, args: &ReportArgs) -> Result<FlowsClient<Channel>> {
    let client = args.aggregator.client(server).await?;
    Ok(client.max_decoding_message_size(512 * 1024 * 1024))
}

fn window_filter(w: Window) -> FlowFilter {
    FlowFilter {
        since_unix_s: w.since_unix_s,
        until_unix_s: w.until_unix_s + 1,
        ..FlowFilter::default()
    }
}

async fn stats(server: &ServerArgs, args: &ReportArgs, w: Window) -> Result<Vec<RuleStats>> {
    let mut c = aggregator(server, args).await?;
    let answer = c
        .stats(StatsRequest {
            filter: Some(window_filter(w)),
        })
        .await
        .map_err(aggregator_error)?;
    Ok(answer.into_inner().rules)
}

async fn allowed_records(
    server: &ServerArgs,
    args: &ReportArgs,
    w: Window,
) -> Result<Vec<FlowRecord>> {
    let mut c = aggregator(server, args).await?;
    let filter = FlowFilter {
        action: "allow".into(),
        ..window_filter(w)
    };
    let answer = c
        .list(ListRequest {
            filter: Some(filter),
            limit: MAX_RECORDS,
        })
        .await
        .map_err(aggregator_error)?;
    Ok(answer.into_inner().records)
}

fn typha_error(e: manul_client::ClientError) -> anyhow::Error {
    match e.status() {
        Some(s) if is_bad_input(s) => BadInput(s.message().to_string()).into(),
        Some(s) => status_error(s.clone()),
        None => e.into(),
    }
}

async fn cluster_state(server: &ServerArgs) -> Result<(ClusterState, manul_client::Client)> {
    let client = server.client().await?;
    let resources = server
        .call(|| client.list_every_kind())
        .await
        .map_err(typha_error)?;
    let state = ClusterState::from_resources(resources.into_iter().map(|(r, _)| r));
    Ok((state, client))
}

async fn audit(
    server: &ServerArgs,
    client: &manul_client::Client,
    w: Window,
) -> Result<Vec<AuditEvent>> {
    let request = AuditRequest {
        since_unix_millis: w.since_unix_s * 1000,
        limit: 10_000,
        ..AuditRequest::default()
    };
    let answer = server
        .call(|| client.audit(request.clone()))
        .await
        .map_err(typha_error)?;
    Ok(answer.events)
}

fn write_html(path: &std::path::Path, page: &str) -> Result<()> {
    std::fs::write(path, page)
        .map_err(|e| BadInput(format!("--html {}: cannot write it: {e}", path.display())).into())
}

pub async fn run(server: &ServerArgs, cmd: &ReportCommand) -> Result<ExitCode> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match cmd {
        ReportCommand::Policy(args) => {
            let w = window(args, now)?;
            let stats = stats(server, args, w).await?;
            let (state, _) = cluster_state(server).await?;
            let report = policy::policy_report(&state, &stats, w);
            if let Some(path) = &args.html {
                write_html(path, &html::policy_page(&report))?;
            }
            match args.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => print!("{}", html::policy_text(&report)),
            }
        }
        ReportCommand::Compliance(args) => {
            let w = window(args, now)?;
            let records = allowed_records(server, args, w).await?;
            let (state, client) = cluster_state(server).await?;
            let events = audit(server, &client, w).await?;
            let report = compliance::compliance_report(&state, &records, &events, w);
            if let Some(path) = &args.html {
                write_html(path, &html::compliance_page(&report))?;
            }
            match args.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => print!("{}", html::compliance_text(&report)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
