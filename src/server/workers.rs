//! `server.runtime: per_core`: one single-threaded Tokio runtime per worker thread, each
//! accepting on its own `SO_REUSEPORT` socket bound to the proxy address and calling upstreams
//! through its own pools, so a request is read, forwarded and answered on one thread (nginx's
//! shape). The runtime that calls [`Server::run`](super::Server::run) keeps the background work
//! (admin listener, span and metric export, budget upkeep, reload), which never queues behind
//! requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{oneshot, watch};

use crate::config::ServerConfig;
use crate::proxy::Proxy;

/// Pending connections each listening socket queues (Tokio's own default for `bind`).
const BACKLOG: i32 = 1024;

/// Bind `n` (at least one) listening sockets to `addr`: with `SO_REUSEPORT` each its own
/// socket (the kernel spreads new connections over them); where the option is refused, clones
/// of one socket (each worker then waits on the same accept queue).
pub(super) fn bind(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if n > 1 && addr.port() != 0 {
        // `SO_REUSEPORT` would let this process join a port another one listens on with it (a
        // second sidecar on the same config): each would take part of the traffic, enforcing
        // its own budgets. A socket without it cannot bind where anyone listens: the address
        // must be free, as a plain bind requires.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let first = socket(addr, n > 1)?;
    let (first, reuse) = match first {
        Some(s) => (s, true),
        None => (socket(addr, false)?.ok_or_else(no_socket)?, false),
    };
    // Port 0: the others take the port the first one got.
    let bound = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n.max(1) {
        let next = if reuse {
            socket(bound, true)?.ok_or_else(no_socket)?
        } else {
            out[0].try_clone()?
        };
        out.push(next);
    }
    Ok(out)
}

fn no_socket() -> std::io::Error {
    std::io::Error::other("SO_REUSEPORT refused after it was granted")
}

/// A non-blocking listening socket on `addr`, with `SO_REUSEPORT` when `reuse_port`; `None`
/// when that option is refused.
fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Option<std::net::TcpListener>> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As Tokio's `bind`: a restarted sidecar rebinds while old connections sit in TIME_WAIT.
    s.set_reuse_address(true)?;
    if reuse_port && s.set_reuse_port(true).is_err() {
        return Ok(None);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(Some(s.into()))
}

/// The running workers.
pub(super) struct Workers {
    /// Each worker's drain result, sent once its connections are gone.
    drained: Vec<oneshot::Receiver<bool>>,
    /// Set when the background shutdown is over: the workers' runtimes may stop.
    release: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Start one thread per listener, each with its own single-threaded runtime, serving until
/// `stop` turns true. A thread or runtime the system refuses is logged; its socket closes and
/// the others take its connections. (The runtimes are built on their threads: a runtime must
/// not be dropped inside another's async context.)
pub(super) fn start(
    listeners: Vec<std::net::TcpListener>,
    proxy: &Arc<Proxy>,
    cfg: &ServerConfig,
    stop: &watch::Receiver<bool>,
    runtimes: &crate::telemetry::metrics::Runtimes,
) -> Workers {
    let (release, released) = watch::channel(false);
    let mut drained = Vec::with_capacity(listeners.len());
    let mut threads = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        drained.push(rx);
        let (proxy, cfg, stop) = (proxy.clone(), cfg.clone(), stop.clone());
        let mut released = released.clone();
        let runtimes = runtimes.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tw-worker-{index}"))
            .spawn(move || {
                crate::http_client::set_worker(index);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "cannot start a worker runtime");
                        return;
                    }
                };
                // Counted in `tokenwarden_runtime_alive_tasks`.
                runtimes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(rt.handle().clone());
                rt.block_on(async move {
                    tokio::spawn(keep_a_timer_due(timer_period(&cfg)));
                    let ok = super::listener::serve_proxy(listener, proxy, cfg, stop).await;
                    let _ = tx.send(ok);
                    // Tasks the worker's requests spawned (settlements on their way to a
                    // remote store, span hand-offs) run until the server's shutdown is over.
                    let _ = released.wait_for(|r| *r).await;
                });
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(worker = index, error = %e, "cannot start a worker thread"),
        }
    }
    Workers {
        drained,
        release,
        threads,
    }
}

/// How often [`keep_a_timer_due`] ticks: well inside the header-read timeout.
fn timer_period(cfg: &ServerConfig) -> Duration {
    (cfg.header_read_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Keep a timer due within `period` on the worker's runtime at all times. Tokio's timer wakes
/// its driver through the runtime's eventfd whenever a timer is set to fire before the driver's
/// next wake-up; hyper sets a header-read timeout (`server.header_read_timeout`) for every
/// request head, so on a worker with no sooner timer each request paid a write to the eventfd
/// and one more turn of the event loop (0.55 per request at c=64, `perf`). With a timer always
/// due sooner, later timeouts are filed without waking anything; the cost is one wake-up per
/// period. (If Tokio's rule changes, only the saving is lost.)
async fn keep_a_timer_due(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

// === impl Workers ===

impl Workers {
    /// Wait until every worker drained; whether all did within the grace.
    pub(super) async fn drained(&mut self) -> bool {
        let mut all = true;
        for rx in self.drained.drain(..) {
            // A worker that died (a panic) did not drain cleanly.
            all &= rx.await.unwrap_or(false);
        }
        all
    }

    /// Let the workers' runtimes stop and wait until their threads ended.
    pub(super) async fn finish(self) {
        let _ = self.release.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}
