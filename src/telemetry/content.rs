//! Opt-in content capture: the request's messages, system instructions and tool definitions and
//! the response's output messages, in the GenAI conventions' JSON shapes, redacted and capped.
//!
//! Nothing here runs unless `telemetry.capture_content` is on. Redaction replaces, in every
//! string of the captured JSON, each match of the configured patterns and every credential
//! header value the request carried with `[REDACTED]`. Each attribute is cut to the configured
//! size by shortening strings (the JSON structure is kept), then by dropping trailing messages.

use bytes::Bytes;
use http::HeaderMap;
use regex::Regex;
use serde_json::{json, Map, Value};

use crate::providers::request::DeclaredTool;
use crate::providers::{Format, ResponseRecord};
use crate::sse::{NdjsonDecoder, NdjsonItem, SseDecoder, SseItem};

/// What replaces redacted text.
pub const REDACTED: &str = "[REDACTED]";
/// Headers whose values are credentials: never recorded, and scrubbed from captured content.
pub const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
];
/// Most response bytes kept for reading output messages.
pub const MAX_RESPONSE_CAPTURE: usize = 4 * 1024 * 1024;

/// Redaction patterns and the size cap, from the config.
#[derive(Debug)]
pub struct ContentPolicy {
    patterns: Vec<Regex>,
    max_bytes: usize,
}

/// Content of one call, collected while it runs (capture on only).
#[derive(Debug)]
pub struct Captured {
    request: Bytes,
    response: Vec<u8>,
    secrets: Vec<String>,
    readable: bool,
    event_stream: bool,
    ndjson: bool,
}

// === impl ContentPolicy ===

impl ContentPolicy {
    /// Compile `patterns`; an invalid one is an error naming it.
    pub fn new(patterns: &[String], max_bytes: usize) -> Result<Self, regex::Error> {
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
            max_bytes: max_bytes.max(64),
        })
    }

    /// Replace configured patterns and `secrets` in `text`.
    pub fn redact(&self, text: &str, secrets: &[String]) -> String {
        let mut out = text.to_string();
        for s in secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        for p in &self.patterns {
            if let std::borrow::Cow::Owned(o) = p.replace_all(&out, REDACTED) {
                out = o;
            }
        }
        out
    }

    /// The content attributes of a finished call: `(key, JSON string)` pairs.
    pub fn attributes(
        &self,
        captured: &Captured,
        format: Format,
        record: &ResponseRecord,
        tools: &[DeclaredTool],
        failed: bool,
    ) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let (system, input) = input_messages(format, &captured.request);
        let mut push = |key: &'static str, mut v: Value| {
            self.redact_value(&mut v, &captured.secrets);
            out.push((key, fit(v, self.max_bytes)));
        };
        if let Some(s) = system {
            push("gen_ai.system_instructions", s);
        }
        if let Some(i) = input {
            push("gen_ai.input.messages", i);
        }
        if !tools.is_empty() {
            let defs: Vec<Value> = tools
                .iter()
                .map(|t| json!({"type": "function", "name": t.name}))
                .collect();
            push("gen_ai.tool.definitions", Value::Array(defs));
        }
        if captured.readable {
            let texts = output_texts(format, captured);
            push(
                "gen_ai.output.messages",
                output_messages(texts, record, failed),
            );
        }
        out
    }

    fn redact_value(&self, v: &mut Value, secrets: &[String]) {
        match v {
            Value::String(s) => *s = self.redact(s, secrets),
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_value(x, secrets)),
            Value::Object(o) => o.values_mut().for_each(|x| self.redact_value(x, secrets)),
            _ => {}
        }
    }
}

// === impl Captured ===

