//! The text of requests and responses, as a tokenizer should see it (token text), and the input
//! estimate built on it.
//!
//! Provider shapes differ, but text always sits in a few well-known keys (`content`, `text`,
//! `prompt`, `input`, `system`, `instructions`, tool `arguments` / `input`). Walking the JSON for
//! those keys covers every shape tokenwarden reads without a schema per provider; media parts
//! (base64 images, audio, files) are counted, not read.

use bytes::Bytes;
use serde_json::Value;

use super::doc::{Doc, Node};
use super::latest::Latest;
use crate::tokens::RequestText;

/// What a key's value is to the token text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// String values are prompt text (`content`, `text`, `prompt`, `input`, `system`,
    /// `instructions`, `arguments`, `output`, `thinking`).
    Text,
    /// Tool definitions or structured tool input: counted as compact JSON.
    Json,
    /// Media payloads, counted per part (a string value under one of these is text-less).
    Media,
    /// Anything else: walked into, its strings not counted.
    Other,
}

/// The kind of `key`: one `match` (the walk asks it of every key of the conversation), after
/// a first look at its first byte and length: the conversation's own keys (`role`, `name`,
/// `type`, `tool_call_id`) are out without a comparison of their text.
fn key_kind(key: &str) -> KeyKind {
    let b = key.as_bytes();
    let maybe = matches!(
        (b.first(), b.len()),
        (Some(b'c'), 7)
            | (Some(b't'), 4 | 5 | 8)
            | (Some(b'p'), 6)
            | (Some(b'i'), 5 | 9 | 10 | 11 | 12)
            | (Some(b's'), 6)
            | (Some(b'a'), 4 | 9)
            | (Some(b'o'), 6)
            | (Some(b'f'), 4 | 8 | 9 | 12 | 13 | 16)
            | (Some(b'r'), 8 | 15)
    );
    if !maybe {
        return KeyKind::Other;
    }
    kind_of(key)
}

/// Whether the input estimate counts a value under `key` as compact JSON text (declared tools,
/// structured tool input and output): no media part inside it is counted. (At a body's root the
/// estimate reads `tools` of these and leaves the others unread: no media counted there either.)
pub fn counted_as_json(key: &str) -> bool {
    key_kind(key) == KeyKind::Json
}

/// [`key_kind`] without the first look.
fn kind_of(key: &str) -> KeyKind {
    match key {
        "content" | "text" | "prompt" | "input" | "system" | "instructions" | "arguments"
        | "output" | "thinking" => KeyKind::Text,
        "tools" | "functionCall" | "functionResponse" | "function_call" | "args"
        | "response_format" | "response" => KeyKind::Json,
        "image_url" | "inline_data" | "inlineData" | "input_audio" | "file_data" | "fileData"
        | "image" | "source" | "file" => KeyKind::Media,
        _ => KeyKind::Other,
    }
}

/// The text of a request body (any JSON body; non-JSON bodies are text). The key walk covers
/// every format; it is each adapter's [`request_text`](super::Adapter::request_text) unless a
/// format refines it.
pub(super) fn request_text(body: &[u8]) -> RequestText {
    match Doc::parse(Bytes::copy_from_slice(body)) {
        Ok(doc) if doc.root().is_object() => request_text_doc(doc.root()),
        Ok(_) | Err(_) => RequestText {
            text: String::from_utf8_lossy(body).into_owned(),
            ..RequestText::default()
        },
    }
}

/// The text of a request body already parsed (a JSON object; anything else has no text): what
/// [`request_text`] reads, without parsing the body again.
pub(super) fn request_text_doc(doc: Node<'_>) -> RequestText {
    // The text is at most about the body's length: one allocation, not one per doubling (up
    // to 1 MiB: a body of media holds little text).
    let mut out = RequestText {
        text: String::with_capacity(doc.document_len().min(1 << 20)),
        ..RequestText::default()
    };
    if let Some(map) = doc.entries() {
        for (k, v) in map {
            match k {
                "messages" | "contents" | "input" | "prompt" | "system" | "instructions"
                | "systemInstruction" | "system_instruction" | "tools" => walk(k, v, &mut out),
                _ => {}
            }
        }
    }
    out
}

/// The output text in a response body or in a stream's output events (one JSON value per
/// line), for counting output tokens where the provider stated none.
pub fn output_text(events: &[u8]) -> String {
    let mut out = RequestText::default();
    let mut parse = |bytes: &[u8]| {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            output_walk(&v, &mut out);
        }
    };
    if serde_json::from_slice::<serde::de::IgnoredAny>(events).is_ok() {
        parse(events);
    } else {
        for line in events.split(|b| *b == b'\n') {
            parse(line);
        }
        if out.text.is_empty() && !events.contains(&b'\n') {
            // One JSON body cut short (the upstream died mid-body): what it held is still output
            // the provider generated and billed.
            return truncated_output_text(events);
        }
    }
    out.text
}

