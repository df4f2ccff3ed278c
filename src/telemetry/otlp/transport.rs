//! Sending one encoded batch (spans) or request (metrics) to the collector: OTLP/gRPC (a unary gRPC call over HTTP/2), or
//! OTLP/HTTP protobuf, both over hyper with our rustls stack. Both trust the webpki roots plus
//! the CA file named by `OTEL_EXPORTER_OTLP_CERTIFICATE`.
//!
//! Neither copies the spans: a request body is the encoded head of the request followed by
//! the span queue's own buffer. (The gRPC call is written here rather than through tonic
//! because tonic's codec copies every message into its own buffer, and a batch is ~0.5 MB.)

use std::time::Duration;

use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use super::batch::Batch;
use crate::config::{OtlpConfig, OtlpProtocol};
use crate::http_client::{add_pem, client_tls};

/// The exporter could not be built from the config.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct ExporterError(pub(super) String);

/// What a transport exports: its gRPC method and its OTLP/HTTP path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans: `TraceService/Export`, `/v1/traces`.
    Traces,
    /// Metrics: `MetricsService/Export`, `/v1/metrics`.
    Metrics,
}

impl Signal {
    /// The gRPC method an export calls.
    fn grpc_method(self) -> &'static str {
        match self {
            Self::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Self::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        }
    }

    /// The OTLP/HTTP path appended to an endpoint that names none.
    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "/v1/traces",
            Self::Metrics => "/v1/metrics",
        }
    }
}
/// Most of an HTTP response body we read (the answer is a small protobuf message).
const MAX_RESPONSE: usize = 64 * 1024;
/// `User-Agent` of export requests, as the OTLP exporter spec asks.
const USER_AGENT: &str = concat!("tokenwarden/", env!("CARGO_PKG_VERSION"));

/// An export that did not go through; its spans are lost.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The collector answered with a gRPC error status.
    #[error("gRPC status {} ({code}): {message}", grpc_code_name(*code))]
    Grpc {
        /// Status code.
        code: u32,
        /// Status message.
        message: String,
    },
    /// The collector answered with an HTTP error status.
    #[error("HTTP status {0}")]
    Http(StatusCode),
    /// No answer: connection refused or reset, TLS failure.
    #[error("{0}")]
    Transport(String),
    /// No answer within the export timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What the collector said about an export it took.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Spans it rejected (`partial_success.rejected_spans`).
    pub rejected: u64,
    /// Why, when it rejected some.
    pub message: String,
}

impl From<ExportTraceServiceResponse> for Accepted {
    fn from(r: ExportTraceServiceResponse) -> Self {
        r.partial_success.map_or_else(Self::default, |p| Self {
            rejected: u64::try_from(p.rejected_spans).unwrap_or(0),
            message: p.error_message,
        })
    }
}

/// A connection to the collector, by the configured protocol.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per process, owned by the export task
pub enum Transport {
    /// OTLP/gRPC.
    Grpc(Grpc),
    /// OTLP/HTTP with protobuf bodies.
    Http(Http),
}

