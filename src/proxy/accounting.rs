//! LLM accounting for one call: feeds response frames to the provider parser, times the first
//! and following output chunks, and records tokens, tool calls and the GenAI histograms when
//! the call ends.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use metrics::counter;
use opentelemetry::trace::{SpanId, TraceId};
use tokio::time::Instant;

use crate::body::cut::{CutPoint, CutSignal};
use crate::body::BodyEnd;
use crate::policy::ResponseCheck;
use crate::providers::decompress::{DecompressError, Decompressor};
use crate::providers::{OutputSample, ResponseParser, ResponseRecord, Usage};
use crate::telemetry::call_series::{CallSeries, Counted, Observed, Tokens};
use crate::telemetry::labels::Labels;
use crate::telemetry::metrics as m;
use crate::telemetry::semconv::{self, Names};

use crate::providers::request::RequestFacts;
use crate::record::{CallLabels, Finished, Operation, UsageSource, MAX_PARSE_BYTES};

/// Accounting state of one LLM call.
pub struct LlmCall {
    facts: RequestFacts,
    request_model: Arc<str>,
    labels: Arc<Labels>,
    parser: Option<ResponseParser>,
    decompressor: Option<Decompressor>,
    unparsed: Option<&'static str>,
    streamed: bool,
    first_output: Option<Instant>,
    last_output: Option<Instant>,
    /// The series time per output chunk is recorded in, resolved at the second output chunk
    /// (when the served model is known).
    per_chunk: Option<CallSeries>,
    injected: bool,
    policy: Option<ResponseCheck>,
    request_body: Bytes,
    output_events: u64,
    cut: Option<CutWatch>,
    /// Set when the response ended without its final event after output was seen (a Realtime
    /// session that closed mid-response): its estimated input and the output counted so far.
    cut_short: Option<(u64, u64)>,
}

/// A stream a `cut` limit may end: its output counted event by event against the allowance.
struct CutWatch {
    signal: Arc<CutSignal>,
    /// Stream bytes fed so far.
    received: u64,
    /// Where the last event ended.
    last_end: u64,
    /// Output tokens received (tokenizer count per output event).
    tokens: u64,
}

/// How the call ended, for the finish step.
pub struct Ending {
    /// How the body ended.
    pub end: BodyEnd,
    /// Status sent to the client.
    pub status: Option<StatusCode>,
    /// When the request arrived.
    pub started: Instant,
    /// When the request was sent upstream (time to first chunk counts from there, as the
    /// span's attribute does).
    pub upstream_sent: Option<Instant>,
    /// Now.
    pub now: Instant,
    /// The request reached the upstream and no response came (timeout or reset before the
    /// headers): the provider may have billed its input.
    pub unanswered: bool,
    /// The upstream answered 2xx, whatever the client was then sent (a held answer refused or
    /// broken off): it generated, and billed, what it sent.
    pub upstream_ok: bool,
    /// The proxy ended the call at shutdown (the grace ran out).
    pub shutdown: bool,
    /// The policy that withheld the response, when one did.
    pub blocked: Option<crate::record::PolicyViolation>,
    /// The call's span (trace id, span id), the exemplar of its histogram observations.
    pub trace: Option<(TraceId, SpanId)>,
}

// === impl LlmCall ===

impl LlmCall {
    /// Start accounting a call the request described as `facts`.
    pub fn new(facts: RequestFacts, labels: Arc<Labels>) -> Self {
        let request_model = labels
            .models
            .get(facts.model.as_deref().unwrap_or("unknown"));
        Self {
            facts,
            request_model,
            labels,
            parser: None,
            decompressor: None,
            unparsed: None,
            streamed: false,
            first_output: None,
            last_output: None,
            per_chunk: None,
            injected: false,
            policy: None,
            request_body: Bytes::new(),
            output_events: 0,
            cut: None,
            cut_short: None,
        }
    }

    /// The request body as sent upstream (a reference-counted handle), kept to estimate input
    /// tokens if the response states no usage.
    pub fn set_request_body(&mut self, body: Bytes) {
        self.request_body = body;
    }

    /// The request facts.
    pub fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    /// Check the response's tool calls against the agent's policies at the end.
    pub fn set_policy(&mut self, check: ResponseCheck) {
        self.policy = Some(check);
    }

    /// Whether this response must be held and checked before the client sees it: a policy
    /// would block it, and it is a plain (not streamed, not encoded) body the parser reads.
    pub fn holds_response(&self) -> bool {
        self.policy.as_ref().is_some_and(ResponseCheck::blocks)
            && !self.streamed
            && self.parser.is_some()
            && self.decompressor.is_none()
    }

