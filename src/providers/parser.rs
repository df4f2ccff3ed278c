//! [`ResponseParser`]: one per response; frames in, a [`ResponseRecord`] out.

use crate::sse::{NdjsonDecoder, NdjsonItem, SseDecoder, SseItem};

use super::adapter::{Adapter, FramedStream, StreamReader};
use super::registry::Format;
use super::usage::ResponseRecord;

/// What one frame contributed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feed {
    /// Events that carried output (text, reasoning or tool-call deltas): the first one is the
    /// time to first token; their count gives the time per output chunk.
    pub output_events: u32,
}

/// Reads one response body, frame by frame.
pub struct ResponseParser {
    body: Body,
    state: State,
    max_body: usize,
    sample: OutputSample,
}

/// Most bytes of output events kept for estimating output tokens when a stream states no usage.
/// Small on purpose (memory per stream stays bounded and a long stream's estimate is scaled from
/// its first events); a JSON body is its own sample, already in memory.
pub const MAX_OUTPUT_SAMPLE: usize = 16 * 1024;

/// The output events of a stream (or the whole body of a JSON response), kept so output tokens
/// can be counted when the provider states none. Bounded: past [`MAX_OUTPUT_SAMPLE`] events are
/// only counted, and the estimate is scaled from the ones kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OutputSample {
    /// Output events, one per line (or one JSON body).
    pub bytes: Vec<u8>,
    /// Output events seen.
    pub events: u64,
    /// Output events kept in `bytes`.
    pub kept: u64,
}

enum Body {
    /// A JSON body, collected up to the cap and parsed at the end.
    Json(Vec<u8>, bool),
    /// An SSE stream, parsed event by event.
    Sse(SseDecoder),
    /// An NDJSON stream (Ollama), parsed line by line.
    Ndjson(NdjsonDecoder),
    /// A stream in the format's binary framing, parsed message by message.
    Framed(Box<dyn FramedStream>),
}

/// The format's reader of this response.
struct State {
    adapter: &'static dyn Adapter,
    stream: Box<dyn StreamReader>,
}

// === impl ResponseParser ===

impl ResponseParser {
    /// A parser for `format`; `stream` selects SSE (else JSON). Bodies and events over
    /// `max_bytes` are not parsed and the record says so.
    pub fn new(format: Format, stream: bool, max_bytes: usize) -> Self {
        let adapter = format.adapter();
        let state = State {
            adapter,
            stream: adapter.stream(),
        };
        let body = if stream {
            Body::Sse(SseDecoder::new(max_bytes))
        } else {
            Body::Json(Vec::new(), false)
        };
        Self {
            body,
            state,
            max_body: max_bytes,
            sample: OutputSample::default(),
        }
    }

    /// A parser for an NDJSON stream (`application/x-ndjson`, Ollama's default).
    pub fn new_ndjson(format: Format, max_bytes: usize) -> Self {
        let mut p = Self::new(format, false, max_bytes);
        p.body = Body::Ndjson(NdjsonDecoder::new(max_bytes));
        p
    }

    /// A parser for a stream in `format`'s binary framing, when a response of media type
    /// `media_type` is one (Bedrock's event stream); `None` otherwise.
    pub fn framed(format: Format, media_type: &[u8], max_bytes: usize) -> Option<Self> {
        let framed = format.adapter().framed_stream(media_type, max_bytes)?;
        let mut p = Self::new(format, false, max_bytes);
        p.body = Body::Framed(framed);
        Some(p)
    }

    /// Whether the body is read as server-sent events.
    pub fn is_sse(&self) -> bool {
        matches!(self.body, Body::Sse(_))
    }

