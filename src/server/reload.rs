//! Config hot reload: on SIGHUP, and when the file's contents change (read every poll interval —
//! contents, not mtime, so an edit within the same second still counts and a rewrite with the
//! same text does not).
//!
//! What reloads: `agents:` and `models:` (the policy set, swapped atomically; requests in flight
//! keep the rules they started with, loop history is kept). Everything else — listeners, routes,
//! timeouts, identity, telemetry, budgets — is read at start only. An invalid file, an empty one,
//! and one whose start-only sections differ from the running config keep the running config,
//! log why and count `tokenwarden_config_reload_total{result="error"}`: the file is read every
//! second, so a write that is not atomic (an editor, a shell redirect) is often read half done,
//! and such a file parses as valid with no agents — applying its policies would lift every
//! agent's rules.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;

use crate::config::{self, Config};
use crate::policy::{Policies, PolicySet};
use crate::telemetry::metrics as m;

/// How often the file is read for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not parse or validate.
    #[error(transparent)]
    Invalid(#[from] config::ConfigError),
    /// The file holds nothing but blanks and comments (all defaults: no agent policies).
    #[error("{path} is empty; an empty file is never applied")]
    Empty {
        /// The file.
        path: String,
    },
    /// Settings read only at start differ from the running config.
    #[error("settings read only at start differ from the running config ({changed}); restart to apply them, or restore them to reload agents and models")]
    NeedsRestart {
        /// The top-level sections that differ, by name.
        changed: String,
    },
}

/// Watches one config file and swaps the policy set of a running proxy.
pub struct Reloader {
    path: PathBuf,
    policies: Arc<Policies>,
    running: Config,
    last: Option<u64>,
    hup: Option<tokio::signal::unix::Signal>,
}

// === impl Reloader ===

impl Reloader {
    /// Watch `path`, whose contents produced `running`, for `policies`. Must be called inside
    /// the runtime: SIGHUP is caught from here on (it would otherwise end the process).
    pub fn new(path: PathBuf, running: Config, policies: Arc<Policies>) -> Self {
        let last = std::fs::read(&path).ok().map(|b| fingerprint(&b));
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file change only");
                None
            }
        };
        Self {
            path,
            policies,
            running,
            last,
            hup,
        }
    }

    /// Poll every `every` and listen for SIGHUP until the task is aborted.
    pub async fn run(mut self, every: Duration) {
        let mut hup = self.hup.take();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            self.check(forced).await;
        }
    }

    /// Reload if the file changed (or always, when `forced`); returns whether a new config is
    /// now serving.
    pub async fn check(&mut self, forced: bool) -> bool {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(source) => {
                if forced || self.last.is_some() {
                    self.last = None;
                    self.refused(&ReloadError::Read {
                        path: self.path.display().to_string(),
                        source,
                    });
                }
                return false;
            }
        };
        let print = fingerprint(&bytes);
        if !forced && self.last == Some(print) {
            return false;
        }
        self.last = Some(print);
        match self.load(&bytes) {
            Ok((config, set)) => {
                self.policies.replace(set);
                counter!(m::CONFIG_RELOAD_TOTAL, "result" => "ok").increment(1);
                tracing::info!(
                    path = %self.path.display(),
                    agents = config.agents.len(),
                    models = config.models.len(),
                    "config reloaded: agent policies and model catalog swapped"
                );
                self.running = config;
                true
            }
            Err(e) => {
                self.refused(&e);
                false
            }
        }
    }

    /// The file's config and policy set, when it may replace the running ones.
    fn load(&self, bytes: &[u8]) -> Result<(Config, PolicySet), ReloadError> {
        let text = String::from_utf8_lossy(bytes);
        let origin = self.path.display().to_string();
        // The loader reads an empty file as all defaults; here that is a file caught mid-write
        // (truncated, not yet written), never an intent to drop every policy.
        if text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---"
        }) {
            return Err(ReloadError::Empty { path: origin });
        }
        let config = config::load_from_str(&text, &origin)?;
        crate::providers::protocol::check_routes(&config, &origin)?;
        // A file cut short mid-write still parses when the cut falls between keys; what it lost
        // shows in the start-only sections. Only a file that keeps them as running is applied.
        let changed = needs_restart(&self.running, &config);
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart {
                changed: changed.join(", "),
            });
        }
        // Validation compiled the policies already; this cannot fail for a loaded config.
        let set = PolicySet::from_config(&config).unwrap_or_else(|_| PolicySet::empty());
        Ok((config, set))
    }

    fn refused(&self, e: &ReloadError) {
        counter!(m::CONFIG_RELOAD_TOTAL, "result" => "error").increment(1);
        tracing::error!(error = %e, "config reload refused; the running config stays in force");
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Top-level settings that differ and are only read at start (every section but `agents` and
/// `models`).
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut differs = |name, a: String, b: String| {
        if a != b {
            changed.push(name);
        }
    };
    differs("listen", old.listen.to_string(), new.listen.to_string());
    differs(
        "admin_listen",
        old.admin_listen.to_string(),
        new.admin_listen.to_string(),
    );
    differs(
        "routes",
        format!("{:?}", old.routes),
        format!("{:?}", new.routes),
    );
    differs(
        "server",
        format!("{:?}", old.server),
        format!("{:?}", new.server),
    );
    differs(
        "upstream",
        format!("{:?}", old.upstream),
        format!("{:?}", new.upstream),
    );
    differs(
        "identity",
        format!("{:?}", old.identity),
        format!("{:?}", new.identity),
    );
    differs(
        "telemetry",
        format!("{:?}", old.telemetry),
        format!("{:?}", new.telemetry),
    );
    differs(
        "budgets",
        format!("{:?}", old.budgets),
        format!("{:?}", new.budgets),
    );
    differs(
        "logging",
        format!("{:?}", old.logging),
        format!("{:?}", new.logging),
    );
    differs(
        "pricing",
        format!("{:?}", old.pricing),
        format!("{:?}", new.pricing),
    );
    differs(
        "alerts",
        format!("{:?}", old.alerts),
        format!("{:?}", new.alerts),
    );
    differs(
        "approvals",
        format!("{:?}", old.approvals),
        format!("{:?}", new.approvals),
    );
    // Compared, never written out: only the name goes in the log line.
    differs(
        "admin_token",
        format!("{:?}", old.admin_token),
        format!("{:?}", new.admin_token),
    );
    changed
}