    /// Whether this response is a stream to gate on its tool calls: a policy would block them,
    /// and it is an SSE stream read as it is forwarded (not NDJSON, not encoded).
    pub fn gates_stream(&self) -> bool {
        self.policy.as_ref().is_some_and(ResponseCheck::blocks)
            && self.streamed
            && self.parser.as_ref().is_some_and(ResponseParser::is_sse)
            && self.decompressor.is_none()
    }

    /// Whether a policy would block this response's tool calls but neither holding nor gating
    /// (asked first) took the response to check: it is in a format whose calls the proxy can
    /// read, yet under a media type or encoding it reads otherwise or not at all (an SSE stream
    /// labelled NDJSON, an encoding it does not know) or announced over the parse cap. A known
    /// compression is not counted here: such a response is flagged, as documented.
    pub fn skips_blocking_check(&self) -> bool {
        self.policy.as_ref().is_some_and(ResponseCheck::blocks)
            && self.facts.format.adapter().tool_gate().is_some()
            && self.decompressor.is_none()
    }

    /// Whether the upstream is asked for an uncompressed body: a stream whose tool calls a
    /// policy would block (in a format whose streams can be gated), a JSON body such a policy
    /// holds and checks, or a stream whose usage the proxy asked for and must hide — none of
    /// them can be read compressed. Other requests keep their `Accept-Encoding` (and so does a
    /// request whose signature covers it).
    pub fn asks_plain_body(&self) -> bool {
        let blocks = self.policy.as_ref().is_some_and(ResponseCheck::blocks);
        let gated = self.facts.stream && self.facts.format.adapter().tool_gate().is_some();
        (blocks && (gated || !self.facts.stream)) || self.injected
    }

    /// Take the response check to run it early (on a held response) instead of at the end.
    pub fn take_policy(&mut self) -> Option<ResponseCheck> {
        self.policy.take()
    }

    /// The response ended without its final event after `output` tokens of output were seen
    /// (a Realtime session closed mid-response): unless usage arrives after all, it is counted
    /// as `input` (estimated) and `output`, as the provider billed what it generated.
    pub fn set_cut_short(&mut self, input: u64, output: u64) {
        self.cut_short = Some((input, output));
    }

    /// Usage was requested upstream on the client's behalf (and must be hidden from it).
    pub fn set_injected(&mut self) {
        self.injected = true;
    }

    /// The request went again without the usage asked for (the upstream refused the field).
    pub fn clear_injected(&mut self) {
        self.injected = false;
    }

    /// Output events (text, reasoning, tool-call deltas) seen so far.
    pub fn output_events(&self) -> u64 {
        self.output_events
    }

    /// Whether a `cut` limit can end this response: an SSE stream read as it is forwarded
    /// (a compressed stream cannot be cut at an event).
    pub fn cuttable(&self) -> bool {
        self.streamed && self.parser.is_some() && self.decompressor.is_none()
    }

    /// Count the stream's output against `signal`'s allowance and set its cut point.
    pub fn set_cut(&mut self, signal: Arc<CutSignal>) {
        self.cut = Some(CutWatch {
            signal,
            received: 0,
            last_end: 0,
            tokens: 0,
        });
    }

    /// Whether the stream is to be cut (or was).
    pub fn cut_fired(&self) -> bool {
        self.cut.as_ref().is_some_and(|w| w.signal.fired())
    }

    /// Whether the response is a stream.
    pub fn streamed(&self) -> bool {
        self.streamed
    }

    /// The rewrite hiding injected usage, when this response is a stream that needs it.
    pub fn usage_hider(&self) -> Option<crate::providers::EventRewrite> {
        // A compressed stream (an upstream that compressed though asked not to) goes on as it
        // came: its events cannot be read to hide one.
        let hides =
            self.injected && self.streamed && self.parser.is_some() && self.decompressor.is_none();
        hides
            .then(|| self.facts.format.adapter().usage_hider())
            .flatten()
    }

