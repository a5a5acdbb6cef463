//! The text forms of settings, as Calico reads them from the environment.

use std::time::Duration;

use manul_model::v3::{
    BpfConnectTimeLoadBalancing, Cidr, EndpointToHostAction, GoDuration, LogSeverity, ProtoPort,
    Protocol,
};

/// `cali` or `cali,tap`: interface name prefixes, each 1-15 characters of
/// letters, digits, `-`, `_` and `.` (a Linux interface name is at most 15).
pub fn parse_prefixes(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err("an interface prefix is empty".into());
        }
        if part.len() > 15 {
            return Err(format!(
                "interface prefix {part:?} is longer than an interface name (15)"
            ));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "interface prefix {part:?} has {c:?}; use letters, digits, '-', '_' and '.'"
            ));
        }
        if !out.iter().any(|p| p == part) {
            out.push(part.to_string());
        }
    }
    Ok(out)
}

/// `tcp:22,udp:68,tcp:10.0.0.0/8:6443`, a bare port meaning TCP, or `none`.
pub fn parse_ports(text: &str) -> Result<Vec<ProtoPort>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parts: Vec<&str> = item.split(':').collect();
        let (protocol, net, port) = match parts.as_slice() {
            [port] => ("tcp", None, *port),
            [protocol, port] => (*protocol, None, *port),
            [protocol, net, port] => (*protocol, Some(*net), *port),
            _ => return Err(format!("{item:?} is not PROTOCOL:[NET:]PORT")),
        };
        let protocol: Protocol = protocol.parse()?;
        if !matches!(protocol, Protocol::Tcp | Protocol::Udp | Protocol::Sctp) {
            return Err(format!("{item:?}: failsafe ports are TCP, UDP or SCTP"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{item:?}: {port:?} is not a port (0-65535)"))?;
        let net = net.map(str::parse::<Cidr>).transpose()?;
        out.push(ProtoPort {
            protocol,
            port,
            net,
        });
    }
    Ok(out)
}

/// Calico's default failsafe ports: SSH and DHCP in, DNS and DHCP out, and
/// BGP, etcd, Typha and the API server both ways.
pub fn default_failsafe(inbound: bool) -> Vec<ProtoPort> {
    let text = if inbound {
        "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
    } else {
        "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
    };
    parse_ports(text).unwrap_or_default()
}

/// Calico's booleans: true/false, t/f, yes/no, y/n, 1/0, any case.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Ok(true),
        "false" | "f" | "no" | "n" | "0" => Ok(false),
        _ => Err("not a boolean (true or false)".into()),
    }
}

/// `typhaSyncTransport`: `grpc` or `tcp`, lowercased.
pub fn sync_transport(text: &str) -> Result<String, String> {
    match text.to_ascii_lowercase().as_str() {
        t @ ("grpc" | "tcp") => Ok(t.to_string()),
        _ => Err("not a sync transport (grpc or tcp)".into()),
    }
}

pub fn port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| "not a port (0-65535)".to_string())
}

/// Seconds (`90`, `0.5`), as Calico's environment gives intervals, or a Go
/// duration (`1m30s`), as FelixConfiguration does.
pub fn duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| "not a duration (seconds, or such as 90s)".to_string());
    }
    text.parse::<GoDuration>().map(|d| d.0)
}

/// A severity, any case: Trace, Debug, Info, Warning (or Warn), Error,
/// Fatal.
pub fn severity(text: &str) -> Result<LogSeverity, String> {
    match text.to_ascii_lowercase().as_str() {
        "trace" => Ok(LogSeverity::Trace),
        "debug" => Ok(LogSeverity::Debug),
        "info" => Ok(LogSeverity::Info),
        "warning" | "warn" => Ok(LogSeverity::Warning),
        "error" => Ok(LogSeverity::Error),
        "fatal" | "critical" => Ok(LogSeverity::Fatal),
        _ => Err("not a severity (Trace, Debug, Info, Warning, Error, Fatal)".into()),
    }
}

