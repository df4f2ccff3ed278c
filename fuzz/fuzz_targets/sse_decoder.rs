//! The SSE and NDJSON decoders on arbitrary bytes cut at arbitrary points: no panic, bounded
//! memory, and the same events whole as cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwarden::sse::{NdjsonDecoder, SseDecoder, SseItem};

fn events(data: &[u8], cuts: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut d = SseDecoder::new(4096);
    let mut out = Vec::new();
    let mut rest = data;
    for &c in cuts {
        let n = (c as usize).min(rest.len());
        let (head, tail) = rest.split_at(n);
        d.feed(head, |it| match it {
            SseItem::Event { event, data } => out.push((event.to_vec(), data.to_vec())),
            SseItem::Oversized => out.push((b"!".to_vec(), Vec::new())),
        });
        assert!(d.buffered() <= 2 * 4096 + 64);
        rest = tail;
    }
    d.feed(rest, |it| match it {
        SseItem::Event { event, data } => out.push((event.to_vec(), data.to_vec())),
        SseItem::Oversized => out.push((b"!".to_vec(), Vec::new())),
    });
    out
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = input.split_at(input.len().min(16));
    assert_eq!(events(data, cuts), events(data, &[]));
    let mut n = NdjsonDecoder::new(4096);
    for c in data.chunks(cuts.first().map_or(7, |&c| c as usize + 1)) {
        n.feed(c, |_| {});
    }
    n.finish(|_| {});
});