impl Transport {
    /// A transport for `config`; connects lazily, so a collector that is down does not stop
    /// the proxy from starting.
    pub fn new(
        config: &OtlpConfig,
        timeout: Duration,
        headers: Vec<(HeaderName, HeaderValue)>,
        ca: Option<(&'static str, PathBuf)>,
    ) -> Result<Self, ExporterError> {
        Self::for_signal(Signal::Traces, config, timeout, headers, ca)
    }

    /// A transport exporting `signal` (see [`Transport::new`]).
    pub fn for_signal(
        signal: Signal,
        config: &OtlpConfig,
        timeout: Duration,
        headers: Vec<(HeaderName, HeaderValue)>,
        ca: Option<(&'static str, PathBuf)>,
    ) -> Result<Self, ExporterError> {
        let mut map = HeaderMap::new();
        map.extend(headers);
        // The webpki roots, plus the CA file when one is given (checked here either way, so a
        // bad file stops the start even for an http:// endpoint).
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some((var, path)) = &ca {
            let shown = path.display().to_string();
            let pem = std::fs::read(path)
                .map_err(|e| ExporterError(format!("{var}: cannot read {shown}: {e}")))?;
            add_pem(&mut roots, &pem, &shown).map_err(|e| ExporterError(format!("{var}: {e}")))?;
        }
        Ok(match config.protocol {
            OtlpProtocol::Grpc => {
                Self::Grpc(Grpc::new(signal, &config.endpoint, timeout, map, roots)?)
            }
            OtlpProtocol::Http => {
                Self::Http(Http::new(signal, &config.endpoint, timeout, map, roots)?)
            }
        })
    }

    /// Send one encoded export request of the transport's signal (a metrics request); the
    /// answer's protobuf message is not read. Gives up after `timeout`.
    pub async fn export_message(
        &mut self,
        message: Bytes,
        timeout: Duration,
    ) -> Result<(), ExportError> {
        self.timed(Payload::Message(message), timeout)
            .await
            .map(drop)
    }

    /// Send `batch`; gives up after `timeout`.
    pub async fn export(
        &mut self,
        batch: Batch,
        timeout: Duration,
    ) -> Result<Accepted, ExportError> {
        self.timed(Payload::Spans(batch), timeout).await
    }

    /// Send `payload` within `timeout`; a gRPC call that timed out gives up its connection.
    async fn timed(
        &mut self,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Accepted, ExportError> {
        let sent = async {
            match (&mut *self, payload) {
                (Self::Grpc(g), Payload::Spans(b)) => g.export(b).await,
                (Self::Http(h), Payload::Spans(b)) => h.export(b).await,
                (Self::Grpc(g), Payload::Message(m)) => {
                    g.send(m, Bytes::new()).await.map(|_| Accepted::default())
                }
                (Self::Http(h), Payload::Message(m)) => {
                    h.send(m, Bytes::new()).await.map(|_| Accepted::default())
                }
            }
        };
        let result = tokio::time::timeout(timeout, sent)
            .await
            .unwrap_or(Err(ExportError::Timeout(timeout)));
        if let (Err(ExportError::Timeout(_)), Self::Grpc(g)) = (&result, &mut *self) {
            g.reconnect();
        }
        result
    }
}

/// What one export sends.
enum Payload {
    /// A span batch (its answer's partial success is read).
    Spans(Batch),
    /// A whole encoded request (metrics).
    Message(Bytes),
}

/// OTLP/gRPC: `TraceService/Export`, a unary gRPC call over HTTP/2 (h2c for `http://`, TLS
/// with ALPN `h2` for `https://`) on one pooled connection that reconnects on its own.
#[derive(Debug)]
pub struct Grpc {
    client: Client<HttpsConnector<HttpConnector>, Full<Chain<Bytes, Bytes>>>,
    /// To open a new connection after one stopped answering.
    https: HttpsConnector<HttpConnector>,
    url: Uri,
    /// The gRPC request headers and the configured ones.
    headers: HeaderMap,
}

impl Grpc {
    fn new(
        signal: Signal,
        endpoint: &str,
        timeout: Duration,
        headers: HeaderMap,
        roots: rustls::RootCertStore,
    ) -> Result<Self, ExporterError> {
        let url = grpc_url(endpoint, signal.grpc_method())
            .ok_or_else(|| ExporterError(format!("endpoint {endpoint:?}: not an http(s) URL")))?;
        let https = connector(roots, timeout, Alpn::H2)?;
        let mut all = HeaderMap::new();
        all.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        all.insert(header::TE, HeaderValue::from_static("trailers"));
        all.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        // The collector may stop work the exporter has given up on.
        if let Ok(v) = HeaderValue::from_str(&grpc_timeout(timeout)) {
            all.insert(HeaderName::from_static("grpc-timeout"), v);
        }
        all.extend(headers);
        Ok(Self {
            client: Self::client(https.clone()),
            https,
            url,
            headers: all,
        })
    }

    fn client(
        https: HttpsConnector<HttpConnector>,
    ) -> Client<HttpsConnector<HttpConnector>, Full<Chain<Bytes, Bytes>>> {
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(https)
    }

    /// Drop the pooled connection: every export shares one HTTP/2 connection, and one whose
    /// collector stopped answering (a hung process, a host gone without a reset) would
    /// otherwise time out every export until the kernel gives up on it, minutes later.
    fn reconnect(&mut self) {
        self.client = Self::client(self.https.clone());
    }

    async fn export(&mut self, batch: Batch) -> Result<Accepted, ExportError> {
        let (head, spans) = batch.into_parts();
        let message = self.send(head, spans).await?;
        Ok(match message.first() {
            Some(0) if message.len() >= 5 => ExportTraceServiceResponse::decode(&message[5..])
                .map_or_else(|_| Accepted::default(), Accepted::from),
            _ => Accepted::default(),
        })
    }

    /// One unary call whose request message is `head` then `rest`; the answer's gRPC message
    /// (length prefix included) once the status says OK.
    async fn send(&mut self, head: Bytes, rest: Bytes) -> Result<Bytes, ExportError> {
        let spans = rest;
        let len = u32::try_from(head.len() + spans.len())
            .map_err(|_| ExportError::Transport("batch over 4 GiB".into()))?;
        // The gRPC message prefix: not compressed, then the length.
        let mut first = Vec::with_capacity(5 + head.len());
        first.push(0);
        first.extend_from_slice(&len.to_be_bytes());
        first.extend_from_slice(&head);
        let mut request = Request::post(self.url.clone())
            .body(Full::new(Buf::chain(Bytes::from(first), spans)))
            .map_err(|e| ExportError::Transport(e.to_string()))?;
        *request.headers_mut() = self.headers.clone();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ExportError::Transport(with_causes(&e)))?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            // A grpc-status, when there is one, says more than the HTTP status.
            if let Some(err) = grpc_error(&parts.headers) {
                return Err(err);
            }
            return Err(ExportError::Grpc {
                code: grpc_code_for_http(parts.status),
                message: format!("HTTP status {}", parts.status),
            });
        }
        // A "trailers-only" answer carries its status in the headers, with no message.
        if let Some(err) = grpc_error(&parts.headers) {
            return Err(err);
        }
        let collected = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ExportError::Transport(with_causes(&*e)))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        if !trailers.contains_key(GRPC_STATUS) && !parts.headers.contains_key(GRPC_STATUS) {
            return Err(ExportError::Grpc {
                code: GRPC_UNKNOWN,
                message: "the answer has no grpc-status".into(),
            });
        }
        if let Some(err) = grpc_error(&trailers) {
            return Err(err);
        }
        // OK: the data was taken. An answer that does not decode still delivered it.
        Ok(collected.to_bytes())
    }
}

