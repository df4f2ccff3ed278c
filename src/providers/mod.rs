//! Provider adapters: read a response body — JSON or streamed, in frames split anywhere — into
//! one [`ResponseRecord`]: served model, response id, usage, finish reasons, tool calls, errors.
//!
//! Adapters know formats, not HTTP: they take bytes and return facts. The proxy feeds each
//! response frame to a [`ResponseParser`] (a reference-counted copy; the bytes go to the client
//! untouched either way) and records what comes out when the body ends. Field locations follow
//! `shared/reference/wire-formats.md`; usage rules follow the corpus README (tests/fixtures).

pub mod anthropic;
pub mod decompress;
pub mod gemini;
pub mod ollama;
pub mod openai_chat;
pub mod openai_responses;
mod parser;
pub mod protocol;
pub mod request;

pub use parser::{Feed, OutputSample, ResponseParser, MAX_OUTPUT_SAMPLE};

use memchr::memmem::Finder;
use serde::Deserialize;

/// Which response format a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions (and every compatible server, Azure deployments included).
    OpenAiChat,
    /// OpenAI Responses API.
    OpenAiResponses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent / streamGenerateContent.
    Gemini,
    /// Ollama native `/api/chat` and `/api/generate` (NDJSON streams).
    Ollama,
}

/// Token usage as the provider states it. `input` counts every input token (cached and
/// cache-written included, as the GenAI conventions do); the others are subsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens.
    pub input: Option<u64>,
    /// All output tokens, reasoning included.
    pub output: Option<u64>,
    /// Input tokens read from the provider's cache.
    pub cached_input: Option<u64>,
    /// Input tokens written to the provider's cache (every lifetime).
    pub cache_creation_input: Option<u64>,
    /// Of `cache_creation_input`, the tokens written with a one-hour lifetime (Anthropic's
    /// `ephemeral_1h_input_tokens`); the rest are five-minute writes. Priced apart.
    pub cache_creation_1h: Option<u64>,
    /// Reasoning / thinking tokens.
    pub reasoning: Option<u64>,
    /// The provider's own total, when it states one.
    pub total: Option<u64>,
}

/// Most distinct other models a record keeps; a sub-call on one more model stays in the serving
/// model's part (bounded memory whatever a body lists).
pub const MAX_OTHER_MODELS: usize = 4;

/// Usage one response spent on a model other than the one that served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    /// The model, as the provider names it.
    pub model: String,
    /// What it spent (a part of the record's usage).
    pub usage: Usage,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// Choice / candidate index it belongs to.
    pub choice: u32,
    /// Call id, when the provider gives one.
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments as a JSON string (assembled from stream fragments).
    pub arguments: String,
}

/// Everything read from one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseRecord {
    /// Model the provider says served the call.
    pub model: Option<String>,
    /// Response id.
    pub id: Option<String>,
    /// Usage, when the body stated any.
    pub usage: Usage,
    /// Finish reason per choice / candidate (Responses: the status).
    pub finish_reasons: Vec<String>,
    /// Client tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Provider-executed tools (names or item types).
    pub server_tool_calls: Vec<String>,
    /// Parts of `usage` spent on models other than `model` (Anthropic advisor sub-calls), each
    /// priced and counted as its own model; at most [`MAX_OTHER_MODELS`] entries.
    pub other_models: Vec<ModelUsage>,
    /// Error type from an error body or an error event in a stream.
    pub error_type: Option<String>,
    /// Why (part of) the body could not be read, if it could not.
    pub unparsed: Option<&'static str>,
}

// === impl Usage ===

impl Usage {
    /// Whether the body stated any usage at all.
    pub fn is_present(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }

    /// The counts of `self` and `other` added field by field (a field neither states stays
    /// unstated).
    pub fn plus(&self, other: &Usage) -> Usage {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        Usage {
            input: add(self.input, other.input),
            output: add(self.output, other.output),
            cached_input: add(self.cached_input, other.cached_input),
            cache_creation_input: add(self.cache_creation_input, other.cache_creation_input),
            cache_creation_1h: add(self.cache_creation_1h, other.cache_creation_1h),
            reasoning: add(self.reasoning, other.reasoning),
            total: add(self.total, other.total),
        }
    }

    /// `self` less a part of it (`other`), field by field, never below zero.
    pub fn minus(&self, other: &Usage) -> Usage {
        let sub = |a: Option<u64>, b: Option<u64>| a.map(|a| a.saturating_sub(b.unwrap_or(0)));
        Usage {
            input: sub(self.input, other.input),
            output: sub(self.output, other.output),
            cached_input: sub(self.cached_input, other.cached_input),
            cache_creation_input: sub(self.cache_creation_input, other.cache_creation_input),
            cache_creation_1h: sub(self.cache_creation_1h, other.cache_creation_1h),
            reasoning: sub(self.reasoning, other.reasoning),
            total: sub(self.total, other.total),
        }
    }
}

