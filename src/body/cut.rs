//! `action: cut`: end an in-flight stream at its budget with a well-formed ending, so the
//! client's SDK sees a normal stream stopped for length rather than a broken one.
//!
//! The limit is checked per event, not per network read: the call's accounting feeds every
//! event to the provider parser (whose rule says which events carry output), counts each output
//! event's tokens with the tokenizer, and at the first output event that would go over the
//! allowance sets the [`CutPoint`]: the stream offset just past the event before it. [`Cut`],
//! the response body, hands on whole events only (a partial event is held until it ends, found
//! with the shared SSE decoder), stops at the cut point — inside a frame if need be — appends the
//! provider's final events ([`StreamEnding`], from the provider's folder) and ends. What the
//! ending needs (chunk id and model, choices, the open block) is read from the parsed events it
//! hands on. Dropping the body cancels the upstream request.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::providers::StreamEnding;
use crate::sse::{SseDecoder, SseItem, DEFAULT_MAX_EVENT_BYTES};

/// Largest partial event held back; a larger one is handed on as it comes (and then finished
/// even past the cut point, since half an event cannot be taken back).
const MAX_HELD: usize = DEFAULT_MAX_EVENT_BYTES;

/// Where a stream is cut: chosen by the call's accounting, applied by [`Cut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutPoint {
    /// Upstream stream bytes the client gets: the end of the last event before the first output
    /// event over the allowance (an event end as [`SseDecoder::feed_ends`] reports it).
    pub at: u64,
    /// Output tokens in what the client gets.
    pub output_tokens: u64,
}

/// Shared between the call's accounting (which sets the cut point) and the body (which cuts).
#[derive(Debug)]
pub struct CutSignal {
    after: u64,
    point: OnceLock<CutPoint>,
}

// === impl CutSignal ===

impl CutSignal {
    /// A signal for a stream that may carry `after` output tokens.
    pub fn new(after: u64) -> Arc<Self> {
        Arc::new(Self {
            after,
            point: OnceLock::new(),
        })
    }

    /// Cut the stream at `point` (the first point set wins).
    pub fn cut_at(&self, point: CutPoint) {
        let _ = self.point.set(point);
    }

    /// The cut point, once the allowance is used up.
    pub fn point(&self) -> Option<CutPoint> {
        self.point.get().copied()
    }

    /// Whether the stream is to be cut.
    pub fn fired(&self) -> bool {
        self.point.get().is_some()
    }

    /// The output allowance, in tokens.
    pub fn after(&self) -> u64 {
        self.after
    }
}

enum State {
    Passing,
    Tail,
    Done,
}

struct Armed {
    signal: Arc<CutSignal>,
    decoder: SseDecoder,
    /// Upstream bytes received so far.
    received: u64,
    /// Upstream bytes handed on.
    sent: u64,
    /// The start of an event still arriving (it begins at `sent`).
    pending: BytesMut,
    /// The event being received was partly handed on already (it was too large to hold).
    partial_sent: bool,
    /// The provider's ending, told every event handed on.
    ending: Box<dyn StreamEnding>,
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

