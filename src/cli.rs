//! Command line: `tokenwarden [--config PATH] [--log-format human|json]` and
//! `tokenwarden check-config PATH`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::logging::LogFormat;

/// A transparent sidecar proxy that makes LLM traffic observable and bounded.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden", version, about)]
pub struct Cli {
    /// Config file (YAML). Without one, built-in defaults are used.
    #[arg(long, env = "TOKENWARDEN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value = "human", global = true)]
    pub log_format: LogFormat,
    /// Subcommand; none runs the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and exit (non-zero, with a line-numbered reason, when invalid).
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Exit 0 when the admin listener answers `/healthz` with 200 (for container health checks,
    /// where no curl is available).
    Health {
        /// Admin address to ask.
        #[arg(long, default_value = "127.0.0.1:9464")]
        admin: std::net::SocketAddr,
    },
}
