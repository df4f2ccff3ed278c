//! The `application/vnd.amazon.eventstream` framing, decoded incrementally: each message is a
//! 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), headers, payload and a
//! CRC32 of everything before it (all integers big-endian).
//!
//! Pure and bounded like the SSE decoder: frames go in split anywhere, complete messages come
//! out with where in the frame they ended. A message whose CRC does not match is reported as
//! [`Corrupt`](EventItem::Corrupt) and skipped (its length is trustworthy: the prelude's own CRC
//! vouched for it); a prelude whose CRC does not match leaves no way to find the next message, so
//! the rest of the stream is not read. A message over the maximum is skipped unread. Nothing is
//! ever changed: the proxy forwards the bytes as they came either way.

/// Prelude: total length, headers length, prelude CRC.
const PRELUDE: usize = 12;
/// Prelude and the trailing message CRC: the smallest message.
const MIN_MESSAGE: usize = PRELUDE + 4;
/// Header value type of a string (`7`; `6` is bytes, also length-prefixed).
const STRING: u8 = 7;

/// One decoded item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventItem<'a> {
    /// A message whose checksums hold.
    Message(Message<'a>),
    /// A message that failed a check; what failed.
    Corrupt(Corrupt),
    /// A message longer than the decoder's maximum, skipped unread.
    Oversized,
}

/// What made a message unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// The prelude's CRC (or its lengths) did not hold: the rest of the stream is not read.
    Prelude,
    /// The message CRC did not hold.
    Message,
    /// The headers could not be read.
    Headers,
}

/// One message: its raw header block and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    headers: &'a [u8],
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Incremental decoder of one event stream, with bounded memory.
#[derive(Debug)]
pub struct EventStreamDecoder {
    max: usize,
    /// Bytes of a message cut by a frame boundary.
    buf: Vec<u8>,
    /// Bytes still to skip of an oversized message.
    skip: usize,
    /// The framing was lost (a bad prelude): nothing more is read.
    lost: bool,
}

// === impl EventStreamDecoder ===

impl EventStreamDecoder {
    /// A decoder keeping messages of at most `max_message_bytes` (prelude and CRCs included).
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max: max_message_bytes.max(MIN_MESSAGE),
            buf: Vec::new(),
            skip: 0,
            lost: false,
        }
    }

    /// Feed the next frame; `f` is told every item it completes and where in `chunk` that
    /// message ended (just past its last byte; for a bad prelude, past the prelude — `0` when
    /// the previous frame ended there).
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(EventItem<'_>, usize)) {
        let mut pos = 0;
        while pos < chunk.len() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len() - pos);
                self.skip -= n;
                pos += n;
                if self.skip == 0 {
                    f(EventItem::Oversized, pos);
                }
                continue;
            }
            let rest = &chunk[pos..];
            // Whole messages inside the frame are read in place, without a copy; a message cut
            // by the frame's end is gathered in `buf`, prelude first.
            let held = !self.buf.is_empty();
            let want = match next(if held { &self.buf } else { rest }, self.max) {
                Next::Len(len) if !held && len <= rest.len() => {
                    f(read(&rest[..len]), pos + len);
                    pos += len;
                    continue;
                }
                Next::Len(len) => len,
                Next::Need => PRELUDE,
                Next::Skip(total) => {
                    self.skip = total - self.buf.len();
                    self.buf.clear();
                    continue;
                }
                Next::Bad => {
                    // A gathered prelude was judged when it was whole (below): this one is in
                    // place, and reported just past it.
                    self.lose();
                    f(EventItem::Corrupt(Corrupt::Prelude), pos + PRELUDE);
                    return;
                }
            };
            let n = (want - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            pos += n;
            if want == PRELUDE && self.buf.len() == PRELUDE {
                // The prelude is whole: judged now, not at the next frame (which may not come).
                match next(&self.buf, self.max) {
                    Next::Bad => {
                        self.lose();
                        f(EventItem::Corrupt(Corrupt::Prelude), pos);
                        return;
                    }
                    Next::Skip(total) => {
                        self.skip = total - PRELUDE;
                        self.buf.clear();
                    }
                    Next::Len(_) | Next::Need => {}
                }
                continue;
            }
            if want > PRELUDE && self.buf.len() == want {
                f(read(&self.buf), pos);
                self.buf.clear();
            }
        }
    }

    /// Bytes held for a message cut by a frame boundary (at most the maximum message size).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A bad prelude: no next message can be found, so nothing more is read (or held).
    fn lose(&mut self) {
        self.lost = true;
        self.buf = Vec::new();
    }
}