impl Captured {
    /// Start capturing a call whose request body is `request`; remembers the credential
    /// header values so they can be scrubbed from content.
    pub fn new(request: Bytes, headers: &HeaderMap) -> Self {
        let mut secrets = Vec::new();
        for name in CREDENTIAL_HEADERS {
            for v in headers.get_all(name) {
                let Ok(v) = v.to_str() else { continue };
                let v = v.trim();
                // The parts too: `Bearer sk-...` must not leak as `sk-...`, nor a cookie's value.
                let parts = v.split([' ', ';', ',', '=']).map(str::trim);
                for s in std::iter::once(v).chain(parts) {
                    if s.len() >= 8 && !secrets.iter().any(|x: &String| x == s) {
                        secrets.push(s.to_string());
                    }
                }
            }
        }
        // Longest first, so a token is not half-replaced by a shorter one inside it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            request,
            response: Vec::new(),
            secrets,
            readable: true,
            event_stream: false,
            ndjson: false,
        }
    }

    /// The response headers: compressed bodies are not captured.
    pub fn on_response_headers(&mut self, headers: &HeaderMap) {
        let encoded = headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            self.readable = false;
        }
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        self.event_stream = ct.starts_with(b"text/event-stream");
        self.ndjson = ct.starts_with(b"application/x-ndjson");
    }

    /// A response frame.
    pub fn on_data(&mut self, data: &[u8]) {
        if !self.readable {
            return;
        }
        if self.response.len() + data.len() > MAX_RESPONSE_CAPTURE {
            self.readable = false;
            self.response = Vec::new();
            return;
        }
        self.response.extend_from_slice(data);
    }
}

/// `(system instructions, input messages)` in the conventions' shapes.
fn input_messages(format: Format, body: &[u8]) -> (Option<Value>, Option<Value>) {
    let Ok(Value::Object(b)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    match format {
        Format::OpenAiChat | Format::Ollama => {
            let mut msgs: Vec<Value> = b
                .get("messages")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(openai_message).collect())
                .unwrap_or_default();
            // Ollama /api/generate: a bare prompt, and system outside the history.
            if let Some(p) = b.get("prompt").and_then(Value::as_str) {
                msgs.push(json!({"role": "user", "parts": [text_part(p)]}));
            }
            let system = b
                .get("system")
                .and_then(Value::as_str)
                .map(|s| json!([text_part(s)]));
            (system, (!msgs.is_empty()).then_some(Value::Array(msgs)))
        }
        Format::Anthropic => {
            let system = match b.get("system") {
                Some(Value::String(s)) => Some(json!([text_part(s)])),
                Some(Value::Array(blocks)) => Some(Value::Array(
                    blocks.iter().filter_map(anthropic_part).collect(),
                )),
                _ => None,
            };
            let msgs = b.get("messages").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|m| {
                        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                        let parts = match m.get("content") {
                            Some(Value::String(s)) => vec![text_part(s)],
                            Some(Value::Array(blocks)) => {
                                blocks.iter().filter_map(anthropic_part).collect()
                            }
                            _ => Vec::new(),
                        };
                        json!({"role": role, "parts": parts})
                    })
                    .collect::<Vec<_>>()
            });
            (system, msgs.map(Value::Array))
        }
        Format::Gemini => {
            let system = b
                .get("systemInstruction")
                .or_else(|| b.get("system_instruction"))
                .and_then(|s| s.get("parts"))
                .and_then(Value::as_array)
                .map(|p| Value::Array(p.iter().filter_map(gemini_part).collect()));
            let msgs = b.get("contents").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|c| {
                        let role = match c.get("role").and_then(Value::as_str) {
                            Some("model") => "assistant",
                            Some(r) => r,
                            None => "user",
                        };
                        let parts: Vec<Value> = c
                            .get("parts")
                            .and_then(Value::as_array)
                            .map(|p| p.iter().filter_map(gemini_part).collect())
                            .unwrap_or_default();
                        json!({"role": role, "parts": parts})
                    })
                    .collect::<Vec<_>>()
            });
            (system, msgs.map(Value::Array))
        }
        Format::OpenAiResponses => {
            let system = b
                .get("instructions")
                .and_then(Value::as_str)
                .map(|s| json!([text_part(s)]));
            let msgs = match b.get("input") {
                Some(Value::String(s)) => {
                    Some(vec![json!({"role": "user", "parts": [text_part(s)]})])
                }
                Some(Value::Array(items)) => Some(items.iter().map(responses_item).collect()),
                _ => None,
            };
            (system, msgs.map(Value::Array))
        }
    }
}

