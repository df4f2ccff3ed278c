//! The call record: what one call was — its labels, what the request said, what the response
//! said and where its numbers came from — as the consumers (telemetry, budgets, policies,
//! sessions) read it. The proxy fills it in; nothing here knows HTTP or a provider's format.

mod states;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use crate::providers::request::{DeclaredTool, RequestFacts};
pub use crate::providers::{Format, Operation, ResponseRecord, ToolCall, Usage};
pub use states::{BudgetDecision, PolicyViolation, UpstreamError};

/// Largest response body (JSON) or single event (SSE) kept for parsing.
pub const MAX_PARSE_BYTES: usize = 8 * 1024 * 1024;

/// Labels every GenAI series of a call shares.
pub struct CallLabels {
    /// Route name.
    pub route: Arc<str>,
    /// `gen_ai.provider.name`.
    pub provider: &'static str,
    /// `gen_ai.operation.name`.
    pub operation: Operation,
    /// Agent label.
    pub agent: Arc<str>,
}

/// Where a call's token counts came from (`tokenwarden.usage.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// Stated by the provider in a response the client asked for.
    Provider,
    /// Stated by the provider because the proxy asked for stream usage on the client's behalf.
    Injected,
    /// Counted by the proxy (no usage in the response): see [`crate::tokens`].
    Estimated,
    /// No usage known (an error response, or a body that could not be read).
    None,
}

/// What an LLM call came to, for spans, budgets and the access log.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What the request said.
    pub facts: RequestFacts,
    /// What the response said, usage filled in by estimate where it said none.
    pub record: ResponseRecord,
    /// Where the usage came from.
    pub usage_source: UsageSource,
    /// When the first output chunk arrived (streams).
    pub first_output: Option<Instant>,
    /// When the last output chunk arrived (streams).
    pub last_output: Option<Instant>,
    /// Whether the response was a stream.
    pub streamed: bool,
    /// `error.type`, for a failed call.
    pub error_type: Option<String>,
    /// The served (else requested) model as a capped metric label.
    pub response_model: Arc<str>,
    /// Capped metric labels of `record.other_models` (sub-calls on other models), in order.
    pub other_labels: Vec<Arc<str>>,
    /// Policies the response's tool calls broke.
    pub policy_violations: Vec<PolicyViolation>,
}

// === impl UsageSource ===

impl UsageSource {
    /// Attribute and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Injected => "injected",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
        }
    }
}

/// Nano-USD per USD: costs are kept as integers so stores add them exactly and atomically.
pub const NANO_PER_USD: f64 = 1e9;

/// Running totals of a scope instance (for the admin API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Cost in nano-USD.
    pub cost: u64,
}

/// `s` cut to at most `max` bytes on a character boundary (ids are keys in stores and on spans;
/// text from traffic is bounded before it is kept).
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
