//! One span per LLM call: started when the call is identified (ids and start time only, so the
//! upstream request can name it as parent), built in full when the call finishes.
//!
//! Spans are assembled directly as [`SpanData`] from what the finished call knows; there is no
//! tracer, no context stack and no per-span lock. With no OTLP endpoint configured there is no
//! [`Spans`] at all and the proxy does no span work.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use tokio::time::Instant;

use crate::config::{Conventions, TelemetryConfig};
use crate::providers::ResponseRecord;
use crate::proxy::accounting::CallLabels;
use crate::proxy::inspect::RequestFacts;

use super::content::{Captured, ContentPolicy};
use super::otlp::{self, ExporterError, SpanSink};
use super::trace_context::{self, RemoteParent};

/// Name of the span event marking the first output chunk.
pub const FIRST_TOKEN_EVENT: &str = "gen_ai.first_token";

/// Span export for the whole proxy: the queue, the vocabulary, content capture.
#[derive(Debug)]
pub struct Spans {
    sink: SpanSink,
    conventions: Conventions,
    content: Option<ContentPolicy>,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
}

/// Span export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SpansError {
    /// The exporter could not be built.
    #[error(transparent)]
    Exporter(#[from] ExporterError),
    /// A redaction pattern does not compile.
    #[error("telemetry.redact_patterns: {0}")]
    Pattern(#[from] regex::Error),
}

/// The span of one call in flight.
#[derive(Debug)]
pub struct CallSpan {
    spans: Arc<Spans>,
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<RemoteParent>,
    start: SystemTime,
    started: Instant,
    server_address: Arc<str>,
    server_port: u16,
    captured: Option<Box<Captured>>,
}

/// Everything a finished call tells its span.
pub struct SpanEnd<'a> {
    /// Route, provider, operation, agent.
    pub labels: &'a CallLabels,
    /// What the request said.
    pub facts: &'a RequestFacts,
    /// What the response said.
    pub record: &'a ResponseRecord,
    /// `error.type` when the call failed.
    pub error_type: Option<&'a str>,
    /// Status sent to the client.
    pub status: Option<StatusCode>,
    /// When the call ended.
    pub now: Instant,
    /// When the request went upstream.
    pub upstream_sent: Option<Instant>,
    /// When the first output chunk arrived (streams).
    pub first_output: Option<Instant>,
    /// Whether the response was streamed.
    pub streamed: bool,
    /// `provider | injected | estimated`, when usage is known.
    pub usage_source: Option<&'static str>,
    /// Session id.
    pub session: Option<&'a Arc<str>>,
    /// Step number in the session.
    pub step: Option<u64>,
    /// Budget decision for the call.
    pub budget_decision: Option<&'static str>,
    /// Policies the call violated.
    pub policy_violations: &'a [&'static str],
}

// === impl Spans ===

impl Spans {
    /// Span export as `config` asks; `None` when no OTLP endpoint is configured. Starts the
    /// export task, so it must run inside the tokio runtime.
    pub fn from_config(config: &TelemetryConfig) -> Result<Option<Arc<Self>>, SpansError> {
        let Some(otlp_config) = &config.otlp else {
            return Ok(None);
        };
        if sdk_disabled() {
            tracing::info!("OTEL_SDK_DISABLED=true: spans are not exported");
            return Ok(None);
        }
        let content = if config.capture_content {
            Some(ContentPolicy::new(
                &config.redact_patterns,
                config.max_content_bytes,
            )?)
        } else {
            None
        };
        let sink = otlp::start(otlp_config, &config.service_name)?;
        Ok(Some(Arc::new(Self {
            sink,
            conventions: config.conventions,
            content,
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("tokenwarden")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })))
    }