fn text_part(s: &str) -> Value {
    json!({"type": "text", "content": s})
}

/// A tool call's arguments as an object when they parse, else the string.
fn arguments(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn openai_message(m: &Value) -> Value {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    let mut parts = Vec::new();
    if role == "tool" {
        let mut p = Map::new();
        p.insert("type".into(), "tool_call_response".into());
        if let Some(id) = m.get("tool_call_id") {
            p.insert("id".into(), id.clone());
        }
        p.insert(
            "response".into(),
            m.get("content").cloned().unwrap_or(Value::Null),
        );
        parts.push(Value::Object(p));
    } else {
        match m.get("content") {
            Some(Value::String(s)) => parts.push(text_part(s)),
            Some(Value::Array(a)) => {
                for p in a {
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") | Some("input_text") => {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                parts.push(text_part(t));
                            }
                        }
                        Some(other) => parts.push(json!({"type": other})),
                        None => {}
                    }
                }
            }
            _ => {}
        }
        for call in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let f = call.get("function");
            parts.push(json!({
                "type": "tool_call",
                "id": call.get("id").cloned().unwrap_or(Value::Null),
                "name": f.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
                "arguments": f
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                    .map(arguments)
                    .unwrap_or(Value::Null),
            }));
        }
    }
    json!({"role": role, "parts": parts})
}

fn anthropic_part(block: &Value) -> Option<Value> {
    Some(match block.get("type").and_then(Value::as_str)? {
        "text" => text_part(block.get("text").and_then(Value::as_str).unwrap_or("")),
        "thinking" => json!({"type": "reasoning",
            "content": block.get("thinking").cloned().unwrap_or(Value::Null)}),
        "tool_use" => json!({"type": "tool_call",
            "id": block.get("id").cloned().unwrap_or(Value::Null),
            "name": block.get("name").cloned().unwrap_or(Value::Null),
            "arguments": block.get("input").cloned().unwrap_or(Value::Null)}),
        "tool_result" => json!({"type": "tool_call_response",
            "id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
            "response": block.get("content").cloned().unwrap_or(Value::Null)}),
        other => json!({"type": other}),
    })
}

fn gemini_part(p: &Value) -> Option<Value> {
    if let Some(t) = p.get("text").and_then(Value::as_str) {
        return Some(text_part(t));
    }
    if let Some(c) = p.get("functionCall") {
        return Some(json!({"type": "tool_call",
            "name": c.get("name").cloned().unwrap_or(Value::Null),
            "arguments": c.get("args").cloned().unwrap_or(Value::Null)}));
    }
    if let Some(r) = p.get("functionResponse") {
        return Some(json!({"type": "tool_call_response",
            "id": r.get("name").cloned().unwrap_or(Value::Null),
            "response": r.get("response").cloned().unwrap_or(Value::Null)}));
    }
    p.as_object()
        .and_then(|o| o.keys().next())
        .map(|k| json!({"type": k}))
}

fn responses_item(item: &Value) -> Value {
    match item.get("type").and_then(Value::as_str) {
        Some("function_call") => json!({"role": "assistant", "parts": [{
            "type": "tool_call",
            "id": item.get("call_id").cloned().unwrap_or(Value::Null),
            "name": item.get("name").cloned().unwrap_or(Value::Null),
            "arguments": item.get("arguments").and_then(Value::as_str).map(arguments).unwrap_or(Value::Null),
        }]}),
        Some("function_call_output") => json!({"role": "tool", "parts": [{
            "type": "tool_call_response",
            "id": item.get("call_id").cloned().unwrap_or(Value::Null),
            "response": item.get("output").cloned().unwrap_or(Value::Null),
        }]}),
        _ => openai_message(item),
    }
}