    /// The upstream's response headers arrived: choose how to read the body.
    pub fn on_response(&mut self, headers: &HeaderMap) {
        if let Some(enc) = headers
            .get(CONTENT_ENCODING)
            .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            // Forwarded compressed and untouched; the parser reads a decompressed copy.
            let lines = self.facts.format.adapter().reads_lines();
            match Decompressor::for_encoding(enc.as_bytes()) {
                // Read line by line: no copy of the whole is kept, so no total bound applies.
                Some(d) if lines => self.decompressor = Some(d.unbounded()),
                Some(d) => self.decompressor = Some(d),
                None => {
                    self.unparsed = Some("unknown_encoding");
                    return;
                }
            }
        }
        let ct = headers
            .get(CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Media types are case-insensitive.
        let is = |t: &[u8]| ct.len() >= t.len() && ct[..t.len()].eq_ignore_ascii_case(t);
        if let Some(p) = ResponseParser::framed(self.facts.format, ct, MAX_PARSE_BYTES) {
            // A binary-framed stream (Bedrock's event stream): its format reads it.
            self.streamed = true;
            self.parser = Some(p);
            return;
        }
        let ndjson = is(b"application/x-ndjson") || self.facts.format.adapter().reads_lines();
        self.streamed = ndjson || is(b"text/event-stream");
        self.parser = Some(if ndjson {
            ResponseParser::new_ndjson(self.facts.format, MAX_PARSE_BYTES)
        } else {
            ResponseParser::new(self.facts.format, self.streamed, MAX_PARSE_BYTES)
        });
    }

    /// One response frame, as it passes to the client.
    pub fn on_data(&mut self, data: &Bytes, base: &CallLabels, now: Instant) {
        let Some(parser) = self.parser.as_mut() else {
            return;
        };
        let output = match (self.decompressor.as_mut(), self.cut.as_mut()) {
            (None, Some(watch)) => {
                parser
                    .feed_each(data, |end, output| watch.event(end, output))
                    .output_events
            }
            (None, None) => parser.feed(data).output_events,
            (Some(d), _) => {
                let mut n = 0;
                if let Err(e) = d.feed(data, |plain| n = parser.feed(plain).output_events) {
                    self.unparsed = Some(match e {
                        DecompressError::Corrupt => "corrupt_encoding",
                        DecompressError::TooLarge => DECOMPRESSED_TOO_LARGE,
                    });
                    self.parser = None;
                    self.decompressor = None;
                }
                n
            }
        };
        if let Some(watch) = self.cut.as_mut() {
            watch.fed(data.len());
        }
        if output == 0 {
            return;
        }
        self.output_events += u64::from(output);
        // One sample per output chunk after the first, "from the end of the previous chunk to
        // the end of the current chunk": the first of this frame's chunks waited since the last
        // frame, the others arrived with it.
        let gaps = match self.last_output {
            Some(last) => Some((now.duration_since(last).as_secs_f64(), output - 1)),
            None => {
                self.first_output = Some(now);
                (output > 1).then(|| (0.0, output - 2))
            }
        };
        self.last_output = Some(now);
        let Some((first_gap, same_frame)) = gaps else {
            return;
        };
        let series = self.per_chunk.get_or_insert_with(|| {
            // The served model is known by the second chunk in every format that names it
            // (each chunk, or the stream's first event, does).
            let response = match self.parser.as_mut().and_then(|p| p.current_model()) {
                Some(model) => self.labels.models.get(model),
                None => self.request_model.clone(),
            };
            CallSeries::new(base, Some((&self.request_model, &response)))
        });
        let names = semconv::get();
        for latest in [true, false] {
            if (latest && names.latest()) || (!latest && names.previous()) {
                series.record(Observed::PerChunk(latest), first_gap, None);
                for _ in 0..same_frame {
                    series.record(Observed::PerChunk(latest), 0.0, None);
                }
            }
        }
    }

