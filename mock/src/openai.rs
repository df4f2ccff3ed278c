//! OpenAI: Chat Completions, Responses, Embeddings and the models list.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use serde::Deserialize;

use super::content::{fragments, word};
use super::frames::{escape_into, Frames};
use super::reply::{fault_reply, parse_json, BasicRequest, Flavor, Reply, CREATED, DEFAULT_MODEL};
use super::Knobs;

const F: Flavor = Flavor::OpenAi;

// ---------------------------------------------------------------------------------------------
// Chat Completions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct ChatRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// `POST /v1/chat/completions` (and any path ending in `/chat/completions`).
pub(crate) fn chat(body: &[u8], k: &Knobs) -> Reply {
    let req: ChatRequest = parse_json(body);
    let stream = req.stream.unwrap_or(false);
    if let Some(r) = fault_reply(F, stream, k) {
        return r;
    }
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    if stream {
        let include_usage = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        Reply::sse(F, chat_sse(model, include_usage, k))
    } else {
        Reply::json(F, StatusCode::OK, vec![chat_json(model, k)])
    }
}

fn chat_usage(f: &mut Frames, k: &Knobs) {
    let out = k.output_tokens();
    f.s(r#"{"prompt_tokens":"#)
        .n(k.input_tokens)
        .s(r#","completion_tokens":"#)
        .n(out)
        .s(r#","total_tokens":"#)
        .n(k.input_tokens.saturating_add(out))
        .s(r#","prompt_tokens_details":{"cached_tokens":"#)
        .n(k.cached_tokens)
        .s(r#","audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":"#)
        .n(k.reasoning_tokens)
        .s(r#","audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#);
}

fn finish_reason(k: &Knobs) -> &'static str {
    if k.tool_calls > 0 {
        r#""tool_calls""#
    } else {
        r#""stop""#
    }
}

fn chat_json(model: &str, k: &Knobs) -> Bytes {
    let mut f = Frames::with_capacity(
        640 + k.output_chunks as usize * 10 + k.tool_calls as usize * 160,
        1,
    );
    f.s(r#"{"id":"chatcmpl-mock-0001","object":"chat.completion","created":"#)
        .n(CREATED)
        .s(r#","model":"#)
        .q(model)
        .s(r#","choices":[{"index":0,"message":{"role":"assistant","content":"#);
    if k.output_chunks == 0 && k.tool_calls > 0 {
        f.s("null");
    } else {
        f.s("\"");
        for i in 0..k.output_chunks {
            f.s(word(i));
        }
        f.s("\"");
    }
    if k.tool_calls > 0 {
        f.s(r#","tool_calls":["#);
        for i in 0..k.tool_calls {
            let (name, args) = k.tool(i);
            let args = k.tool_args(args);
            if i > 0 {
                f.s(",");
            }
            f.s(r#"{"id":"#)
                .turn_id("call_mock_", k.turn(), i)
                .s(r#","type":"function","function":{"name":"#)
                .q(name)
                .s(r#","arguments":"#)
                .q(args)
                .s("}}");
        }
        f.s("]");
    }
    f.s(r#","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"#)
        .s(finish_reason(k))
        .s(r#"}],"usage":"#);
    chat_usage(&mut f, k);
    f.s(r#","service_tier":"default","system_fingerprint":"fp_mock"}"#);
    f.finish().into_iter().next().unwrap_or_default()
}

fn chat_sse(model: &str, include_usage: bool, k: &Knobs) -> Vec<Bytes> {
    // `data: {"id":...,"model":"<model>","system_fingerprint":"fp_mock",` shared by every chunk.
    let mut head = BytesMut::with_capacity(160);
    head.extend_from_slice(
        br#"data: {"id":"chatcmpl-mock-0001","object":"chat.completion.chunk","created":1730000000,"model":""#,
    );
    escape_into(&mut head, model);
    head.extend_from_slice(br#"","system_fingerprint":"fp_mock","#);
    let head = head.freeze();
    let tail: &str = if include_usage {
        ",\"usage\":null}\n\n"
    } else {
        "}\n\n"
    };
    let frags: u64 = (0..k.tool_calls)
        .map(|i| fragments(k.tool(i).1).count() as u64 + 1)
        .sum();
    let events = k.output_chunks as usize + frags as usize + 4;
    let mut f = Frames::with_capacity(events * (head.len() + 96), events);
    let open = r#""choices":[{"index":0,"delta":"#;
    let not_done = r#","logprobs":null,"finish_reason":null}]"#;

    // Role chunk.
    f.b(&head).s(open);
    if k.output_chunks == 0 && k.tool_calls > 0 {
        f.s(r#"{"role":"assistant","content":null,"refusal":null}"#);
    } else {
        f.s(r#"{"role":"assistant","content":"","refusal":null}"#);
    }
    f.s(not_done).s(tail).end();
    // Content chunks.
    for i in 0..k.output_chunks {
        f.b(&head)
            .s(open)
            .s(r#"{"content":""#)
            .s(word(i))
            .s(r#""}"#)
            .s(not_done)
            .s(tail)
            .end();
    }
    // Tool calls: a header fragment with id and name, then the arguments in pieces.
    for i in 0..k.tool_calls {
        let (name, args) = k.tool(i);
        let args = k.tool_args(args);
        f.b(&head)
            .s(open)
            .s(r#"{"tool_calls":[{"index":"#)
            .n(u64::from(i))
            .s(r#","id":"#)
            .turn_id("call_mock_", k.turn(), i)
            .s(r#","type":"function","function":{"name":"#)
            .q(name)
            .s(r#","arguments":""}}]}"#)
            .s(not_done)
            .s(tail)
            .end();
        for frag in fragments(args) {
            f.b(&head)
                .s(open)
                .s(r#"{"tool_calls":[{"index":"#)
                .n(u64::from(i))
                .s(r#","function":{"arguments":"#)
                .q(frag)
                .s("}}]}")
                .s(not_done)
                .s(tail)
                .end();
        }
    }
    // Finish chunk.
    f.b(&head)
        .s(open)
        .s(r#"{},"logprobs":null,"finish_reason":"#)
        .s(finish_reason(k))
        .s("}]")
        .s(tail)
        .end();
    // Usage chunk (only when asked for).
    if include_usage {
        f.b(&head).s(r#""choices":[],"usage":"#);
        chat_usage(&mut f, k);
        f.s("}\n\n").end();
    }
    f.s("data: [DONE]\n\n").end();
    f.finish()
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `POST /v1/responses`.
pub(crate) fn responses(body: &[u8], k: &Knobs) -> Reply {
    let req: BasicRequest = parse_json(body);
    let stream = req.stream.unwrap_or(false);
    if let Some(r) = fault_reply(F, stream, k) {
        return r;
    }
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    if stream {
        Reply::sse(F, responses_sse(model, k))
    } else {
        let mut f = Frames::with_capacity(1200 + k.output_chunks as usize * 10, 1);
        response_object(&mut f, model, k, true);
        Reply::json(F, StatusCode::OK, f.finish())
    }
}

/// Whether the answer has a message item (it has one unless it is tool calls only).
fn has_message(k: &Knobs) -> bool {
    k.output_chunks > 0 || k.tool_calls == 0
}

fn responses_usage(f: &mut Frames, k: &Knobs) {
    let out = k.output_tokens();
    f.s(r#"{"input_tokens":"#)
        .n(k.input_tokens)
        .s(r#","input_tokens_details":{"cached_tokens":"#)
        .n(k.cached_tokens)
        .s(r#"},"output_tokens":"#)
        .n(out)
        .s(r#","output_tokens_details":{"reasoning_tokens":"#)
        .n(k.reasoning_tokens)
        .s(r#"},"total_tokens":"#)
        .n(k.input_tokens.saturating_add(out))
        .s("}");
}

fn text_part(f: &mut Frames, k: &Knobs) {
    f.s(r#"{"type":"output_text","annotations":[],"logprobs":[],"text":""#);
    for i in 0..k.output_chunks {
        f.s(word(i));
    }
    f.s(r#""}"#);
}

fn message_item(f: &mut Frames, k: &Knobs, done: bool) {
    f.s(r#"{"id":"msg_mock_0001","type":"message","status":"#);
    if done {
        f.s(r#""completed","content":["#);
        text_part(f, k);
        f.s("]");
    } else {
        f.s(r#""in_progress","content":[]"#);
    }
    f.s(r#","role":"assistant"}"#);
}

fn function_call_item(f: &mut Frames, k: &Knobs, i: u32, done: bool) {
    let (name, args) = k.tool(i);
    f.s(r#"{"id":"#)
        .turn_id("fc_mock_", k.turn(), i)
        .s(r#","type":"function_call","status":"#)
        .s(if done {
            r#""completed""#
        } else {
            r#""in_progress""#
        })
        .s(r#","arguments":"#)
        .q(if done { args } else { "" })
        .s(r#","call_id":"#)
        .turn_id("call_mock_", k.turn(), i)
        .s(r#","name":"#)
        .q(name)
        .s("}");
}

/// The `response` object; `done` selects the completed form (output and usage) over the
/// in-progress one.
fn response_object(f: &mut Frames, model: &str, k: &Knobs, done: bool) {
    f.s(r#"{"id":"resp_mock_0001","object":"response","created_at":"#)
        .n(CREATED)
        .s(r#","status":"#)
        .s(if done {
            r#""completed""#
        } else {
            r#""in_progress""#
        })
        .s(r#","background":false,"completed_at":"#);
    if done {
        f.n(CREATED + 1);
    } else {
        f.s("null");
    }
    f.s(r#","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"#)
        .q(model)
        .s(r#","output":["#);
    if done {
        let mut first = true;
        if has_message(k) {
            message_item(f, k, true);
            first = false;
        }
        for i in 0..k.tool_calls {
            if !first {
                f.s(",");
            }
            first = false;
            function_call_item(f, k, i, true);
        }
    }
    f.s(r#"],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"service_tier":"default","store":false,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":"#);
    if done {
        responses_usage(f, k);
    } else {
        f.s("null");
    }
    f.s(r#","user":null,"metadata":{}}"#);
}

/// Writes `event: <name>\ndata: {"type":"<name>",` — the caller continues the JSON object and
/// closes it with [`seq`].
fn ev<'f>(f: &'f mut Frames, name: &str) -> &'f mut Frames {
    f.s("event: ")
        .s(name)
        .s("\ndata: {\"type\":\"")
        .s(name)
        .s("\",")
}

/// Ends a Responses event with its sequence number.
fn seq(f: &mut Frames, n: &mut u64) {
    f.s(r#""sequence_number":"#).n(*n).s("}\n\n").end();
    *n += 1;
}

fn responses_sse(model: &str, k: &Knobs) -> Vec<Bytes> {
    let events = k.output_chunks as usize + k.tool_calls as usize * 12 + 12;
    let mut f = Frames::with_capacity(events * 220 + k.output_chunks as usize * 30, events);
    let mut n = 0u64;

    for name in ["response.created", "response.in_progress"] {
        ev(&mut f, name).s(r#""response":"#);
        response_object(&mut f, model, k, false);
        f.s(",");
        seq(&mut f, &mut n);
    }

    let mut out_idx = 0u64;
    if has_message(k) {
        ev(&mut f, "response.output_item.added").s(r#""item":"#);
        message_item(&mut f, k, false);
        f.s(r#","output_index":"#).n(out_idx).s(",");
        seq(&mut f, &mut n);

        ev(&mut f, "response.content_part.added")
            .s(r#""content_index":0,"item_id":"msg_mock_0001","output_index":"#)
            .n(out_idx)
            .s(r#","part":{"type":"output_text","annotations":[],"logprobs":[],"text":""},"#);
        seq(&mut f, &mut n);

        for i in 0..k.output_chunks {
            ev(&mut f, "response.output_text.delta")
                .s(r#""content_index":0,"delta":""#)
                .s(word(i))
                .s(r#"","item_id":"msg_mock_0001","logprobs":[],"output_index":"#)
                .n(out_idx)
                .s(",");
            seq(&mut f, &mut n);
        }

        ev(&mut f, "response.output_text.done")
            .s(r#""content_index":0,"item_id":"msg_mock_0001","logprobs":[],"output_index":"#)
            .n(out_idx)
            .s(r#","text":""#);
        for i in 0..k.output_chunks {
            f.s(word(i));
        }
        f.s("\",");
        seq(&mut f, &mut n);

        ev(&mut f, "response.content_part.done")
            .s(r#""content_index":0,"item_id":"msg_mock_0001","output_index":"#)
            .n(out_idx)
            .s(r#","part":"#);
        text_part(&mut f, k);
        f.s(",");
        seq(&mut f, &mut n);

        ev(&mut f, "response.output_item.done").s(r#""item":"#);
        message_item(&mut f, k, true);
        f.s(r#","output_index":"#).n(out_idx).s(",");
        seq(&mut f, &mut n);
        out_idx += 1;
    }

    for i in 0..k.tool_calls {
        let args = k.tool(i).1;
        ev(&mut f, "response.output_item.added").s(r#""item":"#);
        function_call_item(&mut f, k, i, false);
        f.s(r#","output_index":"#).n(out_idx).s(",");
        seq(&mut f, &mut n);
        for frag in fragments(args) {
            ev(&mut f, "response.function_call_arguments.delta")
                .s(r#""delta":"#)
                .q(frag)
                .s(r#","item_id":"#)
                .turn_id("fc_mock_", k.turn(), i)
                .s(r#","output_index":"#)
                .n(out_idx)
                .s(",");
            seq(&mut f, &mut n);
        }
        ev(&mut f, "response.function_call_arguments.done")
            .s(r#""arguments":"#)
            .q(args)
            .s(r#","item_id":"#)
            .turn_id("fc_mock_", k.turn(), i)
            .s(r#","output_index":"#)
            .n(out_idx)
            .s(",");
        seq(&mut f, &mut n);
        ev(&mut f, "response.output_item.done").s(r#""item":"#);
        function_call_item(&mut f, k, i, true);
        f.s(r#","output_index":"#).n(out_idx).s(",");
        seq(&mut f, &mut n);
        out_idx += 1;
    }

    ev(&mut f, "response.completed").s(r#""response":"#);
    response_object(&mut f, model, k, true);
    f.s(",");
    seq(&mut f, &mut n);
    f.finish()
}

// ---------------------------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<serde_json::Value>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default, borrow)]
    encoding_format: Option<Cow<'a, str>>,
}

/// Default vector length (small on purpose).
const EMBEDDING_DIMS: u32 = 8;
const MAX_EMBEDDING_DIMS: u32 = 4096;

/// Deterministic component `j` of vector `i`, in (-1, 1) with 4 decimals.
fn embedding_value(i: usize, j: u32) -> f32 {
    let x = (i as u64 * 7919 + u64::from(j) * 104_729 + 17) % 19_999;
    (x as f32 - 9_999.0) / 10_000.0
}

/// `POST /v1/embeddings`.
pub(crate) fn embeddings(body: &[u8], k: &Knobs) -> Reply {
    let req: EmbeddingsRequest = parse_json(body);
    if let Some(r) = fault_reply(F, false, k) {
        return r;
    }
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let count = match &req.input {
        // A list of strings or of token arrays is a batch; a flat token array is one input.
        Some(serde_json::Value::Array(a)) if a.iter().all(|v| !v.is_number()) => a.len().max(1),
        _ => 1,
    };
    let dims = req
        .dimensions
        .unwrap_or(EMBEDDING_DIMS)
        .clamp(1, MAX_EMBEDDING_DIMS);
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let mut f = Frames::with_capacity(200 + count * dims as usize * 9, 1);
    f.s(r#"{"object":"list","data":["#);
    let mut raw = Vec::with_capacity(dims as usize * 4);
    for i in 0..count {
        if i > 0 {
            f.s(",");
        }
        f.s(r#"{"object":"embedding","index":"#)
            .n(i as u64)
            .s(r#","embedding":"#);
        if base64 {
            raw.clear();
            for j in 0..dims {
                raw.extend_from_slice(&embedding_value(i, j).to_le_bytes());
            }
            f.s("\"").s(&base64_encode(&raw)).s("\"");
        } else {
            f.s("[");
            for j in 0..dims {
                if j > 0 {
                    f.s(",");
                }
                f.s(&embedding_value(i, j).to_string());
            }
            f.s("]");
        }
        f.s("}");
    }
    f.s(r#"],"model":"#)
        .q(model)
        .s(r#","usage":{"prompt_tokens":"#)
        .n(k.input_tokens)
        .s(r#","total_tokens":"#)
        .n(k.input_tokens)
        .s("}}");
    Reply::json(F, StatusCode::OK, f.finish())
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (pos, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if pos <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const MODELS: &[u8] = br#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1730000000,"owned_by":"tokenwarden-mock"},{"id":"gpt-4o","object":"model","created":1730000000,"owned_by":"tokenwarden-mock"},{"id":"gpt-5","object":"model","created":1730000000,"owned_by":"tokenwarden-mock"},{"id":"text-embedding-3-small","object":"model","created":1730000000,"owned_by":"tokenwarden-mock"},{"id":"claude-sonnet-4-5","object":"model","created":1730000000,"owned_by":"tokenwarden-mock"},{"id":"gemini-2.5-flash","object":"model","created":1730000000,"owned_by":"tokenwarden-mock"}]}"#;

/// `GET /v1/models`.
pub(crate) fn models(k: &Knobs) -> Reply {
    if let Some(r) = fault_reply(F, false, k) {
        return r;
    }
    Reply::json(F, StatusCode::OK, vec![Bytes::from_static(MODELS)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tool;
    use crate::MockOptions;
    use serde_json::{json, Value};

    fn knobs(chunks: u32, tools: u32) -> Knobs {
        Knobs {
            output_chunks: chunks,
            tool_calls: tools,
            ..Knobs::from_options(&MockOptions::default())
        }
    }

    fn json_of(r: &Reply) -> Value {
        serde_json::from_slice(&r.frames.concat()).unwrap()
    }

    /// Splits an SSE body into (event name, data) pairs, checking every event is one frame.
    fn events(frames: &[Bytes]) -> Vec<(Option<String>, String)> {
        frames
            .iter()
            .map(|f| {
                let s = std::str::from_utf8(f).unwrap();
                assert!(s.ends_with("\n\n"), "one event per frame: {s:?}");
                let mut name = None;
                let mut data = String::new();
                for line in s.trim_end().lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    } else {
                        panic!("unexpected line {line:?}");
                    }
                }
                (name, data)
            })
            .collect()
    }

    #[test]
    fn chat_json_shape() {
        let r = chat(br#"{"model":"gpt-x","messages":[]}"#, &knobs(3, 0));
        assert_eq!(r.status, 200);
        assert!(!r.stream);
        let v = json_of(&r);
        assert_eq!(v["id"], "chatcmpl-mock-0001");
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["choices"][0]["message"]["content"], "Mock reply from");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 12);
        assert_eq!(v["usage"]["completion_tokens"], 3);
        assert_eq!(v["usage"]["total_tokens"], 15);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }

    #[test]
    fn chat_json_tool_calls() {
        let r = chat(br#"{"model":"m"}"#, &knobs(0, 2));
        let v = json_of(&r);
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], Value::Null);
        assert_eq!(msg["tool_calls"][0]["id"], "call_mock_0001");
        assert_eq!(msg["tool_calls"][1]["id"], "call_mock_0002");
        assert_eq!(msg["tool_calls"][1]["function"]["name"], "search_docs");
        let args: Value = serde_json::from_str(
            msg["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args, json!({"city": "Paris", "unit": "celsius"}));
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["usage"]["completion_tokens"],
            crate::output_tokens(0, 2, 0)
        );
    }

    #[test]
    fn chat_sse_with_and_without_usage() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let r = chat(body, &knobs(4, 0));
        assert!(r.stream);
        assert!(r.content_type.starts_with("text/event-stream"));
        let ev = events(&r.frames);
        assert_eq!(ev.len(), 1 + 4 + 1 + 1 + 1);
        assert_eq!(ev.last().unwrap().1, "[DONE]");
        let chunks: Vec<Value> = ev[..ev.len() - 1]
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(c["usage"], Value::Null);
            assert!(c.as_object().unwrap().contains_key("usage"));
        }
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Mock reply from the");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 4);
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );

        let r = chat(br#"{"stream":true}"#, &knobs(4, 0));
        let ev = events(&r.frames);
        assert_eq!(ev.len(), 1 + 4 + 1 + 1);
        for (_, d) in &ev[..ev.len() - 1] {
            let c: Value = serde_json::from_str(d).unwrap();
            assert!(!c.as_object().unwrap().contains_key("usage"));
            assert_eq!(c["model"], DEFAULT_MODEL);
        }
    }

    #[test]
    fn chat_sse_tool_call_fragments() {
        let r = chat(br#"{"stream":true}"#, &knobs(0, 3));
        let ev = events(&r.frames);
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut finish = None;
        for (_, d) in &ev[..ev.len() - 1] {
            let c: Value = serde_json::from_str(d).unwrap();
            if let Some(fr) = c["choices"][0]["finish_reason"].as_str() {
                finish = Some(fr.to_owned());
            }
            if let Some(tcs) = c["choices"][0]["delta"]["tool_calls"].as_array() {
                assert_eq!(tcs.len(), 1);
                let idx = tcs[0]["index"].as_u64().unwrap() as usize;
                if let Some(id) = tcs[0]["id"].as_str() {
                    assert_eq!(idx, calls.len());
                    calls.push((
                        id.to_owned(),
                        tcs[0]["function"]["name"].as_str().unwrap().to_owned(),
                        String::new(),
                    ));
                }
                calls[idx].2 += tcs[0]["function"]["arguments"].as_str().unwrap();
            }
        }
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(calls.len(), 3);
        for (i, (id, name, args)) in calls.iter().enumerate() {
            assert_eq!(id, &format!("call_mock_{:04}", i + 1));
            assert_eq!((name.as_str(), args.as_str()), tool(i as u32));
        }
    }

    #[test]
    fn chat_is_deterministic() {
        let body = br#"{"model":"m","stream":true}"#;
        assert_eq!(
            chat(body, &knobs(5, 2)).frames,
            chat(body, &knobs(5, 2)).frames
        );
    }

    #[test]
    fn responses_json_and_sse_agree() {
        let k = Knobs {
            cached_tokens: 4,
            reasoning_tokens: 2,
            ..knobs(3, 2)
        };
        let json = json_of(&responses(br#"{"model":"gpt-5"}"#, &k));
        assert_eq!(json["status"], "completed");
        assert_eq!(json["output"][0]["type"], "message");
        assert_eq!(json["output"][0]["content"][0]["text"], "Mock reply from");
        assert_eq!(json["output"][1]["type"], "function_call");
        assert_eq!(json["output"][2]["call_id"], "call_mock_0002");
        assert_eq!(json["usage"]["input_tokens_details"]["cached_tokens"], 4);
        assert_eq!(
            json["usage"]["output_tokens_details"]["reasoning_tokens"],
            2
        );
        assert_eq!(json["usage"]["output_tokens"], k.output_tokens());

        let r = responses(br#"{"model":"gpt-5","stream":true}"#, &k);
        let ev = events(&r.frames);
        let mut text = String::new();
        let mut args = String::new();
        for (seq, (name, data)) in ev.iter().enumerate() {
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["type"].as_str(), name.as_deref());
            assert_eq!(v["sequence_number"], seq as u64);
            match name.as_deref().unwrap() {
                "response.output_text.delta" => text += v["delta"].as_str().unwrap(),
                "response.function_call_arguments.delta" => args += v["delta"].as_str().unwrap(),
                "response.content_part.done" => {
                    assert_eq!(v["part"]["text"], "Mock reply from")
                }
                _ => {}
            }
        }
        assert_eq!(ev[0].0.as_deref(), Some("response.created"));
        let (last, data) = ev.last().unwrap();
        assert_eq!(last.as_deref(), Some("response.completed"));
        let done: Value = serde_json::from_str(data).unwrap();
        assert_eq!(done["response"], json);
        assert_eq!(text, "Mock reply from");
        assert_eq!(args, format!("{}{}", tool(0).1, tool(1).1));
    }

    #[test]
    fn embeddings_shapes() {
        let v = json_of(&embeddings(
            br#"{"model":"text-embedding-3-small","input":["a","b","c"]}"#,
            &knobs(1, 0),
        ));
        assert_eq!(v["data"].as_array().unwrap().len(), 3);
        assert_eq!(v["data"][2]["index"], 2);
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
        assert_eq!(v["usage"], json!({"prompt_tokens": 12, "total_tokens": 12}));
        let v = json_of(&embeddings(
            br#"{"input":[1,2,3],"dimensions":3,"encoding_format":"base64"}"#,
            &knobs(1, 0),
        ));
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn models_list_is_json() {
        let v = json_of(&models(&knobs(1, 0)));
        assert_eq!(v["object"], "list");
    }
}
