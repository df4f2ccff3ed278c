//! What the proxy answers with: the one response body type, and its own error answers (the
//! errors become provider-shaped responses in [`ProxyError::to_response`]).

use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::body::{Cut, Gate, ObservedBody, StripUsage};
use crate::providers::protocol::ErrorShape;
use crate::record::UpstreamError;

use super::call::Call;
use super::error::ProxyError;

/// The upstream's response body as it is forwarded: observed, cut at a budget, gated on its
/// tool calls (each a pass-through unless armed).
pub type Upstream = Gate<Cut<ObservedBody<Incoming, Call>>>;

/// The body of every response the proxy returns: the upstream's (and, for injected stream
/// usage, rewritten), or one the proxy made itself.
pub type ProxyBody = Either<Upstream, Either<StripUsage<Upstream>, Full<Bytes>>>;

/// Answer with a proxy-generated error and finish the call.
pub(super) fn local_error(mut call: Call, e: ProxyError, shape: ErrorShape) -> Response<ProxyBody> {
    if let Some(kind) = e.upstream_kind() {
        call.upstream_failed(kind);
    }
    let resp = e.to_response(shape);
    let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0) as usize;
    tracing::debug!(route = ?e.upstream_kind().map(UpstreamError::as_str), error = %e, "proxy error");
    call.finish_local(resp.status(), len);
    resp.map(|b| Either::Right(Either::Right(b)))
}
