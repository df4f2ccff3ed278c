//! What the proxy answers with: the one response body type, and its own error answers (the
//! errors become provider-shaped responses in [`ProxyError::to_response`]).

use crate::http_client::UpstreamBody;
use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};

use crate::body::{Cut, Gate, McpBody, ObservedBody, StripUsage};
use crate::providers::protocol::ErrorShape;
use crate::record::UpstreamError;

use super::call::Call;
use super::error::ProxyError;

/// The upstream's response body as it is forwarded: observed, cut at a budget, gated on its
/// tool calls (each a pass-through unless armed).
pub type Upstream = Gate<Cut<ObservedBody<UpstreamBody, Call>>>;

/// An MCP server's answer as it is forwarded: observed, read message by message.
pub type McpUpstream = McpBody<ObservedBody<UpstreamBody, Call>, super::mcp::Exchange>;

/// The body of every response the proxy returns: the upstream's (and, for injected stream
/// usage, rewritten; an MCP server's answer), or one the proxy made itself.
pub type ProxyBody =
    Either<Upstream, Either<StripUsage<Upstream>, Either<McpUpstream, Full<Bytes>>>>;

/// A body the proxy made itself.
pub(super) fn full(b: Full<Bytes>) -> ProxyBody {
    Either::Right(Either::Right(Either::Right(b)))
}

/// Answer with a proxy-generated error and finish the call.
pub(super) fn local_error(call: Call, e: ProxyError, shape: ErrorShape) -> Response<ProxyBody> {
    local_error_after(call, e, shape, crate::body::BodyEnd::Complete)
}

/// [`local_error`] for a call whose upstream body ended as `end` before the proxy answered.
pub(super) fn local_error_after(
    mut call: Call,
    e: ProxyError,
    shape: ErrorShape,
    end: crate::body::BodyEnd,
) -> Response<ProxyBody> {
    if let Some(kind) = e.upstream_kind() {
        call.upstream_failed(kind);
    }
    let resp = e.to_response(shape);
    let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0) as usize;
    tracing::debug!(route = ?e.upstream_kind().map(UpstreamError::as_str), error = %e, "proxy error");
    call.finish_local_after(resp.status(), len, end);
    resp.map(full)
}

/// Answer an MCP request with JSON-RPC messages the proxy made (`body`, HTTP 200) and finish
/// the call.
pub(super) fn jsonrpc_answer(call: Call, body: Bytes) -> Response<ProxyBody> {
    let len = body.len();
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    call.finish_local(resp.status(), len);
    resp.map(full)
}

/// Answer an MCP request with a proxy error as JSON-RPC errors for `ids` and finish the call.
pub(super) fn jsonrpc_error(
    mut call: Call,
    e: &ProxyError,
    ids: &[crate::mcp::RequestId],
    batch: bool,
) -> Response<ProxyBody> {
    if let Some(kind) = e.upstream_kind() {
        call.upstream_failed(kind);
    }
    let resp = e.to_jsonrpc(ids, batch);
    let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0) as usize;
    tracing::debug!(error = %e, "proxy error on an MCP route");
    call.finish_local(resp.status(), len);
    resp.map(full)
}