    /// Spans in `conventions` whose finished spans the caller reads (unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(
        conventions: Conventions,
        content: Option<ContentPolicy>,
    ) -> (Arc<Self>, tokio::sync::mpsc::Receiver<SpanData>) {
        let (sink, rx) = SpanSink::for_test(16);
        let spans = Self {
            sink,
            conventions,
            content,
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("tokenwarden").build(),
        };
        (Arc::new(spans), rx)
    }

    /// Start the span of a call that arrived at `started` with `headers`, going to
    /// `server_address:server_port`.
    pub fn start(
        self: &Arc<Self>,
        headers: &HeaderMap,
        server_address: Arc<str>,
        server_port: u16,
        started: Instant,
    ) -> CallSpan {
        let parent = trace_context::extract(headers);
        let trace_id = parent
            .as_ref()
            .map_or_else(|| self.ids.new_trace_id(), |p| p.trace_id);
        // The call began a moment ago; the span starts when it did.
        let start = SystemTime::now()
            .checked_sub(started.elapsed())
            .unwrap_or_else(SystemTime::now);
        CallSpan {
            spans: self.clone(),
            trace_id,
            span_id: self.ids.new_span_id(),
            parent,
            start,
            started,
            server_address,
            server_port,
            captured: None,
        }
    }

    /// Export everything queued; waits at most `within`.
    pub async fn flush(&self, within: Duration) {
        self.sink.flush(within).await;
    }

    /// Whether request and response content is captured.
    pub fn captures_content(&self) -> bool {
        self.content.is_some()
    }
}

// === impl CallSpan ===

impl CallSpan {
    /// Sampled unless the agent's parent said not to (parent-based, always on).
    fn flags(&self) -> TraceFlags {
        match &self.parent {
            Some(p) if !p.flags.is_sampled() => TraceFlags::default(),
            _ => TraceFlags::SAMPLED,
        }
    }

    /// The `traceparent` the upstream request carries: our span as its parent.
    pub fn traceparent(&self) -> HeaderValue {
        trace_context::format_traceparent(self.trace_id, self.span_id, self.flags())
    }

    /// This span's trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Keep the request content, when capture is on.
    pub fn capture_request(&mut self, body: &Bytes, headers: &HeaderMap) {
        if self.spans.captures_content() {
            self.captured = Some(Box::new(Captured::new(body.clone(), headers)));
        }
    }

    /// The upstream's response headers (content capture only).
    pub fn on_response_headers(&mut self, headers: &HeaderMap) {
        if let Some(c) = self.captured.as_mut() {
            c.on_response_headers(headers);
        }
    }

    /// A response frame (content capture only).
    pub fn on_data(&mut self, data: &[u8]) {
        if let Some(c) = self.captured.as_mut() {
            c.on_data(data);
        }
    }

    /// Build the span from the finished call and queue it for export.
    pub fn finish(self, f: &SpanEnd<'_>) {
        let flags = self.flags();
        if !flags.is_sampled() {
            return;
        }
        if self.spans.sink.is_full() {
            // The collector is behind or down: count the loss without building the span.
            self.spans.sink.dropped();
            return;
        }
        let at = |t: Instant| self.start + t.saturating_duration_since(self.started);
        let model = f.facts.model.as_deref();
        let name: std::borrow::Cow<'static, str> = match model {
            Some(m) => format!("{} {m}", f.labels.operation).into(),
            None => f.labels.operation.into(),
        };
        let conventions = self.spans.conventions;
        let genai = matches!(conventions, Conventions::Genai | Conventions::Both);
        let mut attrs = Vec::with_capacity(32);
        // Time to first chunk is measured from sending the request, as the conventions say.
        let ttft = f.first_output.filter(|_| f.streamed).map(|first| {
            first
                .saturating_duration_since(f.upstream_sent.unwrap_or(self.started))
                .as_secs_f64()
        });
        if genai {
            genai_attributes(f, ttft, &mut attrs);
        }
        attrs.push(KeyValue::new("server.address", self.server_address.clone()));
        attrs.push(KeyValue::new("server.port", i64::from(self.server_port)));
        if let Some(status) = f.status {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
        }
        if let Some(e) = f.error_type {
            attrs.push(KeyValue::new("error.type", e.to_string()));
        }
        if let Some(s) = f.session {
            attrs.push(KeyValue::new("session.id", s.clone()));
        }
        attrs.push(KeyValue::new("agent.name", f.labels.agent.clone()));
        if let Some(step) = f.step {
            attrs.push(KeyValue::new("agent_step", step as i64));
        }
        if !f.record.tool_calls.is_empty() {
            attrs.push(string_array(
                "tokenwarden.tool_calls",
                f.record.tool_calls.iter().map(|c| c.name.clone()),
            ));
        }
        if let Some(d) = f.budget_decision {
            attrs.push(KeyValue::new("tokenwarden.budget.decision", d));
        }
        if !f.policy_violations.is_empty() {
            attrs.push(string_array(
                "tokenwarden.policy.violations",
                f.policy_violations.iter().map(|p| (*p).to_string()),
            ));
        }
        if let Some(source) = f.usage_source {
            attrs.push(KeyValue::new("tokenwarden.usage.source", source));
        }
        if matches!(conventions, Conventions::Openinference | Conventions::Both) {
            let m = f.record.model.as_deref().or(model).unwrap_or("unknown");
            super::openinference::attributes(
                f.labels.provider,
                m,
                &f.record.usage,
                f.session.map(|s| &**s),
                &mut attrs,
            );
        }
        if let (Some(policy), Some(c)) = (&self.spans.content, &self.captured) {
            for (key, json) in policy.attributes(
                c,
                f.facts.format,
                f.record,
                &f.facts.tools,
                f.error_type.is_some(),
            ) {
                attrs.push(KeyValue::new(key, json));
            }
        }
        let mut events = SpanEvents::default();
        if let (Some(first), Some(secs)) = (f.first_output, ttft) {
            events.events.push(Event::new(
                FIRST_TOKEN_EVENT,
                at(first),
                vec![KeyValue::new("gen_ai.response.time_to_first_chunk", secs)],
                0,
            ));
        }
        let status = match f.error_type {
            Some(e) => Status::error(e.to_string()),
            None => Status::Unset,
        };
        let (parent_span_id, parent_remote, state) = match &self.parent {
            Some(p) => (p.span_id, true, p.state.clone()),
            None => (SpanId::INVALID, false, TraceState::default()),
        };
        let span = SpanData {
            span_context: SpanContext::new(self.trace_id, self.span_id, flags, false, state),
            parent_span_id,
            parent_span_is_remote: parent_remote,
            span_kind: SpanKind::Client,
            name,
            start_time: self.start,
            end_time: at(f.now),
            attributes: attrs,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.spans.scope.clone(),
        };
        self.spans.sink.submit(span);
    }
}

