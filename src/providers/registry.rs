//! The provider registry: one line per format, the only place a format meets its adapter (its
//! folder is declared in `providers/mod.rs`).
//!
//! The order is the order formats are asked: under `protocol: auto` the first format whose
//! [`Adapter::detects`] claims a path names the protocol, and a protocol's formats are asked in
//! this order which of them serves a path ([`Adapter::route`]). OpenAI's formats come last: every
//! OpenAI-compatible server is the fallback.

use super::adapter::Adapter;

/// Declares [`Format`] (one variant per line), [`Format::ALL`] and [`Format::adapter`].
macro_rules! registry {
    ($($(#[$doc:meta])* $variant:ident => $adapter:path,)+) => {
        /// Which provider format a call speaks: the key every provider capability is looked
        /// up by ([`Format::adapter`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Format {
            $($(#[$doc])* $variant,)+
        }

        // === impl Format ===

        impl Format {
            /// Every format, in the order they are asked.
            pub const ALL: &'static [Format] = &[$(Format::$variant,)+];

            /// This format's adapter.
            pub fn adapter(self) -> &'static dyn Adapter {
                match self {
                    $(Format::$variant => &$adapter,)+
                }
            }
        }
    };
}

registry! {
    /// AWS Bedrock Converse / ConverseStream.
    BedrockConverse => super::bedrock::BedrockConverse,
    /// AWS Bedrock InvokeModel / InvokeModelWithResponseStream (Anthropic models).
    BedrockInvoke => super::bedrock::BedrockInvoke,
    /// Gemini on Vertex AI (before Gemini, whose detection is broader).
    VertexGemini => super::vertex::VertexGemini,
    /// Anthropic on Vertex AI (`rawPredict` / `streamRawPredict`).
    VertexAnthropic => super::vertex::VertexAnthropic,
    /// Anthropic Message Batches' results files (before Anthropic Messages, whose routes take
    /// every other path of the protocol).
    AnthropicBatch => super::anthropic::AnthropicBatch,
    /// Anthropic Messages.
    Anthropic => super::anthropic::Anthropic,
    /// Gemini generateContent / streamGenerateContent.
    Gemini => super::gemini::Gemini,
    /// Ollama native `/api/chat` and `/api/generate` (NDJSON streams); claims only its own
    /// `/api/` endpoints, so it may sit before the OpenAI fallback.
    Ollama => super::ollama::Ollama,
    /// OpenAI Batch API output files (`/v1/files/{id}/content`).
    OpenAiBatch => super::openai_batch::OpenAiBatch,
    /// OpenAI Realtime API (WebSocket sessions on `/v1/realtime`).
    OpenAiRealtime => super::openai_realtime::OpenAiRealtime,
    /// OpenAI Responses API.
    OpenAiResponses => super::openai_responses::OpenAiResponses,
    /// OpenAI Chat Completions (and every compatible server, Azure deployments included).
    OpenAiChat => super::openai_chat::OpenAiChat,
}