    /// The call ended: record what the response said (estimating usage where it said none).
    /// Also returns the call's series, for the rest of what it records.
    pub fn finish(self, base: &CallLabels, ending: &Ending) -> (Finished, CallSeries) {
        let parsed = self.parser.is_some();
        let (mut record, sample) = match self.parser {
            Some(p) if self.unparsed.is_none() => p.finish_with_sample(),
            _ => (
                ResponseRecord {
                    unparsed: self.unparsed,
                    ..ResponseRecord::default()
                },
                OutputSample::default(),
            ),
        };
        let cut_tokens = self
            .cut
            .as_ref()
            .filter(|w| w.signal.fired())
            .map(|w| w.tokens);
        let cut_short = self.cut_short.filter(|_| !record.usage.is_present());
        let usage_source = if let Some((input, output)) = cut_short {
            record.usage.input = Some(input);
            record.usage.output = Some(output);
            UsageSource::Estimated
        } else if let Some(tokens) = cut_tokens.filter(|_| !final_usage(&record)) {
            // Cut at a budget: the provider's final usage never came (Anthropic's
            // `message_start` states a placeholder output count). The provider bills what it
            // generated; the best count of that is what it sent us — every output event the
            // parser saw, each counted with the tokenizer (exact for OpenAI's tokenizer, close
            // for others, where an event count would undercount multi-token deltas) and at
            // least one token each. Only the rest of the frame holding the cut point is read
            // past it, so this is the client's share plus at most one upstream write.
            record.usage.output = Some(record.usage.output.unwrap_or(0).max(tokens));
            if record.usage.input.is_none() {
                record.usage.input = Some(crate::providers::estimate_input(
                    self.facts.format,
                    &self.request_body,
                ));
            }
            UsageSource::Estimated
        } else if self.streamed && ended_before_final_usage(&record, ending) {
            // Broken off (client gone, upstream reset, idle) or ended by an error event (an
            // Anthropic `overloaded_error` mid-stream) after a stream stated usage at its start
            // only (Anthropic's `message_start`: the input, and a placeholder output): the
            // provider billed what it generated — at least the output events we saw.
            record.usage.output = Some(
                record
                    .usage
                    .output
                    .unwrap_or(0)
                    .max(sample.estimate_tokens()),
            );
            if record.usage.input.is_none() {
                record.usage.input = Some(crate::providers::estimate_input(
                    self.facts.format,
                    &self.request_body,
                ));
            }
            UsageSource::Estimated
        } else if record.usage.is_present() {
            if self.injected {
                UsageSource::Injected
            } else {
                UsageSource::Provider
            }
        } else if (parsed || record.unparsed == Some(DECOMPRESSED_TOO_LARGE))
            && billable(&record, ending, self.streamed && sample.events > 0)
        {
            record.usage.input = Some(crate::providers::estimate_input(
                self.facts.format,
                &self.request_body,
            ));
            // Past the decompressed bound nothing was read: a body that large was generated up
            // to the request's output cap, charged as that rather than as nothing.
            let unread = record.unparsed == Some(DECOMPRESSED_TOO_LARGE);
            let output = match self.facts.max_tokens.filter(|_| unread) {
                Some(cap) => cap,
                None => sample.estimate_tokens(),
            };
            record.usage.output = Some(output);
            UsageSource::Estimated
        } else if ending.unanswered {
            // Counted (and charged) as its tokenized input, the same way whichever failure it was.
            record.usage.input = Some(crate::providers::estimate_input(
                self.facts.format,
                &self.request_body,
            ));
            record.usage.output = Some(0);
            UsageSource::Estimated
        } else {
            UsageSource::None
        };
        if let Some(reason) = record.unparsed {
            counter!(m::UNPARSED_BODIES_TOTAL, "route" => base.route.clone(), "reason" => reason)
                .increment(1);
        }
        let response_model = match &record.model {
            Some(model) => self.labels.models.get(model),
            None => self.request_model.clone(),
        };
        let series = CallSeries::new(base, Some((&self.request_model, &response_model)));
        let other_labels: Vec<Arc<str>> = record
            .other_models
            .iter()
            .map(|o| self.labels.models.get(&o.model))
            .collect();
        let names = semconv::get();
        let inference = is_inference(base.operation);
        record_usage(
            &record,
            base,
            &series,
            &other_labels,
            (names, inference, ending.trace),
            usage_source,
        );
        for call in &record.tool_calls {
            counter!(m::TOOL_CALLS_TOTAL,
                "agent" => base.agent.clone(),
                "tool" => self.labels.tools.get(&call.name),
            )
            .increment(1);
        }
        let violations = match &self.policy {
            Some(check) => {
                check
                    .review(&self.facts.tools, &record.tool_calls)
                    .violations
            }
            None => Vec::new(),
        };
        let error_type = error_type(&record, ending);
        let error_label = error_type.as_deref().map(|e| self.labels.errors.get(e));
        let error = error_label.as_deref();
        let duration = ending.now.duration_since(ending.started).as_secs_f64();
        // The newest conventions keep `gen_ai.client.operation.duration` for calls that are no
        // inference; the earlier names put every call there.
        if names.latest() && inference {
            let what = Observed::Duration {
                inference: true,
                error,
            };
            series.record(what, duration, ending.trace);
        }
        if names.previous() || !inference {
            let what = Observed::Duration {
                inference: false,
                error,
            };
            series.record(what, duration, ending.trace);
        }
        if let Some(first) = self.first_output.filter(|_| self.streamed) {
            let secs = first
                .saturating_duration_since(ending.upstream_sent.unwrap_or(ending.started))
                .as_secs_f64();
            if names.latest() {
                series.record(Observed::FirstChunk(true), secs, ending.trace);
            }
            if names.previous() {
                series.record(Observed::FirstChunk(false), secs, ending.trace);
            }
        }
        let finished = Finished {
            facts: self.facts,
            record,
            usage_source,
            first_output: self.first_output,
            last_output: self.last_output,
            streamed: self.streamed,
            error_type,
            response_model,
            other_labels,
            policy_violations: violations,
        };
        (finished, series)
    }
}

