//! One span per JSON-RPC request (and notification) an agent sends to an MCP server, after the
//! OpenTelemetry MCP semantic conventions: named `{mcp.method.name} {target}` (the tool of a
//! `tools/call`, the prompt of a `prompts/get`), kind CLIENT, with `mcp.method.name`,
//! `mcp.session.id`, `mcp.protocol.version`, `jsonrpc.request.id`, `gen_ai.operation.name`
//! `execute_tool` and `gen_ai.tool.name` for tool calls, `error.type` (the JSON-RPC error code,
//! `tool_error` for a result with `isError`, or what failed on the way) and the proxy's own
//! `session.id`, `agent.name`, `agent_step`, policy attributes.
//!
//! Its parent is the caller's context in the message's `params._meta` (as the conventions ask),
//! else the HTTP request's `traceparent`. Encoded straight into the shared span queue, like the
//! LLM spans.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use tokio::time::Instant;

use crate::record::PolicyViolation;

use super::otlp::wire::{
    cap, put_bytes, put_fixed32, put_fixed64, put_message, put_str, put_str_joined, put_uint, Attrs,
};
use super::spans::{
    new_span_id, new_trace_id, Spans, SPAN_FLAGS_HAS_IS_REMOTE, SPAN_FLAGS_IS_REMOTE,
    SPAN_KIND_CLIENT, STATUS_CODE_ERROR,
};
use super::trace_context::{self, RemoteParent};

/// The span of one MCP request in flight.
#[derive(Debug)]
pub struct McpSpan {
    spans: Arc<Spans>,
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<RemoteParent>,
    started: Instant,
}

/// Everything a finished MCP request tells its span.
pub struct McpSpanEnd<'a> {
    /// `mcp.method.name`.
    pub method: &'a str,
    /// The tool (`tools/call`) or prompt (`prompts/get`) named.
    pub target: Option<&'a str>,
    /// `jsonrpc.request.id` (string form); `None` for notifications.
    pub request_id: Option<&'a str>,
    /// `mcp.session.id`, the server's `Mcp-Session-Id`.
    pub mcp_session: Option<&'a str>,
    /// `mcp.protocol.version`.
    pub protocol_version: Option<&'a str>,
    /// `error.type`, when the request failed.
    pub error_type: Option<&'a str>,
    /// The JSON-RPC error's message (span status description).
    pub error_message: Option<&'a str>,
    /// `rpc.response.status_code`: the JSON-RPC error code.
    pub rpc_code: Option<i64>,
    /// `server.address` (the route's upstream).
    pub server_address: &'a str,
    /// `server.port`.
    pub server_port: u16,
    /// `agent.name`.
    pub agent: &'a str,
    /// `session.id`, the agent's session.
    pub session: Option<&'a str>,
    /// `agent_step`: the session step an executed tool call took.
    pub step: Option<u64>,
    /// Policies the request broke.
    pub violations: &'a [PolicyViolation],
    /// The policy that refused it, when one did.
    pub blocked: Option<PolicyViolation>,
    /// When the answer arrived (or the request ended otherwise).
    pub now: Instant,
}

// === impl McpSpan ===

impl McpSpan {
    /// Start the span of an MCP request that arrived at `started`, exported by `spans`: its
    /// parent is the `params._meta` trace context when the message carries one, else the
    /// request headers'. (A function of this module's, not a method of `Spans`: `spans` does not
    /// depend on this module.)
    pub fn start(
        spans: &Arc<Spans>,
        headers: &HeaderMap,
        meta: Option<(&str, Option<&str>)>,
        started: Instant,
    ) -> McpSpan {
        let parent = meta
            .and_then(|(tp, ts)| trace_context::from_values(tp, ts))
            .or_else(|| trace_context::extract(headers));
        McpSpan {
            spans: spans.clone(),
            trace_id: parent.as_ref().map_or_else(new_trace_id, |p| p.trace_id),
            span_id: new_span_id(),
            parent,
            started,
        }
    }

    fn flags(&self) -> TraceFlags {
        match &self.parent {
            Some(p) if !p.flags.is_sampled() => TraceFlags::default(),
            _ => TraceFlags::SAMPLED,
        }
    }

