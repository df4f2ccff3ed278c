//! [`ResponseParser`]: one per response; frames in, a [`ResponseRecord`] out.

use crate::sse::{NdjsonDecoder, NdjsonItem, SseDecoder, SseItem};

use super::{anthropic, gemini, ollama, openai_chat, openai_responses, Format, ResponseRecord};

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
}

enum Body {
    /// A JSON body, collected up to the cap and parsed at the end.
    Json(Vec<u8>, bool),
    /// An SSE stream, parsed event by event.
    Sse(SseDecoder),
    /// An NDJSON stream (Ollama), parsed line by line.
    Ndjson(NdjsonDecoder),
}

enum State {
    OpenAiChat(openai_chat::Stream),
    OpenAiResponses(openai_responses::Stream),
    Anthropic(anthropic::Stream),
    Gemini(gemini::Stream),
    Ollama(ollama::Stream),
}

// === impl ResponseParser ===

impl ResponseParser {
    /// A parser for `format`; `stream` selects SSE (else JSON). Bodies and events over
    /// `max_bytes` are not parsed and the record says so.
    pub fn new(format: Format, stream: bool, max_bytes: usize) -> Self {
        let state = match format {
            Format::OpenAiChat => State::OpenAiChat(openai_chat::Stream::default()),
            Format::OpenAiResponses => State::OpenAiResponses(openai_responses::Stream::default()),
            Format::Anthropic => State::Anthropic(anthropic::Stream::default()),
            Format::Gemini => State::Gemini(gemini::Stream::default()),
            Format::Ollama => State::Ollama(ollama::Stream::default()),
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
        }
    }

    /// A parser for an NDJSON stream (`application/x-ndjson`, Ollama's default).
    pub fn new_ndjson(format: Format, max_bytes: usize) -> Self {
        let mut p = Self::new(format, false, max_bytes);
        p.body = Body::Ndjson(NdjsonDecoder::new(max_bytes));
        p
    }

    /// Feed the next frame of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Feed {
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
                dec.feed(chunk, |item| match item {
                    SseItem::Event { event, data } => {
                        if state.event(event, data) {
                            feed.output_events += 1;
                        }
                    }
                    SseItem::Oversized => state.record_mut().unparsed = Some("event_too_large"),
                });
            }
            Body::Ndjson(dec) => {
                let state = &mut self.state;
                dec.feed(chunk, |item| match item {
                    NdjsonItem::Line(line) => {
                        if state.event(b"", line) {
                            feed.output_events += 1;
                        }
                    }
                    NdjsonItem::Oversized => state.record_mut().unparsed = Some("event_too_large"),
                });
            }
        }
        feed
    }

    /// The body ended: everything read from it.
    pub fn finish(self) -> ResponseRecord {
        match self.body {
            Body::Json(_, true) => {
                let mut r = self.state.into_record();
                r.unparsed = Some("body_too_large");
                r
            }
            Body::Json(buf, false) => {
                let mut r = ResponseRecord::default();
                let ok = match &self.state {
                    State::OpenAiChat(_) => openai_chat::parse_json(&buf, &mut r),
                    State::OpenAiResponses(_) => openai_responses::parse_json(&buf, &mut r),
                    State::Anthropic(_) => anthropic::parse_json(&buf, &mut r),
                    State::Gemini(_) => gemini::parse_json(&buf, &mut r),
                    State::Ollama(_) => ollama::parse_json(&buf, &mut r),
                };
                if !ok {
                    r.unparsed = Some("invalid_json");
                }
                r
            }
            Body::Sse(_) => self.state.into_record(),
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

// === impl State ===

impl State {
    /// Handle one SSE event; true when it carried output.
    fn event(&mut self, event: &[u8], data: &[u8]) -> bool {
        let handled = match self {
            State::OpenAiChat(s) => s.event(data),
            State::OpenAiResponses(s) => s.event(data),
            State::Anthropic(s) => s.event(data),
            State::Gemini(s) => s.event(data),
            State::Ollama(s) => s.line(data),
        };
        let _ = event; // every supported format names its event inside `data` too
        match handled {
            Some(output) => output,
            None => {
                self.record_mut().unparsed.get_or_insert("invalid_event");
                false
            }
        }
    }

    fn record_mut(&mut self) -> &mut ResponseRecord {
        match self {
            State::OpenAiChat(s) => &mut s.record,
            State::OpenAiResponses(s) => &mut s.record,
            State::Anthropic(s) => &mut s.record,
            State::Gemini(s) => &mut s.record,
            State::Ollama(s) => &mut s.record,
        }
    }

    fn into_record(self) -> ResponseRecord {
        match self {
            State::OpenAiChat(s) => s.finish(),
            State::OpenAiResponses(s) => s.finish(),
            State::Anthropic(s) => s.finish(),
            State::Gemini(s) => s.finish(),
            State::Ollama(s) => s.finish(),
        }
    }
}