/// Output text per choice / candidate, in choice order.
fn output_texts(format: Format, c: &Captured) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    let mut add = |i: usize, t: &str| {
        if texts.len() <= i {
            texts.resize(i + 1, String::new());
        }
        texts[i].push_str(t);
    };
    let mut read = |v: &Value| collect_text(format, v, &mut add);
    if c.event_stream {
        let mut dec = SseDecoder::new(crate::record::MAX_PARSE_BYTES);
        dec.feed(&c.response, |item| {
            if let SseItem::Event { data, .. } = item {
                if let Ok(v) = serde_json::from_slice::<Value>(data) {
                    read(&v);
                }
            }
        });
    } else if c.ndjson {
        let mut dec = NdjsonDecoder::new(crate::record::MAX_PARSE_BYTES);
        let mut line = |item: NdjsonItem<'_>| {
            if let NdjsonItem::Line(l) = item {
                if let Ok(v) = serde_json::from_slice::<Value>(l) {
                    read(&v);
                }
            }
        };
        dec.feed(&c.response, &mut line);
        dec.finish(&mut line);
    } else if let Ok(v) = serde_json::from_slice::<Value>(&c.response) {
        match v {
            // Gemini non-streamed arrays of chunks.
            Value::Array(items) => items.iter().for_each(&mut read),
            v => read(&v),
        }
    }
    texts
}

/// Text found in one JSON body or stream event, by choice index.
fn collect_text(format: Format, v: &Value, add: &mut impl FnMut(usize, &str)) {
    fn s(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str)
    }
    match format {
        Format::OpenAiChat => {
            for (n, ch) in v
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let i = ch
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(n, |i| i as usize);
                let msg = ch.get("delta").or_else(|| ch.get("message"));
                if let Some(t) = s(msg.and_then(|m| m.get("content"))) {
                    add(i, t);
                }
            }
        }
        Format::Anthropic => {
            if let Some(t) = s(v.get("delta").and_then(|d| d.get("text"))) {
                add(0, t);
            }
            for b in v
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if b.get("type").and_then(Value::as_str) == Some("text") {
                    add(0, s(b.get("text")).unwrap_or(""));
                }
            }
        }
        Format::Gemini => {
            for (n, cand) in v
                .get("candidates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let i = cand
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(n, |i| i as usize);
                for p in cand
                    .get("content")
                    .and_then(|c| c.get("parts"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = s(p.get("text")) {
                        add(i, t);
                    }
                }
            }
        }
        Format::OpenAiResponses => {
            if v.get("type").and_then(Value::as_str) == Some("response.output_text.delta") {
                if let Some(t) = s(v.get("delta")) {
                    add(0, t);
                }
            }
            // A whole response object (JSON body); stream events repeat it only at the end.
            if v.get("object").and_then(Value::as_str) == Some("response") {
                for item in v
                    .get("output")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for c in item
                        .get("content")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(t) = s(c.get("text")) {
                            add(0, t);
                        }
                    }
                }
            }
        }
        Format::Ollama => {
            if let Some(t) = s(v.get("message").and_then(|m| m.get("content"))) {
                add(0, t);
            }
            if let Some(t) = s(v.get("response")) {
                add(0, t);
            }
        }
    }
}

/// One output message per choice: its text and its tool calls, with the finish reason.
fn output_messages(texts: Vec<String>, record: &ResponseRecord, failed: bool) -> Value {
    let choices = texts
        .len()
        .max(record.finish_reasons.len())
        .max(
            record
                .tool_calls
                .iter()
                .map(|c| c.choice as usize + 1)
                .max()
                .unwrap_or(0),
        )
        .max(1);
    let mut msgs = Vec::with_capacity(choices);
    for i in 0..choices {
        let mut parts = Vec::new();
        if let Some(t) = texts.get(i).filter(|t| !t.is_empty()) {
            parts.push(text_part(t));
        }
        for call in record.tool_calls.iter().filter(|c| c.choice as usize == i) {
            parts.push(json!({
                "type": "tool_call",
                "id": call.id,
                "name": call.name,
                "arguments": arguments(&call.arguments),
            }));
        }
        let reason = if failed {
            "error"
        } else {
            finish_reason(record.finish_reasons.get(i).map(String::as_str))
        };
        msgs.push(json!({"role": "assistant", "parts": parts, "finish_reason": reason}));
    }
    Value::Array(msgs)
}