    /// The `traceparent` naming this span as the parent of the upstream request.
    pub fn traceparent(&self) -> HeaderValue {
        trace_context::format_traceparent(self.trace_id, self.span_id, self.flags())
    }

    /// Encode the span and queue it for export.
    pub fn finish(self, f: &McpSpanEnd<'_>) {
        let flags = self.flags();
        if !flags.is_sampled() {
            return;
        }
        let sink = self.spans.sink();
        if sink.is_full() {
            sink.dropped();
            return;
        }
        sink.submit_in_place(|b| self.encode(f, flags, b));
    }

    /// The OTLP `Span` message (opentelemetry/proto/trace/v1/trace.proto field numbers).
    fn encode(&self, f: &McpSpanEnd<'_>, flags: TraceFlags, b: &mut Vec<u8>) {
        let unix_nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        let start = SystemTime::now()
            .checked_sub(f.now.saturating_duration_since(self.started))
            .unwrap_or(UNIX_EPOCH);
        put_bytes(b, 1, &self.trace_id.to_bytes());
        put_bytes(b, 2, &self.span_id.to_bytes());
        if let Some(p) = &self.parent {
            let state = p.state.header();
            if !state.is_empty() {
                put_str(b, 3, &state);
            }
            put_bytes(b, 4, &p.span_id.to_bytes());
        }
        match f.target {
            Some(t) => put_str_joined(b, 5, &[cap(f.method), cap(t)]),
            None => put_str(b, 5, cap(f.method)),
        }
        put_uint(b, 6, SPAN_KIND_CLIENT);
        put_fixed64(b, 7, unix_nanos(start));
        put_fixed64(
            b,
            8,
            unix_nanos(start + f.now.saturating_duration_since(self.started)),
        );
        attributes(f, &mut Attrs::new(b, 9));
        if let Some(e) = f.error_type {
            put_message(b, 15, |s| {
                // An upstream's error message may be long; the status keeps its start.
                put_str(
                    s,
                    2,
                    crate::record::truncate(f.error_message.unwrap_or(e), MAX_STATUS_MESSAGE),
                );
                put_uint(s, 3, STATUS_CODE_ERROR);
            });
        }
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
}

/// Longest status message an MCP span keeps from a server's JSON-RPC error.
const MAX_STATUS_MESSAGE: usize = 1024;

fn attributes(f: &McpSpanEnd<'_>, attrs: &mut Attrs<'_>) {
    attrs.str("mcp.method.name", cap(f.method));
    match (f.method, f.target) {
        (crate::mcp::TOOLS_CALL, Some(tool)) => {
            attrs.str("gen_ai.operation.name", "execute_tool");
            attrs.str("gen_ai.tool.name", cap(tool));
        }
        ("prompts/get", Some(prompt)) => attrs.str("gen_ai.prompt.name", cap(prompt)),
        _ => {}
    }
    if let Some(id) = f.request_id {
        attrs.str("jsonrpc.request.id", cap(id));
    }
    if let Some(s) = f.mcp_session {
        attrs.str("mcp.session.id", cap(s));
    }
    if let Some(v) = f.protocol_version {
        attrs.str("mcp.protocol.version", cap(v));
    }
    if let Some(e) = f.error_type {
        attrs.str("error.type", cap(e));
    }
    if let Some(code) = f.rpc_code {
        attrs.str("rpc.response.status_code", &code.to_string());
    }
    attrs.str("network.transport", "tcp");
    attrs.str("network.protocol.name", "http");
    attrs.str("server.address", f.server_address);
    attrs.int("server.port", i64::from(f.server_port));
    if let Some(s) = f.session {
        attrs.str("session.id", cap(s));
    }
    attrs.str("agent.name", cap(f.agent));
    if let Some(step) = f.step {
        attrs.int("agent_step", i64::try_from(step).unwrap_or(i64::MAX));
        attrs.str("tokenwarden.step.kind", "tool");
    }
    if let Some(p) = f.blocked {
        attrs.str("tokenwarden.policy.decision", "blocked");
        attrs.str("tokenwarden.policy.blocked", p.as_str());
    }
    if !f.violations.is_empty() {
        attrs.str_array(
            "tokenwarden.policy.violations",
            f.violations.iter().map(|v| v.as_str()),
        );
    }
}
