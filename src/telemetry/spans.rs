//! One span per LLM call: started when the call is identified (ids and start time only, so the
//! upstream request can name it as parent), built in full when the call finishes.
//!
//! Spans are encoded as OTLP protobuf directly from what the finished call knows, into one
//! buffer per span (see [`super::otlp::wire`] for why): there is no tracer, no context stack,
//! no per-span lock and no intermediate span struct. With no OTLP endpoint configured there is
//! no [`Spans`] at all and the proxy does no span work.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use tokio::time::Instant;

use crate::config::{Conventions, TelemetryConfig};
use crate::providers::request::RequestFacts;
use crate::providers::ResponseRecord;
use crate::record::{BudgetDecision, CallLabels, PolicyViolation};

use super::content::{Captured, ContentPolicy};
use super::otlp::queue::SPAN_CAPACITY;
use super::otlp::wire::{
    cap, put_bytes, put_fixed32, put_fixed64, put_message, put_str, put_str_joined, put_uint,
    Attrs, MAX_ITEMS,
};
use super::otlp::{self, ExporterError, SpanSink};
use super::trace_context::{self, RemoteParent};

/// Input tokens written to a provider's cache, as the newest GenAI conventions name them.
pub const CACHE_WRITE: &str = "gen_ai.usage.cache_write.input_tokens";
/// The same count under its earlier name (`telemetry.semconv_opt_in: gen_ai_previous`).
pub const CACHE_WRITE_PREVIOUS: &str = "gen_ai.usage.cache_creation.input_tokens";

/// Name of the span event marking the first output chunk.
pub const FIRST_TOKEN_EVENT: &str = "gen_ai.first_token";

