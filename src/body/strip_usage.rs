//! [`StripUsage`]: the response side of stream-usage injection for OpenAI chat streams.
//!
//! When the client did not ask for `stream_options.include_usage`, the proxy asks on its behalf
//! (exact token counts beat estimates) and then hides from the client what it did not ask for:
//! the usage-only chunk (`"choices":[]` with a usage object) is dropped and the `"usage":null`
//! field is removed from every other chunk, so the client receives the stream the provider would
//! have sent it. Events are rewritten whole: a partial event is held only until its blank line
//! arrives (a client cannot use half an event anyway); complete events go out at once.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use memchr::memmem;
use pin_project_lite::pin_project;

/// Largest partial event held while waiting for its end; beyond it bytes pass unmodified.
const MAX_PENDING: usize = 1024 * 1024;

pin_project! {
    /// Rewrites an OpenAI chat SSE stream as if `include_usage` had not been requested.
    pub struct StripUsage<B> {
        #[pin]
        inner: B,
        pending: BytesMut,
        done: bool,
    }
}

// === impl StripUsage ===

impl<B> StripUsage<B> {
    /// Wrap an SSE body.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            pending: BytesMut::new(),
            done: false,
        }
    }
}

impl<B> Body for StripUsage<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(other) => return Poll::Ready(Some(Ok(other))),
                    };
                    this.pending.extend_from_slice(&data);
                    let out = if this.pending.len() > MAX_PENDING {
                        // Not an SSE stream we understand: pass everything through untouched.
                        this.pending.split().freeze()
                    } else {
                        rewrite_complete_events(this.pending)
                    };
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(this.pending.split().freeze()))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.pending.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Take every complete event (ending in a blank line) off the front of `pending` and return
/// them rewritten; an incomplete last event stays in `pending`.
fn rewrite_complete_events(pending: &mut BytesMut) -> Bytes {
    let Some(end) = last_event_end(pending) else {
        return Bytes::new();
    };
    let events = pending.split_to(end);
    let mut out = BytesMut::with_capacity(events.len());
    let mut rest = &events[..];
    while !rest.is_empty() {
        let len = next_event_end(rest).unwrap_or(rest.len());
        rewrite_event(&rest[..len], &mut out);
        rest = &rest[len..];
    }
    out.freeze()
}

/// End (exclusive) of the first event in `buf`, its blank line included.
fn next_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn last_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::rfind(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::rfind(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Copy one event to `out`, dropping it if it is the usage-only chunk and removing
/// `"usage":null` otherwise.
fn rewrite_event(ev: &[u8], out: &mut BytesMut) {
    let usage_only = memmem::find(ev, br#""choices":[]"#).is_some()
        && memmem::find(ev, br#""usage":{"#).is_some();
    if usage_only {
        return;
    }
    for pat in [&br#","usage":null"#[..], br#""usage":null,"#] {
        if let Some(i) = memmem::find(ev, pat) {
            out.extend_from_slice(&ev[..i]);
            out.extend_from_slice(&ev[i + pat.len()..]);
            return;
        }
    }
    out.extend_from_slice(ev);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    const WITH: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null,\"obfuscation\":\"x\"}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n\
data: [DONE]\n\n";

    async fn run(chunks: Vec<&'static [u8]>) -> Vec<u8> {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        let body = StripUsage::new(StreamBody::new(futures_util::stream::iter(frames)));
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn the_client_gets_the_stream_it_asked_for_however_it_is_cut() {
        let whole = run(vec![WITH.as_bytes()]).await;
        let expected = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"obfuscation\":\"x\"}\n\n\
data: [DONE]\n\n";
        assert_eq!(String::from_utf8(whole).unwrap(), expected);
        let bytes: Vec<&'static [u8]> = WITH.as_bytes().chunks(1).collect();
        assert_eq!(String::from_utf8(run(bytes).await).unwrap(), expected);
        let sevens: Vec<&'static [u8]> = WITH.as_bytes().chunks(7).collect();
        assert_eq!(String::from_utf8(run(sevens).await).unwrap(), expected);
    }

    #[tokio::test]
    async fn crlf_events_and_a_trailing_partial_event_pass() {
        let s: &'static [u8] =
            b"data: {\"choices\":[{}],\"usage\":null}\r\n\r\ndata: {\"partial\":";
        assert_eq!(
            run(vec![s]).await,
            b"data: {\"choices\":[{}]}\r\n\r\ndata: {\"partial\":"
        );
    }
}
