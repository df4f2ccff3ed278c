//! The MCP path's state (the phases run in `proxy/mod.rs`): a route with `protocol: mcp` forwards the streamable HTTP transport untouched
//! and governs and observes the JSON-RPC messages in it.
//!
//! 1. `identify` as for LLM calls (route, agent, the `Call` that records the HTTP request); the
//!    agent's session from the identity headers, else the server's `Mcp-Session-Id`.
//! 2. `read` (POST only): the body up to `mcp::MAX_MESSAGE_BYTES` (and `server.max_request_body_bytes`),
//!    parsed from a copy into its messages; a body that is no JSON-RPC message is refused with the
//!    JSON-RPC error a server would give, and not forwarded. Each request and notification gets
//!    an [`Op`]: its span starts, in the trace its `params._meta` (else the request) names.
//! 3. `admit`: every `tools/call` through `Policies::admit_tool_call` (allow and deny lists,
//!    `require_approval`, `max_steps`, loops, the declared `inputSchema`). A refusal answers the
//!    whole POST with JSON-RPC errors (one per request; the server never sees any of it); else
//!    each call takes its session step and the policies' side effects apply. (This is where a
//!    call would wait for a person's approval.)
//! 4. `forward`: the same bytes, headers minus hop-by-hop; with one request in the POST, our
//!    span's `traceparent` replaces the agent's.
//! 5. `respond`: status and headers at once; the body as an `McpBody` that shows each message
//!    the server sends to the [`Exchange`]: answers finish their ops (span, duration, tool
//!    execution outcome), `tools/list` results teach the tools' schemas and, for an agent whose
//!    lists restrict, lose the tools it may not use (JSON and SSE alike).
//!
//! GET (the server's stream, and resumption with `Last-Event-ID`) and DELETE are forwarded the
//! same way with no ops of their own. A POST stream that ends before answering (the server will
//! replay the answer on a resumed stream) parks its ops in [`McpState`]; the resumed stream that
//! carries the answer finishes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use metrics::{counter, histogram};
use serde_json::Value;
use tokio::time::Instant;

use crate::approval::{Approvals, Gate, HeldCall, Ticket};
use crate::body::{BodyEnd, Framing, McpObserver};
use crate::mcp::{self, Kind, RequestId};
use crate::policy::{Asker, Policies, ToolFilter};
use crate::record::{Operation, PolicyViolation};
use crate::session::Sessions;
use crate::telemetry::labels::Labels;
use crate::telemetry::mcp::{McpSpan, McpSpanEnd};
use crate::telemetry::metrics as m;
use crate::telemetry::spans::Spans;

use super::call::Call;
use super::error::ProxyError;
use super::route::Route;

/// Answers awaited on a resumed stream, remembered at most this long.
const PARK_TTL: Duration = Duration::from_secs(600);
/// Most ops awaiting an answer on a resumed stream.
const MAX_PARKED: usize = 4096;
/// Parkings between two sweeps of the expired ones.
const SWEEP_EVERY: u64 = 256;

/// What admission made of an MCP POST.
pub enum Admitted {
    /// Forward it.
    Forward,
    /// A call awaits a person's approval: answer the POST with this JSON, forward nothing.
    Held(Bytes),
}

/// What the MCP path keeps across requests: ops whose answer a resumed stream will carry.
#[derive(Default)]
pub struct McpState {
    parked: DashMap<(Arc<str>, RequestId), (Op, Arc<Shared>)>,
    parkings: AtomicU64,
}

/// One JSON-RPC request or notification the agent sent, until it is answered.
pub struct Op {
    id: Option<RequestId>,
    method: String,
    target: Option<String>,
    arguments: Option<Value>,
    protocol_version: Option<String>,
    span: Option<McpSpan>,
    started: Instant,
    step: Option<u64>,
    violations: Vec<PolicyViolation>,
}

/// What the ops of one exchange share with the parked ones: who is asking, and of whom.
struct Shared {
    route: Arc<str>,
    server_address: Arc<str>,
    server_port: u16,
    agent: Arc<str>,
    session: Option<Arc<str>>,
    labels: Arc<Labels>,
}

/// How an op ended.
struct OpEnd<'a> {
    error_type: Option<&'a str>,
    message: Option<&'a str>,
    rpc_code: Option<i64>,
    refused: Option<PolicyViolation>,
    mcp_session: Option<&'a str>,
    protocol_version: Option<&'a str>,
}

