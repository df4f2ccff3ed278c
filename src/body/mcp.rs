//! [`McpBody`]: an MCP server's answer — one JSON message or batch, or an SSE stream of messages —
//! shown message by message to an [`McpObserver`] (the proxy's side of the exchange: spans,
//! metrics, the `tools/list` filter).
//!
//! Unarmed, every frame goes to the client the moment it arrives and the observer reads a copy
//! (bounded by [`MAX_MESSAGE_BYTES`]; a larger message is forwarded unread). Armed (the agent's
//! tool lists restrict what it may see), a message is held until it is complete — the whole JSON
//! body, or one SSE event — and the observer may replace it: a `tools/list` result without the
//! denied tools. Messages it leaves alone go out byte-identical. A message too large to hold
//! cannot be checked: the observer says what goes out instead, and the rest of the upstream body
//! is read without being forwarded.
//!
//! A stream the server breaks off (an upstream error mid-stream) is ended cleanly after what the
//! observer adds: JSON-RPC errors for the requests left unanswered, so the client's SDK raises
//! an error for each instead of waiting on a dead stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::observed::BodyEnd;
use crate::mcp::MAX_MESSAGE_BYTES;
use crate::sse::{raw, SseDecoder, SseItem};

/// The proxy's side of an MCP answer.
pub trait McpObserver: Send + 'static {
    /// One complete message (its JSON text). When the body is `armed`, `Some` is the JSON text
    /// to forward in its place.
    fn on_message(&mut self, json: &[u8], armed: bool) -> Option<Vec<u8>>;
    /// A message over [`MAX_MESSAGE_BYTES`]. When the body is `armed`, the bytes that go out in
    /// its place and end the body (already framed: a JSON body, or an SSE event).
    fn oversized(&mut self, armed: bool) -> Option<Bytes>;
    /// The upstream body failed mid-way: the bytes (already framed) that end the body cleanly,
    /// if any.
    fn broken(&mut self) -> Option<Bytes>;
    /// Called exactly once, when the body ends however it ends.
    fn on_end(self, end: BodyEnd);
}

/// How an answer is framed (from its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/json`: one message or a batch.
    Json,
    /// `text/event-stream`: one message per event.
    Sse,
    /// Anything else (an error page): forwarded, not read.
    Other,
}

enum State {
    Passing,
    /// A replacement goes out next, then the rest is read unforwarded.
    Replacing(Bytes),
    Draining,
    Done,
}

pin_project! {
    /// An MCP answer read message by message (see the module docs).
    pub struct McpBody<B, O: McpObserver> {
        #[pin]
        inner: B,
        observer: Option<O>,
        framing: Framing,
        armed: bool,
        decoder: SseDecoder,
        // Armed: the part of a message still arriving. Unarmed JSON: the copy being read.
        pending: BytesMut,
        // Unarmed JSON past the cap: no longer copied.
        unread: bool,
        state: State,
    }

    impl<B, O: McpObserver> PinnedDrop for McpBody<B, O> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(o) = this.project().observer.take() {
                o.on_end(BodyEnd::ClientGone);
            }
        }
    }
}

// === impl McpBody ===

impl<B: Body<Data = Bytes>, O: McpObserver> McpBody<B, O> {
    /// Read `inner` as `framing` for `observer`; `armed` lets it replace messages.
    pub fn new(inner: B, observer: O, framing: Framing, armed: bool) -> Self {
        let mut observer = Some(observer);
        if inner.is_end_stream() {
            if let Some(o) = observer.take() {
                o.on_end(BodyEnd::Complete);
            }
        }
        Self {
            inner,
            observer,
            framing,
            armed: armed && framing != Framing::Other,
            decoder: SseDecoder::new(MAX_MESSAGE_BYTES),
            pending: BytesMut::new(),
            unread: false,
            state: State::Passing,
        }
    }
}

