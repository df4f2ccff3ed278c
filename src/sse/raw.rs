//! The raw bytes of one event, for rewriters that keep, drop or edit events as they were sent.
//!
//! The decoder says where each event ends ([`SseDecoder::feed_ends`]); the span between two ends
//! is one event's raw bytes (comment-only blocks before it included). These helpers find the
//! lines inside such a span with the decoder's line rules, where the event's own lines start,
//! and where a byte of the event's decoded `data` lies in the raw bytes, so that an edit made
//! on the decoded data can be applied to the bytes without touching anything else.
//!
//! [`SseDecoder::feed_ends`]: super::SseDecoder::feed_ends

use memchr::memchr2;

use super::decoder::field;

/// One line of a raw span: its content is `start..end`; the next line starts at `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine {
    /// First byte of the line.
    pub start: usize,
    /// End of the content (where the line end starts).
    pub end: usize,
    /// Just past the line end (LF, CR or CRLF).
    pub next: usize,
}

/// The lines of `raw`, split at LF, CRLF and CR; a last line without a line end is included.
pub fn lines(raw: &[u8]) -> impl Iterator<Item = RawLine> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= raw.len() {
            return None;
        }
        let start = pos;
        let (end, next) = match memchr2(b'\n', b'\r', &raw[pos..]) {
            Some(i) => {
                let end = pos + i;
                let crlf = raw[end] == b'\r' && raw.get(end + 1) == Some(&b'\n');
                (end, end + 1 + usize::from(crlf))
            }
            None => (raw.len(), raw.len()),
        };
        pos = next;
        Some(RawLine { start, end, next })
    })
}

/// Where the event's own lines start in its span: after the last blank line before the one
/// that ends it (comment-only blocks and the LF of a preceding CRLF come before).
pub fn event_start(raw: &[u8]) -> usize {
    lines(raw)
        .filter(|l| l.start == l.end && l.next < raw.len())
        .map(|l| l.next)
        .last()
        .unwrap_or(0)
}

/// Where byte `at` of the event's data (its `data:` values joined with LF, as the decoder
/// gives them) lies in `raw`; `at == data.len()` maps to the end of the last value, and a
/// joining LF to the end of the value before it. `None` when `raw` holds less data than that.
pub fn data_pos(raw: &[u8], at: usize) -> Option<usize> {
    let mut seen = 0;
    for l in lines(raw) {
        let (name, value) = field(&raw[l.start..l.end]);
        if name != b"data" {
            continue;
        }
        let value_start = l.end - value.len();
        if at <= seen + value.len() {
            return Some(value_start + (at - seen));
        }
        seen += value.len() + 1; // the joining LF
    }
    None
}

/// The start and length of the value of the span's `data:` line, when it has exactly one: byte
/// `at` of the event's data then lies at that start plus `at`. `None` for none or several.
pub fn single_data_line(raw: &[u8]) -> Option<(usize, usize)> {
    let mut found = None;
    for l in lines(raw) {
        let (name, value) = field(&raw[l.start..l.end]);
        if name == b"data" {
            if found.is_some() {
                return None;
            }
            found = Some((l.end - value.len(), value.len()));
        }
    }
    found
}

/// [`single_data_line`] of one event's span `raw` whose decoded data is `data` (as the decoder
/// gave it for that span): a span that is `data: `, then as many bytes as `data` has, then line
/// ends only — how servers write nearly every event — is placed without reading those bytes.
/// They are `data` itself: any line break among them would make the decoded data shorter than
/// they are (a further line loses at least its `data:` name, or all of itself, and each line
/// end becomes at most one LF). Any other span is walked.
pub fn single_data_line_of(raw: &[u8], data: &[u8]) -> Option<(usize, usize)> {
    const FIELD: &[u8] = b"data: ";
    let ends = raw
        .strip_prefix(FIELD)
        .and_then(|rest| rest.get(data.len()..));
    if ends.is_some_and(|ends| ends.iter().all(|b| matches!(b, b'\r' | b'\n'))) {
        return Some((FIELD.len(), data.len()));
    }
    single_data_line(raw)
}

/// Length of the data the span's `data:` lines hold when joined with LF.
pub fn data_len(raw: &[u8]) -> usize {
    let mut n = 0;
    let mut any = false;
    for l in lines(raw) {
        let (name, value) = field(&raw[l.start..l.end]);
        if name == b"data" {
            n += value.len() + usize::from(any);
            any = true;
        }
    }
    n
}

