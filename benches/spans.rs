//! Span cost per LLM call. On the request's task: starting the span (the agent's trace
//! context, new ids) with the upstream `traceparent`, and encoding the finished call as an OTLP
//! `Span` (a streamed chat call: GenAI attributes, tool call, first-token event; and the same
//! with both vocabularies). On the export task: wrapping 512 encoded spans in one request.
//! Exemplars: keeping one per observation, and the OpenMetrics text of a scrape.
//!
//! Run: `cargo bench --bench spans`. Numbers go to BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokenwarden::config::load_from_str;
use tokenwarden::providers::request::RequestFacts;
use tokenwarden::providers::{Format, ResponseRecord, ToolCall, Usage};
use tokenwarden::record::CallLabels;
use tokenwarden::telemetry::otlp::batch::{Batch, Preamble};
use tokenwarden::telemetry::otlp::queue::SpanQueue;
use tokenwarden::telemetry::spans::{SpanEnd, Spans};
use tokio::time::Instant;

/// Span export to a port nothing listens on; the export task is never polled here.
fn spans(conventions: &str) -> Arc<Spans> {
    let yaml = format!(
        "routes:\n  - name: r\n    path_prefix: /\n    upstream: http://127.0.0.1:9\n\
         telemetry:\n  conventions: {conventions}\n  otlp:\n    endpoint: http://127.0.0.1:9\n"
    );
    let config = load_from_str(&yaml, "bench").unwrap();
    Spans::from_config(&config.telemetry).unwrap().unwrap()
}

fn agent_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    h
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let labels = CallLabels {
        route: Arc::from("openai"),
        provider: "openai",
        operation: tokenwarden::record::Operation::Chat,
        agent: Arc::from("planner"),
    };
    let facts = RequestFacts {
        format: Format::OpenAiChat,
        model: Some("gpt-4o-mini".into()),
        stream: true,
        include_usage: true,
        stream_options: true,
        max_tokens: Some(300),
        choices: 1,
        tools: Vec::new(),
        user: None,
    };
    let record = ResponseRecord {
        model: Some("gpt-4o-mini-2024-07-18".into()),
        id: Some("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG".into()),
        usage: Usage {
            input: Some(1200),
            output: Some(85),
            cached_input: Some(1024),
            ..Usage::default()
        },
        finish_reasons: vec!["tool_calls".into()],
        tool_calls: vec![ToolCall {
            choice: 0,
            id: Some("call_1".into()),
            name: "search_orders".into(),
            arguments: r#"{"q":"late"}"#.into(),
        }],
        ..ResponseRecord::default()
    };
    let session: Arc<str> = Arc::from("sess-4f9c2a7e-1b3d");
    let host: Arc<str> = Arc::from("api.openai.com");
    let headers = agent_headers();
    let started = Instant::now();
    let end = SpanEnd {
        labels: &labels,
        facts: &facts,
        record: &record,
        error_type: None,
        status: Some(StatusCode::OK),
        now: started + Duration::from_millis(900),
        upstream_sent: Some(started + Duration::from_micros(50)),
        first_output: Some(started + Duration::from_millis(300)),
        streamed: true,
        usage_source: Some("provider"),
        session: Some(&session),
        task: None,
        step: Some(7),
        budget_decision: Some(tokenwarden::record::BudgetDecision::Allowed),
        policy_violations: &[],
        policy_blocked: None,
    };

    let genai = spans("genai");
    c.bench_function("span/start_and_traceparent", |b| {
        b.iter(|| {
            let span = genai.start(black_box(&headers), host.clone(), 443, started);
            black_box(span.traceparent())
        })
    });
    let span = genai.start(&headers, host.clone(), 443, started);
    c.bench_function("span/encode_genai", |b| {
        b.iter(|| black_box(span.encoded(black_box(&end))))
    });
    let both = spans("both");
    let span_both = both.start(&headers, host.clone(), 443, started);
    c.bench_function("span/encode_both_vocabularies", |b| {
        b.iter(|| black_box(span_both.encoded(black_box(&end))))
    });

    let encoded = span.encoded(&end);
    println!("encoded span: {} bytes", encoded.len());
    let preamble = Arc::new(Preamble::new(&[
        ("service.name".into(), "tokenwarden".into()),
        ("service.version".into(), "0.1.0".into()),
        ("k8s.pod.name".into(), "agent-7d9f8c-x2k4q".into()),
    ]));
    let queue = SpanQueue::new(1024, 512);
    c.bench_function("queue/push_one_span", |b| {
        b.iter(|| {
            let _ = queue.push(black_box(&encoded));
            if queue.len() >= 512 {
                queue.recycle(queue.take(false).map(|s| s.bytes).unwrap_or_default());
            }
        })
    });
    // What the export task does with a full batch before handing it to the transport: the
    // request's head, and the spans' buffer as it is.
    c.bench_function("batch/request_of_512_spans", |b| {
        b.iter_batched(
            || {
                let q = SpanQueue::new(512, 512);
                for _ in 0..512 {
                    q.push(&encoded);
                }
                Batch::new(preamble.clone(), q.take(false).unwrap_or_default())
            },
            |batch| black_box(batch.into_parts()),
            BatchSize::SmallInput,
        )
    });
}

/// Exemplars: keeping one per histogram observation of a call with a span (on the request's
/// task), and turning a `/metrics` text into OpenMetrics with them (per scrape).
fn exemplars(c: &mut Criterion) {
    use metrics::Label;
    use opentelemetry::trace::{SpanId, TraceId};
    use tokenwarden::telemetry::{exemplars, metrics as m};
    let labels = [
        Label::new("gen_ai_operation_name", "chat"),
        Label::new("gen_ai_provider_name", "openai"),
        Label::new("gen_ai_request_model", "gpt-4o-mini"),
        Label::new("gen_ai_response_model", "gpt-4o-mini-2024-07-18"),
        Label::new("agent", "bench-agent"),
    ];
    let ids = (TraceId::from(7u128), SpanId::from(9u64));
    let key = metrics::Key::from_parts(m::GEN_AI_INFERENCE_DURATION, labels.to_vec());
    c.bench_function("exemplar/record_one_observation", |b| {
        b.iter(|| exemplars::record(black_box(&key), 0.3, ids))
    });
    // A scrape of 200 series of a 15-bucket histogram.
    let mut text = format!("# TYPE {} histogram\n", m::GEN_AI_INFERENCE_DURATION);
    for i in 0..200 {
        for le in ["0.16", "0.32", "0.64", "1.28", "+Inf"] {
            text.push_str(&format!(
                "{}_bucket{{agent=\"a{i}\",gen_ai_request_model=\"m\",le=\"{le}\"}} 1\n",
                m::GEN_AI_INFERENCE_DURATION
            ));
        }
    }
    c.bench_function("exemplar/openmetrics_of_1000_bucket_lines", |b| {
        b.iter(|| black_box(exemplars::openmetrics(black_box(&text))))
    });
}

criterion_group!(benches, bench, exemplars);
criterion_main!(benches);
