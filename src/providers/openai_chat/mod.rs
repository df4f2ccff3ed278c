//! OpenAI Chat Completions (`/v1/chat/completions`; Azure deployments and every compatible
//! server): JSON bodies and `chat.completion.chunk` streams. Legacy Completions
//! (`/v1/completions`, `choices[].text`) and embeddings share the shape and the usage object.
//!
//! Streams: usage is the last chunk whose `usage` is not null (not necessarily the last chunk);
//! finish reasons are the last non-null per choice; tool-call argument fragments are joined per
//! (choice, tool-call index), id and name taken from the fragment that carries them. An empty
//! `model` or `id` (Azure's `prompt_filter_results` chunk) is skipped for a later one.
//!
//! Usage shapes of compatible servers, read from the fields themselves (never from a host name,
//! so they hold behind OpenRouter, LiteLLM and other gateways):
//! - reasoning outside `completion_tokens` (xAI: `total_tokens` = prompt + completion +
//!   reasoning) is added to output; OpenAI's shape (reasoning inside) is taken as it is;
//! - Perplexity's top-level `reasoning_tokens` (Deep Research) lie outside `completion_tokens`
//!   and, in that shape only, its `citation_tokens` outside `prompt_tokens`: both are billed,
//!   both are added (Sonar and Sonar Pro state citation tokens without billing them);
//! - cached input: `prompt_tokens_details.cached_tokens`, else DeepSeek's
//!   `prompt_cache_hit_tokens`, else a top-level `cached_tokens` (Moonshot);
//! - cache writes: `prompt_tokens_details.cache_write_tokens` (OpenRouter),
//!   `cache_creation_input_tokens` (DashScope), `cache_creation_tokens` (LiteLLM) or a top-level
//!   `cache_creation_input_tokens`; one-hour writes from the `cache_creation` breakdown;
//! - Groq's older shape states usage only in `x_groq.usage` (JSON, and the last stream chunk).

pub(super) mod content;
mod ending;
mod gate;
mod hide_usage;
mod request;
mod response;
pub(super) mod tools;

pub use response::Stream;

use serde_json::{Map, Value};

use crate::providers::adapter::{
    stream_reader, Adapter, EventRewrite, Operation, Routed, StreamEnding, StreamReader,
};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The OpenAI Chat Completions format.
pub struct OpenAiChat;

impl Adapter for OpenAiChat {
    fn protocol(&self) -> &'static str {
        "openai"
    }

    fn detects(&self, _path: &str) -> bool {
        true // every OpenAI-compatible server: the fallback, last in the registry
    }

    fn route(&self, path: &str) -> Option<Routed> {
        let operation = if path.ends_with("/chat/completions") || path.ends_with("/responses") {
            Operation::Chat
        } else if path.ends_with("/embeddings") {
            Operation::Embeddings
        } else if path.ends_with("/completions") {
            Operation::TextCompletion
        } else {
            Operation::Other
        };
        // Chat, legacy completions and embeddings share the usage object.
        Some(Routed {
            provider: provider_label(path),
            operation,
            reads: operation != Operation::Other,
        })
    }

    fn tool_gate(&self) -> Option<Box<dyn crate::providers::adapter::ToolGate>> {
        Some(Box::<gate::ChatGate>::default())
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }

    fn stream_ending(&self) -> Option<Box<dyn StreamEnding>> {
        Some(Box::<ending::ChatEnding>::default())
    }

    fn usage_hider(&self) -> Option<EventRewrite> {
        Some(hide_usage::rewrite_event)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (None, "max_completion_tokens")
    }

    fn ask_stream_usage(
        &self,
        stream: bool,
        stream_options: Option<bool>,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        (stream && stream_options != Some(true))
            .then(|| request::with_include_usage(body, stream_options.is_some()))
            .flatten()
    }

    fn tool_results(&self, doc: crate::providers::Node<'_>, markers: &[String]) -> Vec<ToolResult> {
        tools::tool_results(doc, markers)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        content::input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        content::output_text(v, add)
    }
}

stream_reader!(Stream, event);

/// `azure.ai.openai` for an Azure deployment's path, else `openai`.
pub(crate) fn provider_label(path: &str) -> &'static str {
    if path.starts_with("/openai/deployments/") {
        "azure.ai.openai"
    } else {
        "openai"
    }
}
