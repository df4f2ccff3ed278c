//! Every provider's stream parser on arbitrary SSE / NDJSON bytes, cut anywhere: no panic,
//! and the same record whole as cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwarden::providers::{Format, ResponseParser};

/// Every registered format, so a new one is fuzzed as it is added (Bedrock's binary framing
/// has its own target, `eventstream_decoder`).
const FORMATS: &[Format] = Format::ALL;

fuzz_target!(|input: &[u8]| {
    let Some((&sel, rest)) = input.split_first() else { return };
    let format = FORMATS[sel as usize % FORMATS.len()];
    let cut = (sel as usize / 8).max(1);
    let run = |step: usize| {
        // NDJSON: Ollama's streams, and formats whose bodies are JSONL (batch output files).
        let mut p = if format == Format::Ollama || format.adapter().reads_lines() {
            ResponseParser::new_ndjson(format, 1 << 16)
        } else {
            ResponseParser::new(format, true, 1 << 16)
        };
        for c in rest.chunks(step) {
            p.feed(c);
        }
        p.finish()
    };
    assert_eq!(run(cut), run(rest.len().max(1)));
});
