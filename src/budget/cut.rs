//! `action: cut`: end an in-flight stream at its budget with a well-formed ending, so the
//! client's SDK sees a normal stream stopped for length rather than a broken one.
//!
//! The [`Call`](crate::proxy::Call) counts output events as frames pass and fires the
//! [`CutSignal`] when the call's output allowance is used up. [`Cut`], the outermost response
//! body, then forwards up to the last complete event, appends the provider's final events —
//! OpenAI chat: a chunk with `finish_reason: "length"` and `data: [DONE]`; Anthropic:
//! `content_block_stop` (if a block is open), `message_delta` with `stop_reason: "max_tokens"`,
//! `message_stop` — and ends. Dropping the body cancels the upstream request.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use memchr::memmem;
use pin_project_lite::pin_project;

use crate::providers::Format;

/// Shared between the call (which fires it) and the body (which ends the stream).
#[derive(Debug)]
pub struct CutSignal {
    after: u64,
    fired: AtomicBool,
}

// === impl CutSignal ===

impl CutSignal {
    /// A signal that fires once more than `after` output events have streamed.
    pub fn new(after: u64) -> Arc<Self> {
        Arc::new(Self {
            after,
            fired: AtomicBool::new(false),
        })
    }

    /// Note the output events streamed so far.
    pub fn observe(&self, output_events: u64) {
        if output_events > self.after {
            self.fired.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the stream is to be cut.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }

    /// The output allowance.
    pub fn after(&self) -> u64 {
        self.after
    }
}

/// Whether `format` streams can be cut cleanly.
pub fn supported(format: Format) -> bool {
    matches!(format, Format::OpenAiChat | Format::Anthropic)
}

enum State {
    Passing,
    Tail,
    Done,
}

struct Armed {
    signal: Arc<CutSignal>,
    format: Format,
    /// Bytes forwarded so far end on an event boundary.
    at_boundary: bool,
    /// OpenAI: `"id":…,"object":…,"created":…,"model":…` of the first chunk, reused for the last.
    head: Option<String>,
    /// Anthropic: content blocks started and stopped.
    started: u64,
    stopped: u64,
    state: State,
}

pin_project! {
    /// A response body that can end its stream early at a budget limit (a no-op when unarmed).
    pub struct Cut<B> {
        #[pin]
        inner: B,
        armed: Option<Box<Armed>>,
    }
}

// === impl Cut ===

impl<B> Cut<B> {
    /// Pass `inner` through unchanged.
    pub fn pass(inner: B) -> Self {
        Self { inner, armed: None }
    }