/// The `Export` method's URL at `endpoint`'s scheme and authority (a gRPC endpoint's path, if
/// it has one, is not part of the method's).
fn grpc_url(endpoint: &str, method: &str) -> Option<Uri> {
    let parts = endpoint.parse::<Uri>().ok()?.into_parts();
    let scheme = parts.scheme.filter(|s| s == "http" || s == "https")?;
    // Credentials in the URL have no place in HTTP/2's `:authority`.
    let authority = parts.authority?;
    let host_port = authority.as_str().rsplit('@').next()?;
    Uri::builder()
        .scheme(scheme)
        .authority(host_port)
        .path_and_query(method)
        .build()
        .ok()
}

/// The gRPC status header (in trailers, or in the headers of a trailers-only answer).
const GRPC_STATUS: &str = "grpc-status";
/// gRPC `UNKNOWN`.
const GRPC_UNKNOWN: u32 = 2;

/// The error a `grpc-status` header other than OK stands for.
fn grpc_error(headers: &HeaderMap) -> Option<ExportError> {
    let status = headers.get(GRPC_STATUS)?;
    let code = status
        .to_str()
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(GRPC_UNKNOWN);
    if code == 0 {
        return None;
    }
    // grpc-message is percent-encoded UTF-8.
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    Some(ExportError::Grpc { code, message })
}

/// The gRPC code for an HTTP status other than 200, as gRPC's HTTP mapping gives it.
fn grpc_code_for_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => GRPC_UNKNOWN,
    }
}

/// The name of a gRPC status code, for error messages.
fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// A `grpc-timeout` value: at most eight digits, so whole milliseconds, or seconds when
/// longer.
fn grpc_timeout(timeout: Duration) -> String {
    let ms = timeout.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    }
}

/// The protocol a transport offers in TLS ALPN (and speaks over plain TCP).
enum Alpn {
    H2,
    Http1,
}

/// The connector both transports use: TCP without Nagle delay and with the export timeout to
/// connect, TLS with our rustls configuration for `https://`.
fn connector(
    roots: rustls::RootCertStore,
    timeout: Duration,
    alpn: Alpn,
) -> Result<HttpsConnector<HttpConnector>, ExporterError> {
    let tls = client_tls(roots).map_err(|e| ExporterError(e.to_string()))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    Ok(match alpn {
        Alpn::H2 => builder.enable_http2().wrap_connector(http),
        Alpn::Http1 => builder.enable_http1().wrap_connector(http),
    })
}

/// OTLP/HTTP: `POST {endpoint}/v1/traces` with an `application/x-protobuf` body.
#[derive(Debug)]
pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Chain<Bytes, Bytes>>>,
    url: Uri,
    headers: HeaderMap,
}

