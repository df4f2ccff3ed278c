//! A Responses request's instructions and input items and a response's output text, for content
//! capture.

use serde_json::{json, Map, Value};

use crate::providers::genai::{arguments, text_of, text_part};
use crate::providers::openai_chat::content::message;

/// `(system instructions, input messages)` in the GenAI conventions' shapes.
pub(super) fn input_messages(b: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
    let system = b
        .get("instructions")
        .and_then(Value::as_str)
        .map(|s| json!([text_part(s)]));
    let msgs = match b.get("input") {
        Some(Value::String(s)) => Some(vec![json!({"role": "user", "parts": [text_part(s)]})]),
        Some(Value::Array(items)) => Some(items.iter().map(item).collect()),
        _ => None,
    };
    (system, msgs.map(Value::Array))
}

/// Output text in one JSON body or stream event, by choice index.
pub(super) fn output_text(v: &Value, add: &mut dyn FnMut(usize, &str)) {
    if v.get("type").and_then(Value::as_str) == Some("response.output_text.delta") {
        if let Some(t) = text_of(v.get("delta")) {
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
                if let Some(t) = text_of(c.get("text")) {
                    add(0, t);
                }
            }
        }
    }
}

/// One input item in the GenAI shape (other items are chat messages).
fn item(item: &Value) -> Value {
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
        _ => message(item),
    }
}
