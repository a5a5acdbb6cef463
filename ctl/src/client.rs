//! Connecting to Typha: `--server HOST:PORT` or `MANUL_SERVER` (several
//! replicas separated by commas: every online command moves on to the next
//! when one is unavailable, through [`manul_client::Client`]), waiting up
//! to `--timeout` for a replica to accept a connection and to have a
//! leader. With `--ca-file`, `--cert-file` and `--key-file` (or
//! `MANUL_CA_FILE`, `MANUL_CERT_FILE`, `MANUL_KEY_FILE`) over TLS: the
//! user's identity is the certificate's, and Typha's certificate must chain
//! to the CA and carry `--server-cn` (default `manul-typha`) or
//! `--server-uri-san`.

use std::future::Future;
use std::time::{Duration, Instant};

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use manul_client::{Client, ClientConfig, ClientError};

/// The server flags shared by online commands.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Typha replica to talk to (any replica; writes are forwarded to the
    /// leader), or several separated by commas.
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
    /// How long online commands wait for Typha to accept a connection and
    /// to have a leader, counted from the start (such as 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_timeout, global = true)]
    pub timeout: Duration,
    /// CA bundle Typha's certificate must chain to (TLS with --cert-file
    /// and --key-file).
    #[arg(long, env = "MANUL_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Your certificate: your identity towards Typha.
    #[arg(long, env = "MANUL_CERT_FILE", global = true)]
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key.
    #[arg(long, env = "MANUL_KEY_FILE", global = true)]
    pub key_file: Option<std::path::PathBuf>,
    /// Common name Typha's certificate must have (default with TLS:
    /// manul-typha, unless --server-uri-san is given).
    #[arg(long, env = "MANUL_SERVER_CN", global = true)]
    pub server_cn: Option<String>,
    /// URI SAN Typha's certificate must have.
    #[arg(long, env = "MANUL_SERVER_URI_SAN", global = true)]
    pub server_uri_san: Option<String>,
    /// When the command started; the timeout counts from here.
    #[arg(skip = Instant::now())]
    pub started: Instant,
}

/// The local user's name (`USER`, `LOGNAME`), for Typha's audit trail
/// of plaintext writes.
pub fn local_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown local user".to_string())
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s or m (such as 10s)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (such as 10s, 500ms, 2m)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

/// First pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_millis(250);

impl ServerArgs {
    /// Whether TLS is configured.
    pub fn tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Plaintext, or TLS with the user's certificate; a partial or unusable
    /// configuration is bad input.
    pub fn transport(&self) -> Result<manul_tls::connect::Transport> {
        let bad = |m: String| anyhow::Error::new(crate::BadInput(m));
        let (ca, cert, key) = match (&self.ca_file, &self.cert_file, &self.key_file) {
            (None, None, None) => return Ok(manul_tls::connect::Transport::Plain),
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            _ => {
                return Err(bad(
                    "--ca-file, --cert-file and --key-file must be given together".into(),
                ));
            }
        };
        let cn = match (&self.server_cn, &self.server_uri_san) {
            (None, None) => Some(manul_tls::dev::TYPHA_CN.to_string()),
            (cn, _) => cn.clone(),
        };
        let server = manul_tls::Expected::new(
            cn,
            self.server_uri_san.clone(),
            "--server-cn/--server-uri-san",
        )
        .map_err(|e| bad(manul_model::error::chain(&e)))?;
        let settings = manul_tls::client::ClientSettings {
            ca_file: ca.clone(),
            cert_file: cert.clone(),
            key_file: key.clone(),
            server,
        };
        let config = settings
            .config()
            .map_err(|e| bad(manul_model::error::chain(&e)))?;
        Ok(manul_tls::connect::Transport::Tls(config))
    }

    fn deadline(&self) -> Instant {
        self.started + self.timeout
    }

    /// Sleeps `pause` (at most until the deadline) and doubles it; false
    /// when the deadline has passed and nothing more should be tried.
    async fn wait(&self, pause: &mut Duration) -> bool {
        let left = self.deadline().saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        tokio::time::sleep((*pause).min(left)).await;
        *pause = (*pause * 2).min(MAX_PAUSE);
        true
    }

