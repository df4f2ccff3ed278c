//! Gemini `generateContent` / `streamGenerateContent` (SSE with `alt=sse`, else a JSON array).
//!
//! Usage: input = `promptTokenCount + toolUsePromptTokenCount`; output = `candidatesTokenCount +
//! thoughtsTokenCount` (thoughts are not inside candidates). Stream chunks carry cumulative
//! `usageMetadata`: the last one stated wins (summing over-counts). Cached input is
//! `cachedContentTokenCount` (a part of `promptTokenCount`). An empty `modelVersion` or
//! `responseId` is no value.

mod content;
mod error;
mod gate;
mod request;
mod response;
mod tools;

pub use response::Stream;

use serde_json::{Map, Value};

use crate::providers::adapter::{
    stream_reader, Adapter, ErrorText, Operation, Routed, StreamReader,
};
use crate::providers::shape::azure_deployment;
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The Gemini format.
pub struct Gemini;

impl Adapter for Gemini {
    fn protocol(&self) -> &'static str {
        "gemini"
    }

    fn detects(&self, path: &str) -> bool {
        path.contains(":generateContent")
            || path.contains(":streamGenerateContent")
            || path.contains("/v1beta/")
    }

    /// Google's OpenAI-compatible endpoint (`/v1beta/openai/chat/completions`, embeddings, ...):
    /// OpenAI's bodies, streams and usage under Gemini's `/v1beta/` path.
    fn speaks(&self, path: &str) -> Option<&'static str> {
        request::openai_compatible(path).then_some("openai")
    }

    fn route(&self, path: &str) -> Option<Routed> {
        let (operation, reads) =
            if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
                (Operation::GenerateContent, true)
            } else if path.contains(":embedContent") || path.contains(":batchEmbedContents") {
                (Operation::Embeddings, false)
            } else {
                (Operation::Other, false)
            };
        Some(Routed {
            provider: "gcp.gemini",
            operation,
            reads,
        })
    }

    /// `{"error":{"code","message","status"}}`: Google APIs.
    fn error_body(&self, e: &ErrorText<'_>) -> Value {
        error::body(e)
    }

    fn tool_gate(&self) -> Option<Box<dyn crate::providers::adapter::ToolGate>> {
        Some(Box::<gate::GeminiGate>::default())
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }

    fn usage_key(&self) -> &'static str {
        "usageMetadata"
    }

    fn requested_model(&self, path: &str, _body_model: Option<&str>) -> Option<String> {
        request::model(path)
            .or_else(|| azure_deployment(path))
            .map(str::to_string)
    }

    fn requested_stream(
        &self,
        path: &str,
        query: Option<&str>,
        _body_stream: Option<bool>,
    ) -> bool {
        request::stream(path, query)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (Some("generationConfig"), "maxOutputTokens")
    }

    fn tool_results(
        &self,
        doc: crate::providers::Node<'_>,
        _markers: &[String],
    ) -> Vec<ToolResult> {
        tools::tool_results(doc)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        content::input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        content::output_text(v, add)
    }
}

stream_reader!(Stream, event);
