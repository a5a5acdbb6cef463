//! The driver's errors.

use std::path::PathBuf;

use manul_dataplane_api::DriverError;

use crate::compile::CompileError;

/// Why the eBPF dataplane could not start or program something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    #[error("cannot mount bpffs at {}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot create or read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the eBPF object (maps pinned under {})", pin_dir.display())]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("source range {range} is not of load-balancer address {lb}'s family")]
    MixedSourceRange {
        lb: std::net::IpAddr,
        range: ipnet::IpNet,
    },
    #[error("program {name}: {what}")]
    Program {
        name: &'static str,
        what: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {map}: {what}")]
    Map {
        map: &'static str,
        what: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("link pinned at {}: {what}", path.display())]
    Link {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the rule table for {endpoint} cannot be compiled")]
    Compile {
        endpoint: String,
        #[source]
        source: CompileError,
    },
    #[error(
        "map {map} would need {needed} entries, but holds at most {capacity}: the previous state stays enforced"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        capacity: usize,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The host's service device or its routes (`driver/host_svc.rs`).
    #[error("host service device {device}: {what}")]
    HostDevice {
        device: &'static str,
        what: &'static str,
        #[source]
        source: Box<manul_netns::NetnsError>,
    },
    /// Which network namespaces connect-time load balancing serves
    /// (`ctlb/netns.rs`).
    #[error("connect-time load balancing: {what}")]
    CtlbNamespaces {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map size of 0 or beyond the largest accepted.
    #[error("invalid configuration: {setting} is {value} entries; a map holds 1 to {max}")]
    MapSize {
        setting: &'static str,
        value: u32,
        max: u32,
    },
}

impl BpfError {
    pub(crate) fn map(
        map: &'static str,
        what: impl Into<String>,
        source: aya::maps::MapError,
    ) -> Self {
        Self::Map {
            map,
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn program(
        name: &'static str,
        what: impl Into<String>,
        source: aya::programs::ProgramError,
    ) -> Self {
        Self::Program {
            name,
            what: what.into(),
            source: Box::new(source),
        }
    }
}

impl From<BpfError> for DriverError {
    /// The context names the whole chain of causes, so that a log line
    /// with only the top-level message still says what went wrong.
    fn from(e: BpfError) -> Self {
        DriverError::Dataplane {
            driver: "bpf",
            context: manul_dataplane_api::chain(&e),
            source: Box::new(e),
        }
    }
}
