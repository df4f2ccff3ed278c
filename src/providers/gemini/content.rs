//! A Gemini request's system instruction and contents and a response's output text, for content
//! capture.

use serde_json::{json, Map, Value};

use crate::providers::genai::{text_of, text_part};

/// `(system instructions, input messages)` in the GenAI conventions' shapes.
pub(super) fn input_messages(b: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
    let system = b
        .get("systemInstruction")
        .or_else(|| b.get("system_instruction"))
        .and_then(|s| s.get("parts"))
        .and_then(Value::as_array)
        .map(|p| Value::Array(p.iter().filter_map(part).collect()));
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
                    .map(|p| p.iter().filter_map(part).collect())
                    .unwrap_or_default();
                json!({"role": role, "parts": parts})
            })
            .collect::<Vec<_>>()
    });
    (system, msgs.map(Value::Array))
}

/// Output text in one JSON body or stream event, by choice index.
pub(super) fn output_text(v: &Value, add: &mut dyn FnMut(usize, &str)) {
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
            if let Some(t) = text_of(p.get("text")) {
                add(i, t);
            }
        }
    }
}

/// One part in the GenAI shape.
fn part(p: &Value) -> Option<Value> {
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
