//! An Anthropic request's system prompt and messages and a response's output text, for content
//! capture.

use serde_json::{json, Map, Value};

use crate::providers::genai::{text_of, text_part};

/// `(system instructions, input messages)` in the GenAI conventions' shapes.
pub(super) fn input_messages(b: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
    let system = match b.get("system") {
        Some(Value::String(s)) => Some(json!([text_part(s)])),
        Some(Value::Array(blocks)) => Some(Value::Array(blocks.iter().filter_map(part).collect())),
        _ => None,
    };
    let msgs = b.get("messages").and_then(Value::as_array).map(|a| {
        a.iter()
            .map(|m| {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                let parts = match m.get("content") {
                    Some(Value::String(s)) => vec![text_part(s)],
                    Some(Value::Array(blocks)) => blocks.iter().filter_map(part).collect(),
                    _ => Vec::new(),
                };
                json!({"role": role, "parts": parts})
            })
            .collect::<Vec<_>>()
    });
    (system, msgs.map(Value::Array))
}

/// Output text in one JSON body or stream event, by choice index.
pub(super) fn output_text(v: &Value, add: &mut dyn FnMut(usize, &str)) {
    if let Some(t) = text_of(v.get("delta").and_then(|d| d.get("text"))) {
        add(0, t);
    }
    for b in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if b.get("type").and_then(Value::as_str) == Some("text") {
            add(0, text_of(b.get("text")).unwrap_or(""));
        }
    }
}

/// One content block in the GenAI shape.
fn part(block: &Value) -> Option<Value> {
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
