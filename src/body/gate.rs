//! [`Gate`]: a stream whose tool calls are checked before the client sees them, for agents whose
//! tool policies block (`tool_call_action: block`, `approval_action: block`).
//!
//! Every event is read from the shared SSE decoder and shown to the format's [`ToolGate`] (from
//! the provider's folder), which says whether it carries a tool call. Events that do not — text,
//! reasoning, pings, usage — go out at once, untouched. Events that do are withheld, in order,
//! until the format says no call is open any more (the call's block or item closed, its choice
//! finished, the stream ended); every call completed on the way is checked by the [`CallCheck`]
//! (the proxy's policy review) as it completes. Calls that pass are released byte-identical,
//! in the same poll. The first call that fails ends the stream: what it and anything withheld
//! with it never reach the client; the format's error event does, so the client's SDK raises an
//! error naming the policy and the tool, and the body then reads the upstream to its end without
//! forwarding, so the call's accounting still sees the usage the provider states.
//!
//! A partial event is held until its end arrives (a client cannot use half an event anyway). An
//! event too large to read (over [`MAX_HELD`]) cannot be checked: the stream is refused rather
//! than a call passed unread.

use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::providers::{Gated, ToolCall, ToolGate};
use crate::sse::{raw, SseDecoder, SseItem};

/// Largest event (raw bytes) held while its end has not arrived, and largest event read: as large
/// as a held JSON body (8 MiB), since an event the gate cannot read is refused (a Gemini chunk carrying an
/// image runs to megabytes).
pub const MAX_HELD: usize = 8 * 1024 * 1024;

/// Largest total of withheld tool-call events; past it the stream is refused as unreadable.
pub const MAX_WITHHELD: usize = 2 * MAX_HELD;

/// The policy side of a gate: decides on complete tool calls.
pub trait CallCheck: Send {
    /// Check calls that just completed: `None` releases them, `Some` is the final event of the
    /// refused stream (made with the format's [`ToolGate::refusal`]).
    fn check(&mut self, calls: &[ToolCall], gate: &dyn ToolGate) -> Option<Bytes>;

    /// An event too large to read, or too many withheld bytes: the final event refusing the
    /// stream, since what it carries cannot be checked.
    fn unreadable(&mut self, gate: &dyn ToolGate) -> Bytes;

    /// Withheld calls that passed went out `after` their completing frame arrived.
    fn released(&mut self, after: std::time::Duration) {
        let _ = after;
    }

    /// The gated body ended: nothing more will be checked.
    fn done(&mut self) {}
}

/// What one event of a frame came to, in order.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// Where the event ends in the bytes at hand (held partial event + frame).
    end: usize,
    gated: Gated,
    /// After this event no call is open: what is withheld goes out.
    release: bool,
}

enum State {
    Passing,
    /// Refused: the error event goes out next.
    Refusing(Bytes),
    /// Refused and told: the upstream is read to its end for its usage, nothing forwarded.
    Draining,
    Done,
}

struct Armed {
    gate: Box<dyn ToolGate>,
    check: Box<dyn CallCheck>,
    decoder: SseDecoder,
    /// The start of an event still arriving.
    pending: BytesMut,
    /// Tool-call events withheld, in the order they came.
    withheld: BytesMut,
    /// Calls completed by the event being read (reused).
    done: Vec<ToolCall>,
    /// This frame's events (reused).
    steps: Vec<Step>,
    /// Withheld calls went out with this frame.
    released: bool,
    state: State,
}

pin_project! {
    /// A response body whose tool calls are checked before they are forwarded (a plain
    /// pass-through when unarmed).
    pub struct Gate<B> {
        #[pin]
        inner: B,
        armed: Option<Box<Armed>>,
    }
}

// === impl Gate ===

impl<B> Gate<B> {
    /// Pass `inner` through unchanged.
    pub fn pass(inner: B) -> Self {
        Self { inner, armed: None }
    }

    /// Gate `inner`'s tool calls: `gate` reads the format, `check` decides.
    pub fn armed(inner: B, gate: Box<dyn ToolGate>, check: Box<dyn CallCheck>) -> Self {
        Self {
            inner,
            armed: Some(Box::new(Armed {
                gate,
                check,
                decoder: SseDecoder::new(MAX_HELD),
                pending: BytesMut::new(),
                withheld: BytesMut::new(),
                done: Vec::new(),
                steps: Vec::new(),
                released: false,
                state: State::Passing,
            })),
        }
    }
}

