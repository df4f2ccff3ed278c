//! [`ResponseParser`]: one per response; frames in, a [`ResponseRecord`] out.

use crate::sse::{NdjsonDecoder, NdjsonItem, SseDecoder, SseItem};

use super::adapter::{Adapter, FramedStream, StreamReader};
use super::registry::Format;
use super::usage::{ResponseRecord, Usage};

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

    /// The served model, as far as the stream has named it (`None` for a JSON body, read at
    /// its end, and for binary-framed streams, which name none).
    pub fn current_model(&mut self) -> Option<&str> {
        match self.body {
            Body::Sse(_) | Body::Ndjson(_) => self.state.stream.record_mut().model.as_deref(),
            Body::Json(..) | Body::Framed(_) => None,
        }
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
                if !*over && buf.len() + chunk.len() > self.max_body {
                    // Too large to parse whole: only the tail is kept from here on, where a
                    // body's usage follows its data.
                    *over = true;
                    buf.drain(..buf.len().saturating_sub(JSON_TAIL));
                }
                buf.extend_from_slice(chunk);
                if *over && buf.len() > 2 * JSON_TAIL {
                    buf.drain(..buf.len() - JSON_TAIL);
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
            Body::Json(tail, true) => {
                let adapter = self.state.adapter;
                let mut r = self.state.into_record();
                r.unparsed = Some("body_too_large");
                r.usage = usage_in_tail(adapter, &tail);
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

/// What is kept of a JSON body too large to parse: its last bytes (twice this at most).
const JSON_TAIL: usize = 64 * 1024;

/// The usage a JSON body's tail states: the last `"<usage key>": {…}` in it whose object the
/// format reads as usage (none when the tail holds none, or only inside strings it cannot tell
/// from the body's own members).
fn usage_in_tail(adapter: &dyn Adapter, tail: &[u8]) -> Usage {
    let key = adapter.usage_key();
    let quoted = format!("\"{key}\"");
    for at in memchr::memmem::rfind_iter(tail, quoted.as_bytes()).take(8) {
        let Some(object) = object_after_key(&tail[at + quoted.len()..]) else {
            continue;
        };
        let mut wrapped = Vec::with_capacity(object.len() + quoted.len() + 3);
        wrapped.push(b'{');
        wrapped.extend_from_slice(quoted.as_bytes());
        wrapped.push(b':');
        wrapped.extend_from_slice(object);
        wrapped.push(b'}');
        let mut r = ResponseRecord::default();
        if adapter.parse_json(&wrapped, &mut r) && r.usage.is_present() {
            return r.usage;
        }
    }
    Usage::default()
}

/// The object that `rest` (what follows a key's closing quote) holds as the key's value: `:`,
/// then `{` … its matching `}` (strings and escapes skipped); `None` for anything else or an
/// object cut off.
fn object_after_key(rest: &[u8]) -> Option<&[u8]> {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let colon = rest.iter().position(|b| !ws(b))?;
    if rest[colon] != b':' {
        return None;
    }
    let start = colon + 1 + rest[colon + 1..].iter().position(|b| !ws(b))?;
    if rest[start] != b'{' {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in rest[start..].iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(&rest[start..=start + i]);
                }
            }
            _ => {}
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MAX_PARSE_BYTES;

    /// An answer past the parse cap, fed in frames as it arrives, then ended.
    fn read_large(
        format: Format,
        head: &str,
        item: &str,
        items: usize,
        end: &str,
    ) -> ResponseRecord {
        let mut p = ResponseParser::new(format, false, MAX_PARSE_BYTES);
        p.feed(head.as_bytes());
        let mut frame = String::new();
        for i in 0..items {
            if i > 0 {
                frame.push(',');
            }
            frame.push_str(item);
            if frame.len() > 16 * 1024 {
                p.feed(frame.as_bytes());
                frame.clear();
            }
        }
        p.feed(frame.as_bytes());
        p.feed(end.as_bytes());
        p.finish()
    }

    /// An embeddings answer of 1,000 inputs (~16 MiB) is too large to parse whole; the usage
    /// at its end is still read from the tail kept.
    #[test]
    fn a_body_past_the_cap_states_its_usage_from_its_tail() {
        let vector = format!("[{}]", vec!["-0.0123456789"; 1200].join(","));
        let item = format!(r#"{{"object":"embedding","index":0,"embedding":{vector}}}"#);
        let r = read_large(
            Format::OpenAiChat,
            r#"{"object":"list","data":["#,
            &item,
            1000,
            r#"],"model":"text-embedding-3-large","usage":{"prompt_tokens":48000,"total_tokens":48000}}"#,
        );
        assert_eq!(r.unparsed, Some("body_too_large"));
        assert_eq!(r.usage.input, Some(48000));
        // A key that only looks like usage inside the data is not taken for it.
        let r = read_large(
            Format::OpenAiChat,
            r#"{"data":["#,
            r#""text with \"usage\": {\"prompt_tokens\": 5} inside""#,
            400_000,
            r#"]}"#,
        );
        assert!(!r.usage.is_present(), "{:?}", r.usage);
    }

    #[test]
    fn a_gemini_body_past_the_cap_states_its_usage_metadata_from_its_tail() {
        let part = format!(r#"{{"text":"{}"}}"#, "x".repeat(1000));
        let r = read_large(
            Format::Gemini,
            r#"{"candidates":[{"content":{"parts":["#,
            &part,
            10_000,
            r#"]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":2500000,"totalTokenCount":2500007},"modelVersion":"gemini-2.5-flash"}"#,
        );
        assert_eq!(r.usage.input, Some(7));
        assert_eq!(r.usage.output, Some(2_500_000));
    }

    #[test]
    fn the_object_after_a_key_ends_at_its_matching_brace() {
        assert_eq!(
            object_after_key(br#" : {"a":{"b":"}"},"c":[1,{}]} ,"x":1"#),
            Some(&br#"{"a":{"b":"}"},"c":[1,{}]}"#[..])
        );
        assert_eq!(
            object_after_key(br#":{"a":"\"}"}"#),
            Some(&br#"{"a":"\"}"}"#[..])
        );
        assert_eq!(object_after_key(br#":{"a":1"#), None, "cut off");
        assert_eq!(object_after_key(br#":null"#), None);
        assert_eq!(object_after_key(br#"}"#), None);
    }
}
