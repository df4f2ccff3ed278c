//! [`Call`]: what the proxy knows about one request while it is in flight, and the finish step
//! that records it — exactly once, however the request ends.
//!
//! A `Call` is owned first by the request pipeline and then by the response body. Whoever holds
//! it last finishes it: the pipeline for answers the proxy gives itself, the [`ObservedBody`]
//! at end of stream, upstream error or idle timeout, and `Drop` when the client goes away
//! (hyper drops the service future or the body).
//!
//! [`ObservedBody`]: crate::body::ObservedBody

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use metrics::counter;
use tokio::time::Instant;

use crate::body::cut::CutSignal;
use crate::body::{BodyEnd, Observer};
use crate::budget::{Admission, Spent};
use crate::session::Sessions;
use crate::task::{CallDone, Tasks};
use crate::telemetry::metrics as m;
use crate::telemetry::spans::{CallSpan, SpanEnd};

use super::accounting::{Ending, LlmCall};
use super::gate_log::{Found, GateLog};
use crate::record::{
    BudgetDecision, CallLabels, Operation, PolicyViolation, UpstreamError, UsageSource,
};
use crate::telemetry::call_series::{CallSeries, Counted, Observed, Status};

/// One request in flight. Boxed: a call travels from the request's future into its response
/// body through several moves of each (1.3 KB copied at every one when it was held inline; a
/// `perf` profile of toy requests found `memcpy` the largest user-space cost).
pub struct Call(Box<CallState>);

/// What [`Call`] records of one request.
pub struct CallState {
    base: CallLabels,
    method: Method,
    path: String,
    access_log: bool,
    started: Instant,
    /// When the request went upstream.
    pub upstream_sent: Option<Instant>,
    /// When the upstream's response headers arrived.
    pub upstream_headers: Option<Instant>,
    /// When the response was handed to hyper.
    pub returned: Option<Instant>,
    /// Status sent to the client.
    pub status: Option<StatusCode>,
    /// Request body bytes.
    pub bytes_in: usize,
    bytes_out: u64,
    upstream_error: Option<UpstreamError>,
    /// The upstream answered 2xx (whatever the client was then sent): it generated, and billed.
    upstream_ok: bool,
    llm: Option<LlmCall>,
    session: Option<Arc<str>>,
    step: Option<u64>,
    span: Option<Box<CallSpan>>,
    policy_violations: Vec<PolicyViolation>,
    budget: Option<Admission>,
    budget_decision: Option<BudgetDecision>,
    cut: Option<Arc<CutSignal>>,
    gate: Option<Arc<GateLog>>,
    policy_blocked: Option<PolicyViolation>,
    ledger: Option<Arc<Sessions>>,
    task: Option<TaskMark>,
    finished: bool,
    aborting: &'static AtomicBool,
    /// The request body's share of `server.max_buffered_request_bytes`, released when the call
    /// is dropped.
    body_permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The task a call belongs to, and what the task's numbers need from it.
struct TaskMark {
    id: Arc<str>,
    /// The live task table, when the task is tracked there (it began there).
    tasks: Option<Arc<Tasks>>,
    /// Budgets and policies admitted the call.
    admitted: bool,
    /// Failed tool results its request reported.
    tool_failures: u64,
}

/// Fixed facts about a call, known when it starts.
pub struct CallInfo {
    /// Route name.
    pub route: Arc<str>,
    /// Provider label.
    pub provider: &'static str,
    /// Operation label.
    pub operation: Operation,
    /// Agent label (already capped).
    pub agent: Arc<str>,
    /// HTTP method.
    pub method: Method,
    /// Request path without the query (queries can carry keys, e.g. Gemini's `?key=`).
    pub path: String,
    /// Write an access line at the end.
    pub access_log: bool,
    /// Set once a shutdown's grace ran out: calls dropped then were ended by the proxy, not by
    /// their clients.
    pub aborting: &'static AtomicBool,
}

// === impl Call ===

impl std::ops::Deref for Call {
    type Target = CallState;
    fn deref(&self) -> &CallState {
        &self.0
    }
}

impl std::ops::DerefMut for Call {
    fn deref_mut(&mut self) -> &mut CallState {
        &mut self.0
    }
}

impl Call {
    /// Start tracking a call that arrived at `started`.
    pub fn new(info: CallInfo, started: Instant) -> Self {
        Self(Box::new(CallState {
            base: CallLabels {
                route: info.route,
                provider: info.provider,
                operation: info.operation,
                agent: info.agent,
            },
            method: info.method,
            path: info.path,
            access_log: info.access_log,
            started,
            upstream_sent: None,
            upstream_headers: None,
            returned: None,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            upstream_error: None,
            upstream_ok: false,
            llm: None,
            session: None,
            step: None,
            span: None,
            policy_violations: Vec::new(),
            budget: None,
            budget_decision: None,
            cut: None,
            gate: None,
            policy_blocked: None,
            ledger: None,
            task: None,
            finished: false,
            aborting: info.aborting,
            body_permit: None,
        }))
    }

