//! The `tokenwarden` binary: parse the command line, load config, run until a signal, drain.

use std::process::ExitCode;

use clap::Parser;

use tokenwarden::cli::{Cli, Command};
use tokenwarden::config;
use tokenwarden::server::{signals, Server};
use tokenwarden::telemetry::logging;

/// Allocation is on the request path (the request document's maps and strings): see Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h EX_USAGE: bad configuration or arguments.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { path }) = &cli.command {
        return match load(Some(path)) {
            Ok(c) => {
                for a in config::advisories(&c) {
                    eprintln!("warning: {a}");
                }
                println!("{}: ok ({} routes)", path.display(), c.routes.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EX_USAGE)
            }
        };
    }
    if let Some(Command::Health { admin }) = &cli.command {
        return match health_check(*admin) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(cli.log_format);
    let config = match load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            eprintln!("{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    for a in config::advisories(&config) {
        tracing::warn!("{a}");
    }
    // per_core: the proxy's workers start their own runtimes; this one keeps the background
    // work (admin, export, upkeep, reload) on the main thread. shared: one pool for everything.
    let mut builder = match config.server.runtime {
        config::RuntimeMode::PerCore => tokio::runtime::Builder::new_current_thread(),
        config::RuntimeMode::Shared => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(config.server.worker_count());
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, cli.config.clone()))
}

/// The config at `path` (or the defaults), every route's protocol one the provider registry
/// knows; the error says which file and key.
fn load(path: Option<&std::path::Path>) -> Result<config::Config, config::ConfigError> {
    let c = config::load(path)?;
    let origin = path.map_or_else(|| "<defaults>".to_string(), |p| p.display().to_string());
    tokenwarden::providers::protocol::check_routes(&c, &origin)?;
    Ok(c)
}

/// GET /healthz on the admin listener with a plain blocking socket: no runtime needed.
fn health_check(admin: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&admin, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: tokenwarden\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ))
    }
}

async fn run(config: config::Config, path: Option<std::path::PathBuf>) -> ExitCode {
    let mut server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(path) = path {
        // Agent policies and the model catalog follow the file (SIGHUP or a change on disk).
        server.watch_config(path, tokenwarden::server::reload::POLL_INTERVAL);
    } else {
        signals::catch_hangup_without_config();
    }
    tracing::info!(
        proxy = %server.proxy_addr(),
        admin = %server.admin_addr(),
        version = env!("CARGO_PKG_VERSION"),
        "tokenwarden listening"
    );
    let first = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = first.clone();
    let drain = server.run(async move {
        signals::shutdown_signal().await;
        notify.notify_one();
    });
    // A second signal during the drain stops at once; its handlers are registered only after
    // the first signal, so they see the next one.
    tokio::select! {
        _ = drain => ExitCode::SUCCESS,
        _ = async {
            first.notified().await;
            signals::shutdown_signal().await
        } => {
            tracing::warn!("second signal: stopping without waiting for the drain");
            ExitCode::SUCCESS
        }
    }
}
