//! Metrics over OTLP (gRPC or HTTP/protobuf), beside `/metrics`: every export interval, one
//! task takes the recorder's snapshot (the same text `/metrics` serves), turns it into an
//! `ExportMetricsServiceRequest` (cumulative sums, gauges and explicit-bucket histograms, the
//! GenAI ones under the conventions' names and units, with their exemplars) and sends it over
//! the span exporter's transport. Nothing of this runs on the request path.
//!
//! Settings: `telemetry.otlp_metrics`, overridden by the standard variables
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (which alone turns the export on),
//! `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` (`grpc` | `http/protobuf`),
//! `OTEL_EXPORTER_OTLP_METRICS_{HEADERS,TIMEOUT,CERTIFICATE}` (else the `OTEL_EXPORTER_OTLP_*`
//! ones) and `OTEL_METRIC_EXPORT_INTERVAL` (ms); `OTEL_METRICS_EXPORTER=none` turns it off.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, AggregationTemporality, Exemplar, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::env;
use super::transport::{ExporterError, Signal, Transport};
use crate::config::{OtlpConfig, OtlpMetricsConfig, OtlpProtocol};
use crate::telemetry::exemplars;
use crate::telemetry::metrics as m;

/// Export interval when neither the config nor `OTEL_METRIC_EXPORT_INTERVAL` says (the SDK's).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest interval taken (a collector is not to be flooded by a typo).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Where and how often metrics are pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSettings {
    /// Collector endpoint and protocol.
    pub otlp: OtlpConfig,
    /// Time between exports.
    pub interval: Duration,
}

/// The push settings from `config` and the process environment; `None` when off.
pub fn settings(config: Option<&OtlpMetricsConfig>) -> Option<PushSettings> {
    settings_from(config, &|name| env::var(name))
}

fn settings_from(
    config: Option<&OtlpMetricsConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PushSettings> {
    if env("OTEL_METRICS_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none")) {
        return None;
    }
    let endpoint = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .map(|v| v.trim().to_string())
        .or_else(|| config.map(|c| c.endpoint.clone()))?;
    let protocol = [
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|n| env(n))
    .map(|p| match p.trim() {
        "grpc" => OtlpProtocol::Grpc,
        _ => OtlpProtocol::Http,
    })
    .or_else(|| config.map(|c| c.protocol))
    .unwrap_or_default();
    let interval = env("OTEL_METRIC_EXPORT_INTERVAL")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .or_else(|| config.map(|c| c.interval))
        .unwrap_or(DEFAULT_INTERVAL)
        .max(MIN_INTERVAL);
    Some(PushSettings {
        otlp: OtlpConfig { endpoint, protocol },
        interval,
    })
}

/// The running push task; [`Pusher::shutdown`] sends the last export before the process exits.
#[derive(Debug)]
pub struct Pusher {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Pusher {
    /// Send one last export (what was counted since the previous one would be lost otherwise),
    /// waiting at most `wait`; the task is dropped after that.
    pub async fn shutdown(self, wait: Duration) {
        let Self { mut task, stop } = self;
        let _ = stop.send(());
        if tokio::time::timeout(wait, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Build the metrics transport and start the push task on the current runtime.
pub fn start(
    settings: PushSettings,
    handle: PrometheusHandle,
    service_name: &str,
) -> Result<Pusher, ExporterError> {
    let timeout = env::export_timeout_from("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT");
    let mut transport = Transport::for_signal(
        Signal::Metrics,
        &settings.otlp,
        timeout,
        env::headers_from("OTEL_EXPORTER_OTLP_METRICS_HEADERS"),
        env::certificate_from("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"),
    )?;
    let resource = Resource {
        attributes: env::resource_attributes(service_name)
            .into_iter()
            .map(|(k, v)| string_kv(k, v))
            .collect(),
        ..Resource::default()
    };
    let start = unix_nanos();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: skip it, nothing has been recorded yet.
        tick.tick().await;
        let mut failing = false;
        loop {
            // Shutdown ends the wait early for a last export: the calls counted since the
            // previous tick would never reach the collector otherwise.
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut stopped => true,
            };
            let request = request_from(&handle.render(), resource.clone(), start, unix_nanos());
            let body = Bytes::from(request.encode_to_vec());
            match transport.export_message(body, timeout).await {
                Ok(()) if std::mem::replace(&mut failing, false) => {
                    tracing::info!("metric export recovered");
                }
                Ok(()) => {}
                Err(e) if last => {
                    tracing::warn!(error = %e, "last metric export at shutdown failed");
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "metric export failed; retried every interval");
                    }
                }
            }
            if last {
                return;
            }
        }
    });
    Ok(Pusher { task, stop })
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// The conventions' attribute for a Prometheus label of an OTLP-named metric.
fn attribute_name(label: &str) -> &str {
    match label {
        "gen_ai_operation_name" => "gen_ai.operation.name",
        "gen_ai_provider_name" => "gen_ai.provider.name",
        "gen_ai_request_model" => "gen_ai.request.model",
        "gen_ai_response_model" => "gen_ai.response.model",
        "gen_ai_token_type" => "gen_ai.token.type",
        "gen_ai_token_modality" => "gen_ai.token.modality",
        "error_type" => "error.type",
        "mcp_method_name" => "mcp.method.name",
        other => other,
    }
}