/// What the bytes at a message's start say of it.
enum Next {
    /// Not the whole prelude yet.
    Need,
    /// A message of this many bytes.
    Len(usize),
    /// A message of this many bytes, over the maximum.
    Skip(usize),
    /// The prelude's CRC or lengths do not hold.
    Bad,
}

fn next(bytes: &[u8], max: usize) -> Next {
    let Some(prelude) = bytes.get(..PRELUDE) else {
        return Next::Need;
    };
    let total = be32(&prelude[0..4]) as usize;
    let headers = be32(&prelude[4..8]) as usize;
    let sane = total >= MIN_MESSAGE && headers <= total - MIN_MESSAGE;
    if !sane || crc32fast::hash(&prelude[..8]) != be32(&prelude[8..12]) {
        Next::Bad
    } else if total > max {
        Next::Skip(total)
    } else {
        Next::Len(total)
    }
}

/// One whole message (its prelude checked): the message CRC, then the headers.
fn read(msg: &[u8]) -> EventItem<'_> {
    let (body, crc) = msg.split_at(msg.len() - 4);
    if crc32fast::hash(body) != be32(crc) {
        return EventItem::Corrupt(Corrupt::Message);
    }
    let headers_len = be32(&msg[4..8]) as usize;
    let headers = &body[PRELUDE..PRELUDE + headers_len];
    if Headers(headers).any(|h| h.is_err()) {
        return EventItem::Corrupt(Corrupt::Headers);
    }
    EventItem::Message(Message {
        headers,
        payload: &body[PRELUDE + headers_len..],
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

// === impl Message ===

impl<'a> Message<'a> {
    /// The value of the string (or bytes) header `name` (`:event-type`, `:message-type`,
    /// `:exception-type`, ...), when the message has one.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        Headers(self.headers)
            .map_while(Result::ok)
            .find(|(n, _, _)| *n == name.as_bytes())
            .filter(|(_, t, _)| *t == STRING || *t == STRING - 1)
            .map(|(_, _, v)| v)
    }
}

/// The headers of a block, one by one: `(name, value type, value bytes)`; an `Err` ends it.
struct Headers<'a>(&'a [u8]);

impl<'a> Iterator for Headers<'a> {
    type Item = Result<(&'a [u8], u8, &'a [u8]), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let r = header(self.0);
        match r {
            Some((h, rest)) => {
                self.0 = rest;
                Some(Ok(h))
            }
            None => {
                self.0 = &[];
                Some(Err(()))
            }
        }
    }
}

/// One header at the start of `b`, and what follows it.
#[allow(clippy::type_complexity)]
fn header(b: &[u8]) -> Option<((&[u8], u8, &[u8]), &[u8])> {
    let (&name_len, b) = b.split_first()?;
    let (name, b) = b.split_at_checked(usize::from(name_len))?;
    let (&kind, b) = b.split_first()?;
    // Value sizes by type: true, false, byte, short, int, long, bytes, string, timestamp, uuid.
    let (value, rest) = match kind {
        0 | 1 => (&b[..0], b),
        2 => b.split_at_checked(1)?,
        3 => b.split_at_checked(2)?,
        4 => b.split_at_checked(4)?,
        5 | 8 => b.split_at_checked(8)?,
        6 | 7 => {
            let (len, b) = b.split_at_checked(2)?;
            b.split_at_checked(usize::from(u16::from_be_bytes([len[0], len[1]])))?
        }
        9 => b.split_at_checked(16)?,
        _ => return None,
    };
    Some(((name, kind, value), rest))
}