/// Whether the usage a stream stated is its final count: the stream's end (a finish reason, then
/// or with the usage) was read. Before that, only Anthropic's `message_start` states usage.
/// Why a compressed body's copy was given up: more came out than the bound.
const DECOMPRESSED_TOO_LARGE: &str = "decompressed_too_large";

/// Whether a stream that stated usage at its start only ended before its final usage: broken
/// off, or ended by an error event (the connection closing cleanly after it).
fn ended_before_final_usage(record: &ResponseRecord, ending: &Ending) -> bool {
    record.usage.is_present()
        && (ending.end != BodyEnd::Complete || record.error_type.is_some())
        && !final_usage(record)
}

fn final_usage(record: &ResponseRecord) -> bool {
    record.usage.is_present() && !record.finish_reasons.is_empty()
}

// === impl CutWatch ===

impl CutWatch {
    /// One event of the stream ended `end` bytes into the current frame; `output` is its data
    /// when it carried output.
    fn event(&mut self, end: usize, output: Option<&[u8]>) {
        if let Some(data) = output {
            let tokens = crate::tokens::count(&crate::providers::output_text(data)).max(1);
            if self.tokens + tokens > self.signal.after() {
                // This event would go over: the client gets everything before it.
                self.signal.cut_at(CutPoint {
                    at: self.last_end,
                    output_tokens: self.tokens,
                });
            }
            self.tokens += tokens;
        }
        self.last_end = self.received + end as u64;
    }

    /// A frame was fed.
    fn fed(&mut self, len: usize) {
        self.received += len as u64;
    }
}

/// Whether a read response without usage still cost tokens: it is not an error answer (a body
/// cut short by a client that left or by a broken upstream was still billed for what was
/// generated, and so was a stream's output before an error event ended it).
fn billable(record: &ResponseRecord, ending: &Ending, output_seen: bool) -> bool {
    // A JSON body cut short by a broken upstream or a client that left does not parse, but
    // like a cut stream it was generated and billed: it is estimated, not charged nothing.
    let cut_short = ending.end != BodyEnd::Complete && record.unparsed == Some("invalid_json");
    // Too large to read whole (and no usage in its tail): still an answer, estimated.
    let too_large = matches!(
        record.unparsed,
        Some("body_too_large" | "event_too_large" | DECOMPRESSED_TOO_LARGE)
    );
    (record.unparsed.is_none() || cut_short || too_large)
        && (record.error_type.is_none() || output_seen)
        && (ending.status.is_some_and(|s| s.is_success()) || ending.upstream_ok)
}

/// Whether a call is a GenAI inference (`gen_ai.client.inference.*` metrics) rather than another
/// operation (`gen_ai.client.operation.duration` only).
fn is_inference(op: Operation) -> bool {
    matches!(
        op,
        Operation::Chat | Operation::TextCompletion | Operation::GenerateContent
    )
}

