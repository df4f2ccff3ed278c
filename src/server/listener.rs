//! Accept loops: one hyper-util connection task per socket, HTTP/1.1 and HTTP/2 cleartext.
//!
//! Hardening lives in the builder: hyper's header-read timeout only works with a timer set, so
//! one is always set (a slowloris client is dropped); header count and size are bounded; HTTP/2
//! bounds concurrent streams, header list size and locally reset streams, and pings idle
//! clients. A client that sends nothing at all is dropped after `header_read_timeout` by the
//! connection's I/O wrapper ([`WriteTimeout`]): hyper's timer starts only once it has bytes.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ServerConfig;
use crate::proxy::Proxy;

use super::admin::Admin;
use super::write_timeout::WriteTimeout;

/// Build the connection builder for the proxy listener.
pub(super) fn proxy_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_headers(cfg.max_headers)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_local_error_reset_streams(Some(1024))
        .max_pending_accept_reset_streams(Some(64))
        // A client that vanished without closing (no FIN: a node gone, a network cut) is found
        // by an unanswered ping; an idle HTTP/2 connection has no other timeout.
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    b
}

/// How often an HTTP/2 client connection is pinged.
const H2_PING_INTERVAL: Duration = Duration::from_secs(60);
/// How long a ping may go unanswered before the connection is closed.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serve proxy connections until `stop` turns true, then drain them gracefully for `grace`;
/// connections still open then are dropped, and this returns once they are gone.
///
/// Dropping a connection task drops its requests' calls, which settles their budgets and records
/// them: when this returns, every call has finished, so the final budget snapshot holds them all.
/// Returns whether every connection ended within `grace`. With several workers each runs this
/// on its own socket; ending the WebSocket sessions is shared and safe to ask from each.
pub(super) async fn serve_proxy(
    listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    cfg: ServerConfig,
    mut stop: watch::Receiver<bool>,
) -> bool {
    // Registered here, on the runtime that will serve it.
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the proxy listener");
            return false;
        }
    };
    let builder = Arc::new(proxy_builder(&cfg));
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                let svc = service_fn(move |req| proxy.clone().serve(req));
                let io = WriteTimeout::new(
                    TokioIo::new(stream),
                    cfg.write_timeout,
                    cfg.header_read_timeout,
                );
                // With upgrades: a WebSocket session (the Realtime API) takes the connection
                // over once the proxy answers 101.
                let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
                let conn = graceful.watch(conn);
                conns.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            // Reap ended connections so the set holds only live ones.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let began = tokio::time::Instant::now();
    let drained = tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown())
        .await
        .is_ok();
    // WebSocket sessions left their HTTP connections at the upgrade: ended here, in what is
    // left of the grace, so that their calls are settled before the final budget snapshot.
    let left = cfg.shutdown_grace.saturating_sub(began.elapsed());
    let drained = proxy.end_upgrades(left).await && drained;
    // Past the grace: drop what is left and wait until it is gone (each call finishes on drop).
    if !drained {
        proxy.mark_aborting();
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    drained
}

/// The admin listener's wait for a request's head (and a connection's first byte).
const ADMIN_HEADER_READ: Duration = Duration::from_secs(10);
/// The admin listener's longest pending write.
const ADMIN_WRITE: Duration = Duration::from_secs(30);
/// Admin connections open at once.
const ADMIN_CONNECTIONS: usize = 256;
/// Concurrent HTTP/2 streams per admin connection.
const ADMIN_STREAMS: u32 = 8;

/// Serve the admin listener until `stop` turns true.
pub(super) async fn serve_admin(
    listener: TcpListener,
    admin: Arc<Admin>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_READ);
    // A scraper or an operator needs a few streams; each may hold a rendered metrics text.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(ADMIN_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let open = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Past the bound a connection is closed at once: the listener is reachable from
                // the pod network, and each connection holds memory.
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let admin = admin.clone();
                let svc = service_fn(move |req| admin.clone().serve(req));
                // As on the proxy's listener: a connection that sends nothing, or stops reading
                // what it asked for, is closed rather than held for good.
                let io = WriteTimeout::new(TokioIo::new(stream), ADMIN_WRITE, ADMIN_HEADER_READ);
                let conn = builder.serve_connection(io, svc).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            _ = stop.changed() => break,
        }
    }
}