impl Http {
    fn new(
        signal: Signal,
        endpoint: &str,
        timeout: Duration,
        headers: HeaderMap,
        roots: rustls::RootCertStore,
    ) -> Result<Self, ExporterError> {
        let url = signal_url(endpoint, signal.http_path());
        let url: Uri = url
            .parse()
            .map_err(|e| ExporterError(format!("endpoint {url:?}: {e}")))?;
        let https = connector(roots, timeout, Alpn::Http1)?;
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            url,
            headers,
        })
    }

    async fn export(&mut self, batch: Batch) -> Result<Accepted, ExportError> {
        let (head, spans) = batch.into_parts();
        let body = self.send(head, spans).await?;
        // A success with a body that is not the protobuf answer still delivered the spans.
        Ok(ExportTraceServiceResponse::decode(body)
            .map(Accepted::from)
            .unwrap_or_default())
    }

    /// One POST whose body is `head` then `spans`; the answer's body once its status is a
    /// success.
    async fn send(&mut self, head: Bytes, spans: Bytes) -> Result<Bytes, ExportError> {
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::USER_AGENT, USER_AGENT)
            // The spans go out from the queue's buffer, not a copy of it.
            .body(Full::new(Buf::chain(head, spans)))
            .map_err(|e| ExportError::Transport(e.to_string()))?;
        request.headers_mut().extend(self.headers.clone());
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ExportError::Transport(with_causes(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !status.is_success() {
            return Err(ExportError::Http(status));
        }
        Ok(body)
    }
}

/// hyper-util's error says only "client error (Connect)"; the reason (refused, TLS: unknown
/// issuer) is further down the chain.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The OTLP/HTTP traces URL for `telemetry.otlp.endpoint`: as given when it names a path, else
/// `/v1/traces` under it. (Unlike `OTEL_EXPORTER_OTLP_ENDPOINT`, which always gets the path
/// appended, a configured path is taken to be the full traces URL.)
pub fn traces_url(endpoint: &str) -> String {
    signal_url(endpoint, Signal::Traces.http_path())
}

/// `endpoint` as given when it names a path, else with `path` appended.
fn signal_url(endpoint: &str, path: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, r)| r);
    if after_scheme.contains('/') {
        trimmed.to_string()
    } else {
        format!("{trimmed}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_gets_the_traces_path_only_when_none_is_given() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces"),
            "https://c.example/otlp/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp"),
            "https://c.example/otlp"
        );
    }

    #[test]
    fn grpc_url_keeps_scheme_and_authority_only() {
        let url = |e: &str| grpc_url(e, Signal::Traces.grpc_method()).map(|u| u.to_string());
        assert_eq!(
            url("http://127.0.0.1:4317").as_deref(),
            Some(
                "http://127.0.0.1:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
        );
        assert_eq!(
            url("https://c.example:4317/ignored/").as_deref(),
            Some(
                "https://c.example:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
        );
        assert_eq!(
            url("http://user:pass@127.0.0.1:4317").as_deref(),
            Some(
                "http://127.0.0.1:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            )
        );
        assert_eq!(url("c.example:4317"), None);
        assert_eq!(url("ftp://c.example"), None);
    }

    #[test]
    fn grpc_status_headers_and_http_statuses_map_to_errors() {
        let mut h = HeaderMap::new();
        assert!(
            grpc_error(&h).is_none(),
            "no status: not an error by itself"
        );
        h.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert!(grpc_error(&h).is_none());
        h.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("collector%20busy%3A%20retry"),
        );
        let e = grpc_error(&h).expect("an error");
        assert_eq!(
            e.to_string(),
            "gRPC status UNAVAILABLE (14): collector busy: retry"
        );
        h.insert(GRPC_STATUS, HeaderValue::from_static("nonsense"));
        assert!(matches!(
            grpc_error(&h),
            Some(ExportError::Grpc { code: 2, .. })
        ));
        assert_eq!(grpc_code_for_http(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(grpc_code_for_http(StatusCode::UNAUTHORIZED), 16);
        assert_eq!(grpc_code_for_http(StatusCode::IM_A_TEAPOT), 2);
        assert_eq!(grpc_code_name(99), "UNKNOWN");
        assert_eq!(grpc_timeout(Duration::from_secs(10)), "10000m");
        assert_eq!(grpc_timeout(Duration::from_secs(400_000)), "400000S");
    }

    #[test]
    fn partial_success_counts_rejected_spans() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
        let full = ExportTraceServiceResponse {
            partial_success: None,
        };
        assert_eq!(Accepted::from(full), Accepted::default());
        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        };
        assert_eq!(
            Accepted::from(partial),
            Accepted {
                rejected: 3,
                message: "too old".into()
            }
        );
    }
}
