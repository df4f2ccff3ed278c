//! Google Gemini: `models/{model}:generateContent` and `:streamGenerateContent`.

use bytes::BytesMut;
use http::StatusCode;

use super::content::word;
use super::frames::{escape_into, Frames};
use super::reply::{fault_reply, Flavor, Reply, DEFAULT_MODEL};
use super::Knobs;

const F: Flavor = Flavor::Gemini;

/// A recognised Gemini call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GeminiCall<'a> {
    pub(crate) model: &'a str,
    pub(crate) stream: bool,
    pub(crate) sse: bool,
}

/// Recognises `.../models/{model}:generateContent` and `...:streamGenerateContent`
/// (AI Studio `/v1beta/models/...` as well as Vertex `/v1/projects/.../models/...`).
pub(crate) fn parse_path<'a>(path: &'a str, query: Option<&str>) -> Option<GeminiCall<'a>> {
    let (before, method) = path.rsplit_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    let model_start = before.rfind("/models/")? + "/models/".len();
    let model = &before[model_start..];
    let model = if model.is_empty() {
        DEFAULT_MODEL
    } else {
        model
    };
    let sse =
        stream && query.is_some_and(|q| q.split('&').any(|kv| kv.eq_ignore_ascii_case("alt=sse")));
    Some(GeminiCall { model, stream, sse })
}

