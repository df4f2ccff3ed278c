//! The SSE and NDJSON decoders on arbitrary bytes cut at arbitrary points: no panic, bounded
//! memory, and the same events, at the same event ends (the rewriters' framing), whole as cut;
//! within each event's span the raw helpers map its data back to the bytes sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwarden::sse::{raw, NdjsonDecoder, SseDecoder, SseItem};

type Item = (usize, Vec<u8>, Vec<u8>);

fn push(out: &mut Vec<Item>, it: SseItem<'_>, end: usize) {
    out.push(match it {
        SseItem::Event { event, data } => (end, event.to_vec(), data.to_vec()),
        SseItem::Oversized => (end, b"!".to_vec(), Vec::new()),
    });
}

fn events(data: &[u8], cuts: &[u8]) -> Vec<Item> {
    let mut d = SseDecoder::new(4096);
    let mut out = Vec::new();
    let mut rest = data;
    let mut base = 0;
    for &c in cuts {
        let n = (c as usize).min(rest.len());
        let (head, tail) = rest.split_at(n);
        d.feed_ends(head, |it, end| {
            assert!(end >= 1 && end <= head.len());
            push(&mut out, it, base + end)
        });
        assert!(d.buffered() <= 2 * 4096 + 64);
        base += n;
        rest = tail;
    }
    d.feed_ends(rest, |it, end| push(&mut out, it, base + end));
    out
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = input.split_at(input.len().min(16));
    let whole = events(data, &[]);
    assert_eq!(events(data, cuts), whole);
    // Each event's span: the raw helpers find its data bytes where they were sent (a leading
    // byte-order mark belongs to no field, so the first span is skipped when it has one).
    let mut start = 0;
    for (end, name, ev) in &whole {
        let span = &data[start..*end];
        if name != b"!" && !(start == 0 && span.starts_with(b"\xEF\xBB\xBF")) {
            assert_eq!(raw::data_len(span), ev.len());
            for (i, b) in ev.iter().enumerate() {
                let at = raw::data_pos(span, i).expect("mapped");
                assert!(*b == b'\n' || span[at] == *b);
            }
            assert!(raw::event_start(span) <= span.len());
        }
        start = *end;
    }
    let mut n = NdjsonDecoder::new(4096);
    for c in data.chunks(cuts.first().map_or(7, |&c| c as usize + 1)) {
        n.feed(c, |_| {});
    }
    n.finish(|_| {});
});
