//! `manul-cluster`: a local Manul cluster in network namespaces.
//!
//! `manul-cluster up` builds one and keeps it until Ctrl-C (then removes
//! everything); `manul-cluster down` removes what a killed run left.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use manul_local_cluster::{ClusterConfig, Dataplane, FlowsConfig, LocalCluster, SyncTransport};

#[derive(Debug, Parser)]
#[command(
    name = "manul-cluster",
    version,
    about = "A Manul cluster in network namespaces on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a cluster and keep it until Ctrl-C.
    Up {
        /// Prefix of the cluster's namespaces.
        #[arg(long, default_value = "manul")]
        name: String,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=200))]
        nodes: u16,
        /// Typha replicas: 1, or 3 and more.
        #[arg(long, default_value_t = 1)]
        typha_replicas: usize,
        /// bpf, iptables or null.
        #[arg(long, default_value = "iptables")]
        dataplane: String,
        /// Run the flow aggregator in the control plane; every Felix
        /// streams flow records to it (read them with `manulctl flows`).
        #[arg(long)]
        flows: bool,
        /// Felix's flow aggregation interval, seconds (with --flows).
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
        flow_interval: u64,
        /// How each Felix takes its Sync stream: tcp (the lean transport
        /// on each replica's sync listener, port 5675) or grpc (the Sync
        /// call on its client port).
        #[arg(long, default_value = "tcp")]
        sync_transport: String,
    },
    /// Remove the processes and namespaces of a cluster.
    Down {
        #[arg(long, default_value = "manul")]
        name: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Down { name } => match LocalCluster::cleanup(&name) {
            Ok(n) => {
                println!("removed {n} namespaces of cluster {name}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Up {
            name,
            nodes,
            typha_replicas,
            dataplane,
            flows,
            flow_interval,
            sync_transport,
        } => {
            let dataplane = match Dataplane::parse(&dataplane) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let sync_transport = match SyncTransport::parse(&sync_transport) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = ClusterConfig {
                name,
                nodes: usize::from(nodes),
                typha_replicas,
                dataplane,
                policy_setup_timeout: Duration::ZERO,
                sync_transport,
            };
            let flows = flows.then_some(FlowsConfig {
                interval_s: flow_interval,
            });
            let cluster = match LocalCluster::up_with_flows(config, flows) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!(
                "cluster up: {} nodes, dataplane {}, Typha at {}, Felix's Sync over {}",
                nodes,
                dataplane.as_str(),
                cluster.typha_addresses().join(","),
                sync_transport.as_str()
            );
            println!(
                "explore it with: manulctl --netns {} --server {} {} get networkpolicy",
                cluster.control_plane_netns(),
                cluster.typha_addresses()[0],
                cluster.manulctl_tls_flags()
            );
            println!(
                "cluster administration: manulctl --netns {} {} cluster --peer-server {} status",
                cluster.control_plane_netns(),
                cluster.manulctl_tls_flags(),
                cluster.typha_peer_addresses()[0]
            );
            if let Some(url) = cluster.flows_url() {
                println!(
                    "flows: manulctl --netns {} {} flows --aggregator {url}",
                    cluster.control_plane_netns(),
                    cluster.manulctl_tls_flags()
                );
            }
            if let Some(ui) = cluster.flows_ui_url() {
                println!(
                    "flows web UI: {ui} from the control plane's namespace (ip netns exec {} chromium --no-sandbox {ui})",
                    cluster.control_plane_netns()
                );
            }
            println!("logs: {}", cluster.work_dir().display());
            println!("press Ctrl-C to remove it");
            wait_for_ctrl_c();
            drop(cluster);
            ExitCode::SUCCESS
        }
    }
}

fn wait_for_ctrl_c() {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let _ = rt.block_on(tokio::signal::ctrl_c());
        }
        Err(e) => eprintln!("cannot wait for Ctrl-C: {e}"),
    }
}
