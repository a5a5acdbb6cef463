//! Connecting to a Typha replica: `--server HOST:PORT` or `MANUL_SERVER`.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tonic::transport::{Channel, Endpoint};

/// The server flag shared by online commands.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Typha replica to talk to (any replica; writes are forwarded to the leader).
    #[arg(
        long,
        env = "MANUL_SERVER",
        default_value = "127.0.0.1:5473",
        global = true
    )]
    pub server: String,
    /// Talk to the server from inside this named network namespace (a
    /// local cluster's Typha lives in one).
    #[arg(long, env = "MANUL_NETNS", global = true)]
    pub netns: Option<String>,
}

impl ServerArgs {
    /// A channel to the server; fails fast when nobody listens there.
    pub async fn connect(&self) -> Result<Channel> {
        let url = if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("http://{}", self.server)
        };
        Endpoint::from_shared(url)
            .with_context(|| {
                crate::BadInput(format!("--server {:?} is not HOST:PORT", self.server))
            })?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| format!("cannot connect to Typha at {}", self.server))
    }
}

/// Largest answer accepted from the server (a list of every resource).
pub const MAX_MESSAGE: usize = 1024 * 1024 * 1024;

/// Turns a gRPC status into a user-facing error.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

/// Whether an error came from the server rejecting the input.
pub fn is_bad_input(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition
    )
}
