//! The pooled HTTP client every outbound call uses (routes, the alert webhook, OTLP export):
//! hyper-util's legacy client over rustls, HTTP/1.1 and HTTP/2 by ALPN.
//!
//! Plain-HTTP upstreams are driven by the request's task instead ([`driven`]).
//!
//! A transparent proxy uses the client directly (no reqwest) so headers and bodies pass through
//! untouched. Trust roots are the webpki set plus an optional per-route PEM file.

use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::UpstreamConfig;

pub mod driven;
mod worker;

pub use worker::{set_worker, worker};

/// The client type every route uses.
pub type UpstreamClient = Client<Connector, Full<Bytes>>;

/// An upstream response's body: from the pooled client, or read from a connection the reading
/// task drives ([`driven`]).
pub enum UpstreamBody {
    /// hyper's body, fed by the pooled client's connection task.
    Pooled(hyper::body::Incoming),
    /// A plain-HTTP upstream's body.
    Driven(driven::DrivenBody),
    /// A body the proxy already read whole (an error answer it looked into), given on as is.
    Read(Option<Bytes>),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Pooled(b) => Pin::new(b).poll_frame(cx),
            Self::Driven(b) => Pin::new(b).poll_frame(cx),
            Self::Read(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Pooled(b) => b.is_end_stream(),
            Self::Driven(b) => b.is_end_stream(),
            Self::Read(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Pooled(b) => b.size_hint(),
            Self::Driven(b) => b.size_hint(),
            Self::Read(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// The connection hyper-rustls makes (plain TCP or TLS).
type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// hyper-rustls's connector, its connections [`Nudged`], TCP and TLS together bounded by the
/// connect timeout.
#[derive(Clone)]
pub struct Connector {
    https: HttpsConnector<HttpConnector>,
    connect_timeout: std::time::Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Nudged<Stream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.https.call(uri);
        let limit = self.connect_timeout;
        // HttpConnector's own timeout bounds TCP only: an upstream that accepts TCP and never
        // finishes the TLS handshake would otherwise hold the call until the first-byte
        // timeout. Boxed: once per new connection, not per request.
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map(Nudged),
                // The kind HttpConnector's own TCP timeout reports, so both read alike.
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TCP+TLS connect timed out",
                )) as Self::Error),
            }
        })
    }
}

/// An upstream connection that wakes its connection task once after each write.
///
/// hyper's HTTP/1 client task registers for "the caller dropped the response future" only when
/// it polls for the response head, which after writing a request it does on the next wake-up:
/// with nothing else to wake it (an upstream still thinking, a client that went away), the
/// request's cancellation went unnoticed until the response came, and the upstream kept
/// generating (and billing) an answer nobody reads. The one extra poll per write lets it
/// register at once.
pub struct Nudged<T>(T);

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Nudged<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Nudged<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.get_mut().0).poll_write(cx, buf);
        nudge(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs);
        nudge(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Wake the writing task once when `written` wrote something.
fn nudge(cx: &Context<'_>, written: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
    if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
        cx.waker().wake_by_ref();
    }
    written
}

impl<T: Connection> Connection for Nudged<T> {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

/// One pooled client per worker thread, so a request's upstream connection (and the task that
/// drives it) lives on the thread that serves the request: no wake-up crosses threads.
pub struct Pools {
    clients: Box<[UpstreamClient]>,
}

impl Pools {
    /// The calling thread's client (worker index modulo the pools, so any thread gets one).
    pub fn get(&self) -> &UpstreamClient {
        let i = worker().unwrap_or(0) % self.clients.len();
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
    let https = Connector {
        https,
        connect_timeout: t.connect_timeout,
    };
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