    /// Pass `inner` through until the cut point `signal` gets, then end it with `ending`
    /// (the provider's final events).
    pub fn armed(inner: B, signal: Arc<CutSignal>, ending: Box<dyn StreamEnding>) -> Self {
        Self {
            inner,
            armed: Some(Box::new(Armed {
                signal,
                decoder: SseDecoder::new(MAX_HELD),
                received: 0,
                sent: 0,
                pending: BytesMut::new(),
                partial_sent: false,
                ending,
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
        let mut this = self.project();
        let Some(a) = this.armed.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        loop {
            match a.state {
                State::Done => return Poll::Ready(None),
                State::Tail => {
                    a.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::data(a.tail()))));
                }
                State::Passing => {}
            }
            let data = match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => d,
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                Poll::Ready(None) if !a.pending.is_empty() => {
                    // The stream ended inside an event: hand on what came, as it came.
                    a.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::data(a.pending.split().freeze()))));
                }
                other => return other,
            };
            let out = a.pass(data);
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
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
    /// Take in the next frame and return the whole events to hand on, up to the cut point
    /// (after which the state is `Tail`); the start of an event still arriving is held.
    fn pass(&mut self, data: Bytes) -> Bytes {
        let base = self.received;
        self.received += data.len() as u64;
        let point = self.signal.point();
        let start = self.sent;
        let mut end = start; // of the events handed on
        let mut cut = point.is_some_and(|p| p.at <= start && !self.partial_sent);
        let (ending, partial_sent) = (&mut self.ending, &mut self.partial_sent);
        if !cut {
            self.decoder.feed_ends(&data, |item, e| {
                let e = base + e as u64;
                if cut {
                    return;
                }
                if point.is_some_and(|p| e > p.at) && !std::mem::take(partial_sent) {
                    cut = true;
                    return;
                }
                if let SseItem::Event { data, .. } = item {
                    ending.note(data);
                }
                end = e;
            });
            cut |= point.is_some_and(|p| end >= p.at);
        }
        // The bytes from `start` on: what was held, then this frame.
        let all = if self.pending.is_empty() {
            data
        } else {
            self.pending.extend_from_slice(&data);
            self.pending.split().freeze()
        };
        let keep = (end - start) as usize;
        self.sent = end;
        if cut {
            self.state = State::Tail;
            return all.slice(..keep);
        }
        let rest = &all[keep..];
        if rest.len() > MAX_HELD {
            // Not an event we can hold: hand it on and finish it whatever comes.
            self.partial_sent = true;
            self.sent += rest.len() as u64;
            return all;
        }
        self.pending.extend_from_slice(rest);
        all.slice(..keep)
    }

    /// The provider's final events.
    fn tail(&self) -> Bytes {
        // The output the client got in this stream (see `CutPoint::output_tokens`).
        let tokens = self.signal.point().map_or(0, |p| p.output_tokens);
        self.ending.tail(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Format;
    use http_body_util::{BodyExt, StreamBody};

    /// Run `frames` through a cut whose point is set before they arrive.
    async fn run(frames: Vec<&'static str>, point: CutPoint, format: Format) -> String {
        let ending = format
            .adapter()
            .stream_ending()
            .expect("a format that can be cut");
        let signal = CutSignal::new(0);
        signal.cut_at(point);
        let stream = futures_util::stream::iter(frames.into_iter().map(|f| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(f.as_bytes())))
        }));
        let body = Cut::armed(StreamBody::new(stream), signal, ending);
        let b = body.collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn at(at: usize, output_tokens: u64) -> CutPoint {
        CutPoint {
            at: at as u64,
            output_tokens,
        }
    }

    const FIRST: &str = "data: {\"id\":\"c1\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";

    #[tokio::test]
    async fn openai_is_cut_inside_a_frame_at_the_event_boundary() {
        let a = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        let frame: &'static str =
            format!("{FIRST}{a}data: {{\"b\":2}}\n\ndata: {{\"c\":3}}\n\n").leak();
        let out = run(
            vec![frame],
            at(FIRST.len() + a.len(), 1),
            Format::OpenAiChat,
        )
        .await;
        assert_eq!(
            out,
            format!("{FIRST}{a}data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"length\"}}]}}\n\ndata: [DONE]\n\n")
        );
    }

    #[tokio::test]
    async fn a_partial_event_is_held_and_never_half_sent() {
        // The cut point is the end of FIRST; the next event arrives in pieces.
        let out = run(
            vec![
                FIRST.split_at(10).0,
                FIRST.split_at(10).1,
                "data: {\"choi",
                "ces\":[]}\n\ndata: {}\n\n",
            ],
            at(FIRST.len(), 0),
            Format::OpenAiChat,
        )
        .await;
        assert!(out.starts_with(FIRST), "{out}");
        assert!(!out.contains("choi\""), "{out}");
        assert!(
            out.ends_with("\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn every_unfinished_choice_ends_for_length() {
        let two = "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"stop\"},{\"index\":2,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n";
        let frame: &'static str = format!("{FIRST}{two}data: {{}}\n\n").leak();
        let out = run(
            vec![frame],
            at(FIRST.len() + two.len(), 1),
            Format::OpenAiChat,
        )
        .await;
        let last = out.rsplit("data: ").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(last.trim()).unwrap();
        let idx: Vec<u64> = v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect();
        assert_eq!(idx, [0, 2], "choice 1 had finished: {out}");
    }

    #[tokio::test]
    async fn anthropic_closes_the_open_block_read_from_the_parsed_events() {
        // No `event:` lines (the type is in the data) and a block index other than 0.
        let start = "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\ndata: {\"type\": \"content_block_start\", \"index\": 3, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\r\n\r\n";
        let delta = "data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"text_delta\",\"text\":\"event: content_block_stop\"}}\r\n\r\n";
        let frame: &'static str = format!("{start}{delta}{delta}").leak();
        // The second delta is over: cut after the CR of the first one's blank line.
        let out = run(
            vec![frame],
            at(start.len() + delta.len() - 1, 7),
            Format::Anthropic,
        )
        .await;
        assert_eq!(out.matches("content_block_delta").count(), 1, "{out}");
        assert!(out.contains("\r\n\revent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":3}\n\n"), "{out}");
        assert!(out.contains("\"stop_reason\":\"max_tokens\""));
        assert!(out.contains("\"usage\":{\"output_tokens\":7}"));
        assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    #[tokio::test]
    async fn without_a_cut_point_everything_passes() {
        let signal = CutSignal::new(5);
        let frames = vec![FIRST.split_at(7).0, FIRST.split_at(7).1, "data: [DONE]\n\n"];
        let stream = futures_util::stream::iter(frames.into_iter().map(|f| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(f.as_bytes())))
        }));
        let ending = Format::OpenAiChat
            .adapter()
            .stream_ending()
            .expect("cuttable");
        let body = Cut::armed(StreamBody::new(stream), signal, ending);
        let b = body.collect().await.unwrap().to_bytes();
        assert_eq!(b, format!("{FIRST}data: [DONE]\n\n"));
    }
}
