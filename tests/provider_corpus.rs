//! Every recorded provider exchange in tests/fixtures/corpus (59 real responses: OpenAI chat and
//! Responses, Anthropic, Gemini; JSON and SSE) read into the usage, model, finish reasons and
//! tool calls the provider itself states — exactly, whole and however the stream is cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::Value;
use tokenwarden::providers::{Format, ResponseParser, ResponseRecord};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");

struct Case {
    id: String,
    format: Format,
    stream: bool,
    body: Vec<u8>,
    expected: Value,
    usage_present: bool,
}

fn cases() -> Vec<Case> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(format!("{DIR}/manifest.json")).unwrap()).unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            id: c["id"].as_str().unwrap().to_string(),
            format: match c["protocol"].as_str().unwrap() {
                "openai-chat" => Format::OpenAiChat,
                "openai-responses" => Format::OpenAiResponses,
                "anthropic" => Format::Anthropic,
                "gemini" => Format::Gemini,
                p => panic!("unknown protocol {p}"),
            },
            stream: c["stream"].as_bool().unwrap(),
            body: std::fs::read(format!("{DIR}/{}", c["response_file"].as_str().unwrap())).unwrap(),
            expected: c["expected"].clone(),
            usage_present: c["expected_usage_present"].as_bool().unwrap(),
        })
        .collect()
}

fn parse(case: &Case, cuts: &[usize]) -> ResponseRecord {
    let mut p = ResponseParser::new(case.format, case.stream, 8 * 1024 * 1024);
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&case.body.len())) {
        let c = c.clamp(last, case.body.len());
        p.feed(&case.body[last..c]);
        last = c;
    }
    p.finish()
}