/// `tokenwarden_tokens_total` by type, under the model that spent them (the serving model's part,
/// then each sub-call model's), and the GenAI token metrics for the call as a whole.
fn record_usage(
    record: &ResponseRecord,
    base: &CallLabels,
    series: &CallSeries,
    other_labels: &[Arc<str>],
    (names, inference, trace): (Names, bool, Option<(TraceId, SpanId)>),
    source: UsageSource,
) {
    for (kind, n) in by_type(record.own_usage()) {
        if let Some(n) = n {
            series.increment(Counted::Tokens(kind, source), n);
        }
    }
    // Sub-call models (rare) are no part of the call's label set.
    for (model, o) in other_labels.iter().zip(&record.other_models) {
        for (kind, n) in by_type(o.usage) {
            let Some(n) = n else { continue };
            counter!(m::TOKENS_TOTAL,
                "agent" => base.agent.clone(),
                "model" => model.clone(),
                "type" => kind.as_str(),
                "source" => source.as_str(),
            )
            .increment(n);
        }
    }
    // The GenAI usage metrics carry the provider's counts only: "if instrumentation cannot
    // [...] obtain number of input and/or output tokens, [...] it MUST NOT report usage
    // metrics" (estimates are counted in `tokenwarden_tokens_total`, `source="estimated"`).
    if source == UsageSource::Estimated {
        return;
    }
    let u = &record.usage;
    if names.previous() {
        for (output, n) in [(false, u.input), (true, u.output)] {
            if let Some(n) = n {
                series.record(Observed::TokenUsage(output), n as f64, trace);
            }
        }
    }
    if !(names.latest() && inference && u.is_present()) {
        return;
    }
    for (output, n) in [(false, u.input), (true, u.output)] {
        if let Some(n) = n {
            series.record(Observed::OperationTokens(output), n as f64, trace);
        }
    }
    for (kind, n) in by_type(*u) {
        if let Some(n) = n {
            series.increment(Counted::Usage(kind), n);
        }
    }
}

/// A usage's counts by kind.
fn by_type(u: Usage) -> [(Tokens, Option<u64>); 5] {
    [
        (Tokens::Input, u.input),
        (Tokens::Output, u.output),
        (Tokens::CachedInput, u.cached_input),
        (Tokens::CacheCreationInput, u.cache_creation_input),
        (Tokens::Reasoning, u.reasoning),
    ]
}

/// `error.type` for a failed call: how the stream broke, the provider's error type, or the
/// HTTP status.
fn error_type(record: &ResponseRecord, ending: &Ending) -> Option<String> {
    match ending.end {
        BodyEnd::UpstreamError => return Some("upstream_reset".into()),
        BodyEnd::IdleTimeout => return Some("timeout".into()),
        BodyEnd::ClientGone if ending.shutdown => return Some("shutdown".into()),
        BodyEnd::ClientGone => return Some("client_disconnected".into()),
        BodyEnd::Complete => {}
    }
    if let Some(p) = ending.blocked {
        return Some(p.as_str().to_string());
    }
    if let Some(e) = &record.error_type {
        return Some(e.clone());
    }
    match ending.status {
        Some(s) if s.is_client_error() || s.is_server_error() => Some(s.as_u16().to_string()),
        None => Some("no_response".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 200 answer whose body ended whole.
    fn clean_ending() -> Ending {
        let now = Instant::now();
        Ending {
            end: BodyEnd::Complete,
            status: Some(StatusCode::OK),
            started: now,
            upstream_sent: Some(now),
            now,
            unanswered: false,
            upstream_ok: true,
            shutdown: false,
            blocked: None,
            trace: None,
        }
    }

    /// An error event that ends a stream after output (OpenAI's `data: {"error":…}`, a
    /// Responses `error` event) does not make the output free: the provider billed it.
    #[test]
    fn a_stream_that_errs_after_output_is_billable() {
        let ending = clean_ending();
        let record = ResponseRecord {
            error_type: Some("server_error".into()),
            ..ResponseRecord::default()
        };
        assert!(billable(&record, &ending, true));
        assert!(!billable(&record, &ending, false), "an error answer alone");
        let fine = ResponseRecord::default();
        assert!(billable(&fine, &ending, false));
        let large = ResponseRecord {
            unparsed: Some("body_too_large"),
            ..ResponseRecord::default()
        };
        assert!(
            billable(&large, &ending, false),
            "too large to read is still an answer"
        );
        let bomb = ResponseRecord {
            unparsed: Some(DECOMPRESSED_TOO_LARGE),
            ..ResponseRecord::default()
        };
        assert!(
            billable(&bomb, &ending, false),
            "too large to decompress too"
        );
    }

    /// Anthropic's stream states its input and a placeholder output at `message_start`; one
    /// that ends in an `error` event after output (then closes cleanly) never states its final
    /// usage, and is estimated from what it carried rather than charged the placeholder.
    #[test]
    fn a_stream_ended_by_an_error_event_before_final_usage_is_estimated() {
        let ending = clean_ending();
        let mut record = ResponseRecord::default();
        record.usage.input = Some(400);
        record.usage.output = Some(1);
        assert!(!ended_before_final_usage(&record, &ending), "a clean end");
        record.error_type = Some("overloaded_error".into());
        assert!(ended_before_final_usage(&record, &ending));
        record.finish_reasons.push("stop".into());
        assert!(
            !ended_before_final_usage(&record, &ending),
            "final usage came"
        );
    }
}
