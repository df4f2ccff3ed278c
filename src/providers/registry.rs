//! The provider registry: one line per format, the only place a format meets its adapter, and
//! which calls speak which format.

use super::adapter::Adapter;
use super::format::Format;
use super::protocol::Classified;
use super::{anthropic, gemini, ollama, openai_chat, openai_responses};
use crate::config::Protocol;

// === impl Format ===

impl Format {
    /// This format's adapter.
    pub fn adapter(self) -> &'static dyn Adapter {
        match self {
            Format::OpenAiChat => &openai_chat::OpenAiChat,
            Format::OpenAiResponses => &openai_responses::OpenAiResponses,
            Format::Anthropic => &anthropic::Anthropic,
            Format::Gemini => &gemini::Gemini,
            Format::Ollama => &ollama::Ollama,
        }
    }
}

/// The response format of a classified call, when tokenwarden reads it.
pub(super) fn format_for(class: &Classified, path: &str) -> Option<Format> {
    match (class.protocol, class.operation) {
        (_, "other" | "count_tokens") => None,
        (Protocol::Anthropic, "chat") => Some(Format::Anthropic),
        (Protocol::Gemini, "generate_content") => Some(Format::Gemini),
        (Protocol::Ollama, "chat" | "text_completion") => Some(Format::Ollama),
        (Protocol::Openai | Protocol::Auto, _) if path.ends_with("/responses") => {
            Some(Format::OpenAiResponses)
        }
        // Chat, legacy completions and embeddings share the usage object.
        (Protocol::Openai | Protocol::Auto, _) => Some(Format::OpenAiChat),
        _ => None,
    }
}
