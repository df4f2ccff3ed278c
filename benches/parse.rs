//! Parsing throughput: SSE framing alone, the OpenAI chat and Anthropic stream parsers on
//! recorded provider streams (tests/fixtures/corpus), scaled to 1,000 events, and recorded
//! non-streamed chat completions read whole.
//!
//! Run: `cargo bench --bench parse`. Numbers go to BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenwarden::providers::{Format, ResponseParser};
use tokenwarden::sse::{SseDecoder, SseItem};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");

/// A 1,000-event chat stream: the recorded text-delta chunk repeated, then the recorded end.
fn chat_stream() -> (Vec<u8>, usize) {
    let rec = std::fs::read_to_string(format!("{CORPUS}/openai-chat/sse_text_usage.response.sse"))
        .unwrap();
    let events: Vec<&str> = rec.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    let delta = events[1];
    let mut s = String::new();
    s.push_str(events[0]);
    s.push_str("\n\n");
    for _ in 0..998 {
        s.push_str(delta);
        s.push_str("\n\n");
    }
    for e in &events[events.len() - 2..] {
        s.push_str(e);
        s.push_str("\n\n");
    }
    (s.into_bytes(), 1000)
}

/// A 1,000-event Anthropic stream built the same way from a recorded stream.
fn anthropic_stream() -> (Vec<u8>, usize) {
    let rec = std::fs::read_to_string(format!("{CORPUS}/anthropic/sse_text.response.sse")).unwrap();
    let events: Vec<&str> = rec.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    let delta = events
        .iter()
        .find(|e| e.contains("text_delta"))
        .copied()
        .unwrap();
    let head: Vec<&str> = events
        .iter()
        .take_while(|e| !e.contains("text_delta"))
        .copied()
        .collect();
    let tail: Vec<&str> = events
        .iter()
        .skip_while(|e| !e.contains("content_block_stop"))
        .copied()
        .collect();
    let n = 1000 - head.len() - tail.len();
    let mut s = String::new();
    for e in head
        .iter()
        .chain(std::iter::repeat_n(&delta, n))
        .chain(tail.iter())
    {
        s.push_str(e);
        s.push_str("\n\n");
    }
    (s.into_bytes(), 1000)
}

fn bench(c: &mut Criterion) {
    let (chat, events) = chat_stream();
    let mut g = c.benchmark_group("sse_framing");
    g.throughput(Throughput::Bytes(chat.len() as u64));
    g.bench_function("1000_chat_events_in_16k_frames", |b| {
        b.iter(|| {
            let mut d = SseDecoder::new(1 << 20);
            let mut n = 0usize;
            for frame in chat.chunks(16 * 1024) {
                d.feed(frame, |it| {
                    if let SseItem::Event { data, .. } = it {
                        n += data.len();
                    }
                });
            }
            n
        })
    });
    g.finish();

    let (anth, _) = anthropic_stream();
    let mut g = c.benchmark_group("stream_parser");
    g.throughput(Throughput::Elements(events as u64));
    for (name, format, body) in [
        ("openai_chat_1000_events", Format::OpenAiChat, &chat),
        ("anthropic_1000_events", Format::Anthropic, &anth),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut p = ResponseParser::new(format, true, 1 << 20);
                for frame in body.chunks(4 * 1024) {
                    p.feed(frame);
                }
                let r = p.finish();
                assert!(r.usage.is_present());
                r
            })
        });
    }
    g.finish();

    // Non-streamed completions: the recorded ones of the corpus, each read whole (the skim;
    // serde_json where it steps aside, as for the error body).
    let mut g = c.benchmark_group("json_body");
    for name in [
        "json_text",
        "json_tool_call_single",
        "json_parallel_tool_calls",
    ] {
        let body = std::fs::read(format!("{CORPUS}/openai-chat/{name}.response.json")).unwrap();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("openai_chat_{name}"), |b| {
            b.iter(|| {
                let mut p = ResponseParser::new(Format::OpenAiChat, false, 1 << 20);
                p.feed(&body);
                let r = p.finish();
                assert!(r.usage.is_present());
                r
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
