//! Responses whose body names URLs the client then fetches directly (Anthropic's batch
//! `results_url`, on the API's own host): read whole, those URLs pointed at the proxy's URL the
//! client used (the format's [`Classified::point_links`]), forwarded with their new length. Such
//! a request asks the upstream for a plain body; a body that still comes encoded, is not 2xx, or
//! is larger than the parse cap passes as it is.

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HOST};
use http::response::Parts;
use http::{HeaderValue, Response};
use http_body_util::Full;
use tokio::time::Instant;

use crate::body::{BodyEnd, Observer};
use crate::http_client::UpstreamBody;
use crate::providers::protocol::{Classified, ErrorShape};

use super::answer::{local_error_after, ProxyBody};
use super::call::Call;
use super::route::Route;

/// The proxy's URL as the client reached it, with the client's path up to `n` (its prefix
/// before the API's own path): `http://{host}{prefix}`. `None` without a plain host (a `Host`
/// with user info or anything but an authority is never put into a URL the client follows).
pub(super) fn base(req: &http::request::Parts, n: usize) -> Option<String> {
    let host = match req.headers.get(HOST) {
        Some(h) => h.to_str().ok()?,
        None => req.uri.authority()?.as_str(),
    };
    let authority: http::uri::Authority = host.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let prefix = req.uri.path().get(..n)?;
    Some(format!("http://{authority}{prefix}"))
}

/// Whether the response can be read whole and rewritten: 2xx, unencoded, within the parse cap
/// as far as its length says.
pub(super) fn rewrites(head: &Parts) -> bool {
    let plain = head
        .headers
        .get(CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
    head.status.is_success() && plain && super::held::fits_parse_cap(head)
}

/// Read the body whole and answer with its links pointed at `base`.
pub(super) async fn respond(
    mut call: Call,
    (mut head, body): (Parts, UpstreamBody),
    (class, shape): (Classified, ErrorShape),
    route: &Route,
    base: &str,
) -> Response<ProxyBody> {
    let bytes = match super::held::collect(body, route).await {
        Ok(b) => b,
        Err((e, partial, end)) => {
            call.on_data(&partial, Instant::now());
            return local_error_after(call, e, shape, end);
        }
    };
    let now = Instant::now();
    call.on_data(&bytes, now);
    call.returned = Some(now);
    call.on_end(BodyEnd::Complete);
    let bytes = match class.point_links(&bytes, base) {
        Some(rewritten) => Bytes::from(rewritten),
        None => bytes,
    };
    head.headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(head, super::answer::full(Full::new(bytes)))
}
