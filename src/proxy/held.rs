//! Holding a JSON response until its tool calls are checked, for agents whose policies block.
//!
//! A streamed response cannot be withdrawn once bytes have gone out, so only whole (non-streamed,
//! unencoded, 2xx) bodies are held: read up to the parse cap, checked, then forwarded unchanged
//! or replaced by a provider-shaped 403. Accounting sees the upstream's body either way — its
//! tokens were spent. A response such a policy must see that can be neither held nor gated is
//! refused unread.

use crate::http_client::UpstreamBody;
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::response::Parts;
use http::Response;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::body::{BodyEnd, Observer};
use crate::policy::PolicyError;
use crate::providers::ResponseParser;

use super::answer::{local_error, local_error_after, ProxyBody};
use super::call::Call;
use super::error::ProxyError;
use super::route::Route;
use crate::providers::protocol::ErrorShape;
use crate::record::{Operation, MAX_PARSE_BYTES};

/// Whether to hold this response: a blocking policy applies, and the body is a 2xx JSON body
/// that fits the parse cap (as far as its length says).
pub(super) fn should_hold(call: &Call, head: &Parts) -> bool {
    head.status.is_success() && fits_parse_cap(head) && call.holds_response()
}

/// Whether a body fits the parse cap, as far as its length says.
pub(super) fn fits_parse_cap(head: &Parts) -> bool {
    head.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|n| n <= MAX_PARSE_BYTES)
}

/// The refusal of a 2xx response that a blocking policy must see but that is neither held nor
/// gated (asked after both): its tool calls cannot be checked, so it is refused as unreadable
/// rather than passed unchecked. Its body is not read.
pub(super) fn refuse_unchecked(call: &mut Call, head: &Parts) -> Option<PolicyError> {
    // Only generation carries tool calls: an embeddings list or a file over the cap is not
    // refused for what it cannot hold.
    let generates = matches!(
        call.labels().operation,
        Operation::Chat | Operation::GenerateContent
    );
    if !head.status.is_success() || !generates {
        return None;
    }
    let llm = call.llm_mut()?;
    if !llm.skips_blocking_check() {
        return None;
    }
    let e = llm.take_policy()?.unreadable();
    call.add_policy_violation(e.policy());
    call.set_policy_blocked(e.policy());
    Some(e)
}

/// Read the whole body, check its tool calls, and answer with it or with the refusal.
pub(super) async fn respond(
    mut call: Call,
    head: Parts,
    body: UpstreamBody,
    shape: ErrorShape,
    route: &Route,
) -> Response<ProxyBody> {
    let bytes = match collect(body, route).await {
        Ok(b) => b,
        Err((e, partial, end)) => {
            // The upstream answered 2xx and generated what it sent before it broke off (or ran
            // past the cap): charged, estimated where it states no usage, though the client
            // gets the error.
            call.on_data(&partial, Instant::now());
            return local_error_after(call, e, shape, end);
        }
    };
    let now = Instant::now();
    let mut block = None;
    let mut violations = Vec::new();
    if let Some(llm) = call.llm_mut() {
        if let Some(check) = llm.take_policy() {
            let mut parser = ResponseParser::new(llm.facts().format, false, MAX_PARSE_BYTES);
            parser.feed(&bytes);
            let record = parser.finish();
            if record.unparsed.is_some() {
                // Not a body of the format's shape: not JSON at all (an SSE body without its
                // content type, say), or JSON whose members do not fit (a negative or fractional
                // token count, arguments as an object). The typed read then found no calls,
                // though the agent's parser may read them all the same: it is not passed
                // unchecked.
                let e = check.unreadable();
                violations = vec![e.policy()];
                block = Some(e);
            } else {
                let review = check.review(&llm.facts().tools, &record.tool_calls);
                violations = review.violations;
                block = review.block;
            }
        }
    }
    for v in violations {
        call.add_policy_violation(v);
    }
    call.on_data(&bytes, now);
    if let Some(e) = block {
        call.set_policy_blocked(e.policy());
        return local_error(call, e.into(), shape);
    }
    call.returned = Some(now);
    call.on_end(BodyEnd::Complete);
    Response::from_parts(head, super::answer::full(Full::new(bytes)))
}

/// Why a held body was not read whole: the error to answer, what arrived before it, and how
/// the upstream's body ended.
pub(super) type Unread = (ProxyError, Bytes, BodyEnd);

pub(super) async fn collect(mut body: UpstreamBody, route: &Route) -> Result<Bytes, Unread> {
    let idle = route.timeouts.idle_timeout;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                let e = ProxyError::UpstreamTimeout {
                    route: route.name.to_string(),
                    after: idle,
                };
                return Err((e, buf.freeze(), BodyEnd::IdleTimeout));
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => {
                let e = ProxyError::UpstreamReset {
                    route: route.name.to_string(),
                };
                return Err((e, buf.freeze(), BodyEnd::UpstreamError));
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_PARSE_BYTES {
                let e = ProxyError::ResponseTooLarge {
                    route: route.name.to_string(),
                };
                // Read no further: the parser reads what arrived (past its cap, the tail).
                buf.extend_from_slice(&data);
                return Err((e, buf.freeze(), BodyEnd::Complete));
            }
            buf.extend_from_slice(&data);
        }
    }
}
