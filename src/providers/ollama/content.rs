//! An Ollama response's output text, for content capture (requests are read as OpenAI chat's).

use serde_json::Value;

use crate::providers::genai::text_of;

/// Output text in one JSON body or stream event, by choice index.
pub(super) fn output_text(v: &Value, add: &mut dyn FnMut(usize, &str)) {
    if let Some(t) = text_of(v.get("message").and_then(|m| m.get("content"))) {
        add(0, t);
    }
    if let Some(t) = text_of(v.get("response")) {
        add(0, t);
    }
}