/// The output text of a JSON body cut short: the string values of output keys up to the cut,
/// read leniently (a string cut mid-way counts as far as it goes).
fn truncated_output_text(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut key: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        // A JSON string: up to the next unescaped quote, or the end of what arrived.
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        let raw = &bytes[start..j.min(bytes.len())];
        let text = serde_json::from_slice::<String>(&[b"\"", raw, b"\""].concat())
            .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned());
        i = j + 1;
        let next = bytes[i.min(bytes.len())..]
            .iter()
            .find(|b| !b.is_ascii_whitespace());
        if next == Some(&b':') {
            key = Some(text);
        } else if key.as_deref().is_some_and(|k| OUTPUT_KEYS.contains(&k)) {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&text);
        }
    }
    out
}

fn push(out: &mut RequestText, s: &str) {
    if !out.text.is_empty() {
        out.text.push('\n');
    }
    out.text.push_str(s);
}

/// Texts kept in [`COMPACT`], and the longest kept.
const COMPACT_KEPT: usize = 4;
const COMPACT_TEXT_MAX: usize = 256 * 1024;

thread_local! {
    /// Tool definitions (and other JSON-counted values) walked on this thread lately: their text
    /// in the body and the compact JSON of it.
    static COMPACT: std::cell::RefCell<Latest<Box<str>, Box<str>>> =
        const { std::cell::RefCell::new(Latest::new(COMPACT_KEPT)) };
}

/// `v` as the compact JSON `serde_json` writes for the equal `Value`, to `f`. An agent's tools
/// are the same text on every call: writing 20 declarations out again cost ~25 instructions a
/// byte, so the last few are kept per thread by their text in the body.
fn compact_json(v: Node<'_>, f: impl FnOnce(&str)) {
    let Some(raw) = v
        .raw_json()
        .filter(|t| t.len() >= 256 && t.len() <= COMPACT_TEXT_MAX)
    else {
        if let Ok(s) = serde_json::to_string(&v) {
            f(&s);
        }
        return;
    };
    let mut f = Some(f);
    COMPACT.with(|c| {
        // The latest used first: a conversation's several values stay while it goes on.
        if let Some(s) = c.borrow_mut().get(|text| **text == *raw) {
            if let Some(f) = f.take() {
                f(s);
            }
        }
    });
    let Some(f) = f else {
        return; // written from what was kept
    };
    let Ok(s) = serde_json::to_string(&v) else {
        return;
    };
    f(&s);
    COMPACT.with(|c| c.borrow_mut().put(raw.into(), s.into()));
}

fn walk(key: &str, v: Node<'_>, out: &mut RequestText) {
    let kind = key_kind(key);
    if kind == KeyKind::Media && !v.is_string() || key == "image_url" {
        out.media_parts += 1;
        return;
    }
    if kind == KeyKind::Json {
        compact_json(v, |s| push(out, s));
        return;
    }
    if let Some(s) = v.as_str() {
        if kind == KeyKind::Text {
            push(out, s);
        }
    } else if let Some(items) = v.items() {
        for item in items {
            walk(key, item, out);
        }
    } else if let Some(map) = v.entries() {
        // A message is an object with a `role` (its keys are distinct: the document holds
        // each once), counted as its entries are walked.
        for (k, v) in map {
            if k == "role" {
                out.messages += 1;
            }
            walk(k, v, out);
        }
    } else if v.is_number() && (key == "prompt" || key == "input") {
        // Token-id prompts (`"prompt": [1, 2, 3]`) count one token per id.
        push(out, "x");
    }
}

/// Keys whose string values are generated output in responses and stream events.
const OUTPUT_KEYS: &[&str] = &[
    "content",
    "text",
    "arguments",
    "partial_json",
    "thinking",
    "refusal",
    "reasoning_content",
    "response",
    "delta",
];