    /// Finish a call the proxy answered itself with `status` (a full body, sent at once).
    pub fn finish_local(self, status: StatusCode, body_len: usize) {
        self.finish_local_after(status, body_len, BodyEnd::Complete);
    }

    /// Finish a call answered by the proxy after the upstream's body ended as `end` (a held
    /// answer that broke off, or ran past the cap: what it carried was fed and is charged).
    pub fn finish_local_after(mut self, status: StatusCode, body_len: usize, end: BodyEnd) {
        self.status = Some(status);
        self.bytes_out = body_len as u64;
        self.returned = Some(Instant::now());
        self.finish(end);
    }

    /// Finish a call whose stream was gated, with what the gate `found`.
    pub(super) fn finish_gated(mut self, end: BodyEnd, found: Found) {
        let (violations, blocked) = found;
        violations
            .into_iter()
            .for_each(|v| self.add_policy_violation(v));
        self.policy_blocked = self.policy_blocked.or(blocked);
        self.finish(end);
    }
}

impl CallState {
    /// Hold the request body's share of the in-flight body bytes until the call is dropped.
    pub fn hold_body_permit(&mut self, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
        self.body_permit = permit;
    }

    /// The call belongs to `session`; `step` is its step number there (LLM calls only).
    pub fn set_session(&mut self, session: Arc<str>, step: Option<u64>) {
        self.session = Some(session);
        self.step = step;
    }

    /// Add what this call came to to its session's totals when it finishes (an admitted call
    /// that took a step).
    pub fn set_ledger(&mut self, sessions: Arc<Sessions>) {
        self.ledger = Some(sessions);
    }

    /// The call belongs to task `id`; `tasks` when it began there (it then ends there when the
    /// call finishes).
    pub fn set_task(&mut self, id: Arc<str>, tasks: Option<Arc<Tasks>>) {
        self.task = Some(TaskMark {
            id,
            tasks,
            admitted: false,
            tool_failures: 0,
        });
    }

    /// Task id, when the request named (or traced) one.
    pub fn task(&self) -> Option<&Arc<str>> {
        self.task.as_ref().map(|t| &t.id)
    }