impl<B> Body for Gate<B>
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
            match std::mem::replace(&mut a.state, State::Done) {
                State::Done => {
                    a.check.done();
                    return Poll::Ready(None);
                }
                State::Refusing(tail) => {
                    a.state = State::Draining;
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                State::Draining => match this.inner.as_mut().poll_frame(cx) {
                    // Read for the accounting beneath; the client was told already.
                    Poll::Ready(Some(Ok(_))) => {
                        a.state = State::Draining;
                        continue;
                    }
                    Poll::Ready(_) => {
                        a.check.done();
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {
                        a.state = State::Draining;
                        return Poll::Pending;
                    }
                },
                State::Passing => a.state = State::Passing,
            }
            let out = match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => {
                        let arrived = Instant::now();
                        let out = a.pass(d);
                        if std::mem::take(&mut a.released) {
                            a.check.released(arrived.elapsed());
                        }
                        out
                    }
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                Poll::Ready(None) => {
                    let out = a.end();
                    match &mut a.state {
                        State::Refusing(tail) => {
                            // Nothing left to read: the refusal is the last write.
                            let mut b = BytesMut::from(out);
                            b.extend_from_slice(tail);
                            a.state = State::Done;
                            return Poll::Ready(Some(Ok(Frame::data(b.freeze()))));
                        }
                        _ => a.state = State::Done,
                    }
                    out
                }
                other => return other,
            };
            if let State::Refusing(tail) = &mut a.state {
                // What passed before the refusal, then the error, in one write.
                let tail = std::mem::take(tail);
                a.state = State::Draining;
                let mut b = BytesMut::from(out);
                b.extend_from_slice(&tail);
                return Poll::Ready(Some(Ok(Frame::data(b.freeze()))));
            }
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
            // A refused stream is shorter or longer than the upstream's.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

// === impl Armed ===

impl Armed {
    /// Take in the next frame: the bytes to forward now. Sets `Refusing` when a call fails.
    fn pass(&mut self, data: Bytes) -> Bytes {
        let base = self.pending.len();
        let refusal = self.read(&data, base);
        let all = if self.pending.is_empty() {
            data
        } else {
            self.pending.extend_from_slice(&data);
            self.pending.split().freeze()
        };
        let (out, used) = self.apply(&all);
        if let Some(tail) = refusal {
            self.refuse(tail);
            return out;
        }
        let rest = &all[used..];
        if rest.len() > MAX_HELD || self.withheld.len() > MAX_WITHHELD {
            let tail = self.check.unreadable(self.gate.as_ref());
            self.refuse(tail);
            return out;
        }
        if self.withheld.is_empty() && only_comments(rest) {
            // Keep-alive comments between events (`: PROCESSING`) go out at once: they begin no
            // event, and holding them would let a client's idle timeout fire.
            let mut b = BytesMut::from(out);
            b.extend_from_slice(rest);
            return b.freeze();
        }
        self.pending.extend_from_slice(rest);
        out
    }

    /// Decode `chunk` (which starts `base` bytes into the bytes at hand) into this frame's steps,
    /// checking calls as they complete: the refusal, when one fails or cannot be read (the
    /// events from that one on are left out of the steps).
    fn read(&mut self, chunk: &[u8], base: usize) -> Option<Bytes> {
        self.steps.clear();
        let mut refusal = None;
        let Self {
            gate,
            check,
            decoder,
            done,
            steps,
            ..
        } = self;
        decoder.feed_ends(chunk, |item, end| {
            if refusal.is_some() {
                return;
            }
            let gated = match item {
                SseItem::Event { event, data } => gate.event(event, data, done),
                SseItem::Oversized => Gated::Unreadable,
            };
            if gated == Gated::Unreadable {
                done.clear();
                refusal = Some(check.unreadable(gate.as_ref()));
                return;
            }
            if !done.is_empty() {
                refusal = check.check(done, gate.as_ref());
                done.clear();
                if refusal.is_some() {
                    return;
                }
            }
            steps.push(Step {
                end: base + end,
                gated,
                release: !gate.open(),
            });
        });
        refusal
    }

    /// Forward and withhold this frame's events as their steps say: the bytes to forward and
    /// how many bytes of `all` the steps covered.
    fn apply(&mut self, all: &Bytes) -> (Bytes, usize) {
        let mut out = Out::new(all);
        let mut prev = 0;
        for s in &self.steps {
            // An event ends at the CR of its CRLF blank line (the decoder cannot know an LF
            // follows until it comes); when the LF is at hand it goes with the event, or a client
            // that holds a trailing CR would see the event only with the next one.
            let end = if all.get(s.end.wrapping_sub(1)) == Some(&b'\r')
                && all.get(s.end) == Some(&b'\n')
            {
                s.end + 1
            } else {
                s.end
            };
            let span = prev..end;
            prev = end;
            if s.gated == Gated::Hold {
                self.withheld.extend_from_slice(&all[span.clone()]);
            }
            if s.release && !self.withheld.is_empty() {
                out.bytes(&self.withheld.split());
                self.released = true;
            }
            if s.gated == Gated::Pass {
                out.span(span);
            }
        }
        (out.finish(), prev)
    }

    /// The upstream ended: an event left without its blank line is read as ended, every call
    /// still open is checked, and what passes goes out.
    fn end(&mut self) -> Bytes {
        if !self.pending.is_empty() {
            // The client's parser may dispatch it at the end too: decide on it like any event.
            // The blank line is only shown to the decoder; the bytes forwarded are the upstream's.
            let rest = self.pending.split().freeze();
            if let Some(tail) = self.read(b"\n\n", 0) {
                self.refuse(tail);
                return Bytes::new();
            }
            match self.steps.first().map(|s| s.gated) {
                Some(Gated::Hold) => self.withheld.extend_from_slice(&rest),
                // Not an event (a trailing line end, a comment) or one without a call: it goes
                // out after what is released.
                _ => self.pending.extend_from_slice(&rest),
            }
        }
        self.gate.finish(&mut self.done);
        if !self.done.is_empty() {
            let refusal = self.check.check(&self.done, self.gate.as_ref());
            self.done.clear();
            if let Some(tail) = refusal {
                self.refuse(tail);
                return Bytes::new();
            }
        }
        let mut out = self.withheld.split();
        out.extend_from_slice(&self.pending.split());
        out.freeze()
    }

    fn refuse(&mut self, tail: Bytes) {
        self.withheld = BytesMut::new();
        self.pending = BytesMut::new();
        self.state = State::Refusing(tail);
    }
}

/// Whether `rest` (bytes after the last event end) is only comment lines and line ends, so no
/// part of an event: a last line not yet ended counts when it already starts with `:`.
fn only_comments(rest: &[u8]) -> bool {
    !rest.is_empty()
        && raw::lines(rest).all(|l| {
            let line = &rest[l.start..l.end];
            line.is_empty() || line[0] == b':'
        })
}

/// The bytes a frame forwards: runs of the frame's own bytes are sliced, not copied; pieces
/// join only when withheld bytes go out between them.
struct Out<'a> {
    all: &'a Bytes,
    run: Option<Range<usize>>,
    joined: Option<BytesMut>,
}