fn genai_attributes(f: &SpanEnd<'_>, ttft: Option<f64>, attrs: &mut Vec<KeyValue>) {
    let r = f.record;
    attrs.push(KeyValue::new("gen_ai.operation.name", f.labels.operation));
    attrs.push(KeyValue::new("gen_ai.provider.name", f.labels.provider));
    if let Some(m) = &f.facts.model {
        attrs.push(KeyValue::new("gen_ai.request.model", m.clone()));
    }
    if let Some(m) = &r.model {
        attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
    }
    if let Some(id) = &r.id {
        attrs.push(KeyValue::new("gen_ai.response.id", id.clone()));
    }
    if !r.finish_reasons.is_empty() {
        attrs.push(string_array(
            "gen_ai.response.finish_reasons",
            r.finish_reasons.iter().cloned(),
        ));
    }
    let u = &r.usage;
    let usage = [
        ("gen_ai.usage.input_tokens", u.input),
        ("gen_ai.usage.output_tokens", u.output),
        ("gen_ai.usage.cache_read.input_tokens", u.cached_input),
        (
            "gen_ai.usage.cache_creation.input_tokens",
            u.cache_creation_input,
        ),
        ("gen_ai.usage.reasoning.output_tokens", u.reasoning),
    ];
    for (key, n) in usage {
        if let Some(n) = n {
            attrs.push(KeyValue::new(key, i64::try_from(n).unwrap_or(i64::MAX)));
        }
    }
    if let Some(n) = f.facts.max_tokens {
        attrs.push(KeyValue::new(
            "gen_ai.request.max_tokens",
            i64::try_from(n).unwrap_or(i64::MAX),
        ));
    }
    if f.facts.stream {
        attrs.push(KeyValue::new("gen_ai.request.stream", true));
    }
    if let Some(secs) = ttft {
        attrs.push(KeyValue::new("gen_ai.response.time_to_first_chunk", secs));
    }
    if let Some(s) = f.session {
        attrs.push(KeyValue::new("gen_ai.conversation.id", s.clone()));
    }
}

/// `OTEL_SDK_DISABLED=true` turns span export off whatever the config says.
fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn string_array(key: &'static str, values: impl Iterator<Item = String>) -> KeyValue {
    KeyValue::new(
        key,
        Value::Array(values.map(StringValue::from).collect::<Vec<_>>().into()),
    )
}