/// One metric family of the text format being converted.
#[derive(Default)]
struct Family<'a> {
    kind: &'a str,
    help: &'a str,
    /// Counter and gauge samples: labels, value.
    numbers: Vec<(Vec<(&'a str, &'a str)>, f64)>,
    /// Histogram series by their labels (`le` excluded): buckets (bound, cumulative count), sum,
    /// count.
    histograms: BTreeMap<Vec<(&'a str, &'a str)>, HistogramSeries>,
}

#[derive(Default)]
struct HistogramSeries {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// The recorder's text (format 0.0.4) as one OTLP export request.
pub fn request_from(
    text: &str,
    resource: Resource,
    start: u64,
    now: u64,
) -> ExportMetricsServiceRequest {
    let mut families: BTreeMap<&str, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                families.entry(name).or_default().help = help;
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                families.entry(name).or_default().kind = kind;
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or(l)),
            None => (series, ""),
        };
        let Some(mut labels) = exemplars::parse_labels(labels) else {
            continue;
        };
        labels.sort_unstable();
        if families.get(name).is_some_and(|f| f.kind != "histogram") {
            if let Some(f) = families.get_mut(name) {
                f.numbers.push((labels, value));
            }
            continue;
        }
        let suffixed = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).map(|base| (base, *s)));
        let Some((base, suffix)) = suffixed else {
            continue;
        };
        let Some(f) = families.get_mut(base).filter(|f| f.kind == "histogram") else {
            continue;
        };
        let le = labels
            .iter()
            .position(|(k, _)| *k == "le")
            .map(|i| labels.remove(i).1);
        let h = f.histograms.entry(labels).or_default();
        match (suffix, le) {
            ("_bucket", Some(le)) => {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                h.buckets.push((bound, value as u64));
            }
            ("_sum", _) => h.sum = value,
            ("_count", _) => h.count = value as u64,
            _ => {}
        }
    }
    let kept = exemplars::index();
    let metrics = families
        .into_iter()
        .filter_map(|(name, f)| metric_of(name, f, &kept, start, now))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "tokenwarden".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

