//! Provider adapters: read a response body — JSON or streamed, in frames split anywhere — into
//! one [`ResponseRecord`]: served model, response id, usage, finish reasons, tool calls, errors.
//!
//! Adapters know formats, not HTTP: they take bytes and return facts. The proxy feeds each
//! response frame to a [`ResponseParser`] (a reference-counted copy; the bytes go to the client
//! untouched either way) and records what comes out when the body ends. Field locations follow
//! `shared/reference/wire-formats.md`; usage rules follow the corpus README (tests/fixtures).

pub mod adapter;
pub mod anthropic;
pub mod bedrock;
pub mod decompress;
pub mod doc;
mod fields;
pub mod gemini;
pub mod genai;
mod latest;
pub mod ollama;
pub mod openai_batch;
pub mod openai_chat;
pub mod openai_realtime;
pub mod openai_responses;
mod parser;
pub mod protocol;
mod recurring;
mod registry;
pub mod request;
mod shape;
mod skim;
mod text;
mod tools;
mod usage;
pub mod vertex;

pub use adapter::{
    Adapter, ClientEvent, EventRewrite, FramedStream, Gated, Operation, RealtimeEvents,
    ServerEvent, StreamEnding, StreamReader, ToolGate,
};
pub use doc::{Doc, Node};

/// The model's own name inside a cloud platform's id of it, for price and context-window
/// lookups by model: Bedrock's `us.anthropic.claude-sonnet-4-5-20250929-v1:0` (or an ARN ending
/// in one) and Vertex's `claude-sonnet-4-5@20250929` name `claude-sonnet-4-5-20250929`. `None`
/// for any other name.
pub fn platform_model(id: &str) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(name) = vertex::model_name(id) {
        return Some(name.into());
    }
    bedrock::model_name(id).map(Into::into)
}
pub use parser::{Feed, OutputSample, ResponseParser, MAX_OUTPUT_SAMPLE};
pub use registry::Format;
pub use request::{estimate_input, estimate_input_doc, Capped};
pub use text::{counted_as_json, output_text};
pub use tools::ToolResult;
pub use usage::{
    AudioTokens, ModelUsage, ResponseRecord, ServerToolUse, ToolCall, Usage, MAX_OTHER_MODELS,
};
