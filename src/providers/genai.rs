//! The GenAI semantic conventions' JSON parts, which every adapter builds captured content
//! from (and telemetry builds output messages from).

use serde_json::{json, Value};

/// A text part.
pub fn text_part(s: &str) -> Value {
    json!({"type": "text", "content": s})
}

/// A tool call's arguments as an object when they parse, else the string.
pub fn arguments(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// The string `v` holds, if it is one.
pub(super) fn text_of(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}
