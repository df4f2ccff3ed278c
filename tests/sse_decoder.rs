//! The SSE and NDJSON decoders give the same events however the bytes are cut, and the SSE
//! decoder's event ends (the raw-event framing the stream rewriters use) do not depend on the cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tokenwarden::sse::{raw, NdjsonDecoder, NdjsonItem, SseDecoder, SseItem};

#[derive(Debug, Clone)]
struct Ev {
    name: Option<String>,
    lines: Vec<String>,
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        prop::option::of("[a-z_.]{1,12}"),
        prop::collection::vec("[ -9;-~]{0,20}", 1..4),
    )
        .prop_map(|(name, lines)| Ev { name, lines })
}

/// Encode events with the given line end, a comment before each, and `id:` noise.
fn encode(evs: &[Ev], eol: &str) -> Vec<u8> {
    let mut s = String::new();
    for e in evs {
        s.push_str(&format!(":keep-alive{eol}"));
        if let Some(n) = &e.name {
            s.push_str(&format!("event: {n}{eol}"));
        }
        s.push_str(&format!("id: 7{eol}"));
        for l in &e.lines {
            s.push_str(&format!("data: {l}{eol}"));
        }
        s.push_str(eol);
    }
    s.into_bytes()
}

fn decode(bytes: &[u8], cuts: &[usize]) -> Vec<(String, String)> {
    let mut d = SseDecoder::new(1 << 16);
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let c = c.clamp(last, bytes.len());
        d.feed(&bytes[last..c], |it| match it {
            SseItem::Event { event, data } => out.push((
                String::from_utf8(event.to_vec()).unwrap(),
                String::from_utf8(data.to_vec()).unwrap(),
            )),
            SseItem::Oversized => panic!("nothing here is oversized"),
        });
        last = c;
    }
    out
}

/// Absolute event ends and events of `bytes` fed in pieces cut at `cuts`.
fn decode_ends(bytes: &[u8], cuts: &[usize]) -> Vec<(usize, String)> {
    let mut d = SseDecoder::new(1 << 16);
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let c = c.clamp(last, bytes.len());
        d.feed_ends(&bytes[last..c], |it, end| {
            if let SseItem::Event { data, .. } = it {
                out.push((last + end, String::from_utf8(data.to_vec()).unwrap()));
            }
        });
        last = c;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_cut_any_line_end_same_events(
        evs in prop::collection::vec(ev(), 1..8),
        eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let bytes = encode(&evs, eol);
        let want: Vec<(String, String)> = evs
            .iter()
            .map(|e| (e.name.clone().unwrap_or_else(|| "message".into()), e.lines.join("\n")))
            .collect();
        let mut at: Vec<usize> = cuts.drain(..).map(|i| i.index(bytes.len())).collect();
        at.sort_unstable();
        prop_assert_eq!(decode(&bytes, &at), want.clone());
        let every: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(decode(&bytes, &every), want);
    }

    #[test]
    fn ndjson_any_cut_same_lines(
        lines in prop::collection::vec("[ -~]{1,30}", 1..10),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let lines: Vec<String> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
        let bytes = lines.iter().map(|l| format!("{l}\n")).collect::<String>().into_bytes();
        let mut at: Vec<usize> = cuts.drain(..).map(|i| i.index(bytes.len().max(1))).collect();
        at.sort_unstable();
        let mut d = NdjsonDecoder::new(1024);
        let mut got = Vec::new();
        let mut last = 0;
        for &c in at.iter().chain(std::iter::once(&bytes.len())) {
            let c = c.clamp(last, bytes.len());
            d.feed(&bytes[last..c], |it| if let NdjsonItem::Line(l) = it { got.push(String::from_utf8(l.to_vec()).unwrap()) });
            last = c;
        }
        d.finish(|it| if let NdjsonItem::Line(l) = it { got.push(String::from_utf8(l.to_vec()).unwrap()) });
        prop_assert_eq!(got, lines);
    }

    #[test]
    fn event_ends_do_not_depend_on_the_cut_and_frame_each_event_alone(
        evs in prop::collection::vec(ev(), 1..8),
        eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let bytes = encode(&evs, eol);
        let whole = decode_ends(&bytes, &[]);
        prop_assert_eq!(whole.len(), evs.len());
        let mut at: Vec<usize> = cuts.drain(..).map(|i| i.index(bytes.len())).collect();
        at.sort_unstable();
        prop_assert_eq!(decode_ends(&bytes, &at), whole.clone());
        let every: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(decode_ends(&bytes, &every), whole.clone());
        // Each span between two ends, decoded on its own, is exactly that event.
        let mut start = 0;
        for (end, data) in &whole {
            let alone = decode(&bytes[start..*end], &[]);
            prop_assert_eq!(alone.len(), 1);
            prop_assert_eq!(&alone[0].1, data);
            // The raw helpers find every data byte where it was sent.
            let span = &bytes[start..*end];
            prop_assert_eq!(raw::data_len(span), data.len());
            for (i, b) in data.bytes().enumerate() {
                let at = raw::data_pos(span, i).unwrap();
                prop_assert!(b == b'\n' || span[at] == b, "byte {} of {:?}", i, data);
            }
            prop_assert!(raw::event_start(span) <= span.len());
            start = *end;
        }
        // What follows the last end is at most the LF of a CRLF.
        prop_assert!(bytes.len() - start <= 1);
    }
}
