//! `trace`: why a packet would be allowed or denied, from the whole cluster
//! state of a Typha replica, with Felix's reference evaluator.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use manul_felix_calc::evaluator::{ClusterState, Packet, Peer, TraceError};
use manul_model::v3::Protocol;

use crate::BadInput;
use crate::client::{ServerArgs, is_bad_input, status_error};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Source: a workload endpoint NAMESPACE/NAME (endpoint or pod name) or an IP address.
    #[arg(long)]
    pub from: String,
    /// Destination: NAMESPACE/NAME or an IP address.
    #[arg(long)]
    pub to: String,
    /// Protocol: tcp, udp, icmp, icmpv6, sctp, udplite or a number 1-255.
    #[arg(long)]
    pub proto: String,
    /// Destination port (TCP, UDP, SCTP, UDPLite).
    #[arg(long)]
    pub port: Option<u16>,
    /// Source port; unknown when omitted (rules on source ports then match nothing).
    #[arg(long)]
    pub source_port: Option<u16>,
    /// ICMP type (ICMP, ICMPv6).
    #[arg(long)]
    pub icmp_type: Option<u8>,
    /// ICMP code; needs --icmp-type.
    #[arg(long, requires = "icmp_type")]
    pub icmp_code: Option<u8>,
}

fn peer(flag: &str, text: &str) -> Result<Peer> {
    text.parse::<Peer>()
        .map_err(|e| BadInput(format!("--{flag}: {e}")).into())
}

/// Checks the flags, then fetches every resource, traces the packet and
/// prints each step, ending with `verdict: allow` or `verdict: deny`.
pub async fn run(server: &ServerArgs, args: &TraceArgs) -> Result<ExitCode> {
    let from = peer("from", &args.from)?;
    let to = peer("to", &args.to)?;
    let protocol = args
        .proto
        .parse::<Protocol>()
        .map_err(|e| BadInput(format!("--proto: {e}")))?
        .number();
    let packet = Packet {
        from,
        to,
        protocol,
        src_port: args.source_port,
        dst_port: args.port,
        icmp: args.icmp_type.map(|t| (t, args.icmp_code)),
    };

    let client = server.client().await?;
    let resources = match server.call(|| client.list_every_kind()).await {
        Ok(entries) => entries.into_iter().map(|(r, _)| r).collect::<Vec<_>>(),
        Err(e) => match e.status() {
            Some(s) if is_bad_input(s) => return Err(BadInput(s.message().to_string()).into()),
            Some(s) => return Err(status_error(s.clone())),
            None => return Err(e.into()),
        },
    };
    let state = ClusterState::from_resources(resources);
    for note in state.notes() {
        eprintln!("note: {note}");
    }
    // Every trace error is about the flags: an unknown endpoint, a port
    // without a port protocol, no address of the packet's IP version.
    let trace = state
        .trace_packet(&packet)
        .map_err(|e: TraceError| BadInput(e.to_string()))?;
    for step in &trace.steps {
        println!("{step}");
    }
    println!("verdict: {}", trace.verdict);
    Ok(ExitCode::SUCCESS)
}