/// Span export for the whole proxy: the queue, the vocabulary, content capture.
#[derive(Debug)]
pub struct Spans {
    sink: SpanSink,
    conventions: Conventions,
    content: Option<ContentPolicy>,
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
    /// Task id (`task.id`).
    pub task: Option<&'a Arc<str>>,
    /// Step number in the session.
    pub step: Option<u64>,
    /// Budget decision for the call.
    pub budget_decision: Option<BudgetDecision>,
    /// Policies the call violated.
    pub policy_violations: &'a [PolicyViolation],
    /// The policy that withheld the response (a held body or a gated stream), when one did.
    pub policy_blocked: Option<PolicyViolation>,
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
        })))
    }

    /// Spans in `conventions` whose finished spans the caller reads (unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(
        conventions: Conventions,
        content: Option<ContentPolicy>,
    ) -> (Arc<Self>, Arc<otlp::queue::SpanQueue>) {
        let (sink, queue) = SpanSink::for_test(16);
        let spans = Self {
            sink,
            conventions,
            content,
        };
        (Arc::new(spans), queue)
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
        let trace_id = parent.as_ref().map_or_else(new_trace_id, |p| p.trace_id);
        CallSpan {
            spans: self.clone(),
            trace_id,
            span_id: new_span_id(),
            parent,
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

    /// The export queue (the MCP spans share it).
    pub(super) fn sink(&self) -> &SpanSink {
        &self.sink
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

    /// Encode the span from the finished call and queue it for export.
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
        let sink = &self.spans.sink;
        let encode = |buf: &mut Vec<u8>| self.encode(f, flags, buf);
        if self.captured.is_some() {
            // Serialising and redacting captured messages can take long: not under the lock.
            sink.submit_with(encode);
        } else {
            sink.submit_in_place(encode);
        }
    }

    /// The span as [`finish`](Self::finish) would queue it, without queueing (benchmarks).
    pub fn encoded(&self, f: &SpanEnd<'_>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(SPAN_CAPACITY);
        self.encode(f, self.flags(), &mut buf);
        buf
    }

    /// The OTLP `Span` message (opentelemetry/proto/trace/v1/trace.proto field numbers).
    fn encode(&self, f: &SpanEnd<'_>, flags: TraceFlags, b: &mut Vec<u8>) {
        let unix_nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        // Wall-clock times from the monotonic ones, anchored once, now: no clock is read when
        // the call starts, and none for a span that is dropped.
        let start = SystemTime::now()
            .checked_sub(f.now.saturating_duration_since(self.started))
            .unwrap_or(UNIX_EPOCH);
        let at = |t: Instant| unix_nanos(start + t.saturating_duration_since(self.started));
        if self.captured.is_some() {
            b.reserve(4096);
        }
        put_bytes(b, 1, &self.trace_id.to_bytes());
        put_bytes(b, 2, &self.span_id.to_bytes());
        if let Some(p) = &self.parent {
            let state = p.state.header();
            if !state.is_empty() {
                put_str(b, 3, &state);
            }
            put_bytes(b, 4, &p.span_id.to_bytes());
        }
        let model = f.facts.model.as_deref();
        match model {
            Some(m) => put_str_joined(b, 5, &[f.labels.operation.as_str(), cap(m)]),
            None => put_str(b, 5, f.labels.operation.as_str()),
        }
        put_uint(b, 6, SPAN_KIND_CLIENT);
        put_fixed64(b, 7, unix_nanos(start));
        put_fixed64(b, 8, at(f.now));
        // Time to first chunk is measured from sending the request, as the conventions say.
        let ttft = f.first_output.filter(|_| f.streamed).map(|first| {
            first
                .saturating_duration_since(f.upstream_sent.unwrap_or(self.started))
                .as_secs_f64()
        });
        self.attributes(f, ttft, &mut Attrs::new(b, 9));
        if let (Some(first), Some(secs)) = (f.first_output, ttft) {
            put_message(b, 11, |e| {
                put_fixed64(e, 1, at(first));
                put_str(e, 2, FIRST_TOKEN_EVENT);
                Attrs::new(e, 3).double("gen_ai.response.time_to_first_chunk", secs);
            });
        }
        if let Some(e) = f.error_type {
            put_message(b, 15, |s| {
                put_str(s, 2, cap(e));
                put_uint(s, 3, STATUS_CODE_ERROR);
            });
        }
        // Trace flags, and that the parent's remoteness is known (and whether it is remote).
        let remote = if self.parent.is_some() {
            SPAN_FLAGS_IS_REMOTE
        } else {
            0
        };
        put_fixed32(
            b,
            16,
            u32::from(flags.to_u8()) | SPAN_FLAGS_HAS_IS_REMOTE | remote,
        );
    }

    fn attributes(&self, f: &SpanEnd<'_>, ttft: Option<f64>, attrs: &mut Attrs<'_>) {
        let conventions = self.spans.conventions;
        let model = f.facts.model.as_deref();
        if matches!(conventions, Conventions::Genai | Conventions::Both) {
            genai_attributes(f, ttft, attrs);
        }
        attrs.str("server.address", &self.server_address);
        attrs.int("server.port", i64::from(self.server_port));
        if let Some(status) = f.status {
            attrs.int("http.response.status_code", i64::from(status.as_u16()));
        }
        if let Some(e) = f.error_type {
            attrs.str("error.type", cap(e));
        }
        if let Some(s) = f.session {
            attrs.str("session.id", cap(s));
        }
        if let Some(t) = f.task {
            attrs.str("task.id", cap(t));
        }
        attrs.str("agent.name", cap(&f.labels.agent));
        if let Some(step) = f.step {
            attrs.int("agent_step", i64::try_from(step).unwrap_or(i64::MAX));
            // A session's steps count LLM calls and executed MCP tool calls alike.
            attrs.str("tokenwarden.step.kind", "llm");
        }
        if !f.record.tool_calls.is_empty() {
            attrs.str_array(
                "tokenwarden.tool_calls",
                f.record
                    .tool_calls
                    .iter()
                    .take(MAX_ITEMS)
                    .map(|c| cap(&c.name)),
            );
        }
        if let Some(d) = f.budget_decision {
            attrs.str("tokenwarden.budget.decision", d.as_str());
        }
        if let Some(p) = f.policy_blocked {
            attrs.str("tokenwarden.policy.decision", "blocked");
            attrs.str("tokenwarden.policy.blocked", p.as_str());
        }
        if !f.policy_violations.is_empty() {
            attrs.str_array(
                "tokenwarden.policy.violations",
                f.policy_violations.iter().map(|v| v.as_str()),
            );
        }
        if let Some(source) = f.usage_source {
            attrs.str("tokenwarden.usage.source", source);
        }
        if matches!(conventions, Conventions::Openinference | Conventions::Both) {
            let m = f.record.model.as_deref().or(model).unwrap_or("unknown");
            super::openinference::attributes(f.labels.provider, cap(m), &f.record.usage, attrs);
        }
        if let (Some(policy), Some(c)) = (&self.spans.content, &self.captured) {
            for (key, json) in policy.attributes(
                c,
                f.facts.format,
                f.record,
                &f.facts.tools,
                f.error_type.is_some(),
            ) {
                attrs.str(key, &json);
            }
        }
    }
}

/// `Span.kind` CLIENT.
pub(super) const SPAN_KIND_CLIENT: u64 = 3;
/// `Status.code` ERROR.
pub(super) const STATUS_CODE_ERROR: u64 = 2;
/// `SpanFlags`: whether the parent is remote is known.
pub(super) const SPAN_FLAGS_HAS_IS_REMOTE: u32 = 0x100;
/// `SpanFlags`: the parent is remote.
pub(super) const SPAN_FLAGS_IS_REMOTE: u32 = 0x200;

fn genai_attributes(f: &SpanEnd<'_>, ttft: Option<f64>, attrs: &mut Attrs<'_>) {
    let r = f.record;
    attrs.str("gen_ai.operation.name", f.labels.operation.as_str());
    attrs.str("gen_ai.provider.name", f.labels.provider);
    if let Some(m) = &f.facts.model {
        attrs.str("gen_ai.request.model", cap(m));
    }
    if let Some(m) = &r.model {
        attrs.str("gen_ai.response.model", cap(m));
    }
    if let Some(id) = &r.id {
        attrs.str("gen_ai.response.id", cap(id));
    }
    if !r.finish_reasons.is_empty() {
        attrs.str_array(
            "gen_ai.response.finish_reasons",
            r.finish_reasons.iter().take(MAX_ITEMS).map(|f| cap(f)),
        );
    }
    let u = &r.usage;
    // The cache write count was renamed by the conventions (`cache_creation` → `cache_write`);
    // the earlier name stays behind the same switch as the earlier metric names.
    let names = super::semconv::get();
    let usage = [
        ("gen_ai.usage.input_tokens", u.input),
        ("gen_ai.usage.output_tokens", u.output),
        ("gen_ai.usage.cache_read.input_tokens", u.cached_input),
        (
            CACHE_WRITE,
            u.cache_creation_input.filter(|_| names.latest()),
        ),
        (
            CACHE_WRITE_PREVIOUS,
            u.cache_creation_input.filter(|_| names.previous()),
        ),
        ("gen_ai.usage.reasoning.output_tokens", u.reasoning),
    ];
    for (key, n) in usage {
        if let Some(n) = n {
            attrs.int(key, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    // The audio part (Realtime API): no GenAI convention names it yet.
    if let Some(a) = &r.audio {
        for (key, n) in [
            ("tokenwarden.usage.audio.input_tokens", a.input),
            (
                "tokenwarden.usage.audio.cache_read.input_tokens",
                a.cached_input,
            ),
            ("tokenwarden.usage.audio.output_tokens", a.output),
        ] {
            attrs.int(key, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    // Searches the provider ran, billed per call (no convention names them either).
    for (key, n) in [
        (
            "tokenwarden.usage.web_search_calls",
            r.server_tools.web_search,
        ),
        (
            "tokenwarden.usage.file_search_calls",
            r.server_tools.file_search,
        ),
    ] {
        if n > 0 {
            attrs.int(key, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    if let Some(n) = f.facts.max_tokens {
        attrs.int(
            "gen_ai.request.max_tokens",
            i64::try_from(n).unwrap_or(i64::MAX),
        );
    }
    if f.facts.stream {
        attrs.bool("gen_ai.request.stream", true);
    }
    if let Some(secs) = ttft {
        attrs.double("gen_ai.response.time_to_first_chunk", secs);
    }
    if let Some(s) = f.session {
        attrs.str("gen_ai.conversation.id", cap(s));
    }
}

/// A random, valid (non-zero) trace id.
pub(super) fn new_trace_id() -> TraceId {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return TraceId::from_bytes(id.to_be_bytes());
        }
    }
}

/// A random, valid (non-zero) span id.
pub(super) fn new_span_id() -> SpanId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return SpanId::from_bytes(id.to_be_bytes());
        }
    }
}

/// `OTEL_SDK_DISABLED=true` turns span export off whatever the config says.
fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Format, ToolCall, Usage};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
    use prost::Message;

    fn labels() -> CallLabels {
        CallLabels {
            route: Arc::from("r"),
            provider: "openai",
            operation: crate::record::Operation::Chat,
            agent: Arc::from("planner"),
        }
    }

    fn facts(stream: bool) -> RequestFacts {
        RequestFacts {
            format: Format::OpenAiChat,
            model: Some("gpt-4o".into()),
            stream,
            include_usage: stream,
            stream_options: stream,
            max_tokens: Some(300),
            choices: 1,
            tools: Vec::new(),
            user: None,
        }
    }

    fn record() -> ResponseRecord {
        ResponseRecord {
            model: Some("gpt-4o-2024-08-06".into()),
            id: Some("chatcmpl-1".into()),
            usage: Usage {
                input: Some(12),
                output: Some(5),
                cached_input: Some(2),
                ..Usage::default()
            },
            finish_reasons: vec!["tool_calls".into()],
            tool_calls: vec![ToolCall {
                choice: 0,
                id: Some("call_1".into()),
                name: "search".into(),
                arguments: "{}".into(),
            }],
            ..ResponseRecord::default()
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a V> {
        let mut hits = span.attributes.iter().filter(|kv| kv.key == key);
        let first = hits.next()?;
        assert!(hits.next().is_none(), "{key} appears twice");
        first.value.as_ref()?.value.as_ref()
    }

    fn s(v: &str) -> V {
        V::StringValue(v.into())
    }

    fn strings(v: Option<&V>) -> Vec<String> {
        let Some(V::ArrayValue(a)) = v else {
            panic!("not an array: {v:?}");
        };
        a.values
            .iter()
            .map(|x| match &x.value {
                Some(V::StringValue(s)) => s.clone(),
                other => panic!("not a string: {other:?}"),
            })
            .collect()
    }

    fn finish(
        conventions: Conventions,
        headers: &HeaderMap,
        end: impl FnOnce(Instant) -> (Option<&'static str>, Option<Instant>, Instant),
        stream: bool,
    ) -> Span {
        let (spans, queue) = Spans::for_test(conventions, None);
        let started = Instant::now();
        let call = spans.start(headers, Arc::from("api.openai.com"), 443, started);
        let (error_type, first_output, now) = end(started);
        let (labels, facts, record) = (labels(), facts(stream), record());
        let session: Arc<str> = Arc::from("sess-9");
        let task: Arc<str> = Arc::from("task-3");
        call.finish(&SpanEnd {
            labels: &labels,
            facts: &facts,
            record: &record,
            error_type,
            status: Some(StatusCode::OK),
            now,
            upstream_sent: Some(started),
            first_output,
            streamed: stream,
            usage_source: Some("provider"),
            session: Some(&session),
            task: Some(&task),
            step: Some(4),
            budget_decision: Some(BudgetDecision::Allowed),
            policy_violations: &[PolicyViolation::MaxSteps],
            policy_blocked: None,
        });
        let batch = queue.take(true).expect("a span");
        // The queue frames spans as `ScopeSpans.spans` fields.
        let mut decoded = ScopeSpans::decode(&batch.bytes[..]).expect("a valid OTLP span");
        assert_eq!(decoded.spans.len(), 1);
        decoded.spans.remove(0)
    }

    /// Text from traffic is cut before it is encoded: a client's huge `model`, an upstream's
    /// huge id and thousands of tool calls make a span of a few KiB, not tens of MiB.
    #[tokio::test]
    async fn traffic_text_on_a_span_is_cut() {
        let (spans, queue) = Spans::for_test(Conventions::Both, None);
        let started = Instant::now();
        let call = spans.start(&HeaderMap::new(), Arc::from("api.openai.com"), 443, started);
        let huge = "m".repeat(1 << 20);
        let mut facts = facts(false);
        facts.model = Some(huge.clone());
        let mut record = record();
        record.model = Some(huge.clone());
        record.id = Some(huge.clone());
        record.finish_reasons = vec![huge.clone(); 1000];
        record.tool_calls = (0..5000)
            .map(|i| ToolCall {
                choice: 0,
                id: None,
                name: format!("{i}{huge}", huge = &huge[..1000]),
                arguments: String::new(),
            })
            .collect();
        let labels = labels();
        call.finish(&SpanEnd {
            labels: &labels,
            facts: &facts,
            record: &record,
            error_type: Some(&huge),
            status: Some(StatusCode::OK),
            now: started,
            upstream_sent: Some(started),
            first_output: None,
            streamed: false,
            usage_source: None,
            session: None,
            task: None,
            step: None,
            budget_decision: None,
            policy_violations: &[],
            policy_blocked: None,
        });
        let batch = queue.take(true).expect("a span");
        assert!(batch.bytes.len() < 80 * 1024, "{} bytes", batch.bytes.len());
        let decoded = ScopeSpans::decode(&batch.bytes[..]).expect("a valid OTLP span");
        let span = &decoded.spans[0];
        assert_eq!(span.name, format!("chat {}", &huge[..256]));
        assert_eq!(attr(span, "gen_ai.request.model"), Some(&s(&huge[..256])));
        assert_eq!(attr(span, "llm.model_name"), Some(&s(&huge[..256])));
        assert_eq!(strings(attr(span, "tokenwarden.tool_calls")).len(), 128);
    }

    /// Searches the provider ran are on the span when there were any, never as zeros.
    #[tokio::test]
    async fn web_and_file_searches_are_span_attributes_when_any_ran() {
        let (spans, queue) = Spans::for_test(Conventions::Genai, None);
        let labels = labels();
        let facts = facts(false);
        let mut searched = record();
        searched.server_tools = crate::providers::ServerToolUse {
            web_search: 6,
            file_search: 0,
        };
        for record in [searched, record()] {
            let started = Instant::now();
            let call = spans.start(&HeaderMap::new(), Arc::from("api.openai.com"), 443, started);
            call.finish(&SpanEnd {
                labels: &labels,
                facts: &facts,
                record: &record,
                error_type: None,
                status: Some(StatusCode::OK),
                now: started,
                upstream_sent: Some(started),
                first_output: None,
                streamed: false,
                usage_source: Some("provider"),
                session: None,
                task: None,
                step: None,
                budget_decision: None,
                policy_violations: &[],
                policy_blocked: None,
            });
        }
        let batch = queue.take(true).expect("spans");
        let decoded = ScopeSpans::decode(&batch.bytes[..]).expect("valid OTLP spans");
        let [searched, plain] = &decoded.spans[..] else {
            panic!("two spans: {}", decoded.spans.len());
        };
        assert_eq!(
            attr(searched, "tokenwarden.usage.web_search_calls"),
            Some(&V::IntValue(6))
        );
        for span in [searched, plain] {
            assert!(attr(span, "tokenwarden.usage.file_search_calls").is_none());
        }
        assert!(attr(plain, "tokenwarden.usage.web_search_calls").is_none());
    }

    #[tokio::test]
    async fn child_span_decodes_with_every_field() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        headers.insert("tracestate", HeaderValue::from_static("vendor=abc"));
        let span = finish(
            Conventions::Both,
            &headers,
            |t| {
                (
                    Some("upstream_reset"),
                    Some(t + Duration::from_millis(40)),
                    t + Duration::from_millis(90),
                )
            },
            true,
        );
        assert_eq!(
            hex(&span.trace_id),
            "0af7651916cd43dd8448eb211c80319c",
            "the agent's trace"
        );
        assert_eq!(hex(&span.parent_span_id), "b7ad6b7169203331");
        assert_eq!(span.span_id.len(), 8);
        assert_ne!(span.span_id, [0; 8]);
        assert_eq!(span.trace_state, "vendor=abc");
        assert_eq!(span.flags, 0x01 | 0x100 | 0x200, "sampled, remote parent");
        assert_eq!(span.name, "chat gpt-4o");
        assert_eq!(span.kind, 3, "CLIENT");
        let took = span.end_time_unix_nano - span.start_time_unix_nano;
        assert!((90_000_000..1_000_000_000).contains(&took), "{took} ns");
        let status = span.status.as_ref().expect("error status");
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "upstream_reset")
        );
        assert_eq!(span.events.len(), 1);
        let event = &span.events[0];
        assert_eq!(event.name, FIRST_TOKEN_EVENT);
        assert_eq!(
            event.time_unix_nano - span.start_time_unix_nano,
            40_000_000,
            "the event is at the first output"
        );
        assert_eq!(
            event.attributes[0].key,
            "gen_ai.response.time_to_first_chunk"
        );
        let expected: [(&str, V); 23] = [
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.response.model", s("gpt-4o-2024-08-06")),
            ("gen_ai.response.id", s("chatcmpl-1")),
            ("gen_ai.usage.input_tokens", V::IntValue(12)),
            ("gen_ai.usage.output_tokens", V::IntValue(5)),
            ("gen_ai.usage.cache_read.input_tokens", V::IntValue(2)),
            ("gen_ai.request.max_tokens", V::IntValue(300)),
            ("gen_ai.request.stream", V::BoolValue(true)),
            ("gen_ai.response.time_to_first_chunk", V::DoubleValue(0.04)),
            ("gen_ai.conversation.id", s("sess-9")),
            ("server.address", s("api.openai.com")),
            ("server.port", V::IntValue(443)),
            ("http.response.status_code", V::IntValue(200)),
            ("error.type", s("upstream_reset")),
            ("session.id", s("sess-9")),
            ("task.id", s("task-3")),
            ("agent.name", s("planner")),
            ("agent_step", V::IntValue(4)),
            ("tokenwarden.budget.decision", s("allowed")),
            ("tokenwarden.usage.source", s("provider")),
            ("llm.model_name", s("gpt-4o-2024-08-06")),
        ];
        for (key, value) in &expected {
            assert_eq!(attr(&span, key), Some(value), "{key}");
        }
        assert_eq!(
            strings(attr(&span, "gen_ai.response.finish_reasons")),
            ["tool_calls"]
        );
        assert_eq!(strings(attr(&span, "tokenwarden.tool_calls")), ["search"]);
        assert_eq!(
            strings(attr(&span, "tokenwarden.policy.violations")),
            ["max_steps"]
        );
        assert_eq!(attr(&span, "openinference.span.kind"), Some(&s("LLM")));
        assert_eq!(attr(&span, "llm.token_count.total"), Some(&V::IntValue(17)));
        assert!(attr(&span, "gen_ai.usage.reasoning.output_tokens").is_none());
    }

    #[tokio::test]
    async fn root_span_has_no_parent_event_or_status() {
        let span = finish(
            Conventions::Genai,
            &HeaderMap::new(),
            |t| (None, None, t + Duration::from_millis(5)),
            false,
        );
        assert_eq!(span.trace_id.len(), 16);
        assert!(span.parent_span_id.is_empty());
        assert!(span.trace_state.is_empty());
        assert_eq!(span.flags, 0x01 | 0x100, "sampled, parent not remote");
        assert!(span.events.is_empty());
        assert!(span.status.is_none(), "unset status is the default");
        assert!(attr(&span, "gen_ai.request.stream").is_none());
        assert!(attr(&span, "gen_ai.response.time_to_first_chunk").is_none());
        assert!(
            !span
                .attributes
                .iter()
                .any(|kv: &KeyValue| kv.key.starts_with("llm.")),
            "no OpenInference attributes under genai"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