/// One HTTP request on an MCP route, seen from the messages in it: the observer of the
/// server's answer.
pub struct Exchange {
    ops: Vec<Op>,
    shared: Arc<Shared>,
    state: Arc<McpState>,
    policies: Arc<Policies>,
    filter: Option<ToolFilter>,
    /// Where this client's declared tools are remembered (route + MCP or agent session).
    key: Arc<str>,
    mcp_session: Option<String>,
    protocol_version: Option<String>,
    framing: Framing,
    batch: bool,
    /// Approvals this POST's held calls spend once the server has them: given back when it
    /// could not be reached (the approved call never ran).
    tickets: Vec<Ticket>,
}

// === impl OpEnd ===

impl<'a> OpEnd<'a> {
    fn ok() -> Self {
        Self {
            error_type: None,
            message: None,
            rpc_code: None,
            refused: None,
            mcp_session: None,
            protocol_version: None,
        }
    }

    fn error(error_type: &'a str, message: &'a str) -> Self {
        Self {
            error_type: Some(error_type),
            message: Some(message),
            ..Self::ok()
        }
    }
}

// === impl Op ===

impl Op {
    fn is_tool_call(&self) -> bool {
        self.method == mcp::TOOLS_CALL
    }

    /// Record the op: its span, the operation duration, and for a tool call its execution.
    fn finish(mut self, shared: &Shared, end: &OpEnd<'_>, now: Instant) {
        let method = mcp::method_label(&self.method);
        let server = shared.route.clone();
        match end.error_type {
            Some(e) => histogram!(m::MCP_OPERATION_DURATION,
                "mcp_method_name" => method, "server" => server.clone(),
                "error_type" => shared.labels.errors.get(e))
            .record(now.saturating_duration_since(self.started).as_secs_f64()),
            None => histogram!(m::MCP_OPERATION_DURATION,
                "mcp_method_name" => method, "server" => server.clone())
            .record(now.saturating_duration_since(self.started).as_secs_f64()),
        }
        if let (true, Some(tool)) = (self.is_tool_call(), self.target.as_deref()) {
            let outcome = match (end.refused, end.error_type) {
                (Some(_), _) => "refused",
                (None, Some(_)) => "error",
                (None, None) => "ok",
            };
            counter!(m::TOOL_EXECUTIONS_TOTAL,
                "agent" => shared.agent.clone(), "server" => server,
                "tool" => shared.labels.tools.get(tool), "outcome" => outcome)
            .increment(1);
        }
        if let Some(span) = self.span.take() {
            let id = self.id.as_ref().map(RequestId::display);
            span.finish(&McpSpanEnd {
                method: &self.method,
                target: self.target.as_deref(),
                request_id: id.as_deref(),
                mcp_session: end.mcp_session,
                protocol_version: end.protocol_version.or(self.protocol_version.as_deref()),
                error_type: end.error_type,
                error_message: end.message,
                rpc_code: end.rpc_code,
                server_address: &shared.server_address,
                server_port: shared.server_port,
                agent: &shared.agent,
                session: shared.session.as_deref(),
                step: self.step,
                violations: &self.violations,
                blocked: end.refused,
                now,
            });
        }
    }
}

// === impl McpState ===

impl McpState {
    /// Keep `op` until a resumed stream of session `key` answers it (or it expires).
    fn park(&self, key: &Arc<str>, op: Op, shared: &Arc<Shared>) {
        let Some(id) = op.id.clone() else { return };
        if self.parkings.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(Instant::now());
        }
        if self.parked.len() >= MAX_PARKED {
            op.finish(
                shared,
                &OpEnd::error("no_response", "the stream ended before the answer"),
                Instant::now(),
            );
            return;
        }
        self.parked.insert((key.clone(), id), (op, shared.clone()));
    }

    fn take(&self, key: &Arc<str>, id: &RequestId) -> Option<(Op, Arc<Shared>)> {
        self.parked
            .remove(&(key.clone(), id.clone()))
            .map(|(_, v)| v)
    }

    fn sweep(&self, now: Instant) {
        let old: Vec<_> = self
            .parked
            .iter()
            .filter(|e| now.saturating_duration_since(e.value().0.started) > PARK_TTL)
            .map(|e| e.key().clone())
            .collect();
        for k in old {
            if let Some((_, (op, shared))) = self.parked.remove(&k) {
                op.finish(
                    &shared,
                    &OpEnd::error("no_response", "no answer arrived"),
                    now,
                );
            }
        }
    }

    /// Ops waiting for a resumed stream.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }
}

