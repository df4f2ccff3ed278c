//! [`StripUsage`]: the response side of stream-usage injection.
//!
//! When the client did not ask for usage in its stream, the proxy asks on its behalf (exact
//! token counts beat estimates) and then hides from the client what it did not ask for: each
//! event goes through the provider's rewrite ([`EventRewrite`], from the provider's folder;
//! OpenAI chat drops the usage-only chunk and removes `"usage": null`). Event ends come from the shared SSE decoder ([`SseDecoder::feed_ends`]), so LF, CRLF and CR
//! streams split anywhere are read alike. A partial event is held only until its blank line
//! arrives (a client cannot use half an event anyway); complete events go out at once.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::providers::EventRewrite;
use crate::sse::{SseDecoder, SseItem};

/// Largest partial event held while waiting for its end; beyond it bytes pass unmodified.
const MAX_PENDING: usize = 1024 * 1024;

pin_project! {
    /// Rewrites an SSE stream event by event as if usage had not been requested.
    pub struct StripUsage<B> {
        #[pin]
        inner: B,
        rewrite: EventRewrite,
        decoder: SseDecoder,
        // Bytes since the last event end: the start of an event still arriving.
        pending: BytesMut,
        // Part of the current event already went out unmodified (it was too large to hold).
        passed_partial: bool,
        // The last event was dropped after the CR of a CRLF: the LF that follows goes with it.
        drop_lf: bool,
        done: bool,
    }
}

// === impl StripUsage ===

impl<B> StripUsage<B> {
    /// Wrap an SSE body whose events go through `rewrite`.
    pub fn new(inner: B, rewrite: EventRewrite) -> Self {
        Self {
            inner,
            rewrite,
            decoder: SseDecoder::new(MAX_PENDING),
            pending: BytesMut::new(),
            passed_partial: false,
            drop_lf: false,
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
                    let out = rewrite_frame(
                        *this.rewrite,
                        this.decoder,
                        this.pending,
                        (this.passed_partial, this.drop_lf),
                        &data,
                    );
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
                    if std::mem::take(this.drop_lf) && this.pending.first() == Some(&b'\n') {
                        this.pending.advance(1);
                    }
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

/// Add `data` to what is held and return every event it completes, rewritten; the start of an
/// event still arriving stays in `pending`.
fn rewrite_frame(
    rewrite: EventRewrite,
    decoder: &mut SseDecoder,
    pending: &mut BytesMut,
    (passed_partial, drop_lf): (&mut bool, &mut bool),
    data: &[u8],
) -> Bytes {
    // With nothing held, events are read from `data` itself and only an unfinished tail is
    // copied; else `data` joins what is held.
    let held = !pending.is_empty();
    let base = pending.len();
    if held {
        pending.extend_from_slice(data);
    }
    let src: &[u8] = if held { pending } else { data };
    let mut out = BytesMut::with_capacity(src.len());
    let mut start = 0;
    decoder.feed_ends(data, |item, end| {
        let mut span = &src[start..base + end];
        if std::mem::take(drop_lf) {
            span = span.strip_prefix(b"\n").unwrap_or(span);
        }
        let dropped = match item {
            // The rest of an event whose start already went out unmodified goes out the same.
            _ if std::mem::take(passed_partial) => {
                out.extend_from_slice(span);
                false
            }
            SseItem::Event { data, .. } => rewrite(span, data, &mut out),
            SseItem::Oversized => {
                out.extend_from_slice(span);
                false
            }
        };
        *drop_lf = dropped && span.ends_with(b"\r");
        start = base + end;
    });
    if held {
        pending.advance(start);
    } else {
        pending.extend_from_slice(&data[start..]);
    }
    if pending.len() > MAX_PENDING {
        // Not an SSE stream we understand: pass the held bytes on untouched.
        out.extend_from_slice(&pending.split());
        *passed_partial = true;
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Format;
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
        let hide = Format::OpenAiChat
            .adapter()
            .usage_hider()
            .expect("a rewrite");
        let body = StripUsage::new(StreamBody::new(futures_util::stream::iter(frames)), hide);
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

    /// Rewrite `stream` whole and one byte at a time; both must give the same bytes.
    async fn both_ways(stream: &'static str) -> String {
        let whole = String::from_utf8(run(vec![stream.as_bytes()]).await).unwrap();
        let bytes: Vec<&'static [u8]> = stream.as_bytes().chunks(1).collect();
        assert_eq!(String::from_utf8(run(bytes).await).unwrap(), whole);
        whole
    }

    #[tokio::test]
    async fn python_json_dumps_spacing_is_read_on_the_parsed_event() {
        // Python's json.dumps default separators are ", " and ": ".
        let s = "data: {\"id\": \"c\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"hi\"}}], \"usage\": null}\n\n\
data: {\"id\": \"c\", \"choices\": [], \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 1}}\n\n\
data: [DONE]\n\n";
        assert_eq!(
            both_ways(s).await,
            "data: {\"id\": \"c\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"hi\"}}]}\n\ndata: [DONE]\n\n"
        );
    }

    #[tokio::test]
    async fn usage_null_goes_wherever_it_is_and_nothing_else_changes() {
        // First member, pretty-printed over several data lines, CR line ends, a keep-alive.
        let s = ": keep-alive\r\r\
data: {\"usage\" :\tnull ,\r\
data:  \"choices\": [ {\"delta\": {\"content\": \"say \\\"usage\\\": null\"}} ] }\r\r\
data: {\"usage\":null}\r\r\
data: {\"choices\":[],\"usage\":{\"total_tokens\":4},\"x\":1}\r\r\
data: { \"choices\" : [ ] , \"usage\" : null }\r\r";
        assert_eq!(
            both_ways(s).await,
            ": keep-alive\r\r\
data: {\"choices\": [ {\"delta\": {\"content\": \"say \\\"usage\\\": null\"}} ] }\r\r\
data: {}\r\r\
data: { \"choices\" : [ ]  }\r\r"
        );
    }

    #[tokio::test]
    async fn only_top_level_members_count() {
        // `usage` nested in a choice, `choices` not empty, usage not an object: all kept.
        let s = "data: {\"choices\":[{\"usage\":{\"a\":1}}],\"usage\":{\"a\":1}}\n\n\
data: {\"choices\":[],\"usage\":7}\n\n\
data: {\"meta\":{\"choices\":[],\"usage\":{\"a\":1}}}\n\n\
data: not json \"usage\"\n\n";
        assert_eq!(both_ways(s).await, s);
    }

    #[tokio::test]
    async fn a_dropped_crlf_chunk_keeps_the_line_end_of_the_event_before_it() {
        let s = "data: {\"choices\":[{}],\"usage\":null}\r\n\r\n\
: ping\r\n\r\n\
data: {\"choices\": [], \"usage\": {\"total_tokens\": 4}}\r\n\r\n\
data: [DONE]\r\n\r\n";
        assert_eq!(
            both_ways(s).await,
            "data: {\"choices\":[{}]}\r\n\r\n: ping\r\n\r\ndata: [DONE]\r\n\r\n"
        );
    }
}