// === impl ResponseRecord ===

impl ResponseRecord {
    /// The part of `usage` the serving model spent: everything but `other_models`.
    pub fn own_usage(&self) -> Usage {
        self.other_models
            .iter()
            .fold(self.usage, |u, o| u.minus(&o.usage))
    }
}

/// Whether a stated reasoning count lies outside the stated output count. OpenAI's shape counts
/// reasoning inside `completion_tokens` (total = input + output); xAI's counts it beside
/// (total = input + output + reasoning). The stated total decides, so the rule holds whichever
/// gateway (OpenRouter, LiteLLM, ...) relays the body.
fn reasoning_outside(
    input: Option<u64>,
    output: Option<u64>,
    reasoning: Option<u64>,
    total: Option<u64>,
) -> bool {
    match (input, output, reasoning, total) {
        (Some(i), Some(o), Some(r), Some(t)) => {
            r > 0 && i.checked_add(o).and_then(|s| s.checked_add(r)) == Some(t)
        }
        _ => false,
    }
}

/// Take `value` into `slot` unless `slot` already holds one or `value` is empty: an empty model
/// or id (Azure's first stream chunk carries `"model":""`) is no value, and a later one wins.
fn set_once(slot: &mut Option<String>, value: Option<&str>) {
    if slot.is_none() {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            *slot = Some(v.to_owned());
        }
    }
}

/// `value` unless it is empty.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Cache writes by lifetime, as Anthropic (`usage.cache_creation`) and DashScope
/// (`prompt_tokens_details.cache_creation`) state them.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

impl CacheCreation {
    /// Every write the breakdown states, when it states any.
    fn total(&self) -> Option<u64> {
        match (
            self.ephemeral_5m_input_tokens,
            self.ephemeral_1h_input_tokens,
        ) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        }
    }
}

/// `{"error": {...}}` as OpenAI, Anthropic (inside `{"type":"error"}`) and Gemini send it.
#[derive(Debug, Deserialize)]
struct ErrorObj {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl ErrorObj {
    fn error_type(&self) -> String {
        if let Some(t) = self.kind.as_ref().or(self.status.as_ref()) {
            return t.clone();
        }
        match &self.code {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "error".to_string(),
        }
    }
}

/// Compact JSON of a value, keys in the order sent (Anthropic `input`, Gemini `args`).
fn compact(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The raw bytes from the start of the value of key `key` (a searcher for the key with its
/// quotes, e.g. `"usage"`) in a JSON object's raw bytes, if the key occurs. Inside JSON strings
/// every quote is escaped, so a quoted key followed by `:` can only be a key; this lets hot paths
/// skip a full parse of events that carry nothing but output text.
fn value_at<'a>(data: &'a [u8], key: &Finder<'static>) -> Option<&'a [u8]> {
    let klen = key.needle().len();
    let mut from = 0;
    while let Some(i) = key.find(&data[from..]) {
        let rest = &data[from + i + klen..];
        let rest = trim_start(rest);
        if let Some(value) = rest.strip_prefix(b":") {
            return Some(trim_start(value));
        }
        from += i + klen;
    }
    None
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// The first byte of the value of `key`, if the key occurs.
fn value_start(data: &[u8], key: &Finder<'static>) -> Option<u8> {
    value_at(data, key).and_then(|v| v.first().copied())
}

/// Whether `key` holds a non-empty string (`"..."` with at least one character).
fn non_empty_string(data: &[u8], key: &Finder<'static>) -> bool {
    value_at(data, key).is_some_and(|v| v.len() > 1 && v[0] == b'"' && v[1] != b'"')
}

/// A quoted JSON key with its searcher built once (building one costs more than a search).
macro_rules! json_key {
    ($name:ident, $key:literal) => {
        static $name: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(concat!("\"", $key, "\"")));
    };
}
pub(crate) use json_key;

#[cfg(test)]
mod scan_tests {
    use super::*;

    json_key!(USAGE, "usage");
    json_key!(CONTENT, "content");

    #[test]
    fn finds_values_not_text_inside_strings() {
        let d = br#"{"choices":[{"delta":{"content":"say \"usage\": 1"}}],"usage" : null}"#;
        assert_eq!(value_start(d, &USAGE), Some(b'n'));
        assert!(non_empty_string(d, &CONTENT));
        assert!(!non_empty_string(br#"{"content":""}"#, &CONTENT));
        assert!(!non_empty_string(br#"{"content":null}"#, &CONTENT));
        assert_eq!(value_start(br#"{"a":1}"#, &USAGE), None);
    }
}
