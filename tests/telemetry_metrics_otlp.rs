//! Metrics pushed over OTLP, over real sockets: the proxy in front of the mock provider, spans
//! and metrics to an in-process OTLP receiver (gRPC and HTTP/protobuf); the receiver decodes the
//! metrics export requests and finds the GenAI metrics under the conventions' names and units,
//! with the call's attributes, the token counters' values, and an exemplar on the duration
//! histogram naming the span it also received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod otlp_receiver;

use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric};
use otlp_receiver::*;

const STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// The metric `name` in `req`.
fn metric<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

fn has_agent(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue], agent: &str) -> bool {
    kvs(attributes).get("agent") == Some(&s(agent))
}

async fn pushes_genai_metrics_with_exemplars(protocol: &str, agent: &str) {
    let rx = Receiver::speaking(protocol).await;
    let mock = mock().await;
    let endpoint = rx.endpoint();
    let proxy = TestProxy::to(
        "push",
        mock.addr(),
        &format!(
            "telemetry:\n  service_name: tw-metrics-{protocol}\n  otlp:\n    endpoint: {endpoint}\n    protocol: {protocol}\n  otlp_metrics:\n    endpoint: {endpoint}\n    protocol: {protocol}\n    interval: 200ms\n"
        ),
    )
    .await;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[
            ("x-agent-name", agent),
            ("x-mock-input-tokens", "30"),
            ("x-mock-output-chunks", "4"),
        ],
        STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let span = rx.wait_for("of the call", |_| true).await;

    // An export that holds the call (exports before it are cumulative snapshots without it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let req = loop {
        let found = rx.metrics().into_iter().rev().find(|r| {
            let Some(m) = metric(r, "gen_ai.client.inference.duration") else {
                return false;
            };
            matches!(&m.data, Some(metric::Data::Histogram(h))
                if h.data_points.iter().any(|p| has_agent(&p.attributes, agent)))
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics export with the call over {protocol}: {} exports",
            rx.metrics().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let resource = kvs(&req.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes);
    assert_eq!(
        resource.get("service.name"),
        Some(&s(&format!("tw-metrics-{protocol}")))
    );

    let duration = metric(&req, "gen_ai.client.inference.duration").unwrap();
    assert_eq!(duration.unit, "s");
    let Some(metric::Data::Histogram(h)) = &duration.data else {
        panic!("a histogram");
    };
    let point = h
        .data_points
        .iter()
        .find(|p| has_agent(&p.attributes, agent))
        .unwrap();
    assert_eq!(point.count, 1);
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), 1);
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    let attrs = kvs(&point.attributes);
    assert_eq!(attrs.get("gen_ai.operation.name"), Some(&s("chat")));
    assert_eq!(attrs.get("gen_ai.request.model"), Some(&s("gpt-4o-mini")));
    let exemplar = point.exemplars.first().expect("an exemplar");
    assert_eq!(hex(&exemplar.trace_id), hex(&span.span.trace_id));
    assert_eq!(hex(&exemplar.span_id), hex(&span.span.span_id));

    let input = metric(&req, "gen_ai.client.inference.usage.input_tokens").unwrap();
    assert_eq!(input.unit, "{token}");
    let Some(metric::Data::Sum(sum)) = &input.data else {
        panic!("a sum");
    };
    assert!(sum.is_monotonic);
    let p = sum
        .data_points
        .iter()
        .find(|p| has_agent(&p.attributes, agent))
        .unwrap();
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(30.0)));
    assert_eq!(
        kvs(&p.attributes).get("gen_ai.token.modality"),
        Some(&s("unknown"))
    );
    assert!(metric(&req, "gen_ai.client.inference.time_to_first_chunk").is_some());
    assert!(metric(&req, "tokenwarden_requests_total").is_some());
    proxy.stop().await;
}

#[tokio::test]
async fn grpc_push_carries_the_new_names_and_exemplars() {
    pushes_genai_metrics_with_exemplars("grpc", "push-grpc").await;
}

#[tokio::test]
async fn http_push_carries_the_new_names_and_exemplars() {
    pushes_genai_metrics_with_exemplars("http", "push-http").await;
}

/// A shutdown sends one last export: with an interval far longer than the run, the call's
/// metrics reach the collector only through it (they were lost when the push task was aborted).
#[tokio::test]
async fn shutdown_sends_the_last_metrics_before_exit() {
    let rx = Receiver::http().await;
    let mock = mock().await;
    let endpoint = rx.endpoint();
    let agent = "push-at-shutdown";
    let proxy = TestProxy::to(
        "push",
        mock.addr(),
        &format!(
            "telemetry:\n  otlp_metrics:\n    endpoint: {endpoint}\n    protocol: http\n    interval: 1h\n"
        ),
    )
    .await;
    let (resp, _) = post(
        &proxy.url("/v1/chat/completions"),
        &[("x-agent-name", agent), ("x-mock-input-tokens", "30")],
        STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(rx.metrics().is_empty(), "no export before the interval");
    proxy.stop().await;
    let exports = rx.metrics();
    assert_eq!(exports.len(), 1, "one export at shutdown");
    let input = metric(&exports[0], "gen_ai.client.inference.usage.input_tokens")
        .expect("the call's input tokens");
    let Some(metric::Data::Sum(sum)) = &input.data else {
        panic!("a sum");
    };
    let p = sum
        .data_points
        .iter()
        .find(|p| has_agent(&p.attributes, agent))
        .expect("the call's series");
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(30.0)));
}