/// The conventions' finish-reason enum from a provider's value.
pub fn finish_reason(provider: Option<&str>) -> &'static str {
    match provider.map(str::to_ascii_lowercase).as_deref() {
        Some("length" | "max_tokens" | "incomplete" | "max_output_tokens") => "length",
        Some("tool_calls" | "tool_use" | "function_call") => "tool_call",
        Some("content_filter" | "safety" | "recitation" | "refusal" | "blocklist") => {
            "content_filter"
        }
        Some("error" | "failed") => "error",
        _ => "stop",
    }
}

/// Serialize `v` in at most `max` bytes: halve long strings until it fits, then drop trailing
/// array items (messages) while keeping the JSON valid.
pub fn fit(mut v: Value, max: usize) -> String {
    let mut text = v.to_string();
    let mut limit = max;
    while text.len() > max && limit > 16 {
        limit /= 2;
        truncate_strings(&mut v, limit);
        text = v.to_string();
    }
    while text.len() > max {
        match &mut v {
            Value::Array(a) if !a.is_empty() => {
                a.pop();
            }
            _ => return "[]".to_string(),
        }
        text = v.to_string();
    }
    text
}

fn truncate_strings(v: &mut Value, limit: usize) {
    match v {
        Value::String(s) if s.len() > limit => {
            let mut cut = limit;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        Value::Array(a) => a.iter_mut().for_each(|x| truncate_strings(x, limit)),
        Value::Object(o) => o.values_mut().for_each(|x| truncate_strings(x, limit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy() -> ContentPolicy {
        ContentPolicy::new(&[r"\d{3}-\d{2}-\d{4}".to_string()], 4096).unwrap()
    }

    #[test]
    fn redacts_patterns_and_credentials_everywhere() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-secret-123456"),
        );
        let body = br#"{"model":"m","messages":[{"role":"system","content":"key sk-secret-123456"},{"role":"user","content":"my ssn is 123-45-6789"}]}"#;
        let c = Captured::new(Bytes::from_static(body), &h);
        let attrs = policy().attributes(
            &c,
            Format::OpenAiChat,
            &ResponseRecord::default(),
            &[],
            false,
        );
        let input = &attrs
            .iter()
            .find(|(k, _)| *k == "gen_ai.input.messages")
            .unwrap()
            .1;
        assert!(!input.contains("sk-secret-123456"), "{input}");
        assert!(!input.contains("123-45-6789"), "{input}");
        assert!(input.contains(REDACTED));
        let v: Value = serde_json::from_str(input).unwrap();
        assert_eq!(v[0]["role"], "system");
        assert_eq!(v[1]["parts"][0]["type"], "text");
    }

    #[test]
    fn anthropic_system_goes_to_system_instructions() {
        let body = br#"{"model":"c","system":"Be terse.","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let c = Captured::new(Bytes::from_static(body), &HeaderMap::new());
        let attrs = policy().attributes(
            &c,
            Format::Anthropic,
            &ResponseRecord::default(),
            &[],
            false,
        );
        let sys = &attrs
            .iter()
            .find(|(k, _)| *k == "gen_ai.system_instructions")
            .unwrap()
            .1;
        assert_eq!(sys, r#"[{"type":"text","content":"Be terse."}]"#);
    }

    #[test]
    fn stream_text_is_accumulated_per_choice() {
        let mut c = Captured::new(Bytes::from_static(b"{}"), &HeaderMap::new());
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        c.on_response_headers(&h);
        c.on_data(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n");
        c.on_data(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n");
        let record = ResponseRecord {
            finish_reasons: vec!["stop".into()],
            ..Default::default()
        };
        let attrs = policy().attributes(&c, Format::OpenAiChat, &record, &[], false);
        let out = &attrs
            .iter()
            .find(|(k, _)| *k == "gen_ai.output.messages")
            .unwrap()
            .1;
        assert_eq!(
            out,
            r#"[{"role":"assistant","parts":[{"type":"text","content":"Hello"}],"finish_reason":"stop"}]"#
        );
    }

    #[test]
    fn fit_keeps_json_valid_under_the_cap() {
        let v = json!([{"role":"user","parts":[{"type":"text","content":"x".repeat(10_000)}]}]);
        let s = fit(v, 200);
        assert!(s.len() <= 200, "{}", s.len());
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back[0]["role"], "user");
    }
}