// === impl Exchange ===

impl Exchange {
    fn finish_op(&self, op: Op, end: &OpEnd<'_>, now: Instant) {
        let end = OpEnd {
            mcp_session: end.mcp_session.or(self.mcp_session.as_deref()),
            protocol_version: end.protocol_version.or(self.protocol_version.as_deref()),
            ..*end
        };
        op.finish(&self.shared, &end, now);
    }

    /// Finish every op still open with `end`.
    fn end_all(&mut self, end: &OpEnd<'_>) {
        let now = Instant::now();
        for op in std::mem::take(&mut self.ops) {
            self.finish_op(op, end, now);
        }
    }

    /// Finish the ops a `202 Accepted` (or other bodiless success) acknowledged: notifications.
    fn acknowledged(&mut self) {
        let now = Instant::now();
        let (done, open): (Vec<Op>, Vec<Op>) = std::mem::take(&mut self.ops)
            .into_iter()
            .partition(|o| o.id.is_none());
        self.ops = open;
        for op in done {
            self.finish_op(op, &OpEnd::ok(), now);
        }
    }

    /// Whether a `tools/list` answer may be in this exchange's body.
    fn may_list_tools(&self) -> bool {
        self.framing == Framing::Sse || self.ops.iter().any(|o| o.method == mcp::TOOLS_LIST)
    }

    /// A response from the server: finish the op it answers (here, or parked for a resumed
    /// stream).
    fn answered(&mut self, msg: &mcp::Message, now: Instant) {
        let Some(id) = msg.id.as_ref() else { return };
        let code = msg.error.as_ref().map(|(c, _)| c.to_string());
        let end = OpEnd {
            error_type: code.as_deref().or(msg.is_error.then_some("tool_error")),
            message: msg.error.as_ref().map(|(_, t)| t.as_str()),
            rpc_code: msg.error.as_ref().map(|(c, _)| *c),
            refused: None,
            mcp_session: None,
            protocol_version: msg.protocol_version.as_deref(),
        };
        if let Some(v) = &msg.protocol_version {
            self.protocol_version = Some(v.clone());
        }
        if let Some(i) = self.ops.iter().position(|o| o.id.as_ref() == Some(id)) {
            let op = self.ops.swap_remove(i);
            self.finish_op(op, &end, now);
        } else if let Some((op, shared)) = self.state.take(&self.key, id) {
            op.finish(&shared, &end, now);
        }
    }

    /// JSON-RPC errors for the requests still open, framed for the body (SSE events, or one
    /// JSON answer), each op finished with `error_type`.
    fn errors_for_open(&mut self, error_type: &str, message: &str) -> Option<Bytes> {
        let ids: Vec<RequestId> = self.ops.iter().filter_map(|o| o.id.clone()).collect();
        self.end_all(&OpEnd::error(error_type, message));
        let error = |id: &RequestId| {
            serde_json::json!({"jsonrpc": "2.0", "id": id.to_value(),
                "error": {"code": -32603, "message": message, "data": {"tokenwarden": error_type}}})
        };
        match self.framing {
            Framing::Sse => {
                let mut out = Vec::new();
                for id in &ids {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(error(id).to_string().as_bytes());
                    out.extend_from_slice(b"\n\n");
                }
                (!out.is_empty()).then(|| Bytes::from(out))
            }
            Framing::Json => {
                let body = match (ids.as_slice(), self.batch) {
                    ([id], false) => error(id),
                    (ids, _) if !ids.is_empty() => Value::Array(ids.iter().map(error).collect()),
                    _ => serde_json::json!({"jsonrpc": "2.0", "id": null,
                        "error": {"code": -32603, "message": message, "data": {"tokenwarden": error_type}}}),
                };
                Some(Bytes::from(body.to_string()))
            }
            Framing::Other => None,
        }
    }
}