/// One message framed with string `headers` around `payload`, checksums computed: what a test
/// or a fuzz target sends (the proxy never writes event streams).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(STRING);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = MIN_MESSAGE + h.len() + payload.len();
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `(kind, event type, payload)` of each item, the message end as a stream offset.
    type Seen = Vec<(usize, String, Vec<u8>)>;

    fn decode(cuts: &[usize], bytes: &[u8], max: usize) -> Seen {
        let mut d = EventStreamDecoder::new(max);
        let mut out = Vec::new();
        let mut base = 0;
        let mut rest = bytes;
        for &c in cuts.iter().chain(std::iter::once(&usize::MAX)) {
            let (head, tail) = rest.split_at(c.min(rest.len()));
            d.feed(head, |item, end| {
                assert!(end <= head.len());
                out.push(match item {
                    EventItem::Message(m) => (
                        base + end,
                        String::from_utf8_lossy(m.header(":event-type").unwrap_or(b"")).into(),
                        m.payload.to_vec(),
                    ),
                    other => (base + end, format!("{other:?}"), Vec::new()),
                });
            });
            assert!(d.buffered() <= max);
            base += head.len();
            rest = tail;
        }
        out
    }

    fn stream() -> Vec<u8> {
        let mut b = encode(
            &[(":event-type", "messageStart"), (":message-type", "event")],
            br#"{"role":"assistant"}"#,
        );
        b.extend(encode(
            &[(":event-type", "contentBlockDelta")],
            br#"{"delta":{"text":"Hi"}}"#,
        ));
        b.extend(encode(&[], b""));
        b
    }

    #[test]
    fn the_aws_test_vector_decodes() {
        // aws-c-event-stream's encoded test message: one `content-type` string header and the
        // payload `{'foo':'bar'}`.
        let hex = "0000003d0000002007fd83960c636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e7b27666f6f273a27626172277d8d9c08b1";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut got = Vec::new();
        EventStreamDecoder::new(1024).feed(&bytes, |item, end| {
            if let EventItem::Message(m) = item {
                got.push((
                    m.header("content-type").map(<[u8]>::to_vec),
                    m.payload.to_vec(),
                    end,
                ));
            }
        });
        assert_eq!(
            got,
            [(
                Some(b"application/json".to_vec()),
                b"{'foo':'bar'}".to_vec(),
                61
            )]
        );
        assert_eq!(
            encode(&[("content-type", "application/json")], b"{'foo':'bar'}"),
            bytes
        );
    }

    #[test]
    fn a_stream_split_at_every_byte_decodes_the_same() {
        let bytes = stream();
        let whole = decode(&[], &bytes, 1024);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].1, "contentBlockDelta");
        assert_eq!(whole[2].0, bytes.len());
        for cut in 0..=bytes.len() {
            assert_eq!(decode(&[cut], &bytes, 1024), whole, "cut at {cut}");
        }
        assert_eq!(decode(&vec![1; bytes.len()], &bytes, 1024), whole);
    }

    #[test]
    fn a_bad_message_crc_skips_that_message_and_a_bad_prelude_the_rest() {
        let mut bytes = stream();
        let first = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        bytes[first - 1] ^= 1; // the first message's CRC
        let got = decode(&[], &bytes, 1024);
        assert_eq!(got[0].1, "Corrupt(Message)");
        assert_eq!(got[1].1, "contentBlockDelta");
        bytes[first + 2] ^= 1; // the second message's length: its prelude CRC fails
        let got = decode(&[5, 30], &bytes, 1024);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1, "Corrupt(Prelude)");
    }

    #[test]
    fn an_oversized_message_is_skipped_and_the_next_read() {
        let mut bytes = encode(&[(":event-type", "big")], &[b'x'; 300]);
        bytes.extend(stream());
        let got = decode(&[7, 100], &bytes, 200);
        assert_eq!(got[0], (334, "Oversized".into(), Vec::new()));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn a_bad_prelude_completed_by_the_last_frame_is_reported() {
        // Found by the fuzz target: the prelude's check waited for a frame that never came.
        let bytes = [0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
        let whole = decode(&[], &bytes, 1024);
        assert_eq!(whole, [(12, "Corrupt(Prelude)".to_string(), Vec::new())]);
        for cut in 0..bytes.len() {
            assert_eq!(decode(&[cut], &bytes, 1024), whole, "cut at {cut}");
        }
        // Found by the property test: all zeros, cut right after the prelude.
        let zeros = [0; 33];
        assert_eq!(decode(&[12], &zeros, 1024), decode(&[], &zeros, 1024));
    }

    proptest! {
        #[test]
        fn any_bytes_any_cuts_same_items_bounded(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..64, 0..8),
            valid in any::<bool>(),
        ) {
            let bytes = if valid {
                let mut b = stream();
                b.extend(&data);
                b
            } else {
                data
            };
            prop_assert_eq!(decode(&cuts, &bytes, 128), decode(&[], &bytes, 128));
        }
    }
}