impl<B, O> Body for McpBody<B, O>
where
    B: Body<Data = Bytes>,
    O: McpObserver,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        loop {
            match std::mem::replace(this.state, State::Passing) {
                State::Done => {
                    *this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Replacing(out) => {
                    *this.state = State::Draining;
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                State::Draining => match this.inner.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(_))) => {
                        *this.state = State::Draining;
                        continue;
                    }
                    Poll::Ready(Some(Err(_)) | None) => {
                        finish(this.observer, this.state, BodyEnd::Complete);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {
                        *this.state = State::Draining;
                        return Poll::Pending;
                    }
                },
                State::Passing => {}
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    let tail = end_of_body(
                        this.observer,
                        *this.framing,
                        *this.armed,
                        this.pending,
                        *this.unread,
                    );
                    finish(this.observer, this.state, BodyEnd::Complete);
                    return Poll::Ready(tail.map(|t| Ok(Frame::data(t))));
                }
                Poll::Ready(Some(Err(e))) => {
                    // Armed, an event cut off mid-way was never forwarded; unarmed, one whose start
                    // went out already cannot be ended cleanly: the error is passed on instead.
                    let clean = *this.framing == Framing::Sse
                        && (*this.armed || this.decoder.buffered() == 0);
                    let tail = this.observer.as_mut().and_then(O::broken).filter(|_| clean);
                    if let Some(tail) = tail {
                        // The client gets an error per unanswered request and a stream that ends.
                        this.pending.clear();
                        finish(this.observer, this.state, BodyEnd::UpstreamError);
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    finish(this.observer, this.state, BodyEnd::UpstreamError);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                Err(other) => return Poll::Ready(Some(Ok(other))),
            };
            let Some(observer) = this.observer.as_mut() else {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            };
            let mut out = match (*this.framing, *this.armed) {
                (Framing::Other, _) => data,
                (Framing::Json, false) => {
                    copy_json(this.pending, this.unread, &data);
                    data
                }
                (Framing::Sse, false) => {
                    this.decoder.feed(&data, |item| match item {
                        SseItem::Event { data, .. } => {
                            observer.on_message(data, false);
                        }
                        SseItem::Oversized => {
                            observer.oversized(false);
                        }
                    });
                    data
                }
                (Framing::Json, true) => {
                    this.pending.extend_from_slice(&data);
                    if this.pending.len() > MAX_MESSAGE_BYTES {
                        this.pending.clear();
                        let out = observer.oversized(true).unwrap_or_default();
                        *this.state = State::Replacing(out);
                        continue;
                    }
                    Bytes::new()
                }
                (Framing::Sse, true) => {
                    let (out, stop) = armed_sse(observer, this.decoder, this.pending, data);
                    if let Some(tail) = stop {
                        let mut b = BytesMut::from(out);
                        b.extend_from_slice(&tail);
                        *this.state = State::Replacing(b.freeze());
                        continue;
                    }
                    out
                }
            };
            if this.inner.is_end_stream() {
                // hyper stops polling a body whose length it knows once it has it all: the end
                // is handled with its last frame.
                let tail = end_of_body(
                    this.observer,
                    *this.framing,
                    *this.armed,
                    this.pending,
                    *this.unread,
                );
                finish(this.observer, this.state, BodyEnd::Complete);
                if let Some(tail) = tail {
                    let mut b = BytesMut::from(out);
                    b.extend_from_slice(&tail);
                    out = b.freeze();
                }
            }
            if out.is_empty() {
                if matches!(this.state, State::Done) {
                    return Poll::Ready(None);
                }
                continue;
            }
            return Poll::Ready(Some(Ok(Frame::data(out))));
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        if self.armed {
            // A replaced message is shorter than the server's.
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

fn finish<O: McpObserver>(observer: &mut Option<O>, state: &mut State, end: BodyEnd) {
    *state = State::Done;
    if let Some(o) = observer.take() {
        o.on_end(end);
    }
}

/// Keep a copy of an unarmed JSON answer for reading at its end, up to the cap.
fn copy_json(pending: &mut BytesMut, unread: &mut bool, data: &[u8]) {
    if *unread {
        return;
    }
    if pending.len() + data.len() > MAX_MESSAGE_BYTES {
        *unread = true;
        pending.clear();
        return;
    }
    pending.extend_from_slice(data);
}

/// The body ended: read an unarmed JSON copy, or release a held JSON answer (replaced or not).
fn end_of_body<O: McpObserver>(
    observer: &mut Option<O>,
    framing: Framing,
    armed: bool,
    pending: &mut BytesMut,
    unread: bool,
) -> Option<Bytes> {
    let o = observer.as_mut()?;
    let held = std::mem::take(pending).freeze();
    match (framing, armed) {
        (Framing::Json, false) => {
            if unread {
                o.oversized(false);
            } else if !held.is_empty() {
                o.on_message(&held, false);
            }
            None
        }
        (Framing::Json, true) => {
            if held.is_empty() {
                return None;
            }
            Some(match o.on_message(&held, true) {
                Some(replaced) => Bytes::from(replaced),
                None => held,
            })
        }
        // An armed stream's unfinished last event is never dispatched by a client: not sent.
        _ => None,
    }
}

/// An armed stream's next frame: the complete events it finishes, each as sent or replaced; the
/// start of an unfinished event is kept. The second value, when set, ends the stream (an event
/// too large to hold).
fn armed_sse<O: McpObserver>(
    observer: &mut O,
    decoder: &mut SseDecoder,
    pending: &mut BytesMut,
    data: Bytes,
) -> (Bytes, Option<Bytes>) {
    let base = pending.len();
    let mut ends: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    let mut oversized = false;
    decoder.feed_ends(&data, |item, end| match item {
        SseItem::Event { data, .. } => ends.push((base + end, observer.on_message(data, true))),
        SseItem::Oversized => oversized = true,
    });
    let all = if pending.is_empty() {
        data
    } else {
        pending.extend_from_slice(&data);
        pending.split().freeze()
    };
    let mut out = BytesMut::new();
    let mut start = 0;
    let mut edited = false;
    for (end, replaced) in ends {
        match replaced {
            Some(json) => {
                out.extend_from_slice(&raw::replace_data(&all[start..end], &json));
                edited = true;
            }
            None => out.extend_from_slice(&all[start..end]),
        }
        start = end;
    }
    let rest = all.slice(start..);
    if oversized || rest.len() > MAX_MESSAGE_BYTES {
        let tail = observer.oversized(true).unwrap_or_default();
        return (out.freeze(), Some(tail));
    }
    if decoder.buffered() == 0 {
        // No data of an event is pending, only whole lines (comments such as keep-alive pings,
        // an `id:` or `event:` line): they go out now; a later data line is replaced on its own.
        if !edited {
            return (all, None); // the frame as it came
        }
        out.extend_from_slice(&rest);
        return (out.freeze(), None);
    }
    pending.extend_from_slice(&rest);
    (out.freeze(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    /// Records what it saw; replaces messages containing `"deny"` with `{}`.
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl McpObserver for Seen {
        fn on_message(&mut self, json: &[u8], armed: bool) -> Option<Vec<u8>> {
            let text = String::from_utf8_lossy(json).to_string();
            let hit = text.contains("deny");
            self.0.lock().unwrap().push(text);
            (armed && hit).then(|| b"{}".to_vec())
        }
        fn oversized(&mut self, armed: bool) -> Option<Bytes> {
            self.0.lock().unwrap().push("oversized".into());
            armed.then(|| Bytes::from_static(b"data: {\"too\":\"big\"}\n\n"))
        }
        fn broken(&mut self) -> Option<Bytes> {
            Some(Bytes::from_static(b"data: {\"broken\":1}\n\n"))
        }
        fn on_end(self, end: BodyEnd) {
            self.0.lock().unwrap().push(format!("end {end:?}"));
        }
    }

    type Frames = http_body_util::StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
    >;

    fn frames(parts: &[&'static [u8]]) -> Frames {
        let v: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(v))
    }

    async fn run(parts: &[&'static [u8]], framing: Framing, armed: bool) -> (Vec<u8>, Vec<String>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let body = McpBody::new(frames(parts), Seen(seen.clone()), framing, armed);
        let out = body.collect().await.unwrap().to_bytes().to_vec();
        let seen = seen.lock().unwrap().clone();
        (out, seen)
    }

    #[tokio::test]
    async fn an_armed_stream_replaces_whole_events_and_keeps_the_rest_byte_identical() {
        let parts: &[&[u8]] = &[
            b"id: 1\ndata: {\"a\":1}\n\nid: 2\nda",
            b"ta: {\"deny\":1}\n",
            b"\n: ping\n\n",
        ];
        let (out, seen) = run(parts, Framing::Sse, true).await;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 1\ndata: {\"a\":1}\n\nid: 2\ndata: {}\n\n: ping\n\n"
        );
        assert_eq!(seen, ["{\"a\":1}", "{\"deny\":1}", "end Complete"]);
        let (out, _) = run(parts, Framing::Sse, false).await;
        assert_eq!(out, parts.concat(), "unarmed: untouched");
    }

    #[tokio::test]
    async fn json_answers_are_read_whole_and_replaced_only_armed() {
        let parts: &[&[u8]] = &[b"{\"deny\"", b":true}"];
        let (out, seen) = run(parts, Framing::Json, true).await;
        assert_eq!(out, b"{}");
        assert_eq!(seen[0], "{\"deny\":true}");
        let (out, _) = run(parts, Framing::Json, false).await;
        assert_eq!(out, b"{\"deny\":true}");
    }

    #[tokio::test]
    async fn an_event_too_large_to_hold_ends_the_armed_stream() {
        let big: &'static [u8] = Box::leak(vec![b'x'; MAX_MESSAGE_BYTES + 10].into_boxed_slice());
        let (out, seen) = run(&[b"data: {}\n\ndata: ", big], Framing::Sse, true).await;
        assert_eq!(out, b"data: {}\n\ndata: {\"too\":\"big\"}\n\n");
        assert!(seen.contains(&"oversized".to_string()));
    }
}
