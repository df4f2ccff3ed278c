//! Sending one encoded batch to the collector: OTLP/gRPC over tonic, or OTLP/HTTP protobuf
//! over hyper with our rustls stack. Both trust the webpki roots plus the CA file named by
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`.

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use std::path::PathBuf;

use super::batch::Batch;
use super::ExporterError;
use crate::config::{OtlpConfig, OtlpProtocol};
use crate::proxy::upstream::{add_pem, client_tls};

/// The gRPC method every OTLP trace export calls.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Most of an HTTP response body we read (the answer is a small protobuf message).
const MAX_RESPONSE: usize = 64 * 1024;
/// `User-Agent` of export requests, as the OTLP exporter spec asks.
const USER_AGENT: &str = concat!("tokenwarden/", env!("CARGO_PKG_VERSION"));

/// An export that did not go through; its spans are lost.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The collector answered with a gRPC error status.
    #[error("gRPC status {code:?}: {message}")]
    Grpc {
        /// Status code.
        code: tonic::Code,
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
        let mut map = HeaderMap::new();
        map.extend(headers);
        // The webpki roots, plus the CA file when one is given (checked here either way, so a
        // bad file stops the start even for an http:// endpoint).
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let ca_pem = match &ca {
            Some((var, path)) => {
                let shown = path.display().to_string();
                let pem = std::fs::read(path)
                    .map_err(|e| ExporterError(format!("{var}: cannot read {shown}: {e}")))?;
                add_pem(&mut roots, &pem, &shown)
                    .map_err(|e| ExporterError(format!("{var}: {e}")))?;
                Some(pem)
            }
            None => None,
        };
        Ok(match config.protocol {
            OtlpProtocol::Grpc => Self::Grpc(Grpc::new(&config.endpoint, timeout, map, ca_pem)?),
            OtlpProtocol::Http => Self::Http(Http::new(&config.endpoint, timeout, map, roots)?),
        })
    }

    /// Send `batch`; gives up after `timeout`.
    pub async fn export(
        &mut self,
        batch: Batch,
        timeout: Duration,
    ) -> Result<Accepted, ExportError> {
        let sent = async {
            match self {
                Self::Grpc(g) => g.export(batch).await,
                Self::Http(h) => h.export(batch).await,
            }
        };
        tokio::time::timeout(timeout, sent)
            .await
            .unwrap_or(Err(ExportError::Timeout(timeout)))
    }
}

/// OTLP/gRPC: `TraceService/Export` over a tonic channel that reconnects on its own.
#[derive(Debug)]
pub struct Grpc {
    client: tonic::client::Grpc<tonic::transport::Channel>,
    metadata: tonic::metadata::MetadataMap,
}

impl Grpc {
    fn new(
        endpoint: &str,
        timeout: Duration,
        headers: HeaderMap,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, ExporterError> {
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| ExporterError(format!("endpoint {endpoint:?}: {e}")))?
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .map_err(|e| ExporterError(e.to_string()))?;
        if endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            ep = ep
                .tls_config(tls)
                .map_err(|e| ExporterError(e.to_string()))?;
        }
        Ok(Self {
            client: tonic::client::Grpc::new(ep.connect_lazy()),
            metadata: tonic::metadata::MetadataMap::from_headers(headers),
        })
    }

    async fn export(&mut self, batch: Batch) -> Result<Accepted, ExportError> {
        self.client
            .ready()
            .await
            .map_err(|e| ExportError::Transport(e.to_string()))?;
        let mut request = tonic::Request::new(batch);
        *request.metadata_mut() = self.metadata.clone();
        let response = self
            .client
            .unary(request, PathAndQuery::from_static(GRPC_EXPORT), BatchCodec)
            .await
            .map_err(|s| ExportError::Grpc {
                code: s.code(),
                message: s.message().to_string(),
            })?;
        Ok(response.into_inner().into())
    }
}

/// Writes the pre-encoded batch as the request message; decodes the collector's answer.
#[derive(Debug, Clone, Copy)]
struct BatchCodec;

impl Codec for BatchCodec {
    type Encode = Batch;
    type Decode = ExportTraceServiceResponse;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for BatchCodec {
    type Item = Batch;
    type Error = tonic::Status;

    fn encode(&mut self, batch: Batch, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.reserve(batch.encoded_len());
        batch.encode(dst);
        Ok(())
    }
}

impl Decoder for BatchCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        // An OK whose message does not decode still delivered the spans (as over HTTP).
        Ok(Some(
            ExportTraceServiceResponse::decode(src).unwrap_or_default(),
        ))
    }
}

/// OTLP/HTTP: `POST {endpoint}/v1/traces` with an `application/x-protobuf` body.
#[derive(Debug)]
pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
}

impl Http {
    fn new(
        endpoint: &str,
        timeout: Duration,
        headers: HeaderMap,
        roots: rustls::RootCertStore,
    ) -> Result<Self, ExporterError> {
        let url = traces_url(endpoint);
        let url: Uri = url
            .parse()
            .map_err(|e| ExporterError(format!("endpoint {url:?}: {e}")))?;
        let tls = client_tls(roots).map_err(|e| ExporterError(e.to_string()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            url,
            headers,
        })
    }

    async fn export(&mut self, batch: Batch) -> Result<Accepted, ExportError> {
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::from(batch.to_vec())))
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
        // A success with a body that is not the protobuf answer still delivered the spans.
        Ok(ExportTraceServiceResponse::decode(body)
            .map(Accepted::from)
            .unwrap_or_default())
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
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, r)| r);
    if after_scheme.contains('/') {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
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