    /// The call was admitted; its request reported `tool_failures` failed tool results.
    pub fn task_admitted(&mut self, tool_failures: u64) {
        if let Some(t) = self.task.as_mut() {
            t.admitted = true;
            t.tool_failures = tool_failures;
        }
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Session id, when the request named one.
    pub fn session(&self) -> Option<&Arc<str>> {
        self.session.as_ref()
    }

    /// Step number of this call in its session.
    pub fn step(&self) -> Option<u64> {
        self.step
    }

    /// Trace this call with `span` (only when spans are exported).
    pub fn set_span(&mut self, span: CallSpan) {
        self.span = Some(Box::new(span));
    }

    /// The call's span, when spans are exported.
    pub fn span_mut(&mut self) -> Option<&mut CallSpan> {
        self.span.as_deref_mut()
    }

    /// Hold the call's budget reservations until it finishes (then they are settled).
    pub fn set_budget(&mut self, admission: Admission) {
        self.budget_decision = Some(admission.decision);
        self.budget = Some(admission);
    }

    /// The call's budget reservations, while it holds them.
    pub fn budget(&self) -> Option<&Admission> {
        self.budget.as_ref()
    }

    /// Record the budget decision for this call (`allowed`, `warned`, `rejected`, `cut`,
    /// `observed`), for its span.
    pub fn set_budget_decision(&mut self, decision: BudgetDecision) {
        self.budget_decision = Some(decision);
    }

    /// The budget decision, when budgets applied.
    pub fn budget_decision(&self) -> Option<BudgetDecision> {
        self.budget_decision
    }

    /// Record a policy the call violated, for the span's `tokenwarden.policy.violations`.
    pub fn add_policy_violation(&mut self, policy: PolicyViolation) {
        if !self.policy_violations.contains(&policy) {
            self.policy_violations.push(policy);
        }
    }

    /// Policies the call violated, in the order noted.
    pub fn policy_violations(&self) -> &[PolicyViolation] {
        &self.policy_violations
    }

    /// End the response stream at the cut point the call's accounting sets on `signal` (it is
    /// shared with the response body).
    pub fn set_cut(&mut self, signal: Arc<CutSignal>) {
        if let Some(llm) = self.llm.as_mut() {
            llm.set_cut(signal.clone());
        }
        self.cut = Some(signal);
    }

    /// Note what the gate of this call's stream decides (it is shared with the response body).
    pub fn set_gate(&mut self, log: Arc<GateLog>) {
        self.gate = Some(log);
    }

    /// The response was withheld by `policy` (a held body refused).
    pub fn set_policy_blocked(&mut self, policy: PolicyViolation) {
        self.policy_blocked = Some(policy);
    }

    /// Labels shared by the call's series (route, provider, operation, agent).
    pub fn labels(&self) -> &CallLabels {
        &self.base
    }

    /// Account this call as an LLM call.
    pub fn set_llm(&mut self, llm: LlmCall) {
        self.llm = Some(llm);
    }

    /// The LLM accounting state, if this is an LLM call.
    pub fn llm_mut(&mut self) -> Option<&mut LlmCall> {
        self.llm.as_mut()
    }

    /// Whether the response must be held and its tool calls checked before the client sees it.
    pub fn holds_response(&self) -> bool {
        self.llm.as_ref().is_some_and(LlmCall::holds_response)
    }

    /// The rewrite that hides the usage injected upstream, when the response stream needs it.
    pub fn usage_hider(&self) -> Option<crate::providers::EventRewrite> {
        self.llm.as_ref().and_then(LlmCall::usage_hider)
    }

    /// The upstream's response headers: the LLM parser picks JSON or SSE, or none if encoded.
    pub fn on_response_headers(&mut self, headers: &http::HeaderMap) {
        if let Some(llm) = self.llm.as_mut() {
            llm.on_response(headers);
        }
        if let Some(span) = self.span.as_mut() {
            span.on_response_headers(headers);
        }
    }

    /// Note an upstream failure for `tokenwarden_upstream_errors_total`.
    pub fn upstream_failed(&mut self, kind: UpstreamError) {
        self.upstream_error = Some(kind);
    }

    /// Note the upstream's response status (5xx and 429 count as upstream errors).
    pub fn upstream_status(&mut self, status: StatusCode) {
        self.status = Some(status);
        self.upstream_ok = status.is_success();
        if status.is_server_error() {
            self.upstream_error = Some(UpstreamError::Status5xx);
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            self.upstream_error = Some(UpstreamError::Status429);
        }
    }

    fn finish(&mut self, end: BodyEnd) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let now = Instant::now();
        let cut = self.cut.as_ref().is_some_and(|c| c.fired());
        // A cut or refused stream is ended by the proxy on purpose: the body is dropped after
        // its last event, which is not the client going away.
        let end = if (cut || self.policy_blocked.is_some()) && end == BodyEnd::ClientGone {
            BodyEnd::Complete
        } else {
            end
        };
        // Past the shutdown grace the proxy drops what is still open: not the client's doing.
        let shutdown = end == BodyEnd::ClientGone && self.aborting.load(Ordering::Relaxed);
        let status = match (end, self.status) {
            (BodyEnd::UpstreamError | BodyEnd::IdleTimeout, _) | (_, None) => Status::Error,
            (_, Some(s)) => Status::of(s),
        };
        match end {
            BodyEnd::UpstreamError => self.upstream_error = Some(UpstreamError::Reset),
            BodyEnd::IdleTimeout => self.upstream_error = Some(UpstreamError::Timeout),
            BodyEnd::ClientGone if shutdown => {}
            BodyEnd::ClientGone => {
                counter!(m::CLIENT_DISCONNECTS_TOTAL, "route" => self.base.route.clone())
                    .increment(1)
            }
            BodyEnd::Complete => {}
        }
        if let Some(kind) = self.upstream_error {
            counter!(m::UPSTREAM_ERRORS_TOTAL, "route" => self.base.route.clone(), "kind" => kind.as_str())
                .increment(1);
        }
        let duration = now.duration_since(self.started);
        let unanswered = self.upstream_sent.is_some()
            && self.upstream_headers.is_none()
            && self.upstream_error != Some(UpstreamError::Connect);
        let mut charged = None;
        let mut series = None;
        let finished = self.llm.take().map(|llm| {
            let ending = Ending {
                end,
                status: self.status,
                started: self.started,
                upstream_sent: self.upstream_sent,
                now,
                unanswered,
                upstream_ok: self.upstream_ok,
                shutdown,
                blocked: self.policy_blocked,
                trace: self.span.as_deref().map(|s| (s.trace_id(), s.span_id())),
            };
            let output_events = llm.output_events();
            // A cut call's usage is counted in `LlmCall::finish`, so that metrics, spans, the
            // store and cost all get the same numbers.
            let (f, s) = llm.finish(&self.base, &ending);
            series = Some(s);
            if let Some(b) = self.budget.take() {
                if cut {
                    b.budgets().cut(b.facts());
                    self.budget_decision = Some(BudgetDecision::Cut);
                }
                charged = Some(b.settle(Spent {
                    usage: f.record.usage,
                    model: f.record.model.clone(),
                    model_label: Some(f.response_model.clone()),
                    other_models: f.record.other_models.clone(),
                    other_labels: f.other_labels.clone(),
                    output_events,
                    sent: unanswered,
                    billing: crate::budget::Billing {
                        batch: f.record.batch,
                        audio: f.record.audio,
                        server_tools: f.record.server_tools,
                        longest_input: f.record.longest_input,
                    },
                }));
            }
            f
        });
        let series = series.unwrap_or_else(|| CallSeries::new(&self.base, None));
        series.increment(Counted::Requests(status), 1);
        let secs = duration.as_secs_f64();
        series.record(Observed::RequestDuration(status), secs, None);
        // What the budget settled (cost included) when budgets are on, else the record.
        let spend = finished.as_ref().map(|f| {
            charged.unwrap_or(crate::budget::Totals {
                input: f.record.usage.input.unwrap_or(0),
                output: f.record.usage.output.unwrap_or(0),
                cost: 0,
            })
        });
        if let Some(charged) = charged.filter(|c| c.cost > 0) {
            let trace = self.span.as_deref().map(|s| (s.trace_id(), s.span_id()));
            let usd = charged.cost as f64 / crate::record::NANO_PER_USD;
            series.record(Observed::Cost, usd, trace);
        }
        if let (Some(ledger), Some(session), Some(spend)) = (&self.ledger, &self.session, spend) {
            ledger.charge(session, spend);
        }
        for policy in finished.iter().flat_map(|f| f.policy_violations.iter()) {
            self.add_policy_violation(*policy);
        }
        if let Some(TaskMark {
            id,
            tasks: Some(tasks),
            admitted,
            tool_failures,
        }) = &self.task
        {
            let done = CallDone {
                admitted: *admitted,
                tool_calls: finished
                    .as_ref()
                    .map_or(0, |f| f.record.tool_calls.len() as u64),
                tool_failures: *tool_failures,
                escalated: self
                    .policy_violations
                    .contains(&PolicyViolation::ApprovalRequired),
                spent: spend.unwrap_or_default(),
            };
            tasks.end(id, done, now);
        }
        if let (Some(span), Some(f)) = (self.span.take(), finished.as_ref()) {
            span.finish(&SpanEnd {
                labels: &self.base,
                facts: &f.facts,
                record: &f.record,
                error_type: f.error_type.as_deref(),
                status: self.status,
                now,
                upstream_sent: self.upstream_sent,
                first_output: f.first_output,
                streamed: f.streamed,
                usage_source: match f.usage_source {
                    UsageSource::None => None,
                    source => Some(source.as_str()),
                },
                session: self.session.as_ref(),
                task: self.task.as_ref().map(|t| &t.id),
                step: self.step,
                budget_decision: self.budget_decision,
                policy_violations: &self.policy_violations,
                policy_blocked: self.policy_blocked,
            });
        }
        if let Some(overhead) = self.overhead() {
            series.record(Observed::Overhead, overhead.as_secs_f64(), None);
        }
        if self.access_log {
            let upstream_ms = match (self.upstream_sent, self.upstream_headers) {
                (Some(s), Some(_)) => now.duration_since(s).as_secs_f64() * 1e3,
                _ => 0.0,
            };
            tracing::info!(
                target: "tokenwarden::access",
                route = %self.base.route,
                method = %self.method,
                path = %self.path,
                status = self.status.map(|s| s.as_u16()).unwrap_or(0),
                outcome = match (shutdown, self.policy_blocked) {
                    (true, _) => "shutdown",
                    (false, Some(_)) => "policy_blocked",
                    (false, None) => outcome(end, self.upstream_error),
                },
                duration_ms = duration.as_secs_f64() * 1e3,
                upstream_ms,
                bytes_in = self.bytes_in,
                bytes_out = self.bytes_out,
                agent = %self.base.agent,
                input_tokens = finished.as_ref().and_then(|f| f.record.usage.input),
                output_tokens = finished.as_ref().and_then(|f| f.record.usage.output),
                usage_source = finished.as_ref().map(|f| f.usage_source.as_str()),
                "request"
            );
        }
    }

