//! `manul-cni`: the CNI plugin binary. Reads `CNI_*` from the environment
//! and the network configuration from stdin, prints the result (or CNI's
//! JSON error) on stdout, logs to stderr, and exits non-zero on error.

use std::io::{Read, Write};
use std::process::ExitCode;

use manul_cni::config::version_of;
use manul_cni::{CniEnv, CniError, Command, NetConf, Plugin, code};

fn init_logs(level: Option<&str>) {
    // The configured level for Manul's own crates; libraries (gRPC, HTTP/2)
    // only warn.
    let level = level.unwrap_or("warn");
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,manul_cni={level},manul_client={level},manul_netns={level}"
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn execute(stdin: &[u8]) -> Result<Option<String>, CniError> {
    let env = CniEnv::from_vars(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(Some(manul_cni::version(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    init_logs(conf.log_level.as_deref());
    for key in conf.unknown_keys() {
        tracing::warn!(%key, "ignoring an unknown key in the network configuration");
    }
    let node = conf.node_name()?;
    let plugin = Plugin { conf, env, node };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::caused(code::IO_FAILURE, "cannot start the async runtime", &e))?;
    let span = tracing::info_span!(
        "cni",
        command = ?plugin.env.command,
        container = %plugin.env.container_id,
        node = %plugin.node
    );
    runtime.block_on(tracing::Instrument::instrument(
        manul_cni::run(&plugin),
        span,
    ))
}

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = version_of(&stdin);
    let outcome = match read {
        Ok(_) => execute(&stdin),
        Err(e) => Err(CniError::caused(code::IO_FAILURE, "cannot read stdin", &e)),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(text) => {
            if let Some(text) = text {
                let _ = writeln!(out, "{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(code = e.code, "{e}");
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
