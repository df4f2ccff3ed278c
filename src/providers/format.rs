//! Which provider format a call speaks: the key every provider capability is looked up by
//! ([`Format::adapter`]).

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
