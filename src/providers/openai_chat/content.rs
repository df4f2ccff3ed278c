//! An OpenAI chat request's messages and a response's output text, for content capture. Ollama's
//! requests share the shape (and its `/api/generate` bare `prompt` and `system` are read here).

use serde_json::{json, Map, Value};

use crate::providers::genai::{arguments, text_of, text_part};

/// `(system instructions, input messages)` in the GenAI conventions' shapes.
pub(super) fn input_messages(b: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
    let mut msgs: Vec<Value> = b
        .get("messages")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(message).collect())
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

/// Output text in one JSON body or stream event, by choice index.
pub(super) fn output_text(v: &Value, add: &mut dyn FnMut(usize, &str)) {
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
        if let Some(t) = text_of(msg.and_then(|m| m.get("content"))) {
            add(i, t);
        }
    }
}

/// One chat message in the GenAI shape: its text parts, tool calls, or tool response.
pub(in crate::providers) fn message(m: &Value) -> Value {
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