    /// Time spent in the sidecar: before the request went upstream, plus between the upstream's
    /// headers and handing the response on. Streaming time after that is the upstream's.
    fn overhead(&self) -> Option<std::time::Duration> {
        let returned = self.returned?;
        Some(match (self.upstream_sent, self.upstream_headers) {
            (Some(sent), Some(headers)) => {
                sent.duration_since(self.started) + returned.duration_since(headers)
            }
            (Some(sent), None) => sent.duration_since(self.started),
            _ => returned.duration_since(self.started),
        })
    }
}

impl Observer for Call {
    fn on_data(&mut self, data: &Bytes, now: Instant) {
        let this = &mut *self.0;
        this.bytes_out += data.len() as u64;
        if let Some(llm) = this.llm.as_mut() {
            llm.on_data(data, &this.base, now);
        }
        if let Some(span) = this.span.as_mut() {
            span.on_data(data);
        }
    }

    fn on_end(mut self, end: BodyEnd) {
        match self.gate.take() {
            // The gate downstream may still be deciding on the last frames: it finishes the call.
            Some(log) => log.park(Box::new(move |found| self.finish_gated(end, found))),
            None => self.finish(end),
        }
    }

    fn hand_on(&self) -> bool {
        // Past the cut point nothing more is needed from the upstream: reading on would only
        // receive (and bill) output the client never gets.
        self.cut.as_ref().is_some_and(|c| c.fired())
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Only reached unfinished when hyper dropped the request future or the body: the
        // client went away.
        self.finish(BodyEnd::ClientGone);
    }
}

/// The access log's `outcome`: how the body ended, or, for an answer the proxy gave itself
/// because the upstream failed, how the upstream failed.
fn outcome(end: BodyEnd, upstream_error: Option<UpstreamError>) -> &'static str {
    match (end, upstream_error) {
        (BodyEnd::Complete, Some(UpstreamError::Timeout)) => "upstream_timeout",
        (BodyEnd::Complete, Some(UpstreamError::Connect)) => "upstream_unreachable",
        (BodyEnd::Complete, Some(UpstreamError::Reset)) => "upstream_error",
        _ => end.as_str(),
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;
    use crate::config::Conventions;
    use crate::providers::request::RequestFacts;
    use crate::providers::Format;
    use crate::telemetry::labels::Labels;
    use crate::telemetry::otlp::queue::SpanQueue;
    use crate::telemetry::spans::Spans;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
    use prost::Message;

    fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn string(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    /// The next span the proxy queued, decoded.
    /// The one span queued (the queue frames spans as `ScopeSpans.spans` fields).
    fn only_span(queue: &SpanQueue) -> Span {
        let batch = queue.take(true).expect("a span");
        let mut scope = ScopeSpans::decode(&batch.bytes[..]).expect("valid OTLP spans");
        assert_eq!(scope.spans.len(), 1, "exactly one span");
        assert!(queue.is_empty());
        scope.spans.remove(0)
    }

    /// A chat call on route `r` of agent `a`, as the pipeline starts one.
    fn llm_call(started: Instant, path: &str) -> Call {
        Call::new(
            CallInfo {
                route: Arc::from("r"),
                provider: "openai",
                operation: Operation::Chat,
                agent: Arc::from("a"),
                method: Method::POST,
                path: path.into(),
                access_log: false,
                aborting: Box::leak(Box::new(AtomicBool::new(false))),
            },
            started,
        )
    }

    /// The LLM accounting of an OpenAI chat request for `model`.
    fn chat_llm(model: Option<&str>) -> LlmCall {
        let facts = RequestFacts {
            format: Format::OpenAiChat,
            model: model.map(String::from),
            stream: false,
            include_usage: false,
            stream_options: false,
            max_tokens: None,
            choices: 1,
            tools: Vec::new(),
            user: None,
        };
        LlmCall::new(facts, Arc::new(Labels::new(10)))
    }

    #[tokio::test]
    async fn budget_decision_and_policy_violations_reach_the_span() {
        let (spans, queue) = Spans::for_test(Conventions::Genai, None);
        let started = Instant::now();
        let mut call = llm_call(started, "/v1/chat/completions");
        call.set_span(spans.start(
            &http::HeaderMap::new(),
            Arc::from("api.example"),
            443,
            started,
        ));
        call.set_llm(chat_llm(Some("gpt-4o")));
        call.set_budget_decision(BudgetDecision::Rejected);
        call.add_policy_violation(PolicyViolation::DeniedTool);
        call.add_policy_violation(PolicyViolation::MaxSteps);
        call.add_policy_violation(PolicyViolation::DeniedTool);
        assert_eq!(call.budget_decision(), Some(BudgetDecision::Rejected));
        assert_eq!(
            call.policy_violations(),
            &[PolicyViolation::DeniedTool, PolicyViolation::MaxSteps]
        );
        call.finish_local(StatusCode::TOO_MANY_REQUESTS, 0);

        let span = only_span(&queue);
        assert_eq!(span.name, "chat gpt-4o");
        assert_eq!(
            find(&span.attributes, "tokenwarden.budget.decision"),
            Some(&string("rejected"))
        );
        let Some(Value::ArrayValue(v)) = find(&span.attributes, "tokenwarden.policy.violations")
        else {
            panic!("no violations: {:?}", span.attributes);
        };
        let names: Vec<_> = v.values.iter().filter_map(|a| a.value.clone()).collect();
        assert_eq!(names, [string("denied_tool"), string("max_steps")]);
        assert_eq!(find(&span.attributes, "error.type"), Some(&string("429")));
    }

    #[tokio::test]
    async fn no_setters_no_attributes() {
        let (spans, queue) = Spans::for_test(Conventions::Genai, None);
        let started = Instant::now();
        let mut call = llm_call(started, "/");
        call.set_span(spans.start(&http::HeaderMap::new(), Arc::from("h"), 80, started));
        call.set_llm(chat_llm(None));
        call.finish_local(StatusCode::OK, 0);
        let span = only_span(&queue);
        assert_eq!(span.name, "chat", "no model: the operation alone");
        assert!(find(&span.attributes, "tokenwarden.budget.decision").is_none());
        assert!(find(&span.attributes, "tokenwarden.policy.violations").is_none());
    }
}