    /// Feed the next frame of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Feed {
        self.feed_each(chunk, |_, _| {})
    }

    /// Feed the next frame of the body; for an SSE stream `on_event(end, output)` is also told,
    /// event by event, where in `chunk` the event ended and, when it carried output, its data
    /// (a stream cut at a budget is cut at an event, not at a frame).
    pub fn feed_each(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(usize, Option<&[u8]>),
    ) -> Feed {
        let mut feed = Feed::default();
        match &mut self.body {
            Body::Json(buf, over) => {
                if *over || buf.len() + chunk.len() > self.max_body {
                    *over = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            Body::Sse(dec) => {
                let state = &mut self.state;
                let sample = &mut self.sample;
                dec.feed_ends(chunk, |item, end| match item {
                    SseItem::Event { event, data } => {
                        let output = state.event(event, data);
                        if output {
                            feed.output_events += 1;
                            sample.keep(data);
                        }
                        on_event(end, output.then_some(data));
                    }
                    SseItem::Oversized => {
                        state.record_mut().unparsed = Some("event_too_large");
                        on_event(end, None);
                    }
                });
            }
            Body::Ndjson(dec) => {
                let state = &mut self.state;
                let sample = &mut self.sample;
                dec.feed(chunk, |item| match item {
                    NdjsonItem::Line(line) => {
                        if state.event(b"", line) {
                            feed.output_events += 1;
                            sample.keep(line);
                        }
                    }
                    NdjsonItem::Oversized => state.record_mut().unparsed = Some("event_too_large"),
                });
            }
            Body::Framed(stream) => {
                let sample = &mut self.sample;
                feed.output_events = stream.feed(chunk, &mut |end, output| {
                    if let Some(data) = output {
                        sample.keep(data);
                    }
                    on_event(end, output);
                });
            }
        }
        feed
    }

    /// The body ended: everything read from it.
    pub fn finish(self) -> ResponseRecord {
        self.finish_with_sample().0
    }

    /// The body ended: everything read from it, and the output it carried (for estimates).
    pub fn finish_with_sample(mut self) -> (ResponseRecord, OutputSample) {
        let sample = std::mem::take(&mut self.sample);
        match std::mem::replace(&mut self.body, Body::Json(Vec::new(), true)) {
            // A JSON body is its own sample: moved, not copied.
            Body::Json(buf, false) => {
                let record = json_record(&self.state, &buf);
                let sample = OutputSample {
                    bytes: buf,
                    events: 1,
                    kept: 1,
                };
                (record, sample)
            }
            body => {
                self.body = body;
                (self.finish_record(), sample)
            }
        }
    }

    fn finish_record(self) -> ResponseRecord {
        match self.body {
            Body::Json(_, true) => {
                let mut r = self.state.into_record();
                r.unparsed = Some("body_too_large");
                r
            }
            Body::Json(buf, false) => json_record(&self.state, &buf),
            Body::Sse(_) => self.state.into_record(),
            Body::Framed(stream) => stream.finish(),
            Body::Ndjson(mut dec) => {
                let mut state = self.state;
                dec.finish(|item| {
                    if let NdjsonItem::Line(line) = item {
                        state.event(b"", line);
                    }
                });
                state.into_record()
            }
        }
    }
}

/// A whole JSON response body read in `state`'s format.
fn json_record(state: &State, buf: &[u8]) -> ResponseRecord {
    let mut r = ResponseRecord::default();
    if !state.adapter.parse_json(buf, &mut r) {
        r.unparsed = Some("invalid_json");
    }
    r
}

// === impl OutputSample ===

impl OutputSample {
    fn keep(&mut self, event: &[u8]) {
        self.events += 1;
        if self.bytes.len() + event.len() < MAX_OUTPUT_SAMPLE {
            self.bytes.extend_from_slice(event);
            self.bytes.push(b'\n');
            self.kept += 1;
        }
    }

    /// Estimated output tokens: the kept output counted with the tokenizer, scaled to every
    /// output event seen.
    pub fn estimate_tokens(&self) -> u64 {
        if self.kept == 0 {
            return 0;
        }
        let counted = crate::tokens::count(&super::text::output_text(&self.bytes));
        (counted * self.events).div_ceil(self.kept)
    }
}

// === impl State ===

impl State {
    /// Handle one SSE event (or NDJSON line); true when it carried output. Every supported
    /// format names its event inside `data` too, so the `event:` field is not needed.
    fn event(&mut self, _event: &[u8], data: &[u8]) -> bool {
        match self.stream.event(data) {
            Some(output) => output,
            None => {
                self.record_mut().unparsed.get_or_insert("invalid_event");
                false
            }
        }
    }

    fn record_mut(&mut self) -> &mut ResponseRecord {
        self.stream.record_mut()
    }

    fn into_record(self) -> ResponseRecord {
        self.stream.finish()
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    #[test]
    fn long_streams_keep_a_bounded_sample_and_scale_the_estimate() {
        let mut p = ResponseParser::new(Format::OpenAiChat, true, 1 << 20);
        let words = [" alpha", " beta", " gamma", " delta"];
        let mut text = String::new();
        p.feed(b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        for i in 0..4_000 {
            let w = words[i % words.len()];
            text.push_str(w);
            let ev = format!(
                "data: {{\"id\":\"c\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":null}}]}}\n\n"
            );
            p.feed(ev.as_bytes());
        }
        let (_, sample) = p.finish_with_sample();
        assert!(sample.bytes.len() <= MAX_OUTPUT_SAMPLE);
        assert_eq!(sample.events, 4_000);
        assert!(sample.kept < sample.events);
        let exact = crate::tokens::count(&text);
        let est = sample.estimate_tokens();
        assert!(est.abs_diff(exact) <= exact / 50, "{est} vs {exact}");
    }
}
