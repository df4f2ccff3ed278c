//! The two listeners (proxy and admin), their connections, and graceful shutdown.
//!
//! [`Server::bind`] binds both sockets (port 0 works: read the real addresses back), builds the
//! proxy from the config and installs the metrics recorder. [`Server::run`] serves until the
//! shutdown future resolves, then stops accepting, lets in-flight requests and streams finish
//! within `server.shutdown_grace`, and returns.

pub mod admin;
pub mod approvals_api;
pub mod auth;
mod health;
mod listener;
pub mod reload;
pub mod scopes_api;
pub mod signals;
mod workers;
mod write_timeout;

pub use health::Health;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, RuntimeMode};
use crate::proxy::Proxy;
use crate::proxy::ProxyBuildError;
use crate::telemetry::metrics;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A route or the budget service could not be built.
    #[error(transparent)]
    Proxy(#[from] ProxyBuildError),
    /// Span export could not be set up.
    #[error(transparent)]
    Spans(#[from] crate::telemetry::spans::SpansError),
    /// Metric export over OTLP could not be set up.
    #[error(transparent)]
    MetricExport(#[from] crate::telemetry::otlp::ExporterError),
}

/// A bound, not yet running server.
pub struct Server {
    config: Arc<Config>,
    proxy: Arc<Proxy>,
    health: Arc<Health>,
    /// One listening socket per worker (`per_core`), or one (`shared`).
    proxy_listeners: Vec<std::net::TcpListener>,
    proxy_addr: SocketAddr,
    admin_listener: TcpListener,
    reloader: Option<(reload::Reloader, std::time::Duration)>,
    /// The OTLP metric export task, when metrics are pushed.
    metric_push: Option<crate::telemetry::otlp::push::Pusher>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ran out; remaining connections were dropped.
    DeadlineExceeded,
}

// === impl Server ===

impl Server {
    /// Bind the proxy and admin listeners and build the proxy.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        // First: the span sink and the proxy keep metric handles, which must come from the
        // installed recorder.
        metrics::install();
        crate::telemetry::series::set_max_series(config.telemetry.max_series_per_metric);
        crate::telemetry::semconv::set(crate::telemetry::semconv::Names::resolve(
            &config.telemetry.semconv_opt_in,
        ));
        // Loaded while the listeners bind, so no request waits for it (budgets' near-limit
        // admission, the context guard and usage estimates all count with it).
        tokio::spawn(crate::tokens::warm());
        let spans = crate::telemetry::spans::Spans::from_config(&config.telemetry)?;
        let push = crate::telemetry::otlp::push::settings(config.telemetry.otlp_metrics.as_ref());
        let metric_push = match push {
            Some(settings) => Some(crate::telemetry::otlp::push::start(
                settings,
                metrics::install(),
                &config.telemetry.service_name,
            )?),
            None => None,
        };
        let proxy = Arc::new(Proxy::new(&config)?.with_spans(spans));
        let n = match config.server.runtime {
            RuntimeMode::PerCore => config.server.worker_count(),
            RuntimeMode::Shared => 1,
        };
        let bind_err = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        let proxy_listeners = workers::bind(config.listen, n).map_err(bind_err)?;
        let proxy_addr = proxy_listeners
            .first()
            .map_or(Ok(config.listen), std::net::TcpListener::local_addr)
            .map_err(bind_err)?;
        let admin_listener = bind(config.admin_listen).await?;
        if let Ok(a) = admin_listener.local_addr() {
            proxy
                .approvals()
                .default_page_url(format!("http://{a}/approvals"));
        }
        Ok(Self {
            config: Arc::new(config),
            proxy,
            health: Arc::new(Health::default()),
            proxy_listeners,
            proxy_addr,
            admin_listener,
            reloader: None,
            metric_push,
        })
    }

    /// Reload agent policies and the model catalog from `path` on SIGHUP and when its contents
    /// change (checked every `poll`), while running.
    pub fn watch_config(&mut self, path: std::path::PathBuf, poll: std::time::Duration) {
        let running = Config::clone(&self.config);
        let policies = self.proxy.policies().clone();
        self.reloader = Some((reload::Reloader::new(path, running, policies), poll));
    }

    /// The proxy listener's bound address.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or(self.config.admin_listen)
    }

    /// Serve until `shutdown` resolves, then drain. With `server.runtime: per_core` the proxy
    /// listener is served by worker threads of their own; the calling runtime keeps the admin
    /// listener and the background work.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Drained {
        let runtimes = metrics::Runtimes::default();
        let upkeep = metrics::spawn_upkeep(metrics::install(), runtimes.clone());
        let expiry = tokio::spawn(self.proxy.sessions().clone().run_expiry());
        let task_expiry = tokio::spawn(self.proxy.tasks().clone().run_expiry());
        let approvals_expiry = tokio::spawn(self.proxy.approvals().clone().run_expiry());
        let budgets = self.proxy.budgets().cloned();
        let budget_upkeep = budgets.clone().map(|b| tokio::spawn(b.run_upkeep()));
        let reload = self.reloader.map(|(r, poll)| tokio::spawn(r.run(poll)));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The admin port stays up through the drain (`/readyz` answers 503, `/metrics` can be
        // scraped) and closes last.
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::watch::channel(false);
        let mut serving = match self.config.server.runtime {
            RuntimeMode::PerCore => Serving::Workers(workers::start(
                self.proxy_listeners,
                &self.proxy,
                &self.config.server,
                &stop_rx,
                &runtimes,
            )),
            RuntimeMode::Shared => Serving::Here(tokio::spawn(serve_here(
                self.proxy_listeners,
                self.proxy.clone(),
                self.config.server.clone(),
                stop_rx,
            ))),
        };
        let admin = listener::serve_admin(
            self.admin_listener,
            Arc::new(admin::Admin::new(
                self.health.clone(),
                metrics::install(),
                scopes_api::ScopesApi::new(
                    budgets.clone(),
                    self.proxy.sessions().clone(),
                    self.proxy.tasks().clone(),
                    auth::AdminToken::new(self.config.admin_token.clone()),
                ),
                approvals_api::ApprovalsApi::new(
                    self.proxy.approvals().clone(),
                    auth::AdminToken::new(self.config.admin_token.clone()),
                ),
            )),
            admin_stop_rx,
        );
        let admin_task = tokio::spawn(admin);

        shutdown.await;
        tracing::info!(
            grace_s = self.config.server.shutdown_grace.as_secs_f64(),
            "shutdown: no longer accepting; draining in-flight requests"
        );
        self.health.drain();
        let _ = stop_tx.send(true);

        let grace = self.config.server.shutdown_grace;
        // serve_proxy drops what is left after the grace and returns once every call finished.
        let drained = match &mut serving {
            Serving::Workers(w) => w.drained().await,
            Serving::Here(task) => task.await.unwrap_or(false),
        };
        upkeep.abort();
        expiry.abort();
        task_expiry.abort();
        approvals_expiry.abort();
        if let Some(t) = budget_upkeep {
            t.abort();
        }
        if let Some(b) = &budgets {
            // Settlements still on their way to a remote store, then the final snapshot: both
            // after every call finished, so the spend of calls cut by the grace is kept.
            b.shutdown(SETTLE_FLUSH).await;
        }
        if let Some(r) = reload {
            r.abort();
        }
        // The last calls' metrics and spans, after every call finished, exported side by side:
        // a collector that is down costs one bound, not two, so the whole stop (grace, settle,
        // export) stays inside Kubernetes' default 30 s before its SIGKILL.
        let metrics_pushed = async {
            if let Some(push) = self.metric_push {
                push.shutdown(METRIC_FLUSH).await;
            }
        };
        let spans_flushed = async {
            if let Some(spans) = self.proxy.spans() {
                spans.flush(SPAN_FLUSH).await;
            }
        };
        tokio::join!(metrics_pushed, spans_flushed);
        if let Serving::Workers(w) = serving {
            w.finish().await;
        }
        let _ = admin_stop_tx.send(true);
        let _ = admin_task.await;
        if drained {
            tracing::info!("shutdown: drained");
            Drained::Clean
        } else {
            tracing::warn!(
                grace_s = grace.as_secs_f64(),
                "shutdown: grace period over; remaining connections dropped and their calls settled"
            );
            Drained::DeadlineExceeded
        }
    }
}

/// Longest wait at shutdown for budget settlements still on their way to the store.
const SETTLE_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest wait for queued spans to export at shutdown.
const SPAN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest wait for the last metric export at shutdown.
const METRIC_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the proxy listener is served.
enum Serving {
    /// Worker threads, one runtime each (`per_core`).
    Workers(workers::Workers),
    /// A task on the calling runtime (`shared`).
    Here(tokio::task::JoinHandle<bool>),
}

/// `shared`: serve the one listener on the calling (multi-threaded) runtime.
async fn serve_here(
    listeners: Vec<std::net::TcpListener>,
    proxy: Arc<Proxy>,
    cfg: crate::config::ServerConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> bool {
    match listeners.into_iter().next() {
        Some(l) => listener::serve_proxy(l, proxy, cfg, stop).await,
        None => false,
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