/// Drop, Return or Accept, any case.
pub fn endpoint_to_host(text: &str) -> Result<EndpointToHostAction, String> {
    match text.to_ascii_lowercase().as_str() {
        "drop" => Ok(EndpointToHostAction::Drop),
        "return" => Ok(EndpointToHostAction::Return),
        "accept" => Ok(EndpointToHostAction::Accept),
        _ => Err("not an action (Drop, Return or Accept)".into()),
    }
}

/// `Tunnel` or `DSR`, in any case.
pub fn external_service_mode(
    text: &str,
) -> Result<manul_model::v3::BpfExternalServiceMode, String> {
    use manul_model::v3::BpfExternalServiceMode;
    match text.to_ascii_lowercase().as_str() {
        "tunnel" => Ok(BpfExternalServiceMode::Tunnel),
        "dsr" => Ok(BpfExternalServiceMode::Dsr),
        _ => Err("not an external service mode (Tunnel or DSR)".into()),
    }
}

/// Enabled or Disabled, any case.
pub fn on_off(text: &str) -> Result<manul_model::v3::OnOff, String> {
    use manul_model::v3::OnOff;
    match text.to_ascii_lowercase().as_str() {
        "enabled" => Ok(OnOff::Enabled),
        "disabled" => Ok(OnOff::Disabled),
        _ => Err("neither Enabled nor Disabled".into()),
    }
}

/// TCP, Enabled or Disabled, any case.
pub fn connect_time_lb(text: &str) -> Result<BpfConnectTimeLoadBalancing, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(BpfConnectTimeLoadBalancing::Tcp),
        "enabled" => Ok(BpfConnectTimeLoadBalancing::Enabled),
        "disabled" => Ok(BpfConnectTimeLoadBalancing::Disabled),
        _ => Err("not a mode (TCP, Enabled or Disabled)".into()),
    }
}

/// A host name or address to listen on; empty means every interface.
pub fn host(text: &str) -> Result<String, String> {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
    {
        Ok(text.to_string())
    } else {
        Err("not a host name or address".into())
    }
}

/// Free text (a file name, a certificate name); empty means unset.
pub fn text(text: &str) -> Result<String, String> {
    if text.contains('\0') {
        Err("contains a NUL character".into())
    } else {
        Ok(text.trim().to_string())
    }
}

pub fn path(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains('\0') {
        Err("not a path".into())
    } else {
        Ok(text.to_string())
    }
}

/// A Linux interface name: 1-15 characters of letters, digits, `-`, `_`
/// and `.`.
pub fn interface_name(text: &str) -> Result<String, String> {
    match parse_prefixes(text)?.as_slice() {
        [one] if one == text => Ok(one.clone()),
        _ => Err("not one interface name".into()),
    }
}

/// An MTU: 0 (automatic) or 68-65535, as Linux accepts for IPv4.
pub fn mtu(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Ok(0),
        Ok(m) if (68..=65535).contains(&m) => Ok(m),
        _ => Err("not an MTU (0 for automatic, or 68-65535)".into()),
    }
}

/// An eBPF map size (`bpfMapSize*`): 1 to `MAX_MAP_SIZE` entries.
pub fn map_size(text: &str) -> Result<u32, String> {
    let max = manul_dataplane_bpf::MAX_MAP_SIZE;
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err("a map of 0 entries holds nothing (1 or more)".into()),
        Ok(n) => Err(format!(
            "{n} entries is beyond the most a map may hold, {max}"
        )),
        Err(_) => Err(format!("not a number of entries (1-{max})")),
    }
}

/// `bpfMaglevMaxEndpointsPerService`: 1-3000, as Calico accepts.
pub fn maglev_endpoints(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(n) if (1..=3000).contains(&n) => Ok(n),
        _ => Err("not a number of endpoints (1-3000)".into()),
    }
}