impl<'a> Out<'a> {
    fn new(all: &'a Bytes) -> Self {
        Self {
            all,
            run: None,
            joined: None,
        }
    }

    /// Forward `span` of the frame.
    fn span(&mut self, span: Range<usize>) {
        match &mut self.run {
            Some(run) if run.end == span.start => run.end = span.end,
            _ => {
                self.flush();
                self.run = Some(span);
            }
        }
    }

    /// Forward bytes from elsewhere.
    fn bytes(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.flush();
        self.joined
            .get_or_insert_with(BytesMut::new)
            .extend_from_slice(b);
    }

    fn flush(&mut self) {
        if let Some(run) = self.run.take() {
            self.joined
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(&self.all[run]);
        }
    }

    fn finish(mut self) -> Bytes {
        match (self.joined.is_some(), self.run.take()) {
            (false, Some(run)) => self.all.slice(run),
            (false, None) => Bytes::new(),
            (true, run) => {
                self.run = run;
                self.flush();
                self.joined.take().map(BytesMut::freeze).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::providers::adapter::ErrorText;
    use crate::providers::Format;
    use http_body_util::{BodyExt, StreamBody};

    /// Refuses calls to `bad` (the policy review is tested through the proxy, tests/tool_gate.rs).
    struct RefuseBad;

    impl CallCheck for RefuseBad {
        fn check(&mut self, calls: &[ToolCall], gate: &dyn ToolGate) -> Option<Bytes> {
            calls
                .iter()
                .any(|c| c.name == "bad")
                .then(|| gate.refusal(&text("refused bad")))
        }

        fn unreadable(&mut self, gate: &dyn ToolGate) -> Bytes {
            gate.refusal(&text("unreadable"))
        }
    }

    fn text(message: &str) -> ErrorText<'_> {
        ErrorText {
            status: 403,
            message,
            code: "denied_tool",
            openai_type: "denied_tool",
            anthropic_type: "denied_tool",
            google_status: "PERMISSION_DENIED",
        }
    }

    /// A gated body over `frames`, the frames the upstream handed out counted.
    fn gated(
        format: Format,
        frames: Vec<String>,
    ) -> (
        Gate<impl Body<Data = Bytes, Error = std::convert::Infallible>>,
        Arc<AtomicUsize>,
    ) {
        let read = Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let stream = futures_util::stream::iter(frames.into_iter().map(move |f| {
            r.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(f)))
        }));
        let gate = format.adapter().tool_gate().expect("a gated format");
        (
            Gate::armed(StreamBody::new(stream), gate, Box::new(RefuseBad)),
            read,
        )
    }