impl McpObserver for Exchange {
    fn on_message(&mut self, json: &[u8], armed: bool) -> Option<Vec<u8>> {
        let now = Instant::now();
        let Ok(mut doc) = serde_json::from_slice::<Value>(json) else {
            return None; // not ours to judge: the client reads what the server sent
        };
        let filter = self.filter.clone();
        let keep = |name: &str| filter.as_ref().is_none_or(|f| f.permits(name));
        let mut replaced = None;
        if let Some(listing) = mcp::tools::filter(&mut doc, &keep) {
            self.policies
                .tool_schemas()
                .learn(&self.key, &listing.declared, now);
            if !listing.removed.is_empty() {
                tracing::debug!(removed = ?listing.removed, agent = %self.shared.agent, "tools/list filtered");
                if armed {
                    replaced = serde_json::to_vec(&doc).ok();
                }
            }
        }
        if let Ok(batch) = mcp::message::read(&doc) {
            for msg in batch.messages.iter().filter(|m| m.kind == Kind::Response) {
                self.answered(msg, now);
            }
        }
        replaced
    }

    fn oversized(&mut self, armed: bool) -> Option<Bytes> {
        if !armed {
            return None; // forwarded unread: its ops end when the body does
        }
        self.errors_for_open(
            "response_too_large",
            "tokenwarden: the MCP server's answer is larger than tokenwarden can check against the agent's tool policy; it was not forwarded",
        )
    }

    fn broken(&mut self) -> Option<Bytes> {
        self.errors_for_open(
            "upstream_reset",
            "tokenwarden: the MCP server ended the stream before answering",
        )
    }