    /// Pass `inner` through until `signal` fires, then end it as a `format` stream ends.
    pub fn armed(inner: B, signal: Arc<CutSignal>, format: Format) -> Self {
        Self {
            inner,
            armed: Some(Box::new(Armed {
                signal,
                format,
                at_boundary: true,
                head: None,
                started: 0,
                stopped: 0,
                state: State::Passing,
            })),
        }
    }
}

impl<B> Body for Cut<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let Some(a) = this.armed.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        match a.state {
            State::Done => return Poll::Ready(None),
            State::Tail => {
                a.state = State::Done;
                return Poll::Ready(Some(Ok(Frame::data(a.tail()))));
            }
            State::Passing => {}
        }
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(other) => return Poll::Ready(Some(Ok(other))),
        };
        if !a.signal.fired() {
            a.note(&data);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        // Cut at the last event boundary in this frame; without one, at the frame's start when
        // what went before ended on a boundary, else keep going until a boundary comes.
        let keep = match last_boundary(&data) {
            Some(end) => end,
            None if a.at_boundary => 0,
            None => {
                a.note(&data);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        };
        let head = data.slice(..keep);
        a.note(&head);
        a.state = State::Tail;
        if head.is_empty() {
            a.state = State::Done;
            return Poll::Ready(Some(Ok(Frame::data(a.tail()))));
        }
        Poll::Ready(Some(Ok(Frame::data(head))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.armed {
            Some(a) => matches!(a.state, State::Done),
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.armed {
            // The length changes when the stream is cut.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

// === impl Armed ===

impl Armed {
    /// Remember what the ending needs from forwarded bytes.
    fn note(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.at_boundary = data.ends_with(b"\n\n") || data.ends_with(b"\r\n\r\n");
        match self.format {
            Format::OpenAiChat if self.head.is_none() => self.head = chunk_head(data),
            Format::Anthropic => {
                self.started +=
                    memmem::find_iter(data, b"event: content_block_start").count() as u64;
                self.stopped +=
                    memmem::find_iter(data, b"event: content_block_stop").count() as u64;
            }
            _ => {}
        }
    }

    /// The provider's final events.
    fn tail(&self) -> Bytes {
        let out = match self.format {
            Format::Anthropic => {
                let mut s = String::new();
                if self.started > self.stopped {
                    s.push_str(&format!(
                        "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{}}}\n\n",
                        self.started - 1
                    ));
                }
                s.push_str(&format!(
                    "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
                    self.signal.after()
                ));
                s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
                s
            }
            _ => {
                let head = self
                    .head
                    .as_deref()
                    .unwrap_or(r#""id":"chatcmpl-tokenwarden-cut","object":"chat.completion.chunk","created":0,"model":"unknown""#);
                format!(
                    "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"length\"}}]}}\n\ndata: [DONE]\n\n"
                )
            }
        };
        Bytes::from(out)
    }
}

/// End of the last complete SSE event in `data` (just past its blank line).
fn last_boundary(data: &[u8]) -> Option<usize> {
    let lf = memmem::rfind(data, b"\n\n").map(|i| i + 2);
    let crlf = memmem::rfind(data, b"\r\n\r\n").map(|i| i + 4);
    lf.max(crlf)
}

/// `"id":…,"object":…,"created":…,"model":…` from the first chat chunk in `data`.
fn chunk_head(data: &[u8]) -> Option<String> {
    let start = memmem::find(data, b"data: ")? + 6;
    let end = start + memchr::memchr(b'\n', &data[start..])?;
    let v: serde_json::Value = serde_json::from_slice(&data[start..end]).ok()?;
    let field = |k: &str| v.get(k).map(|x| x.to_string());
    Some(format!(
        "\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{}",
        field("id")?,
        field("created").unwrap_or_else(|| "0".into()),
        field("model").unwrap_or_else(|| "\"unknown\"".into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    async fn run(frames: Vec<&'static str>, fire_after: usize, format: Format) -> String {
        let signal = CutSignal::new(0);
        let s2 = signal.clone();
        let mut n = 0;
        let stream = futures_util::stream::iter(frames.into_iter().map(move |f| {
            n += 1;
            if n > fire_after {
                s2.observe(1);
            }
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(f.as_bytes())))
        }));
        let body = Cut::armed(StreamBody::new(stream), signal, format);
        let b = body.collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn openai_ends_with_length_and_done_at_an_event_boundary() {
        let out = run(
            vec![
                "data: {\"id\":\"c1\",\"created\":5,\"model\":\"m\",\"choices\":[]}\n\n",
                "data: {\"a\":1}\n\ndata: {\"b\"",
                ":2}\n\n",
                "data: {\"c\":3}\n\n",
            ],
            1,
            Format::OpenAiChat,
        )
        .await;
        assert!(
            out.contains("data: {\"a\":1}\n\ndata: {\"id\":\"c1\""),
            "{out}"
        );
        assert!(!out.contains("\"b\""), "{out}");
        assert!(
            out.ends_with("\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn anthropic_closes_the_open_block() {
        let out = run(
            vec![
                "event: message_start\ndata: {}\n\nevent: content_block_start\ndata: {}\n\n",
                "event: content_block_delta\ndata: {}\n\n",
                "event: content_block_delta\ndata: {}\n\n",
            ],
            1,
            Format::Anthropic,
        )
        .await;
        assert_eq!(out.matches("content_block_delta").count(), 1, "{out}");
        assert!(out.contains("\"type\":\"content_block_stop\",\"index\":0"));
        assert!(out.contains("\"stop_reason\":\"max_tokens\""));
        assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }
}