/// `raw` (one event's span) with its `data` replaced by `data` (one line, no line breaks): the
/// first `data:` line carries it, later `data:` lines are dropped, every other line (comments,
/// `id:`, `event:`, `retry:`) and every line end is kept as sent.
pub fn replace_data(raw: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + data.len());
    let mut written = false;
    for l in lines(raw) {
        let (name, _) = field(&raw[l.start..l.end]);
        if name != b"data" || l.start == l.end {
            out.extend_from_slice(&raw[l.start..l.next]);
            continue;
        }
        if !std::mem::replace(&mut written, true) {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.extend_from_slice(&raw[l.end..l.next]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_replaced_and_everything_else_kept() {
        let raw = b": c\n\nid: 7\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\nretry: 5\r\n\r";
        assert_eq!(
            replace_data(raw, b"{}"),
            b": c\n\nid: 7\r\nevent: message\r\ndata: {}\r\nretry: 5\r\n\r".to_vec()
        );
    }

    #[test]
    fn lines_split_at_lf_crlf_and_cr() {
        let raw = b"a\r\nbb\rc\n\nd";
        let got: Vec<_> = lines(raw).map(|l| &raw[l.start..l.end]).collect();
        assert_eq!(got, [&b"a"[..], b"bb", b"c", b"", b"d"]);
        assert_eq!(lines(b"x\r").last().map(|l| l.next), Some(2));
    }

    #[test]
    fn the_event_starts_after_the_comment_blocks_before_it() {
        assert_eq!(event_start(b"data: 1\n\n"), 0);
        assert_eq!(event_start(b": ping\n\ndata: 1\n\n"), 8);
        assert_eq!(event_start(b"\n: a\r\n\r\nevent: x\r\ndata: 1\r\n\r"), 8);
    }

    #[test]
    fn data_positions_map_back_to_the_raw_bytes() {
        // data is "{\"a\":\n1}" (two lines joined with LF).
        let raw = b": c\n\nevent: e\r\ndata:{\"a\":\r\ndata: 1}\r\n\r";
        assert_eq!(data_len(raw), 8);
        let p = |at| data_pos(raw, at).unwrap();
        assert_eq!(raw[p(0)], b'{');
        assert_eq!(
            &raw[p(5)..p(5) + 2],
            b"\r\n",
            "the joining LF: the end of its line"
        );
        assert_eq!(raw[p(6)], b'1');
        assert_eq!(raw[p(7)], b'}');
        assert_eq!(&raw[p(8)..], b"\r\n\r");
        assert_eq!(data_pos(raw, 10), None);
        assert_eq!(single_data_line(raw), None, "two data lines");
    }

    #[test]
    fn a_single_data_line_places_the_data_as_data_pos_does() {
        for raw in [
            &b"data: {\"x\":1}\n\n"[..],
            b": ping\n\nevent: e\r\ndata:{\"x\":1}\r\n\r\n",
            b"id: 7\rdata:  {\"x\":1}\r\r",
        ] {
            let (start, len) = single_data_line(raw).expect("one data line");
            assert_eq!(len, data_len(raw));
            for at in 0..=len {
                assert_eq!(Some(start + at), data_pos(raw, at), "{at} in {raw:?}");
            }
        }
        assert_eq!(single_data_line(b"event: e\n\n"), None, "no data line");
    }

    proptest::proptest! {
        /// Told each event's decoded data, the quick placement answers as the walk of the
        /// lines does: spans of every line end, with line breaks, other fields, `data` with no
        /// space, extra lines.
        #[test]
        fn told_its_data_the_placement_is_the_walks(
            head in proptest::sample::select(vec!["data: ", "data:", "", ": c\n\ndata: ", "data: x\ndata: "]),
            data in "[a-z{}:\\\"\r\n ]{0,12}",
            ends in "[\r\nx]{0,4}",
            more in "(data: [a-z\r\n]{0,6}\n|\n|x){0,3}",
        ) {
            let raw = format!("{head}{data}{ends}{more}\n\n");
            let mut events = Vec::new();
            crate::sse::SseDecoder::new(1 << 16).feed_ends(raw.as_bytes(), |item, end| {
                if let crate::sse::SseItem::Event { data, .. } = item {
                    events.push((end, data.to_vec()));
                }
            });
            let mut start = 0;
            for (end, data) in events {
                let span = &raw.as_bytes()[start..end];
                proptest::prop_assert_eq!(
                    single_data_line_of(span, &data),
                    single_data_line(span),
                    "{:?} told {:?}", span, data
                );
                start = end;
            }
        }
    }
}