fn num(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn check(case: &Case, r: &ResponseRecord) {
    let e = &case.expected;
    let id = &case.id;
    assert_eq!(r.unparsed, None, "{id}: unparsed");
    assert_eq!(
        r.usage.is_present(),
        case.usage_present,
        "{id}: usage present"
    );
    assert_eq!(r.usage.input, num(&e["input_tokens"]), "{id}: input");
    assert_eq!(r.usage.output, num(&e["output_tokens"]), "{id}: output");
    assert_eq!(
        r.usage.cached_input,
        num(&e["cached_input_tokens"]),
        "{id}: cached"
    );
    assert_eq!(
        r.usage.reasoning,
        num(&e["reasoning_tokens"]),
        "{id}: reasoning"
    );
    assert_eq!(r.usage.total, num(&e["total_tokens"]), "{id}: total");
    if let Some(m) = e["model"].as_str() {
        assert_eq!(r.model.as_deref(), Some(m), "{id}: model");
    }
    let finish: Vec<String> = e["finish_reasons"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(r.finish_reasons, finish, "{id}: finish reasons");
    let calls = e["tool_calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        r.tool_calls.len(),
        calls.len(),
        "{id}: tool calls {:?}",
        r.tool_calls
    );
    for (got, want) in r.tool_calls.iter().zip(&calls) {
        assert_eq!(got.id.as_deref(), want["id"].as_str(), "{id}: tool call id");
        assert_eq!(got.name, want["name"].as_str().unwrap(), "{id}: tool name");
        assert_eq!(
            got.arguments,
            want["arguments"].as_str().unwrap(),
            "{id}: arguments"
        );
        if let Some(ch) = want["choice"].as_u64() {
            assert_eq!(u64::from(got.choice), ch, "{id}: choice");
        }
    }
    let server: Vec<String> = e["server_tool_calls"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(r.server_tool_calls, server, "{id}: server tools");
    assert_eq!(
        r.error_type.as_deref(),
        e["error"]["type"].as_str(),
        "{id}: error type"
    );
}

#[test]
fn every_corpus_case_is_read_exactly() {
    let all = cases();
    assert_eq!(all.len(), 59, "the corpus has 59 cases");
    for case in &all {
        check(case, &parse(case, &[]));
    }
}

#[test]
fn streams_one_byte_at_a_time_give_the_same_record() {
    for case in cases().iter().filter(|c| c.stream) {
        let cuts: Vec<usize> = (1..case.body.len()).collect();
        check(case, &parse(case, &cuts));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_cut_of_any_stream_gives_the_same_record(
        pick in any::<prop::sample::Index>(),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let streams: Vec<Case> = cases().into_iter().filter(|c| c.stream).collect();
        let case = pick.get(&streams);
        let mut at: Vec<usize> = cuts.drain(..).map(|i| i.index(case.body.len().max(1))).collect();
        at.sort_unstable();
        check(case, &parse(case, &at));
    }
}

#[test]
fn a_body_that_is_not_the_provider_format_is_flagged_unparsed() {
    for format in [
        Format::OpenAiChat,
        Format::OpenAiResponses,
        Format::Anthropic,
        Format::Gemini,
    ] {
        let mut p = ResponseParser::new(format, false, 1024);
        p.feed(b"<html>502 Bad Gateway</html>");
        assert_eq!(p.finish().unparsed, Some("invalid_json"), "{format:?}");
        let mut p = ResponseParser::new(format, true, 1024);
        p.feed(b"data: {not json\n\n");
        assert_eq!(p.finish().unparsed, Some("invalid_event"), "{format:?}");
        let mut p = ResponseParser::new(format, false, 16);
        p.feed(&[b' '; 64]);
        assert_eq!(p.finish().unparsed, Some("body_too_large"), "{format:?}");
    }
}

/// Feed a hand-written stream (documented formats) and return the record.
fn stream_record(format: Format, body: &str) -> ResponseRecord {
    let mut p = ResponseParser::new(format, true, 1 << 20);
    for c in body.as_bytes().chunks(5) {
        p.feed(c);
    }
    p.finish()
}

#[test]
fn errors_inside_streams_become_the_error_type() {
    let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let r = stream_record(Format::Anthropic, anthropic);
    assert_eq!(r.error_type.as_deref(), Some("overloaded_error"));
    assert_eq!(
        r.usage.input,
        Some(12),
        "usage seen before the error is kept"
    );

    let chat = "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\
data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n";
    assert_eq!(
        stream_record(Format::OpenAiChat, chat)
            .error_type
            .as_deref(),
        Some("server_error")
    );

    let responses = "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"x\"},\"usage\":null}}\n\n";
    let r = stream_record(Format::OpenAiResponses, responses);
    assert_eq!(r.error_type.as_deref(), Some("server_error"));
    assert_eq!(r.finish_reasons, ["failed"]);

    let gemini = "data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
    assert_eq!(
        stream_record(Format::Gemini, gemini).error_type.as_deref(),
        Some("UNAVAILABLE")
    );
}

#[test]
fn empty_and_huge_streams() {
    for format in [
        Format::OpenAiChat,
        Format::OpenAiResponses,
        Format::Anthropic,
        Format::Gemini,
    ] {
        let r = stream_record(format, "");
        assert!(
            !r.usage.is_present(),
            "{format:?}: an empty stream states no usage"
        );
        assert_eq!(r.unparsed, None);
    }
    // 100,000 chunks, then usage: exact, in bounded memory.
    let mut s = String::from("data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
    for i in 0..100_000 {
        s.push_str(&format!("data: {{\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}}}}],\"usage\":null}}\n\n"));
    }
    s.push_str("data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":null}\n\n");
    s.push_str("data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":100000,\"total_tokens\":100005}}\n\ndata: [DONE]\n\n");
    let mut p = ResponseParser::new(Format::OpenAiChat, true, 1 << 16);
    let mut outputs = 0;
    for c in s.as_bytes().chunks(16 * 1024) {
        outputs += p.feed(c).output_events;
    }
    let r = p.finish();
    assert_eq!(outputs, 100_000);
    assert_eq!(r.usage.output, Some(100_000));
    assert_eq!(r.finish_reasons, ["length"]);
}

/// The tokenizer estimate (used where a response states no usage) against what the provider
/// stated, on every recorded exchange with usage: input from the recorded request, output from
/// the recorded response.
#[test]
fn estimates_track_the_stated_usage() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(format!("{DIR}/manifest.json")).unwrap()).unwrap();
    let mut report = Vec::new();
    for (case, raw) in cases().iter().zip(manifest["cases"].as_array().unwrap()) {
        if !case.usage_present {
            continue;
        }
        let request =
            std::fs::read(format!("{DIR}/{}", raw["request_file"].as_str().unwrap())).unwrap();
        let est_in = tokenwarden::providers::estimate_input(case.format, &request);
        let mut p = ResponseParser::new(case.format, case.stream, 8 * 1024 * 1024);
        p.feed(&case.body);
        let (_, sample) = p.finish_with_sample();
        let est_out = sample.estimate_tokens();
        let e = &case.expected;
        // Plain text exchanges: no hidden reasoning, tools, server tools or cache, whose tokens
        // no estimate can see. There the estimate must be close to the provider's count.
        let plain = e["reasoning_tokens"].as_u64().unwrap_or(0) == 0
            && e["cached_input_tokens"].as_u64().unwrap_or(0) == 0
            && e["tool_calls"].as_array().is_none_or(|a| a.is_empty())
            && e["server_tool_calls"]
                .as_array()
                .is_none_or(|a| a.is_empty())
            && !case.id.contains("zero_usage")
            && !["compaction", "thinking", "reasoning", "web_search"]
                .iter()
                .any(|t| case.id.contains(t));
        if plain {
            for (what, stated, est) in [
                ("input", e["input_tokens"].as_u64().unwrap(), est_in),
                ("output", e["output_tokens"].as_u64().unwrap(), est_out),
            ] {
                let allowed = (stated / 2).max(10);
                assert!(
                    stated.abs_diff(est) <= allowed,
                    "{}: {what} estimate {est} vs stated {stated}",
                    case.id
                );
            }
        }
        report.push(format!(
            "{:60} in {:>6} est {:>6}   out {:>6} (reasoning {:>5}) est {:>6}",
            case.id, e["input_tokens"], est_in, e["output_tokens"], e["reasoning_tokens"], est_out
        ));
    }
    println!("{}", report.join("\n"));
}
