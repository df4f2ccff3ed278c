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
use serde_json::{json, Value};

use crate::providers::genai::{arguments, text_part};
use crate::providers::request::DeclaredTool;
use crate::providers::{Adapter, Format, ResponseRecord};
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
        let adapter = format.adapter();
        let (system, input) = match serde_json::from_slice::<Value>(&captured.request) {
            Ok(Value::Object(b)) => adapter.input_messages(&b),
            _ => (None, None),
        };
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
            let texts = output_texts(adapter, captured);
            push(
                "gen_ai.output.messages",
                output_messages(texts, record, failed),
            );
        }
        out
    }

    /// Replace configured patterns in every string of `v`.
    pub fn redact_json(&self, v: &mut Value) {
        self.redact_value(v, &[]);
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

/// Output text per choice / candidate, in choice order.
fn output_texts(adapter: &dyn Adapter, c: &Captured) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    let mut add = |i: usize, t: &str| {
        if texts.len() <= i {
            texts.resize(i + 1, String::new());
        }
        texts[i].push_str(t);
    };
    let mut read = |v: &Value| adapter.output_text(v, &mut add);
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
    // A Responses call states `status:reason` (`incomplete:max_output_tokens`): the reason
    // says why it stopped.
    let reason = provider.map(|p| p.rsplit(':').next().unwrap_or(p).to_ascii_lowercase());
    match reason.as_deref() {
        Some(
            "length"
            | "max_tokens"
            | "incomplete"
            | "max_output_tokens"
            | "model_context_window_exceeded",
        ) => "length",
        Some("tool_calls" | "tool_use" | "function_call") => "tool_call",
        // OpenAI, Gemini (its safety reasons), Anthropic, Bedrock (its guardrails).
        Some(
            "content_filter"
            | "content_filtered"
            | "guardrail_intervened"
            | "safety"
            | "image_safety"
            | "recitation"
            | "refusal"
            | "blocklist"
            | "prohibited_content"
            | "spii",
        ) => "content_filter",
        Some("error" | "failed" | "malformed_function_call" | "unexpected_tool_call") => "error",
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

    #[test]
    fn every_providers_finish_reasons_map_to_the_conventions_values() {
        for (provider, expected) in [
            ("stop", "stop"),
            ("end_turn", "stop"),
            ("STOP", "stop"),
            ("completed", "stop"),
            ("length", "length"),
            ("incomplete:max_output_tokens", "length"),
            ("MAX_TOKENS", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_calls", "tool_call"),
            ("tool_use", "tool_call"),
            ("incomplete:content_filter", "content_filter"),
            ("content_filtered", "content_filter"),
            ("guardrail_intervened", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("refusal", "content_filter"),
            ("MALFORMED_FUNCTION_CALL", "error"),
            ("failed", "error"),
        ] {
            assert_eq!(finish_reason(Some(provider)), expected, "{provider}");
        }
        assert_eq!(finish_reason(None), "stop");
    }

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