    async fn next(body: &mut (impl Body<Data = Bytes> + Unpin)) -> Option<String> {
        let f = body.frame().await?.ok()?;
        Some(String::from_utf8(f.into_data().ok()?.to_vec()).unwrap())
    }

    fn chunk(delta: &str, finish: &str) -> String {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n")
    }

    fn call(name: &str) -> [String; 2] {
        [
            chunk(
                &format!("{{\"tool_calls\":[{{\"index\":0,\"id\":\"c1\",\"function\":{{\"name\":\"{name}\",\"arguments\":\"\"}}}}]}}"),
                "null",
            ),
            chunk(
                "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}",
                "null",
            ),
        ]
    }

    #[tokio::test]
    async fn text_goes_out_at_once_and_a_call_when_its_choice_finishes() {
        let text = chunk("{\"content\":\"hi\"}", "null");
        let [start, args] = call("ok");
        let finish = chunk("{}", "\"tool_calls\"");
        let frames = vec![
            text.clone(),
            start.clone(),
            args.clone(),
            text.clone(),
            finish.clone(),
            "data: [DONE]\n\n".into(),
        ];
        let (body, _) = gated(Format::OpenAiChat, frames);
        let mut body = std::pin::pin!(body);
        assert_eq!(next(&mut body).await.unwrap(), text, "text is not held");
        // The call's two events are withheld; the text after them is not.
        assert_eq!(next(&mut body).await.unwrap(), text);
        assert_eq!(
            next(&mut body).await.unwrap(),
            format!("{start}{args}{finish}"),
            "released byte-identical, before the finish"
        );
        assert_eq!(next(&mut body).await.unwrap(), "data: [DONE]\n\n");
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn a_refused_call_ends_the_stream_with_the_error_and_the_rest_is_read_unforwarded() {
        let text = chunk("{\"content\":\"hi\"}", "null");
        let [start, args] = call("bad");
        let finish = chunk("{}", "\"tool_calls\"");
        let usage = "data: {\"choices\":[],\"usage\":{\"completion_tokens\":3}}\n\n";
        // The finish and what follows in one frame: nothing after the refusal goes out.
        let frames = vec![
            format!("{text}{start}"),
            args,
            format!("{finish}{text}{usage}"),
            "data: [DONE]\n\n".into(),
        ];
        let n = frames.len();
        let (body, read) = gated(Format::OpenAiChat, frames);
        let out = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert_eq!(
            out,
            format!("{text}data: {{\"error\":{{\"message\":\"refused bad\",\"type\":\"permission_error\",\"param\":null,\"code\":\"denied_tool\"}}}}\n\n")
        );
        assert_eq!(
            read.load(Ordering::Relaxed),
            n,
            "the upstream was read to its end"
        );
    }

    #[tokio::test]
    async fn crlf_streams_split_anywhere_pass_byte_identical() {
        // Gemini frames its events with CRLF; a call arrives whole in one chunk.
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\n\
                      data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"ok\",\"args\":{}}}]}}]}\r\n\r\n\
                      data: {\"usageMetadata\":{\"candidatesTokenCount\":2}}\r\n\r\n";
        for size in [1, 2, 3, 5, stream.len()] {
            let frames = stream
                .as_bytes()
                .chunks(size)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            let (body, _) = gated(Format::Gemini, frames);
            let out = body.collect().await.unwrap().to_bytes();
            assert_eq!(out, stream.as_bytes(), "frames of {size}");
        }
    }

    #[tokio::test]
    async fn an_anthropic_tool_block_is_withheld_until_its_stop() {
        let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
        let text = ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
        );
        let start = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"bad","input":{}}}"#,
        );
        let delta = ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
        );
        let ping = ev("ping", r#"{"type":"ping"}"#);
        let stop = ev(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        );
        let frames = vec![text.clone(), start, ping.clone(), delta, stop];
        let (body, _) = gated(Format::Anthropic, frames);
        let mut body = std::pin::pin!(body);
        assert_eq!(next(&mut body).await.unwrap(), text);
        assert_eq!(next(&mut body).await.unwrap(), ping, "pings are not held");
        let end = next(&mut body).await.unwrap();
        assert!(
            end.starts_with("event: error\ndata: {") && end.contains("refused bad"),
            "{end}"
        );
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn what_cannot_be_read_is_refused_not_passed() {
        // An event over the limit.
        let big = format!("data: {{\"x\":\"{}\"}}\n\n", "a".repeat(MAX_HELD + 10));
        let (body, _) = gated(Format::OpenAiChat, vec![big]);
        let out = body.collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&out).contains("unreadable"));
        // A tool-call chunk that is not JSON.
        let broken = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"ok\"\n\n";
        let (body, _) = gated(Format::OpenAiChat, vec![broken.into()]);
        let out = body.collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&out).contains("unreadable"));
    }

    #[tokio::test]
    async fn a_last_event_without_its_blank_line_is_checked_like_any() {
        let [start, args] = call("bad");
        let finish = chunk("{}", "\"tool_calls\"");
        let cut = finish.trim_end().to_string(); // the upstream ended before the blank line
        let (body, _) = gated(Format::OpenAiChat, vec![start, args, cut]);
        let out = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(out.starts_with("data: {\"error\""), "{out}");
        let [start, args] = call("ok");
        let (body, _) = gated(Format::OpenAiChat, vec![start.clone(), args.clone()]);
        let out = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert_eq!(out, format!("{start}{args}"), "released at the end");
    }

    async fn run(format: Format, frames: &[&str]) -> String {
        let (body, _) = gated(format, frames.iter().map(|f| f.to_string()).collect());
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// What the client has got after the first frame, the upstream then silent.
    async fn first_then_silence(format: Format, frame: &str) -> Option<String> {
        use futures_util::StreamExt;
        let s = futures_util::stream::iter(vec![Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from(frame.to_string()),
        ))])
        .chain(futures_util::stream::pending());
        let gate = format.adapter().tool_gate().unwrap();
        let g = Gate::armed(StreamBody::new(s), gate, Box::new(RefuseBad));
        let mut g = std::pin::pin!(g);
        let f = tokio::time::timeout(std::time::Duration::from_millis(200), g.frame())
            .await
            .ok()??;
        Some(String::from_utf8(f.ok()?.into_data().ok()?.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn responses_events_serialized_nested_type_first_are_read_by_their_own_type() {
        // openai-python's models dump `item.type` before the event's `type` (vLLM streams so).
        let s = [
            "event: response.output_item.added\ndata: {\"item\":{\"arguments\":\"{}\",\"call_id\":\"c1\",\"name\":\"bad\",\"type\":\"function_call\",\"id\":\"fc_1\",\"status\":\"in_progress\"},\"output_index\":0,\"sequence_number\":1,\"type\":\"response.output_item.added\"}\n\n",
            "event: response.output_item.done\ndata: {\"item\":{\"arguments\":\"{}\",\"call_id\":\"c1\",\"name\":\"bad\",\"type\":\"function_call\",\"id\":\"fc_1\",\"status\":\"completed\"},\"output_index\":0,\"sequence_number\":2,\"type\":\"response.output_item.done\"}\n\n",
            "event: response.completed\ndata: {\"response\":{\"id\":\"r\",\"output\":[{\"arguments\":\"{}\",\"call_id\":\"c1\",\"name\":\"bad\",\"type\":\"function_call\",\"id\":\"fc_1\"}]},\"sequence_number\":3,\"type\":\"response.completed\"}\n\n",
        ];
        let out = run(Format::OpenAiResponses, &s).await;
        assert!(
            out.starts_with("event: error\n") && out.contains("refused bad"),
            "{out}"
        );
        let ok = [
            "event: response.output_item.added\ndata: {\"item\":{\"arguments\":\"\",\"call_id\":\"c1\",\"name\":\"ok\",\"type\":\"function_call\",\"id\":\"fc_1\",\"status\":\"in_progress\"},\"output_index\":0,\"sequence_number\":1,\"type\":\"response.output_item.added\"}\n\n",
            "event: response.function_call_arguments.delta\ndata: {\"delta\":\"{}\",\"item_id\":\"fc_1\",\"output_index\":0,\"sequence_number\":2,\"type\":\"response.function_call_arguments.delta\"}\n\n",
        ];
        assert_eq!(run(Format::OpenAiResponses, &ok).await, ok.concat());
    }

    #[tokio::test]
    async fn anthropic_events_without_names_are_read_by_their_top_level_type() {
        let s = [
            "data: {\"content_block\":{\"id\":\"t\",\"input\":{},\"name\":\"bad\",\"type\":\"tool_use\"},\"index\":1,\"type\":\"content_block_start\"}\n\n",
            "data: {\"delta\":{\"partial_json\":\"{}\",\"type\":\"input_json_delta\"},\"index\":1,\"type\":\"content_block_delta\"}\n\n",
            "data: {\"index\":1,\"type\":\"content_block_stop\"}\n\n",
        ];
        let out = run(Format::Anthropic, &s).await;
        assert!(
            out.starts_with("event: error\n") && out.contains("refused bad"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn chat_calls_in_a_later_choice_and_index_less_parallel_calls_are_each_checked() {
        // Choice 0 says `"tool_calls": null`, choice 1 carries a call.
        let s = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\",\"tool_calls\":null},\"finish_reason\":null},{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"bad\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        ];
        let out = run(Format::OpenAiChat, &s).await;
        assert!(
            out.contains("refused bad") && !out.contains("\"id\":\"c\""),
            "{out}"
        );
        // Two calls without `index` (Gemini's OpenAI endpoint): two calls, not one named "okbad".
        let s = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"ok\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"bad\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ];
        let out = run(Format::OpenAiChat, &s).await;
        assert!(
            out.starts_with("data: {\"error\"") && out.contains("refused bad"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn names_spelled_with_unicode_escapes_are_read_as_any_parser_reads_them() {
        // `tool\u005fcalls` is `tool_calls` to every JSON parser: a search for the raw bytes
        // would pass the call as text.
        let chat = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool\\u005fcalls\":[{\"index\":0,\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"bad\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        ];
        let anthropic = [
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool\\u005fuse\",\"id\":\"t\",\"name\":\"bad\",\"input\":{}}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        ];
        let gemini = [
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"function\\u0043all\":{\"name\":\"bad\",\"args\":{}}}]}}]}\n\n",
        ];
        let responses = [
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"function\\u005fcall\",\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"bad\",\"arguments\":\"\"}}\n\n",
            "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"type\":\"function\\u005fcall\",\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"bad\",\"arguments\":\"{}\"}}\n\n",
        ];
        // A terminal event alone, its call's type escaped.
        let terminal = [
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"function\\u005fcall\",\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"bad\",\"arguments\":\"{}\"}]}}\n\n",
        ];
        for (format, frames) in [
            (Format::OpenAiChat, &chat[..]),
            (Format::Anthropic, &anthropic[..]),
            (Format::Gemini, &gemini[..]),
            (Format::OpenAiResponses, &responses[..]),
            (Format::OpenAiResponses, &terminal[..]),
        ] {
            let out = run(format, frames).await;
            assert!(
                out.contains("refused bad") && !out.contains("\"name\":\"bad\""),
                "{format:?}: {out}"
            );
        }
        // Text with escapes (servers that escape every non-ASCII character) still passes.
        let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"caf\\u00e9\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(run(Format::OpenAiChat, &[text]).await, text);
    }

    #[tokio::test]
    async fn an_event_named_otherwise_than_its_data_type_is_not_judged_by_its_name() {
        // The SDKs build a tool_use block from the data's `type`, whatever the `event:` line.
        let anthropic = [
            "event: content_block_delta\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"bad\",\"input\":{}}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        ];
        let responses = [
            "event: response.output_text.delta\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"bad\",\"arguments\":\"{}\"}]}}\n\n",
        ];
        // The type stated twice: parsers differ on which one wins.
        let twice = [
            "data: {\"type\":\"ping\",\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"bad\",\"input\":{}}}\n\n",
        ];
        for (format, frames) in [
            (Format::Anthropic, &anthropic[..]),
            (Format::OpenAiResponses, &responses[..]),
            (Format::Anthropic, &twice[..]),
        ] {
            let out = run(format, frames).await;
            assert!(
                out.starts_with("event: error\n") && !out.contains("\"name\":\"bad\""),
                "{format:?}: {out}"
            );
        }
        // Names and types that agree, and data without a type, are read as before.
        let ok = [
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        ];
        assert_eq!(run(Format::Anthropic, &ok).await, ok.concat());
    }

    #[tokio::test]
    async fn a_terminal_call_is_not_taken_for_one_checked_by_its_item_id_alone() {
        // `fc_1` is checked as `ok`; the terminal event states `fc_1` as `bad`.
        let s = [
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"ok\",\"arguments\":\"\"}}\n\n",
            "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"ok\",\"arguments\":\"{}\"}}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"bad\",\"arguments\":\"{}\"}]}}\n\n",
        ];
        let out = run(Format::OpenAiResponses, &s).await;
        assert!(
            out.contains("refused bad") && !out.contains("\"name\":\"bad\""),
            "{out}"
        );
        // The same call repeated as checked passes, its terminal event not withheld.
        let ok = [s[0], s[1], &s[2].replace("bad", "ok")].map(str::to_string);
        let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
        assert_eq!(run(Format::OpenAiResponses, &ok).await, ok.concat());
    }

    #[tokio::test]
    async fn a_call_changed_after_it_was_checked_is_not_passed() {
        let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
        let start = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"ok","input":{}}}"#,
        );
        let stop = ev(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        );
        let late = ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"late"}}"#,
        );
        let message_delta = ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}"#,
        );
        // Input for a block already stopped, or for one the message's end completed.
        for frames in [
            vec![start.clone(), stop.clone(), late.clone()],
            vec![start.clone(), message_delta, late.clone()],
        ] {
            let out = run(
                Format::Anthropic,
                &frames.iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .await;
            assert!(out.contains("unreadable") && !out.contains("late"), "{out}");
        }
        // Chat: a second name for one index, which the SDKs join into one (`ba` + `d`).
        let renamed = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"ba\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"d\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        ];
        // A fragment for a choice whose calls completed at its finish.
        let after_finish = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"ok\",\"arguments\":\"{\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"}\"}}]},\"finish_reason\":null}]}\n\n",
        ];
        for frames in [&renamed[..], &after_finish[..]] {
            let out = run(Format::OpenAiChat, frames).await;
            assert!(
                out.ends_with("\"code\":\"denied_tool\"}}\n\n") && out.contains("unreadable"),
                "{out}"
            );
        }
        // A name repeated on every fragment is one call, as before.
        let repeated = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"ok\",\"arguments\":\"{\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"ok\",\"arguments\":\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        ];
        assert_eq!(run(Format::OpenAiChat, &repeated).await, repeated.concat());
    }

    #[tokio::test]
    async fn a_crlf_event_goes_out_with_its_last_line_feed() {
        let f = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\n";
        assert_eq!(
            first_then_silence(Format::Gemini, f).await.as_deref(),
            Some(f)
        );
    }

    #[tokio::test]
    async fn keep_alive_comments_go_out_at_once() {
        let c = ": OPENROUTER PROCESSING\n\n";
        assert_eq!(
            first_then_silence(Format::OpenAiChat, c).await.as_deref(),
            Some(c)
        );
    }
}
