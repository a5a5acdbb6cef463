//! `manulctl flows`: flow records from the flow aggregator (`manul-flows`),
//! in the manner of `hubble observe`: filters, a time window, `--follow`,
//! a table or one JSON object per line (the aggregator's one JSON shape,
//! `manul_flows::json`).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use manul_proto::flows::{FlowEndpoint, FlowFilter, FlowRecord, ListRequest, PolicyHit};

use crate::BadInput;
use crate::aggregator::status_error;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    #[command(flatten)]
    pub aggregator: crate::aggregator::AggregatorArgs,
    /// Flows from or to this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Flows from or to this pod or workload: NAME or NAMESPACE/NAME.
    #[arg(long)]
    pub pod: Option<String>,
    /// Flows from this pod or workload.
    #[arg(long)]
    pub from_pod: Option<String>,
    /// Flows to this pod or workload.
    #[arg(long)]
    pub to_pod: Option<String>,
    /// Flows where either end has this label, KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// allowed (forwarded) or denied (dropped).
    #[arg(long)]
    pub verdict: Option<String>,
    /// Flows a policy decided or passed: NAME, NAMESPACE/NAME or TIER/NAME.
    #[arg(long)]
    pub policy: Option<String>,
    /// Flows the staged policies would allow or deny (their `pending`
    /// verdict).
    #[arg(long)]
    pub pending_verdict: Option<String>,
    /// Flows whose pending trace (staged policies enforced) has this
    /// policy: NAME, NAMESPACE/NAME or TIER/NAME.
    #[arg(long)]
    pub pending_policy: Option<String>,
    /// Flows to this destination port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Flows of the last DURATION (such as 30s, 5m, 1h).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 100)]
    pub last: u32,
    /// Keep printing new records as they arrive.
    #[arg(short, long)]
    pub follow: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `30s`, `5m`, `2h`, `1d` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, BadInput> {
    let bad = || {
        BadInput(format!(
            "--since {s:?}: expected a duration such as 30s, 5m, 1h or 2d"
        ))
    };
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n.checked_mul(secs).ok_or_else(bad)?))
}

/// `allow` or `deny` from the verdicts users type (`flag` names the flag
/// in the error).
pub fn parse_verdict(flag: &str, s: &str) -> Result<&'static str, BadInput> {
    match s.to_ascii_lowercase().as_str() {
        "allow" | "allowed" | "forwarded" => Ok("allow"),
        "deny" | "denied" | "dropped" => Ok("deny"),
        _ => Err(BadInput(format!(
            "{flag} {s:?}: expected allowed (or forwarded) or denied (or dropped)"
        ))),
    }
}

fn pod_flag(flag: &str, v: &Option<String>) -> Result<String, BadInput> {
    match v {
        None => Ok(String::new()),
        Some(p) if p.is_empty() || p.split('/').count() > 2 || p.split('/').any(str::is_empty) => {
            Err(BadInput(format!(
                "{flag} {p:?}: expected NAME or NAMESPACE/NAME"
            )))
        }
        Some(p) => Ok(p.clone()),
    }
}

/// The filter the flags ask for, at `now` (Unix seconds).
pub fn filter(args: &FlowsArgs, now: u64) -> Result<FlowFilter, BadInput> {
    for l in &args.labels {
        if l.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(BadInput(format!("--label {l:?}: expected KEY=VALUE")));
        }
    }
    Ok(FlowFilter {
        namespace: args.namespace.clone().unwrap_or_default(),
        pod: pod_flag("--pod", &args.pod)?,
        from_pod: pod_flag("--from-pod", &args.from_pod)?,
        to_pod: pod_flag("--to-pod", &args.to_pod)?,
        labels: args.labels.clone(),
        action: match &args.verdict {
            Some(v) => parse_verdict("--verdict", v)?.to_owned(),
            None => String::new(),
        },
        pending_action: match &args.pending_verdict {
            Some(v) => parse_verdict("--pending-verdict", v)?.to_owned(),
            None => String::new(),
        },
        pending_policy: args.pending_policy.clone().unwrap_or_default(),
        policy: args.policy.clone().unwrap_or_default(),
        port: args.port.map_or(0, u32::from),
        since_unix_s: match &args.since {
            Some(s) => now.saturating_sub(parse_duration(s)?.as_secs()),
            None => 0,
        },
        until_unix_s: 0,
    })
}

