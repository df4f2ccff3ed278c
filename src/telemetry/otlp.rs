//! OTLP span export: the exporter (gRPC or HTTP/protobuf), the resource, and a bounded queue
//! drained by one tokio task that exports in batches.
//!
//! Finished spans go into a bounded channel with `try_send`: a full queue drops the span and
//! counts it in `tokenwarden_spans_dropped_total`, so a slow or dead collector never slows a
//! request. The task exports a batch when it is full or the schedule delay since its first span
//! is over, one export at a time. A failed export counts its spans
//! as dropped and backs off before the next attempt, so a collector that is down costs one
//! connection attempt per backoff period, not one per span.

use std::time::Duration;

use metrics::counter;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use crate::config::{OtlpConfig, OtlpProtocol};
use crate::telemetry::metrics as m;

/// Spans waiting for export before new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
pub const DEFAULT_QUEUE: usize = 2048;
/// Largest batch per export call (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const DEFAULT_BATCH: usize = 512;
/// Longest wait for a batch to fill (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds). Shorter than the
/// SDK's 5 s so spans show up promptly; a full batch goes at once either way.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(200);
/// How often a forming batch checks whether it is full.
const LINGER_TICK: Duration = Duration::from_millis(10);
/// Export deadline when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause after a failed export; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between export attempts while the collector fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The exporter could not be built from the config.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct ExporterError(String);

/// Kubernetes downward-API variables read into the resource, and the attribute each sets.
pub const K8S_ENV: [(&str, &str); 3] = [
    ("POD_NAME", "k8s.pod.name"),
    ("POD_NAMESPACE", "k8s.namespace.name"),
    ("NODE_NAME", "k8s.node.name"),
];

/// Sends finished spans to the export task; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpanSink {
    spans: mpsc::Sender<SpanData>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

// === impl SpanSink ===

impl SpanSink {
    /// Queue a finished span; a full queue drops it (counted), never waits.
    pub fn submit(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            counter!(m::SPANS_DROPPED_TOTAL).increment(1);
        }
    }

    /// Whether the queue is full: a span finished now would be dropped, so it need not be built.
    pub fn is_full(&self) -> bool {
        self.spans.capacity() == 0
    }

    /// Count a span dropped before it was built (the queue was full).
    pub fn dropped(&self) {
        counter!(m::SPANS_DROPPED_TOTAL).increment(1);
    }

    /// A sink whose spans the caller reads (unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(capacity: usize) -> (Self, mpsc::Receiver<SpanData>) {
        let (spans, rx) = mpsc::channel(capacity);
        let (flush, _) = mpsc::channel(1);
        (Self { spans, flush }, rx)
    }

    /// Export everything queued so far; waits at most `within`.
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.flush.try_send(tx).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}

/// Build the exporter for `config` and start the export task on the current runtime.
pub fn start(config: &OtlpConfig, service_name: &str) -> Result<SpanSink, ExporterError> {
    let mut exporter = build_exporter(config)?;
    exporter.set_resource(&resource(service_name));
    let queue = env_usize("OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(DEFAULT_QUEUE);
    let batch = env_usize("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        .unwrap_or(DEFAULT_BATCH)
        .min(queue);
    let (spans_tx, spans_rx) = mpsc::channel(queue.max(1));
    let (flush_tx, flush_rx) = mpsc::channel(4);
    let delay = env_usize("OTEL_BSP_SCHEDULE_DELAY")
        .map_or(DEFAULT_DELAY, |ms| Duration::from_millis(ms as u64));
    tokio::spawn(run(exporter, spans_rx, flush_rx, batch.max(1), delay));
    Ok(SpanSink {
        spans: spans_tx,
        flush: flush_tx,
    })
}

/// `service.name` (from `OTEL_SERVICE_NAME` when set, else the config), `service.version`,
/// `OTEL_RESOURCE_ATTRIBUTES`, and the pod, namespace and node from the downward API.
pub fn resource(service_name: &str) -> Resource {
    let mut builder = Resource::builder();
    let from_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty());
    if !from_env {
        builder = builder.with_service_name(service_name.to_string());
    }
    builder = builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    for (var, key) in K8S_ENV {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                builder = builder.with_attribute(KeyValue::new(key, v));
            }
        }
    }
    builder.build()
}

