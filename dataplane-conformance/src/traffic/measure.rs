//! One measurement: fresh namespaces with both pods plumbed in, the driver
//! programmed, the enforcement check, then the traffic.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use manul_model::names::workload_interface_name;
use manul_netns::{NetNs, ProbeOutcome, TcpServer, plumb_pod};

use super::load::{ConnectSink, connect_loop, iperf, roundtrip_loop};
use super::*;
use crate::{ConformanceError, DriverThread, NodeContext};

/// The namespaces, servers and driver of one measurement. Field order is
/// drop order: the driver stops first, the namespaces go last.
struct Bench {
    driver: Option<DriverThread>,
    _echo: TcpServer,
    _sink: ConnectSink,
    client: NetNs,
    server: NetNs,
    _node: NetNs,
}

pub(super) fn build(prefix: &str) -> Result<(NetNs, NetNs, NetNs), ConformanceError> {
    let node = NetNs::create(&format!("{prefix}-n")).map_err(setup("node namespace"))?;
    let client = NetNs::create(&format!("{prefix}-c")).map_err(setup("client namespace"))?;
    let server = NetNs::create(&format!("{prefix}-s")).map_err(setup("server namespace"))?;
    for (ns, name, ip) in [(&client, CLIENT, CLIENT_IP), (&server, SERVER, SERVER_IP)] {
        plumb_pod(
            &node,
            ns,
            &workload_interface_name(NAMESPACE, name),
            "eth0",
            ip,
        )
        .map_err(setup("pod plumbing"))?;
    }
    Ok((node, client, server))
}

/// One measurement in fresh namespaces named after
/// `manul_netns::unique_prefix(tag)` (keep `tag` to 2 characters): the
/// state of [`bench_operations`]`(rules)` programmed through `dataplane`
/// (ignored for [`Dataplane::None`]), then connects, round trips and
/// iperf3. Everything it created is removed when it returns.
pub fn measure(
    tag: &str,
    dataplane: &Dataplane,
    rules: usize,
    options: &TrafficOptions,
) -> Result<TrafficSample, ConformanceError> {
    let prefix = manul_netns::unique_prefix(tag);
    let (node, client, server) = build(&prefix)?;
    let echo = TcpServer::start(&server, SocketAddr::new(IpAddr::V4(SERVER_IP), ECHO_PORT))
        .map_err(setup("echo server"))?;
    let sink = ConnectSink::start(
        &server,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT),
    )?;
    let mut bench = Bench {
        driver: None,
        _echo: echo,
        _sink: sink,
        client,
        server,
        _node: node,
    };
    let mut program_ms = 0.0;
    let programmed = match dataplane {
        Dataplane::None => None,
        Dataplane::Driver { factory, .. } => {
            let driver = DriverThread::start(
                &bench._node,
                NodeContext {
                    node: prefix.clone(),
                },
                Arc::clone(factory),
            )?;
            let started = Instant::now();
            driver.apply(bench_operations(rules))?;
            program_ms = started.elapsed().as_secs_f64() * 1e3;
            bench.driver = Some(driver);
            Some(rules)
        }
    };

    // The policy must be in force, or the figures mean nothing.
    let closed = manul_netns::tcp_connect(
        &bench.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CLOSED_PORT),
        Duration::from_millis(300),
    )
    .map_err(setup("enforcement check"))?;
    let enforced = !matches!(closed, ProbeOutcome::Connected | ProbeOutcome::Refused);
    if programmed.is_some() && !enforced {
        return Err(ConformanceError::Driver(format!(
            "the benchmark policy is not enforced: a connection to port {CLOSED_PORT} got {closed:?}"
        )));
    }

    let (mut rt, rt_failures) = roundtrip_loop(
        &bench.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), ECHO_PORT),
        options.roundtrips,
        options.warmup,
    )?;
    let (mut connects, connect_failures, connect_time) = connect_loop(
        &bench.client,
        SocketAddr::new(IpAddr::V4(SERVER_IP), CONNECT_PORT),
        options.connects,
        options.warmup,
    )?;
    let (throughput_bps, retransmits) = iperf(&bench.client, &bench.server, options)?;

    Ok(TrafficSample {
        dataplane: dataplane.name().to_string(),
        rules: programmed,
        enforced,
        program_ms,
        throughput_bps,
        retransmits,
        connects_per_sec: connects.len() as f64 / connect_time.as_secs_f64().max(1e-9),
        connect: LatencyStats::from_samples(&mut connects, connect_failures),
        roundtrip: LatencyStats::from_samples(&mut rt, rt_failures),
    })
}