pub async fn run(server: &crate::client::ServerArgs, args: &FlowsArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let filter = filter(args, now)?;
    let mut client = args.aggregator.client(server).await?;
    let request = ListRequest {
        filter: Some(filter),
        limit: args.last,
    };
    // Subscribe first, so nothing stored between the list and the follow
    // is missed (a record in both is printed twice rather than never).
    let follow = if args.follow {
        Some(
            client
                .clone()
                .follow(request.clone())
                .await
                .map_err(status_error)?
                .into_inner(),
        )
    } else {
        None
    };
    let records = client
        .list(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .records;
    if matches!(args.output, Output::Table) {
        println!("{}", header());
    }
    for r in &records {
        print(r, args.output);
    }
    if let Some(mut stream) = follow {
        while let Some(r) = stream.message().await.map_err(status_error)? {
            print(&r, args.output);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(r: &FlowRecord, output: Output) {
    match output {
        Output::Table => println!("{}", row(r)),
        Output::Json => println!("{}", manul_flows::json::record(r)),
    }
}

fn header() -> String {
    format!(
        "{:<20} {:<10} {:<4} {:<28} {:<28} {:<10} {:<7} {:<40} {:<7} {:<40} {:>6} {:>8} {:>10}",
        "TIME",
        "NODE",
        "SIDE",
        "SOURCE",
        "DESTINATION",
        "PORT",
        "VERDICT",
        "POLICY",
        "PENDING",
        "PENDING POLICY",
        "FLOWS",
        "PACKETS",
        "BYTES"
    )
}

fn endpoint(e: Option<&FlowEndpoint>) -> String {
    match e {
        Some(e) if !e.namespace.is_empty() => format!("{}/{}", e.namespace, e.workload),
        Some(e) => format!("{}:{}", e.kind, e.workload),
        None => "-".to_owned(),
    }
}

fn hit(h: &PolicyHit) -> String {
    let name = manul_flows::graph::policy_name(h);
    match h.rule_index {
        Some(i) => format!("{name}#{i}:{}", h.action),
        None => format!("{name}(end):{}", h.action),
    }
}

pub fn protocol(p: u32) -> String {
    match p {
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        132 => "SCTP".to_owned(),
        1 => "ICMP".to_owned(),
        58 => "ICMPv6".to_owned(),
        p => p.to_string(),
    }
}

/// `secs` since the Unix epoch as an RFC 3339 UTC time.
pub fn time(secs: u64) -> String {
    // UTC, without a date library: days since the epoch to a civil date.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn trace(hits: &[PolicyHit]) -> String {
    if hits.is_empty() {
        return "-".to_owned();
    }
    hits.iter().map(hit).collect::<Vec<_>>().join(",")
}

fn verdict(action: &str) -> &'static str {
    match action {
        "allow" => "ALLOW",
        "deny" => "DENY",
        _ => "-",
    }
}

fn row(r: &FlowRecord) -> String {
    let flows = r.flows_started + r.flows_denied;
    let port = format!("{}/{}", r.dst_port, protocol(r.protocol));
    format!(
        "{:<20} {:<10} {:<4} {:<28} {:<28} {:<10} {:<7} {:<40} {:<7} {:<40} {:>6} {:>8} {:>10}",
        time(r.end_unix_s),
        r.node,
        r.reporter,
        endpoint(r.src.as_ref()),
        endpoint(r.dst.as_ref()),
        port,
        verdict(&r.action),
        trace(&r.enforced),
        verdict(&r.pending_action),
        trace(&r.pending),
        flows,
        r.packets_forward + r.packets_reverse,
        r.bytes_forward + r.bytes_reverse,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        flows: FlowsArgs,
    }

    fn args(extra: &[&str]) -> FlowsArgs {
        let mut argv = vec!["manulctl"];
        argv.extend(extra);
        Cli::parse_from(argv).flows
    }

    #[test]
    fn flags_become_a_filter() {
        let f = filter(
            &args(&[
                "--namespace",
                "prod",
                "--from-pod",
                "prod/web-*",
                "--to-pod",
                "db",
                "--verdict",
                "DROPPED",
                "--policy",
                "prod/db-allow",
                "--port",
                "5432",
                "--since",
                "5m",
                "--label",
                "app=db",
                "--pending-verdict",
                "denied",
                "--pending-policy",
                "prod/db-lockdown",
            ]),
            1000,
        )
        .unwrap();
        assert_eq!(
            (f.pending_action.as_str(), f.pending_policy.as_str()),
            ("deny", "prod/db-lockdown")
        );
        assert_eq!(f.namespace, "prod");
        assert_eq!(
            (f.from_pod.as_str(), f.to_pod.as_str()),
            ("prod/web-*", "db")
        );
        assert_eq!(
            (f.action.as_str(), f.policy.as_str(), f.port),
            ("deny", "prod/db-allow", 5432)
        );
        assert_eq!(f.since_unix_s, 700);
        assert_eq!(f.labels, vec!["app=db".to_owned()]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let bad = |a: &[&str]| filter(&args(a), 1000).unwrap_err().0;
        assert!(bad(&["--since", "5 minutes"]).starts_with("--since \"5 minutes\""));
        assert!(bad(&["--since", "5w"]).starts_with("--since"));
        assert!(bad(&["--verdict", "maybe"]).starts_with("--verdict \"maybe\""));
        assert!(bad(&["--pending-verdict", "maybe"]).starts_with("--pending-verdict \"maybe\""));
        assert!(bad(&["--pod", "a/b/c"]).starts_with("--pod"));
        assert!(bad(&["--label", "novalue"]).starts_with("--label"));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    }

    #[test]
    fn records_print_as_rows_and_json() {
        let r = FlowRecord {
            end_unix_s: 86_400 * 365,
            node: "node-a".into(),
            reporter: "dst".into(),
            src: Some(FlowEndpoint {
                kind: "pod".into(),
                namespace: "prod".into(),
                workload: "web-*".into(),
                labels: Default::default(),
            }),
            dst: Some(FlowEndpoint {
                kind: "net".into(),
                namespace: String::new(),
                workload: "pub".into(),
                labels: Default::default(),
            }),
            protocol: 6,
            dst_port: 80,
            action: "deny".into(),
            enforced: vec![PolicyHit {
                tier: "default".into(),
                kind: "EndOfTier".into(),
                namespace: String::new(),
                name: "default".into(),
                rule_index: None,
                action: "deny".into(),
            }],
            pending: vec![PolicyHit {
                tier: "default".into(),
                kind: "StagedNetworkPolicy".into(),
                namespace: "prod".into(),
                name: "web-egress".into(),
                rule_index: Some(0),
                action: "allow".into(),
            }],
            pending_action: "allow".into(),
            flows_denied: 2,
            ..FlowRecord::default()
        };
        let line = row(&r);
        assert!(line.starts_with("1971-01-01T00:00:00Z"), "{line}");
        for part in [
            "prod/web-*",
            "net:pub",
            "80/TCP",
            "DENY",
            "default/default(end):deny",
            "ALLOW",
            "prod/web-egress#0:allow",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
        let j = manul_flows::json::record(&r);
        assert_eq!(j["pending_action"], "allow");
        assert_eq!(j["policies"]["pending"][0]["kind"], "StagedNetworkPolicy");
        assert_eq!(j["policies"]["enforced"][0]["kind"], "EndOfTier");
        assert_eq!(j["source"]["workload"], "web-*");
        assert_eq!(j["service"], serde_json::Value::Null);
    }
}
