//! The provider registry: one line per format, the only place a format meets its adapter.

use super::adapter::Adapter;
use super::format::Format;
use super::{anthropic, gemini, ollama, openai_chat, openai_responses};

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