fn metric_of(
    name: &str,
    f: Family,
    kept: &exemplars::Index,
    start: u64,
    now: u64,
) -> Option<Metric> {
    let otel = m::otel_name(name);
    let attrs = |labels: &[(&str, &str)]| -> Vec<KeyValue> {
        labels
            .iter()
            .map(|(k, v)| {
                let key = if otel.is_some() { attribute_name(k) } else { k };
                string_kv(key, exemplars::unescape(v))
            })
            .collect()
    };
    let numbers = || -> Vec<NumberDataPoint> {
        f.numbers
            .iter()
            .map(|(labels, v)| NumberDataPoint {
                attributes: attrs(labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(*v)),
                ..NumberDataPoint::default()
            })
            .collect()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match f.kind {
        "counter" => metric::Data::Sum(Sum {
            data_points: numbers(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        "gauge" => metric::Data::Gauge(Gauge {
            data_points: numbers(),
        }),
        "histogram" => metric::Data::Histogram(Histogram {
            data_points: f
                .histograms
                .iter()
                .map(|(labels, h)| {
                    let exemplars = kept.of_series(name, labels);
                    histogram_point(h, attrs(labels), exemplars, (start, now))
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
        _ => return None,
    };
    let (name, unit) = otel.unwrap_or((name, ""));
    Some(Metric {
        name: name.to_string(),
        description: f.help.to_string(),
        unit: unit.to_string(),
        data: Some(data),
        ..Metric::default()
    })
}

fn histogram_point(
    h: &HistogramSeries,
    attributes: Vec<KeyValue>,
    exemplars: Vec<exemplars::Linked>,
    (start, now): (u64, u64),
) -> HistogramDataPoint {
    let mut buckets = h.buckets.clone();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let explicit_bounds: Vec<f64> = buckets
        .iter()
        .map(|(b, _)| *b)
        .filter(|b| b.is_finite())
        .collect();
    // The text format's buckets are cumulative; OTLP's count each bucket alone.
    let mut previous = 0;
    let mut bucket_counts: Vec<u64> = buckets
        .iter()
        .map(|(_, c)| {
            let n = c.saturating_sub(previous);
            previous = *c;
            n
        })
        .collect();
    if buckets.last().is_none_or(|(b, _)| b.is_finite()) {
        bucket_counts.push(h.count.saturating_sub(previous));
    }
    let exemplars = exemplars
        .into_iter()
        .map(|e| Exemplar {
            time_unix_nano: e.time_unix_nano,
            span_id: e.span_id.to_vec(),
            trace_id: e.trace_id.to_vec(),
            value: Some(exemplar::Value::AsDouble(e.value)),
            ..Exemplar::default()
        })
        .collect();
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: h.count,
        sum: Some(h.sum),
        bucket_counts,
        explicit_bounds,
        exemplars,
        ..HistogramDataPoint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(env: &[(&str, &str)], config: Option<&OtlpMetricsConfig>) -> Option<PushSettings> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings_from(config, &|n| env.get(n).cloned())
    }

    #[test]
    fn the_standard_variables_override_the_config_and_none_turns_it_off() {
        assert_eq!(from(&[], None), None);
        let config = OtlpMetricsConfig {
            endpoint: "http://c:4317".into(),
            protocol: OtlpProtocol::Grpc,
            interval: Duration::from_secs(10),
        };
        let s = from(&[], Some(&config)).unwrap();
        assert_eq!(s.otlp.endpoint, "http://c:4317");
        assert_eq!(s.interval, Duration::from_secs(10));
        let s = from(
            &[
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://m:4318/v1/metrics",
                ),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
            ],
            Some(&config),
        )
        .unwrap();
        assert_eq!(s.otlp.endpoint, "http://m:4318/v1/metrics");
        assert_eq!(s.otlp.protocol, OtlpProtocol::Http);
        assert_eq!(s.interval, Duration::from_secs(5));
        assert!(from(
            &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317")],
            None
        )
        .is_some());
        assert_eq!(
            from(&[("OTEL_METRICS_EXPORTER", "none")], Some(&config)),
            None
        );
    }

    #[test]
    fn text_becomes_sums_gauges_and_histograms_with_per_bucket_counts() {
        let name = m::GEN_AI_INFERENCE_DURATION;
        let text = format!(
            "# HELP tokenwarden_x_total Things.\n# TYPE tokenwarden_x_total counter\n\
             tokenwarden_x_total{{route=\"r\"}} 3\n\n# TYPE tokenwarden_g gauge\ntokenwarden_g 1.5\n\n\
             # TYPE {name} histogram\n\
             {name}_bucket{{gen_ai_request_model=\"m\",le=\"0.16\"}} 1\n\
             {name}_bucket{{gen_ai_request_model=\"m\",le=\"0.32\"}} 3\n\
             {name}_bucket{{gen_ai_request_model=\"m\",le=\"+Inf\"}} 4\n\
             {name}_sum{{gen_ai_request_model=\"m\"}} 2.5\n\
             {name}_count{{gen_ai_request_model=\"m\"}} 4\n"
        );
        let req = request_from(&text, Resource::default(), 1, 2);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let by = |n: &str| metrics.iter().find(|m| m.name == n).unwrap();
        let Some(metric::Data::Histogram(h)) = &by("gen_ai.client.inference.duration").data else {
            panic!("histogram");
        };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, [0.16, 0.32]);
        assert_eq!(p.bucket_counts, [1, 2, 1]);
        assert_eq!((p.count, p.sum), (4, Some(2.5)));
        assert_eq!(p.attributes[0].key, "gen_ai.request.model");
        assert_eq!(by("gen_ai.client.inference.duration").unit, "s");
        let Some(metric::Data::Sum(s)) = &by("tokenwarden_x_total").data else {
            panic!("sum");
        };
        assert!(s.is_monotonic);
        assert_eq!(s.data_points[0].attributes[0].key, "route");
        assert!(matches!(
            by("tokenwarden_g").data,
            Some(metric::Data::Gauge(_))
        ));
    }
}
