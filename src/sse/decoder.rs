//! Server-sent events, parsed as the WHATWG event-stream rules say: lines end in LF, CRLF or CR
//! (a CR at the end of one chunk and an LF at the start of the next are one line end); `data:`
//! lines of one event are joined with LF; lines starting with `:` are comments; an empty line
//! dispatches the event; an event with no data is not dispatched; one leading space after the
//! colon is dropped; a byte-order mark at the very start is ignored.

use memchr::{memchr, memchr2};

/// One decoded item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseItem<'a> {
    /// A complete event. `event` is `message` when the stream named none.
    Event {
        /// The `event:` field.
        event: &'a [u8],
        /// The `data:` lines joined with `\n`.
        data: &'a [u8],
    },
    /// An event larger than the decoder's maximum; its content was dropped.
    Oversized,
}

/// Incremental SSE decoder with bounded memory.
#[derive(Debug)]
pub struct SseDecoder {
    max: usize,
    /// A line cut by a chunk boundary.
    partial: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    /// The current line is longer than the maximum: drop it up to its end.
    skipping_line: bool,
    /// The current event went over the maximum.
    oversized: bool,
    /// No line has been completed yet (the byte-order mark may start the first one).
    first_line: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

// === impl SseDecoder ===

impl SseDecoder {
    /// A decoder keeping events of at most `max_event_bytes` of data.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max: max_event_bytes,
            partial: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            after_cr: false,
            skipping_line: false,
            oversized: false,
            first_line: true,
        }
    }

    /// Feed the next chunk of the stream; `f` is called for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(SseItem<'_>)) {
        self.feed_ends(chunk, |item, _| f(item));
    }

    /// Like [`feed`](Self::feed), and `f` is also told where in `chunk` the event ended: just
    /// past the first byte (LF or CR) of the line end of the blank line that dispatched it. So
    /// the raw bytes of consecutive events are the spans between those ends (comment-only blocks
    /// before an event belong to it), which lets a rewriter keep, drop or edit whole events as
    /// they were sent. The LF of a CRLF is left to the next span on purpose: whether it follows
    /// may be unknown until the next chunk, and ends must not depend on how the bytes were cut.
    pub fn feed_ends(&mut self, chunk: &[u8], mut f: impl FnMut(SseItem<'_>, usize)) {
        if chunk.is_empty() {
            return; // an empty frame must not cancel a pending CR-LF join
        }
        let mut pos = 0;
        if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
            pos = 1;
        }
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            let Some(end) = memchr2(b'\n', b'\r', rest) else {
                self.keep_partial(rest);
                return;
            };
            let line = &rest[..end];
            // A CR followed by LF is one line end; a CR last in the chunk may be too.
            let mut next = end + 1;
            if rest[end] == b'\r' {
                match rest.get(next) {
                    Some(b'\n') => next += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if let Some(data) = self.lone_data_event(rest, end) {
                // Dispatched by the blank line's LF, as the line-by-line path would.
                let event_end = pos + end + 2;
                f(
                    SseItem::Event {
                        event: b"message",
                        data,
                    },
                    event_end,
                );
                pos = event_end;
                continue;
            }
            let event_end = pos + end + 1;
            let mut emit = |item: SseItem<'_>| f(item, event_end);
            if self.partial.is_empty() && !self.skipping_line {
                self.line(line, &mut emit);
            } else {
                self.keep_partial(line);
                let whole = std::mem::take(&mut self.partial);
                if self.skipping_line {
                    self.skipping_line = false;
                    self.oversized = true;
                } else {
                    self.line(&whole, &mut emit);
                }
                self.partial = whole;
                self.partial.clear();
            }
            pos += next;
        }
    }

    /// The data of an event that is one whole `data:` line ending at `rest[end]` in LF and
    /// followed at once by the blank line's LF — how servers write nearly every event — when no
    /// other line of the event came before: borrowed from the chunk, where the line-by-line path
    /// copies it and then finds the blank line with a search of its own. `None`: that path.
    fn lone_data_event<'c>(&self, rest: &'c [u8], end: usize) -> Option<&'c [u8]> {
        let clean = self.partial.is_empty()
            && self.data.is_empty()
            && self.event.is_empty()
            && !(self.skipping_line || self.oversized || self.first_line);
        if !clean || rest[end] != b'\n' || rest.get(end + 1) != Some(&b'\n') {
            return None;
        }
        let value = rest[..end].strip_prefix(b"data:")?;
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // Within the maximum, as the copy would be.
        (value.len() < self.max).then_some(value)
    }

    /// Bytes held for an unfinished line or event (bounded by the maximum event size).
    pub fn buffered(&self) -> usize {
        self.partial.len() + self.data.len()
    }

    fn keep_partial(&mut self, bytes: &[u8]) {
        if self.skipping_line {
            return;
        }
        if self.partial.len() + bytes.len() > self.max + 16 {
            // A line longer than any event we keep: drop it and the event it belongs to.
            self.partial.clear();
            self.skipping_line = true;
            return;
        }
        self.partial.extend_from_slice(bytes);
    }

    fn line(&mut self, mut line: &[u8], f: &mut impl FnMut(SseItem<'_>)) {
        if self.first_line {
            self.first_line = false;
            if let Some(rest) = line.strip_prefix(BOM) {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch(f);
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let (name, value) = field(line);
        match name {
            b"data" => {
                if self.oversized {
                    return;
                }
                if self.data.len() + value.len() + 1 > self.max {
                    self.oversized = true;
                    self.data.clear();
                    return;
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(&value[..value.len().min(256)]);
            }
            _ => {} // id, retry and unknown fields carry nothing we account
        }
    }

    fn dispatch(&mut self, f: &mut impl FnMut(SseItem<'_>)) {
        if self.oversized {
            f(SseItem::Oversized);
        } else if !self.data.is_empty() {
            self.data.pop(); // the LF after the last data line
            let event: &[u8] = if self.event.is_empty() {
                b"message"
            } else {
                &self.event
            };
            f(SseItem::Event {
                event,
                data: &self.data,
            });
        }
        self.data.clear();
        self.event.clear();
        self.oversized = false;
    }
}

/// A field line's name and value: the name runs up to the first colon, one space after it is
/// dropped; a line without a colon is a name with an empty value.
pub(crate) fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match memchr(b':', line) {
        Some(i) => {
            let v = &line[i + 1..];
            (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
        }
        None => (line, &b""[..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Ev {
        E(String, String),
        Big,
    }

    fn decode_chunks(chunks: &[&[u8]], max: usize) -> Vec<Ev> {
        let mut d = SseDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, |it| {
                out.push(match it {
                    SseItem::Event { event, data } => Ev::E(
                        String::from_utf8_lossy(event).into(),
                        String::from_utf8_lossy(data).into(),
                    ),
                    SseItem::Oversized => Ev::Big,
                })
            });
        }
        out
    }

    fn e(ev: &str, data: &str) -> Ev {
        Ev::E(ev.into(), data.into())
    }

    /// Lone `data:` events whole in a chunk (borrowed) decode as they do line by line (a chunk
    /// per byte), up to and past the maximum, empty, after a named event, and after `\r`.
    #[test]
    fn lone_data_events_decode_as_line_by_line() {
        let stream: &[u8] = b"data: first\n\ndata: abcd\n\ndata:abcde\n\ndata: abcde\n\ndata:\n\n\
event: e\ndata: x\n\ndata: y\n\ndata: z\r\rdata: w\n\ndata: a\ndata: b\n\n";
        let whole = decode_chunks(&[stream], 5);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_chunks(&bytes, 5), whole);
        assert_eq!(
            whole,
            [
                Ev::Big,
                e("message", "abcd"),
                Ev::Big,
                Ev::Big,
                e("message", ""),
                e("e", "x"),
                e("message", "y"),
                e("message", "z"),
                e("message", "w"),
                e("message", "a\nb"),
            ]
        );
    }

    #[test]
    fn whatwg_rules() {
        let s = b"\xEF\xBB\xBFdata: a\n\n: keep-alive\n\nevent: x\ndata:b\ndata:  c\n\nid: 1\n\ndata\n\nretry: 5\ndata: [DONE]\n\n";
        assert_eq!(
            decode_chunks(&[s], 1024),
            vec![
                e("message", "a"),
                e("x", "b\n c"),
                e("message", ""),
                e("message", "[DONE]")
            ]
        );
    }

    #[test]
    fn line_ends_lf_crlf_cr_and_split_crlf() {
        let want = vec![e("message", "1"), e("message", "2"), e("message", "3")];
        assert_eq!(
            decode_chunks(&[b"data: 1\r\n\r\ndata: 2\r\rdata: 3\n\n"], 64),
            want
        );
        // CR at the end of one chunk, LF at the start of the next: one line end, not two.
        assert_eq!(
            decode_chunks(
                &[b"data: 1\r", b"\n\r", b"\ndata: 2\r", b"\rdata: 3\n", b"\n"],
                64
            ),
            want
        );
    }

    #[test]
    fn one_byte_at_a_time_equals_whole() {
        let s: &[u8] =
            b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n:ping\n\ndata: x\ndata: y\n\n";
        let whole = decode_chunks(&[s], 1024);
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(decode_chunks(&bytes, 1024), whole);
        assert_eq!(whole.len(), 2);
    }

    #[test]
    fn incomplete_event_at_end_is_not_dispatched() {
        assert_eq!(
            decode_chunks(&[b"data: 1\n\ndata: 2\n"], 64),
            vec![e("message", "1")]
        );
    }

    /// Absolute event ends of `stream` fed in `chunks` pieces of `size` bytes.
    fn ends(stream: &[u8], size: usize) -> Vec<usize> {
        let mut d = SseDecoder::new(64);
        let mut out = Vec::new();
        let mut base = 0;
        for c in stream.chunks(size) {
            d.feed_ends(c, |_, end| out.push(base + end));
            base += c.len();
        }
        out
    }

    #[test]
    fn event_ends_are_just_past_the_dispatching_blank_line() {
        let s: &[u8] = b"data: 1\n\n: ping\n\nevent: x\r\ndata: 2\r\n\r\ndata: 3\r\rdata: 4\n\n";
        // The CRLF event ends after its CR: the LF starts the next span.
        let want = vec![9, 37, 47, 56];
        assert_eq!(ends(s, s.len()), want);
        for size in 1..s.len() {
            assert_eq!(ends(s, size), want, "chunks of {size}");
        }
        // Relative to each chunk.
        let mut d = SseDecoder::new(64);
        let mut got = Vec::new();
        d.feed_ends(b"data: 1\r\n\r", |_, e| got.push(e));
        d.feed_ends(b"\ndata: 2\n\n", |_, e| got.push(e));
        assert_eq!(got, [10, 10]);
    }

    #[test]
    fn oversized_events_are_reported_and_the_stream_recovers() {
        let big = format!("data: {}\n\ndata: ok\n\n", "x".repeat(100));
        assert_eq!(
            decode_chunks(&[big.as_bytes()], 32),
            vec![Ev::Big, e("message", "ok")]
        );
        // Many small data lines adding up past the maximum.
        let many = format!("{}\ndata: ok\n\n", "data: 0123456789\n".repeat(10));
        assert_eq!(
            decode_chunks(&[many.as_bytes()], 32),
            vec![Ev::Big, e("message", "ok")]
        );
        // A huge line split over many chunks never buffers more than the maximum.
        let mut d = SseDecoder::new(32);
        let mut items = 0;
        d.feed(b"data: ", |_| items += 1);
        for _ in 0..1000 {
            d.feed(&[b'z'; 100], |_| items += 1);
            assert!(d.buffered() <= 64, "{}", d.buffered());
        }
        let mut got = Vec::new();
        d.feed(b"\n\ndata: after\n\n", |it| got.push(format!("{it:?}")));
        assert_eq!(items, 0);
        assert_eq!(got.len(), 2);
        assert!(got[0].contains("Oversized"));
        assert!(got[1].contains("after") || got[1].contains("97, 102"));
    }
}