/// Handles a Gemini call (the request body is not needed: model and mode are in the URL).
pub(crate) fn generate(call: &GeminiCall<'_>, k: &Knobs) -> Reply {
    if let Some(r) = fault_reply(F, call.sse, k) {
        return r;
    }
    let mut model = BytesMut::with_capacity(call.model.len() + 2);
    model.extend_from_slice(b"\"");
    escape_into(&mut model, call.model);
    model.extend_from_slice(b"\"");
    let model = model.freeze();
    if !call.stream {
        let mut f = Frames::with_capacity(600 + k.output_chunks as usize * 10, 1);
        f.s("{");
        candidate(&mut f, k, 0..k.output_chunks, true, true);
        f.s(",");
        usage(&mut f, k, true);
        f.s(r#","modelVersion":"#)
            .b(&model)
            .s(r#","responseId":"mock-response-0001"}"#);
        return Reply::json(F, StatusCode::OK, f.finish());
    }

    // Streamed: one chunk per word; the tool calls (whole, Gemini does not split them) and
    // finishReason ride on the last chunk, which also carries the final usage.
    let chunks = if k.tool_calls > 0 {
        k.output_chunks + 1
    } else {
        k.output_chunks.max(1)
    };
    let mut f = Frames::with_capacity(chunks as usize * (330 + model.len()), chunks as usize);
    for c in 0..chunks {
        let last = c + 1 == chunks;
        // SSE: `data: {...}\r\n\r\n` per chunk. Without alt=sse: `[{...}`, `,\r\n{...}`, ..., `]`.
        f.s(match (call.sse, c) {
            (true, _) => "data: ",
            (false, 0) => "[",
            (false, _) => ",\r\n",
        });
        f.s("{");
        let words = if c < k.output_chunks { c..c + 1 } else { c..c };
        candidate(&mut f, k, words, last, last);
        f.s(",");
        usage(&mut f, k, last);
        f.s(r#","modelVersion":"#)
            .b(&model)
            .s(r#","responseId":"mock-response-0001"}"#);
        if call.sse {
            f.s("\r\n\r\n");
        } else if last {
            f.s("]");
        }
        f.end();
    }
    if call.sse {
        Reply::sse(F, f.finish())
    } else {
        Reply::json_stream(F, f.finish())
    }
}

/// Writes `"candidates":[...]` with the given words, optionally the tool calls and finishReason.
fn candidate(
    f: &mut Frames,
    k: &Knobs,
    words: std::ops::Range<u32>,
    with_tools: bool,
    finished: bool,
) {
    f.s(r#""candidates":[{"content":{"parts":["#);
    let mut first = true;
    // A chunk always has at least one part: the (possibly empty) text unless tool calls follow.
    if !words.is_empty() || !with_tools || k.tool_calls == 0 {
        f.s(r#"{"text":""#);
        for i in words {
            f.s(word(i));
        }
        f.s(r#""}"#);
        first = false;
    }
    if with_tools {
        for i in 0..k.tool_calls {
            let (name, args) = k.tool(i);
            if !first {
                f.s(",");
            }
            first = false;
            f.s(r#"{"functionCall":{"name":"#)
                .q(name)
                .s(r#","args":"#)
                .s(args)
                .s("}}");
        }
    }
    f.s(r#"],"role":"model"}"#);
    if finished {
        f.s(r#","finishReason":"STOP""#);
    }
    f.s(r#","index":0}]"#);
}

/// Writes `"usageMetadata":{...}`: complete on the last chunk, prompt-only before it.
fn usage(f: &mut Frames, k: &Knobs, complete: bool) {
    f.s(r#""usageMetadata":{"promptTokenCount":"#)
        .n(k.input_tokens);
    if !complete {
        f.s(r#","totalTokenCount":"#)
            .n(k.input_tokens)
            .s(r#","promptTokensDetails":[{"modality":"TEXT","tokenCount":"#)
            .n(k.input_tokens)
            .s("}]}");
        return;
    }
    let candidates = k.visible_output_tokens();
    f.s(r#","candidatesTokenCount":"#).n(candidates);
    if k.cached_tokens > 0 {
        f.s(r#","cachedContentTokenCount":"#).n(k.cached_tokens);
    }
    if k.reasoning_tokens > 0 {
        f.s(r#","thoughtsTokenCount":"#).n(k.reasoning_tokens);
    }
    f.s(r#","totalTokenCount":"#)
        .n(k.input_tokens.saturating_add(k.output_tokens()))
        .s(r#","promptTokensDetails":[{"modality":"TEXT","tokenCount":"#)
        .n(k.input_tokens)
        .s(r#"}],"candidatesTokensDetails":[{"modality":"TEXT","tokenCount":"#)
        .n(candidates)
        .s("}]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockOptions;
    use serde_json::{json, Value};

    fn concat(r: &Reply) -> Vec<u8> {
        r.frames.concat()
    }

    fn knobs(chunks: u32, tools: u32) -> Knobs {
        Knobs {
            output_chunks: chunks,
            tool_calls: tools,
            reasoning_tokens: 5,
            ..Knobs::from_options(&MockOptions::default())
        }
    }

    #[test]
    fn paths() {
        let c = parse_path("/v1beta/models/gemini-2.5-flash:generateContent", None).unwrap();
        assert_eq!(
            c,
            GeminiCall {
                model: "gemini-2.5-flash",
                stream: false,
                sse: false
            }
        );
        let c = parse_path(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            Some("key=x&alt=sse"),
        )
        .unwrap();
        assert!(c.stream && c.sse);
        let c = parse_path(
            "/v1/projects/p/locations/us/publishers/google/models/gemini-pro:streamGenerateContent",
            None,
        )
        .unwrap();
        assert_eq!(c.model, "gemini-pro");
        assert!(c.stream && !c.sse);
        assert!(parse_path("/v1beta/models/x:countTokens", None).is_none());
        assert!(parse_path("/v1/chat/completions", None).is_none());
    }

    #[test]
    fn json_answer() {
        let call = parse_path("/v1beta/models/gem-x:generateContent", None).unwrap();
        let r = generate(&call, &knobs(3, 2));
        let v: Value = serde_json::from_slice(&concat(&r)).unwrap();
        assert_eq!(v["modelVersion"], "gem-x");
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(parts[0], json!({"text": "Mock reply from"}));
        assert_eq!(
            parts[1]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "Paris", "unit": "celsius"}})
        );
        assert_eq!(parts[2]["functionCall"]["name"], "search_docs");
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        let u = &v["usageMetadata"];
        let k = knobs(3, 2);
        assert_eq!(u["promptTokenCount"], 12);
        assert_eq!(u["thoughtsTokenCount"], 5);
        assert_eq!(u["candidatesTokenCount"], k.output_tokens() - 5);
        assert_eq!(u["totalTokenCount"], 12 + k.output_tokens());
    }

    fn sse_chunks(r: &Reply) -> Vec<Value> {
        r.frames
            .iter()
            .map(|f| {
                let s = std::str::from_utf8(f).unwrap();
                let d = s
                    .strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\r\n\r\n")
                    .unwrap();
                serde_json::from_str(d).unwrap()
            })
            .collect()
    }

    #[test]
    fn sse_answer() {
        let call = parse_path(
            "/v1beta/models/gem-x:streamGenerateContent",
            Some("alt=sse"),
        )
        .unwrap();
        let r = generate(&call, &knobs(4, 0));
        assert_eq!(r.content_type, "text/event-stream");
        let chunks = sse_chunks(&r);
        assert_eq!(chunks.len(), 4);
        let text: String = chunks
            .iter()
            .map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(text, "Mock reply from the");
        for c in &chunks[..3] {
            assert!(c["candidates"][0].get("finishReason").is_none());
            assert_eq!(c["usageMetadata"]["totalTokenCount"], 12);
        }
        assert_eq!(chunks[3]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[3]["usageMetadata"]["candidatesTokenCount"], 4);

        let r = generate(&call, &knobs(0, 0));
        let chunks = sse_chunks(&r);
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
            ""
        );

        let r = generate(&call, &knobs(1, 2));
        let chunks = sse_chunks(&r);
        assert_eq!(chunks.len(), 2);
        let parts = chunks[1]["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.get("functionCall").is_some()));
    }

    #[test]
    fn json_array_stream() {
        let call = parse_path("/v1beta/models/gem-x:streamGenerateContent", None).unwrap();
        let r = generate(&call, &knobs(3, 1));
        assert!(r.stream);
        assert_eq!(r.frames.len(), 4);
        assert!(r.content_type.starts_with("application/json"));
        let v: Value = serde_json::from_slice(&concat(&r)).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 4);
        assert_eq!(arr[3]["candidates"][0]["finishReason"], "STOP");
        assert!(r.frames[0].starts_with(b"[{"));
        assert!(r.frames[1].starts_with(b",\r\n{"));
        assert!(r.frames[3].ends_with(b"}]"));
    }
}
