//! Bedrock's event-stream decoder on arbitrary bytes cut at arbitrary points: no panic, bounded
//! memory, the same items at the same message ends however the bytes were cut; and the two
//! Bedrock stream readers on the same bytes (every message a valid frame, so the payload parsers
//! are reached too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwarden::providers::bedrock::eventstream::{encode, EventItem, EventStreamDecoder};
use tokenwarden::providers::{Format, ResponseParser};

type Item = (usize, String, Vec<u8>);

fn items(data: &[u8], cuts: &[u8]) -> Vec<Item> {
    let mut d = EventStreamDecoder::new(4096);
    let mut out = Vec::new();
    let mut base = 0;
    let mut feed = |d: &mut EventStreamDecoder, head: &[u8]| {
        d.feed(head, |it, end| {
            assert!(end <= head.len());
            out.push(match it {
                EventItem::Message(m) => (
                    base + end,
                    String::from_utf8_lossy(m.header(":event-type").unwrap_or_default()).into(),
                    m.payload.to_vec(),
                ),
                other => (base + end, format!("{other:?}"), Vec::new()),
            });
        });
        assert!(d.buffered() <= 4096);
        base += head.len();
    };
    let mut rest = data;
    for &c in cuts {
        let (head, tail) = rest.split_at((c as usize).min(rest.len()));
        feed(&mut d, head);
        rest = tail;
    }
    feed(&mut d, rest);
    out
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = input.split_at(input.len().min(16));
    assert_eq!(items(data, cuts), items(data, &[]));
    // The same bytes as payloads of well-formed messages, for the readers behind the framing.
    let kinds = ["contentBlockDelta", "contentBlockStart", "metadata", "messageStop", "chunk"];
    let mut framed = Vec::new();
    for (i, part) in data.split(|b| *b == 0xff).enumerate() {
        framed.extend(encode(&[(":event-type", kinds[i % kinds.len()])], part));
    }
    for format in [Format::BedrockConverse, Format::BedrockInvoke] {
        let mut p = ResponseParser::framed(format, b"application/vnd.amazon.eventstream", 4096)
            .expect("an event-stream reader");
        for c in framed.chunks(cuts.first().map_or(7, |&c| c as usize + 1)) {
            p.feed(c);
        }
        let _ = p.finish();
    }
});
