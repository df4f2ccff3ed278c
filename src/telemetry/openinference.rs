//! The OpenInference vocabulary (Arize Phoenix and friends), for `telemetry.conventions:
//! openinference | both`.

use opentelemetry::KeyValue;

use crate::providers::Usage;

/// OpenInference attributes of an LLM call.
pub fn attributes(
    provider: &'static str,
    model: &str,
    usage: &Usage,
    session: Option<&str>,
    out: &mut Vec<KeyValue>,
) {
    out.push(KeyValue::new("openinference.span.kind", "LLM"));
    out.push(KeyValue::new("llm.provider", provider));
    out.push(KeyValue::new("llm.model_name", model.to_string()));
    if let Some(n) = usage.input {
        out.push(KeyValue::new("llm.token_count.prompt", n as i64));
    }
    if let Some(n) = usage.output {
        out.push(KeyValue::new("llm.token_count.completion", n as i64));
    }
    let total = usage.total.or(match (usage.input, usage.output) {
        (None, None) => None,
        (i, o) => Some(i.unwrap_or(0) + o.unwrap_or(0)),
    });
    if let Some(n) = total {
        out.push(KeyValue::new("llm.token_count.total", n as i64));
    }
    if let Some(s) = session {
        // `session.id` is shared with the GenAI vocabulary; add it once.
        if !out.iter().any(|kv| kv.key.as_str() == "session.id") {
            out.push(KeyValue::new("session.id", s.to_string()));
        }
    }
}