    /// The replica addresses `--server` names.
    fn addresses(&self) -> Vec<&str> {
        self.server.split(',').map(str::trim).collect()
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot connect to Typha at {} after waiting {:?} (--timeout)",
            self.server, self.timeout
        )
    }

    /// A resource API client of the replicas `--server` names. Until
    /// `--timeout` has passed since the start, a round in which no replica
    /// accepts a connection is tried again.
    pub async fn client(&self) -> Result<Client> {
        let addresses = self.addresses();
        let transport = self.transport()?;
        let mut pause = FIRST_PAUSE;
        loop {
            let left = self.deadline().saturating_duration_since(Instant::now());
            let config = ClientConfig {
                connect_timeout: connect_timeout(left),
                // Waiting for a leader is this command's (until --timeout).
                rounds: 1,
                transport: transport.clone(),
                ..ClientConfig::default()
            };
            match Client::connect_with(&addresses, config).await {
                // Over TLS the certificate names the user; in plaintext
                // Typha records the local user this names.
                Ok(client) if self.tls() => return Ok(client),
                Ok(client) => return Ok(client.with_user(&local_user())),
                Err(ClientError::BadAddress { source, .. }) => {
                    return Err(anyhow::anyhow!("{source}").context(crate::BadInput(format!(
                        "--server {:?} is not HOST:PORT",
                        self.server
                    ))));
                }
                Err(e) => {
                    if !self.wait(&mut pause).await {
                        return Err(anyhow::Error::new(e).context(self.unreachable()));
                    }
                }
            }
        }
    }

    /// Sends a request until a replica with a leader answers it: an answer
    /// saying that no leader is elected yet (the request was refused before
    /// it was proposed, so sending it again is safe) is retried until
    /// `--timeout` has passed since the start. Every other answer is
    /// returned as it is.
    pub async fn call<T, E, F, Fut>(&self, mut request: F) -> Result<T, E>
    where
        E: Answer,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut pause = FIRST_PAUSE;
        loop {
            let answer = match request().await {
                Ok(response) => return Ok(response),
                Err(answer) => answer,
            };
            if !answer.is_no_leader(&self.server) {
                return Err(answer);
            }
            if !self.wait(&mut pause).await {
                let status = tonic::Status::unavailable(format!(
                    "no leader elected after waiting {:?} (--timeout) for Typha at {}; its last answer: {}",
                    self.timeout,
                    self.server,
                    answer.message()
                ));
                return Err(E::from_status(status, &self.server));
            }
        }
    }
}

/// A refusal [`ServerArgs::call`] may wait out: a gRPC status, or the
/// resource client's error.
pub trait Answer: Sized {
    fn is_no_leader(&self, server: &str) -> bool;
    fn message(&self) -> String;
    fn from_status(status: tonic::Status, server: &str) -> Self;
}

impl Answer for tonic::Status {
    fn is_no_leader(&self, server: &str) -> bool {
        ClientError::from_status(self.clone(), server).is_no_leader()
    }
    fn message(&self) -> String {
        tonic::Status::message(self).to_string()
    }
    fn from_status(status: tonic::Status, _: &str) -> Self {
        status
    }
}

impl Answer for ClientError {
    fn is_no_leader(&self, _: &str) -> bool {
        ClientError::is_no_leader(self)
    }
    fn message(&self) -> String {
        match self.status() {
            Some(s) => s.message().to_string(),
            None => self.to_string(),
        }
    }
    fn from_status(status: tonic::Status, server: &str) -> Self {
        ClientError::from_status(status, server)
    }
}

/// How long one connection attempt may take, with `left` until the
/// deadline.
fn connect_timeout(left: Duration) -> Duration {
    left.clamp(Duration::from_millis(200), Duration::from_secs(3))
}

/// The outcome of a failed resource request: the server rejecting the
/// input is printed as Typha said it and exits 2; any other failure is an
/// error (exit 1), and a write whose outcome is unknown (the connection
/// dropped after it was sent) says how to find out.
pub fn failure(e: ClientError) -> Result<ExitCode> {
    if e.is_outcome_unknown() {
        return Err(anyhow::anyhow!(
            "{e}\ncheck with `manulctl get KIND NAME` (or `manulctl get KIND` for all of them) whether Typha holds what was written, and write again only if it does not"
        ));
    }
    match e.status() {
        Some(s) if is_bad_input(s) => {
            eprintln!("error: {}", s.message());
            Ok(ExitCode::from(crate::EXIT_BAD_INPUT))
        }
        _ => Err(client_error(e)),
    }
}

/// Turns the resource client's error into a user-facing one: a gRPC
/// status as [`status_error`] prints it, anything else as it is.
pub fn client_error(e: ClientError) -> anyhow::Error {
    match e.status() {
        Some(s) => status_error(s.clone()),
        None => e.into(),
    }
}

/// Turns a gRPC status into a user-facing error.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

/// Whether an error came from the server rejecting the input.
pub fn is_bad_input(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_units_or_as_seconds() {
        assert_eq!(parse_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "10h",
            "ten",
            "-1s",
            "1e4s",
            "99999999999999999999999s",
        ] {
            let e = parse_timeout(bad).unwrap_err();
            assert!(e.contains(bad), "{bad:?}: {e}");
        }
    }
}
