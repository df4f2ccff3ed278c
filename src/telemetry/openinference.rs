//! The OpenInference vocabulary (Arize Phoenix and friends), for `telemetry.conventions:
//! openinference | both`.

use crate::providers::Usage;

use super::otlp::wire::Attrs;

/// OpenInference attributes of an LLM call. `session.id`, which both vocabularies use, is
/// written once by the span itself.
pub fn attributes(provider: &'static str, model: &str, usage: &Usage, out: &mut Attrs<'_>) {
    out.str("openinference.span.kind", "LLM");
    out.str("llm.provider", provider);
    out.str("llm.model_name", model);
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if let Some(n) = usage.input {
        out.int("llm.token_count.prompt", count(n));
    }
    if let Some(n) = usage.output {
        out.int("llm.token_count.completion", count(n));
    }
    let total = usage.total.or(match (usage.input, usage.output) {
        (None, None) => None,
        (i, o) => Some(i.unwrap_or(0).saturating_add(o.unwrap_or(0))),
    });
    if let Some(n) = total {
        out.int("llm.token_count.total", count(n));
    }
}
