//! An in-process OTLP receiver for tests, on 127.0.0.1 port 0: gRPC (tonic, the generated
//! `TraceService` and `MetricsService`) or HTTP/protobuf (hyper, prost decode of
//! `POST /v1/traces` and `/v1/metrics`). It keeps every decoded span with its resource, the raw
//! protobuf bytes of the spans, and every metrics export request.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// One received span with its resource attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<Received>>,
    raw: Mutex<Vec<u8>>,
    /// Request headers (gRPC metadata) of every export.
    headers: Mutex<Vec<http::HeaderMap>>,
    /// `partial_success.rejected_spans` to answer each export with.
    reject: std::sync::atomic::AtomicI64,
    /// Refuse exports: gRPC UNAVAILABLE, HTTP 503.
    unavailable: std::sync::atomic::AtomicBool,
    /// Every metrics export request.
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
}

/// The message an unavailable receiver answers with (characters gRPC percent-encodes).
pub const UNAVAILABLE_MESSAGE: &str = "collector busy: retry in 5 s (100%)";

impl Store {
    fn answer(&self, headers: http::HeaderMap) -> ExportTraceServiceResponse {
        self.headers.lock().unwrap().push(headers);
        let rejected_spans = self.reject.load(std::sync::atomic::Ordering::Relaxed);
        ExportTraceServiceResponse {
            partial_success: (rejected_spans > 0).then(|| {
                opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans,
                    error_message: "rejected by the test receiver".into(),
                }
            }),
        }
    }
}

impl Store {
    fn take(&self, req: &ExportTraceServiceRequest, raw: &[u8]) {
        self.raw.lock().unwrap().extend_from_slice(raw);
        let mut spans = self.spans.lock().unwrap();
        for rs in &req.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    spans.push(Received {
                        span: s.clone(),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    store: Arc<Store>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        if self
            .0
            .unavailable
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.0.headers.lock().unwrap().push(headers);
            return Err(tonic::Status::unavailable(UNAVAILABLE_MESSAGE));
        }
        let req = request.into_inner();
        self.0.take(&req, &req.encode_to_vec());
        Ok(tonic::Response::new(self.0.answer(headers)))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Both OTLP services on one port, by the method's path (tonic's router needs a feature that
/// brings in axum).
#[derive(Clone)]
struct Both {
    traces: TraceServiceServer<Grpc>,
    metrics: MetricsServiceServer<Grpc>,
}

impl tonic::server::NamedService for Both {
    const NAME: &'static str = "opentelemetry.proto.collector";
}

impl<B> tonic::codegen::Service<http::Request<B>> for Both
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req
            .uri()
            .path()
            .starts_with("/opentelemetry.proto.collector.metrics.")
        {
            self.metrics.call(req)
        } else {
            self.traces.call(req)
        }
    }
}

impl Receiver {
    /// OTLP/gRPC on 127.0.0.1:0; the endpoint is `http://ADDR`.
    /// A plain-text receiver speaking `protocol` (`grpc` or `http`).
    pub async fn speaking(protocol: &str) -> Receiver {
        match protocol {
            "grpc" => Self::grpc().await,
            _ => Self::http().await,
        }
    }

    pub async fn grpc() -> Receiver {
        Self::grpc_with(tonic::transport::Server::builder()).await
    }

    /// OTLP/HTTP protobuf on 127.0.0.1:0; the endpoint is `http://ADDR` (`/v1/traces`).
    pub async fn http() -> Receiver {
        Self::http_with(None).await
    }

    /// OTLP/HTTP protobuf over TLS (`https://localhost:PORT`) with `config`'s certificate.
    pub async fn https(config: rustls::ServerConfig) -> Receiver {
        Self::http_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    /// OTLP/gRPC over TLS (`https://localhost:PORT`) with the PEM certificate and key.
    pub async fn grpc_tls(cert_pem: &str, key_pem: &str) -> Receiver {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        let server = tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("server TLS config");
        Self::grpc_with(server).await
    }

    async fn grpc_with(server: tonic::transport::Server) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Store::default());
        let svc = Both {
            traces: TraceServiceServer::new(Grpc(store.clone())),
            metrics: MetricsServiceServer::new(Grpc(store.clone())),
        };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let _ = server.serve_with_incoming(svc, incoming).await;
        });
        Receiver { addr, store, task }
    }

    async fn http_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Store::default());
        let st = store.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            if req.uri().path() == "/v1/metrics" {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let status = match ExportMetricsServiceRequest::decode(body) {
                                    Ok(r) => {
                                        st.metrics.lock().unwrap().push(r);
                                        200
                                    }
                                    Err(_) => 400,
                                };
                                let answer = ExportMetricsServiceResponse::default();
                                return Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::from(answer.encode_to_vec())))
                                        .unwrap(),
                                );
                            }
                            let ok_path = req.uri().path() == "/v1/traces";
                            let headers = req.headers().clone();
                            let ct = req
                                .headers()
                                .get("content-type")
                                .map(|v| v.to_str().unwrap_or("").to_string())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status =
                                if st.unavailable.load(std::sync::atomic::Ordering::Relaxed) {
                                    503
                                } else if !ok_path {
                                    404
                                } else if ct != "application/x-protobuf" {
                                    415
                                } else {
                                    match ExportTraceServiceRequest::decode(body.clone()) {
                                        Ok(r) => {
                                            st.take(&r, &body);
                                            200
                                        }
                                        Err(_) => 400,
                                    }
                                };
                            let resp = st.answer(headers);
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::from(resp.encode_to_vec())))
                                    .unwrap(),
                            )
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http1
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = http1
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Receiver { addr, store, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The endpoint of a TLS receiver (its certificate names `localhost`).
    pub fn tls_endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Request headers of every export so far.
    pub fn headers(&self) -> Vec<http::HeaderMap> {
        self.store.headers.lock().unwrap().clone()
    }

    /// Answer every export from now on with `n` spans rejected (partial success).
    /// Refuse every export from now on (`true`) or take them again (`false`).
    pub fn set_unavailable(&self, on: bool) {
        self.store
            .unavailable
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn reject(&self, n: i64) {
        self.store
            .reject
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.store.spans.lock().unwrap().clone()
    }

    /// Every metrics export request received so far.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.store.metrics.lock().unwrap().clone()
    }

    /// Every protobuf byte received so far.
    pub fn raw(&self) -> Vec<u8> {
        self.store.raw.lock().unwrap().clone()
    }

    /// Wait (up to 20 s) until a span matching `f` arrives, and return it.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.spans().into_iter().find(|r| f(r)) {
                return r;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no span {what} within 20 s; received: {:#?}",
                    self.spans()
                        .iter()
                        .map(|r| (&r.span.name, attrs(&r.span)))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A decoded attribute value, simplified for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    S(String),
    I(i64),
    F(f64),
    B(bool),
    A(Vec<V>),
    Other,
}

pub fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> V {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => V::S(s.clone()),
        Some(AnyValue::IntValue(i)) => V::I(*i),
        Some(AnyValue::DoubleValue(f)) => V::F(*f),
        Some(AnyValue::BoolValue(b)) => V::B(*b),
        Some(AnyValue::ArrayValue(a)) => {
            V::A(a.values.iter().map(|x| value(&Some(x.clone()))).collect())
        }
        _ => V::Other,
    }
}

/// A span's attributes by key.
pub fn attrs(span: &Span) -> HashMap<String, V> {
    kvs(&span.attributes)
}

pub fn kvs(list: &[KeyValue]) -> HashMap<String, V> {
    list.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

pub fn s(v: &str) -> V {
    V::S(v.to_string())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