/// Output fragments are joined as they are: stream deltas are pieces of one text.
fn output_walk(v: &Value, out: &mut RequestText) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if OUTPUT_KEYS.contains(&k.as_str()) => out.text.push_str(s),
                    // Anthropic / Gemini tool input arrives as an object.
                    Value::Object(_) if k == "input" || k == "args" => {
                        if let Ok(s) = serde_json::to_string(v) {
                            out.text.push_str(&s);
                        }
                    }
                    _ => output_walk(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| output_walk(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{estimate_input, Format};

    #[test]
    fn the_first_look_at_a_key_keeps_every_known_one() {
        let known = [
            "content",
            "text",
            "prompt",
            "input",
            "system",
            "instructions",
            "arguments",
            "output",
            "thinking",
            "tools",
            "functionCall",
            "functionResponse",
            "function_call",
            "args",
            "response_format",
            "response",
            "image_url",
            "inline_data",
            "inlineData",
            "input_audio",
            "file_data",
            "fileData",
            "image",
            "source",
            "file",
        ];
        for k in known {
            assert!(kind_of(k) != KeyKind::Other, "{k}");
            assert!(key_kind(k) == kind_of(k), "{k}");
        }
        for k in [
            "role",
            "name",
            "type",
            "tool_call_id",
            "",
            "c",
            "contents",
            "imag",
            "files",
        ] {
            assert!(key_kind(k) == kind_of(k), "{k}");
        }
    }

    #[test]
    fn json_counted_values_read_the_same_when_kept() {
        let tools: Vec<String> = (0..8)
            .map(|i| format!(r#"{{ "type": "function", "function": {{ "name": "t{i}", "description": "caf\u00e9 1e3", "parameters": {{ "type": "object", "properties": {{ "n": {{ "type": "number", "maximum": 1e3 }} }} }} }} }}"#))
            .collect();
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{}]}}"#,
            tools.join(", ")
        );
        let doc = Doc::parse(Bytes::from(body.clone())).unwrap();
        let want = serde_json::to_string(&doc.root().get("tools").unwrap()).unwrap();
        assert!(want.contains(r#""maximum":1000.0"#) && want.contains("café"));
        // Once written, once from what was kept: the same compact JSON, the same text.
        for _ in 0..2 {
            let mut got = String::new();
            compact_json(doc.root().get("tools").unwrap(), |s| got.push_str(s));
            assert_eq!(got, want);
            assert_eq!(
                request_text_in(Format::OpenAiChat, body.as_bytes()).text,
                format!("hi\n{want}")
            );
        }
        assert!(COMPACT.with(|c| c.borrow().len()) >= 1);
    }

    fn request_text_in(format: Format, body: &[u8]) -> RequestText {
        format.adapter().request_text(body)
    }

    #[test]
    fn chat_request_estimate_is_close_to_the_provider_count() {
        // OpenAI reports 20 prompt tokens for this request with gpt-4o (system + user, o200k).
        let body = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France?"}]}"#;
        let n = estimate_input(Format::OpenAiChat, body);
        assert!((18..=24).contains(&n), "{n}");
    }

    #[test]
    fn a_json_body_cut_short_still_has_its_output_text() {
        let cut = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, \"friend\". The answer is"#;
        assert_eq!(output_text(cut), "Hello there, \"friend\". The answer is");
        let cut =
            br#"{"content":[{"type":"text","text":"Bonjour"},{"type":"text","text":"tout le mo"#;
        assert_eq!(output_text(cut), "Bonjour\ntout le mo");
        assert_eq!(output_text(br#"{"model":"m","id":"x"#), "");
    }

    #[test]
    fn request_text_in_every_shape() {
        let t = request_text_in(
            Format::OpenAiChat,
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#,
        );
        assert_eq!(t.text, "be brief\nhi");
        assert_eq!((t.messages, t.media_parts), (2, 1));

        let t = request_text_in(
            Format::Anthropic,
            br#"{"model":"claude","system":"sys","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"AAAA"}},{"type":"tool_result","tool_use_id":"t","content":"42"}]}]}"#,
        );
        assert_eq!(t.text, "sys\n42");
        assert_eq!((t.messages, t.media_parts), (1, 1));

        let t = request_text_in(
            Format::Gemini,
            br#"{"systemInstruction":{"parts":[{"text":"s"}]},"contents":[{"role":"user","parts":[{"text":"q"}]}]}"#,
        );
        assert_eq!(t.text, "s\nq");

        let t = request_text_in(
            Format::OpenAiResponses,
            br#"{"model":"m","instructions":"i","input":"question","tools":[{"type":"function","name":"f"}]}"#,
        );
        assert_eq!(
            t.text,
            "i\nquestion\n[{\"type\":\"function\",\"name\":\"f\"}]"
        );

        let t = request_text_in(Format::OpenAiChat, br#"{"input":["a","b"]}"#);
        assert_eq!(t.text, "a\nb");
        let t = request_text_in(Format::OpenAiChat, b"not json");
        assert_eq!(t.text, "not json");
    }

    #[test]
    fn output_text_from_events_and_bodies() {
        let events = b"{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n{\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}";
        assert_eq!(output_text(events), "Hello{}");
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"done"}}]}"#;
        assert_eq!(output_text(body), "done");
    }
}