fn build_exporter(config: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, ExporterError> {
    let timeout = export_timeout();
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(timeout);
            if config.endpoint.starts_with("https://") {
                b = b.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_webpki_roots(),
                );
            }
            b.build()
        }
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(http_traces_url(&config.endpoint))
            .with_timeout(timeout)
            .with_http_client(http_client(timeout)?)
            .build(),
    };
    built.map_err(|e| ExporterError(e.to_string()))
}

/// The OTLP/HTTP traces URL: the endpoint as given when it names a path, else `/v1/traces`
/// under it (the spec's rule for `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn http_traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, r)| r);
    if after_scheme.contains('/') {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// hyper over rustls (ring, webpki roots): the same TLS stack the proxy uses upstream.
fn http_client(
    timeout: Duration,
) -> Result<
    opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    ExporterError,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ExporterError(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(opentelemetry_http::hyper::HyperClient::new(
        https, timeout, None,
    ))
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds).
fn export_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find_map(env_usize)
    .map_or(DEFAULT_TIMEOUT, |ms| Duration::from_millis(ms as u64))
}

fn env_usize(var: &str) -> Option<usize> {
    std::env::var(var).ok()?.trim().parse().ok()
}

/// The export loop: one export at a time, batches of what is queued, backoff on failure.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    batch_size: usize,
    delay: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        let mut ack = None;
        tokio::select! {
            n = spans.recv_many(&mut batch, batch_size) => {
                if n == 0 {
                    return; // every sender is gone
                }
            }
            Some(tx) = flushes.recv() => {
                take_queued(&mut spans, &mut batch, batch_size);
                ack = Some(tx);
            }
        }
        if ack.is_none() {
            // Let a batch form: until it is full or the delay since its first span is over.
            // Polled on a coarse tick rather than woken per span, so queueing a span never
            // wakes this task.
            let deadline = tokio::time::Instant::now() + delay;
            while batch.len() + spans.len() < batch_size {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep((deadline - now).min(LINGER_TICK)) => {}
                    Some(tx) = flushes.recv() => {
                        ack = Some(tx);
                        break;
                    }
                }
            }
            take_queued(&mut spans, &mut batch, batch_size);
        }
        loop {
            let n = batch.len();
            if n > 0 {
                match exporter.export(std::mem::take(&mut batch)).await {
                    Ok(()) => {
                        backoff = MIN_BACKOFF;
                        if std::mem::replace(&mut failing, false) {
                            tracing::info!("span export recovered");
                        }
                    }
                    Err(e) => {
                        counter!(m::SPANS_DROPPED_TOTAL).increment(n as u64);
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %e, "span export failed; spans are dropped until it recovers");
                        }
                        if ack.is_none() {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
            // A flush exports everything queued before it was asked for, batch by batch.
            if ack.is_some() && !spans.is_empty() {
                take_queued(&mut spans, &mut batch, batch_size);
                continue;
            }
            break;
        }
        if let Some(tx) = ack {
            let _ = tx.send(());
        }
    }
}

/// Move what is queued right now (up to `max`) into `batch`, without waiting.
fn take_queued(spans: &mut mpsc::Receiver<SpanData>, batch: &mut Vec<SpanData>, max: usize) {
    while batch.len() < max {
        match spans.try_recv() {
            Ok(s) => batch.push(s),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_the_service_and_the_pod() {
        // The only test in this crate that reads these variables.
        std::env::set_var("POD_NAME", "tw-7d9f");
        std::env::set_var("POD_NAMESPACE", "agents");
        std::env::set_var("NODE_NAME", "node-3");
        let r = resource("svc-from-config");
        let get = |k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get("k8s.pod.name").as_deref(), Some("tw-7d9f"));
        assert_eq!(get("k8s.namespace.name").as_deref(), Some("agents"));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-3"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            assert_eq!(get("service.name").as_deref(), Some("svc-from-config"));
        }
    }

    #[test]
    fn http_url_gets_the_traces_path_only_when_none_is_given() {
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("https://c.example/otlp/v1/traces"),
            "https://c.example/otlp/v1/traces"
        );
    }
}
