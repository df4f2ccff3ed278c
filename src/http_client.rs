//! The pooled HTTP client every outbound call uses (routes, the alert webhook, OTLP export):
//! hyper-util's legacy client over rustls, HTTP/1.1 and HTTP/2 by ALPN.
//!
//! A transparent proxy uses the client directly (no reqwest) so headers and bodies pass through
//! untouched. Trust roots are the webpki set plus an optional per-route PEM file.

use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;

/// The client type every route uses.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

thread_local! {
    /// The worker this thread is (`server.runtime: per_core`); 0 on any other thread.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Mark the current thread as worker `index`: the pools it uses from now on are its own.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// One pooled client per worker thread, so a request's upstream connection (and the task that
/// drives it) lives on the thread that serves the request: no wake-up crosses threads.
pub struct Pools {
    clients: Box<[UpstreamClient]>,
}

impl Pools {
    /// The calling thread's client (worker index modulo the pools, so any thread gets one).
    pub fn get(&self) -> &UpstreamClient {
        let i = WORKER.with(std::cell::Cell::get) % self.clients.len();
        &self.clients[i]
    }
}

/// The TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    BadCa {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Build a pooled client trusting the webpki roots plus `ca_file`.
pub fn build_client(
    ca_file: Option<&Path>,
    t: &UpstreamConfig,
) -> Result<UpstreamClient, TlsError> {
    build(ca_file, t, true)
}

/// `n` (at least one) independent pooled clients, as [`build_client`] or, without `http2`,
/// speaking HTTP/1.1 only (ALPN offers no `h2`: a WebSocket upgrade needs an HTTP/1.1
/// connection); the TLS configuration is built once and shared.
pub fn build_pools(
    ca_file: Option<&Path>,
    t: &UpstreamConfig,
    http2: bool,
    n: usize,
) -> Result<Pools, TlsError> {
    let https = connector(ca_file, t, http2)?;
    let clients = (0..n.max(1)).map(|_| client(https.clone(), t)).collect();
    Ok(Pools { clients })
}

fn build(
    ca_file: Option<&Path>,
    t: &UpstreamConfig,
    http2: bool,
) -> Result<UpstreamClient, TlsError> {
    Ok(client(connector(ca_file, t, http2)?, t))
}

fn connector(
    ca_file: Option<&Path>,
    t: &UpstreamConfig,
    http2: bool,
) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        add_pem_roots(&mut roots, path)?;
    }
    let tls = client_tls(roots)?;

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(t.connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    Ok(if http2 {
        https.enable_http2().wrap_connector(http)
    } else {
        https.wrap_connector(http)
    })
}

fn client(https: HttpsConnector<HttpConnector>, t: &UpstreamConfig) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(t.pool_idle_timeout)
        .pool_max_idle_per_host(t.pool_max_idle_per_host)
        .build(https)
}

/// The rustls client configuration every outgoing TLS connection uses (upstreams, the OTLP
/// collector): the ring provider, safe protocol versions, `roots`, no client certificate.
pub(crate) fn client_tls(
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Add every certificate of the PEM file at `path` to `roots`; none at all is an error.
pub(crate) fn add_pem_roots(
    roots: &mut rustls::RootCertStore,
    path: &Path,
) -> Result<(), TlsError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    add_pem(roots, &pem, &shown)
}

/// Add every certificate of `pem` (read from the file `shown`) to `roots`; none is an error.
pub(crate) fn add_pem(
    roots: &mut rustls::RootCertStore,
    pem: &[u8],
    shown: &str,
) -> Result<(), TlsError> {
    let bad = |reason: String| TlsError::BadCa {
        path: shown.to_string(),
        reason,
    };
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no PEM certificate found".into()));
    }
    Ok(())
}