    fn on_end(mut self, end: BodyEnd) {
        match end {
            BodyEnd::Complete => {
                // Answers may still come on a resumed stream (the server ended this one early).
                let now = Instant::now();
                for op in std::mem::take(&mut self.ops) {
                    if op.id.is_some() && self.framing == Framing::Sse {
                        self.state.park(&self.key, op, &self.shared);
                    } else {
                        let end = if op.id.is_some() {
                            OpEnd::error(
                                "no_response",
                                "the answer held no response to this request",
                            )
                        } else {
                            OpEnd::ok()
                        };
                        self.finish_op(op, &end, now);
                    }
                }
            }
            BodyEnd::ClientGone => self.end_all(&OpEnd::error("cancelled", "the client went away")),
            BodyEnd::UpstreamError | BodyEnd::IdleTimeout => self.end_all(&OpEnd::error(
                "upstream_reset",
                "the MCP server's answer broke off",
            )),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Only reached with open ops when the request ended before a body took them over (the
        // client went away while the request was upstream).
        if !self.ops.is_empty() {
            self.end_all(&OpEnd::error(
                "cancelled",
                "the request ended before an answer",
            ));
        }
    }
}

// === impl Exchange: the request side ===

impl Exchange {
    /// The exchange of one request on `route` by `agent`: the agent's `session` (from the
    /// identity headers, else the server's `Mcp-Session-Id`), the request's MCP headers.
    pub fn new(
        route: &Route,
        agent: Arc<str>,
        headers: &HeaderMap,
        session: Option<Arc<str>>,
        deps: (&Arc<McpState>, &Arc<Policies>, &Arc<Labels>),
    ) -> Exchange {
        let (state, policies, labels) = deps;
        let mcp_session = header(headers, mcp::SESSION_HEADER);
        let session = session.or_else(|| mcp_session.as_deref().map(Arc::from));
        let who = session.clone().unwrap_or_else(|| agent.clone());
        Exchange {
            ops: Vec::new(),
            key: Arc::from(format!(
                "{}\u{0}{}",
                route.name,
                mcp_session.as_deref().unwrap_or(&who)
            )),
            filter: policies.tool_filter(&agent),
            shared: Arc::new(Shared {
                route: route.name.clone(),
                server_address: route.host.clone(),
                server_port: route.port(),
                agent,
                session,
                labels: labels.clone(),
            }),
            state: state.clone(),
            policies: policies.clone(),
            protocol_version: header(headers, mcp::PROTOCOL_VERSION_HEADER),
            mcp_session,
            framing: Framing::Other,
            batch: false,
            tickets: Vec::new(),
        }
    }

    /// The session the exchange's tool calls count steps in.
    pub fn session(&self) -> Option<&Arc<str>> {
        self.shared.session.as_ref()
    }

    /// Read a POST body into ops (a span each when `spans` export); the `traceparent` for the
    /// upstream request when it holds exactly one request.
    pub fn read(
        &mut self,
        body: &[u8],
        headers: &HeaderMap,
        spans: Option<&Arc<Spans>>,
        started: Instant,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        let batch = mcp::message::parse(body)?;
        self.batch = batch.batch;
        for msg in batch.messages {
            let Some(method) = msg.method else { continue }; // the client's answers
            let meta = msg
                .traceparent
                .as_deref()
                .map(|t| (t, msg.tracestate.as_deref()));
            self.ops.push(Op {
                span: spans.map(|s| McpSpan::start(s, headers, meta, started)),
                id: msg.id,
                method,
                target: msg.target,
                arguments: msg.arguments,
                protocol_version: msg.protocol_version,
                started,
                step: None,
                violations: Vec::new(),
            });
        }
        let mut requests = self.ops.iter().filter(|o| o.id.is_some());
        Ok(match (requests.next(), requests.next()) {
            // One request: the server's work is our span's child.
            (Some(only), None) => only.span.as_ref().map(McpSpan::traceparent),
            _ => None,
        })
    }

    /// The policies on every `tools/call` of the POST: all admitted (each takes its session
    /// step, the side effects apply, `call` notes the violations), held for a person's approval
    /// (answered at once, see `approval`), or the first refusal.
    pub fn admit(
        &mut self,
        policies: &Policies,
        sessions: &Sessions,
        approvals: &Approvals,
        call: &mut Call,
    ) -> Result<Admitted, ProxyError> {
        let session = self.shared.session.clone();
        let next = session.as_deref().map(|s| sessions.next_step(s));
        let mut admitted = Vec::new();
        let now = Instant::now();
        let calls = self
            .ops
            .iter_mut()
            .enumerate()
            .filter(|(_, o)| o.is_tool_call() && o.id.is_some());
        for (i, op) in calls {
            let asker = Asker {
                agent: &self.shared.agent,
                operation: Operation::Other,
                session: session.as_ref(),
                step: next.map(|n| n + admitted.len() as u64),
                now,
            };
            let tool = op.target.as_deref().unwrap_or_default();
            match policies.admit_tool_call(&asker, &self.key, tool, op.arguments.as_ref()) {
                Ok(pending) => {
                    op.violations = pending.violations().to_vec();
                    admitted.push((i, pending));
                }
                Err(r) => {
                    op.violations = r.violations;
                    return Err((*r.error).into());
                }
            }
        }
        // Held calls: each approved one is forwarded once; one still waiting answers the POST.
        let mut tickets = Vec::new();
        for (i, _) in admitted.iter().filter(|(_, p)| p.held()) {
            let op = &self.ops[*i];
            let held = HeldCall {
                agent: &self.shared.agent,
                session: session.as_ref(),
                server: &self.shared.route,
                tool: op.target.as_deref().unwrap_or_default(),
                arguments: op.arguments.as_ref(),
            };
            let gate = approvals.check(&held);
            if !matches!(gate, Gate::Approved(_)) {
                // Nothing of this POST is forwarded: approvals claimed so far go back.
                std::mem::take(&mut tickets)
                    .into_iter()
                    .for_each(|t| approvals.restore(t));
            }
            match gate {
                Gate::Approved(t) => tickets.push(t),
                Gate::Pending { id, expires_in } => {
                    return Ok(Admitted::Held(self.held(*i, &id, expires_in, call)))
                }
                Gate::Refused(e) => return Err(e.into()),
            }
        }
        for (i, pending) in admitted {
            if let Some(s) = &session {
                let Some(step) = sessions.take_step(s, call.started(), pending.max_steps()) else {
                    // A concurrent call of the session took the last step meanwhile.
                    tickets.into_iter().for_each(|t| approvals.restore(t));
                    return Err(policies.steps_used(&pending).into());
                };
                self.ops[i].step = Some(step);
            }
            self.ops[i]
                .violations
                .iter()
                .for_each(|v| call.add_policy_violation(*v));
            policies.commit(pending, session.as_ref());
        }
        // Spent once the calls reach the server; kept until then.
        self.tickets = tickets;
        Ok(Admitted::Forward)
    }

    /// The answer to a POST whose call `i` awaits approval `id`: that call gets a tool error
    /// result telling the model so (a result, not an error: SDKs hand it to the model instead
    /// of raising), other requests of a batch a JSON-RPC error; nothing is forwarded.
    fn held(&mut self, i: usize, id: &str, expires_in: Duration, call: &mut Call) -> Bytes {
        call.add_policy_violation(PolicyViolation::ApprovalRequired);
        let held_id = self.ops[i].id.clone();
        let tool = self.ops[i].target.as_deref().unwrap_or_default();
        let secs = expires_in.as_secs();
        let text = format!(
            "tokenwarden: this call to tool '{tool}' needs a person's approval before it runs, and was not run. \
             Approval request {id} is pending (it expires in {secs} s). Once a person approves it, call the tool \
             again with exactly the same arguments: that call runs, once. If it is denied or expires, the call is refused."
        );
        let others =
            "tokenwarden: not forwarded: another call in this batch awaits a person's approval";
        let answers: Vec<Value> = self
            .ops
            .iter()
            .filter_map(|o| o.id.as_ref())
            .map(|rid| {
                if Some(rid) == held_id.as_ref() {
                    // `resultType`: required from protocol 2026-07-28 on (the Python SDK's
                    // client rejects a result without it); earlier versions allow extra keys.
                    serde_json::json!({"jsonrpc": "2.0", "id": rid.to_value(), "result": {
                        "content": [{"type": "text", "text": text}],
                        "isError": true,
                        "resultType": "complete",
                        "_meta": {"tokenwarden/approval": {"id": id, "status": "pending", "expires_in_seconds": secs}},
                    }})
                } else {
                    serde_json::json!({"jsonrpc": "2.0", "id": rid.to_value(), "error": {
                        "code": -32603, "message": others, "data": {"tokenwarden": "approval_pending"}}})
                }
            })
            .collect();
        let now = Instant::now();
        for op in std::mem::take(&mut self.ops) {
            let end = if op.id.is_some() && op.id == held_id {
                OpEnd {
                    refused: Some(PolicyViolation::ApprovalRequired),
                    ..OpEnd::error("approval_pending", &text)
                }
            } else {
                OpEnd::error("approval_pending", others)
            };
            self.finish_op(op, &end, now);
        }
        let body = match (self.batch, answers.as_slice()) {
            (false, [one]) => one.to_string(),
            _ => Value::Array(answers).to_string(),
        };
        Bytes::from(body)
    }

    /// The POST is answered by the proxy with `e`: every op ends with it. Returns the request
    /// ids to answer and whether the POST was a batch.
    pub fn refuse(&mut self, e: &ProxyError, call: &mut Call) -> (Vec<RequestId>, bool) {
        let ids: Vec<RequestId> = self.ops.iter().filter_map(|o| o.id.clone()).collect();
        let refused = match e {
            ProxyError::Policy(p) => Some(p.policy()),
            ProxyError::Approval(_) => Some(PolicyViolation::ApprovalRequired),
            _ => None,
        };
        if let Some(p) = refused {
            call.add_policy_violation(p);
        }
        let code = e.jsonrpc_code();
        let (error_type, message) = (code.to_string(), e.to_string());
        self.end_all(&OpEnd {
            error_type: Some(&error_type),
            message: Some(&message),
            rpc_code: Some(code),
            refused,
            ..OpEnd::ok()
        });
        (ids, self.batch)
    }

    /// The upstream could not be asked (`e`): every op ends with it.
    pub fn unreachable(&mut self, e: &ProxyError, approvals: &Approvals) {
        if e.upstream_kind() == Some(crate::record::UpstreamError::Connect) {
            // The approved calls never ran: their approvals stand for the agent's retry.
            std::mem::take(&mut self.tickets)
                .into_iter()
                .for_each(|t| approvals.restore(t));
        }
        let message = e.to_string();
        self.end_all(&OpEnd::error(e.code(), &message));
    }

    /// The server's status and headers: how its body is framed, and whether it must be read
    /// armed (the agent's lists restrict and a `tools/list` answer may be in it). Ops the status
    /// already ends (an HTTP error, `202 Accepted`) finish here.
    pub fn on_head(&mut self, status: StatusCode, headers: &HeaderMap) -> (Framing, bool) {
        if let Some(sid) = header(headers, mcp::SESSION_HEADER) {
            self.mcp_session = Some(sid); // assigned at `initialize`
        }
        let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        self.framing = match ct.map(media_type).as_deref() {
            Some("text/event-stream") if status.is_success() => Framing::Sse,
            Some("application/json") if status.is_success() => Framing::Json,
            _ => Framing::Other,
        };
        if !status.is_success() {
            let code = status.as_u16().to_string();
            self.end_all(&OpEnd::error(&code, "the MCP server refused the request"));
        } else if self.framing == Framing::Other || status == StatusCode::ACCEPTED {
            self.acknowledged();
        }
        let armed =
            self.filter.is_some() && self.may_list_tools() && self.framing != Framing::Other;
        (self.framing, armed)
    }
}

/// A header's value as text.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// `type/subtype` of a `Content-Type`, lowercased, parameters dropped.
fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}
