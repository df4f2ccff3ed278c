//! Ollama's native API (`/api/chat`, `/api/generate`): NDJSON streams (the default) and single
//! JSON objects. The last line (`"done": true`) carries `prompt_eval_count` (input) and
//! `eval_count` (output); tool calls arrive whole with `arguments` as an object. A missing
//! `prompt_eval_count` stays unknown, never zero.

mod content;
mod response;

pub use response::Stream;

use serde_json::{Map, Value};

use crate::providers::adapter::{stream_reader, Adapter, Operation, Routed, StreamReader};
use crate::providers::openai_chat::{self, OpenAiChat};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The Ollama format.
pub struct Ollama;

/// The native API's endpoints after `/api/` (docs.ollama.com/api), claimed under
/// `protocol: auto`: the four this folder routes, and the model-management ones it labels as
/// Ollama's without reading (`/api/blobs/{digest}` too).
const ENDPOINTS: &[&str] = &[
    "chat",
    "generate",
    "embed",
    "embeddings",
    "tags",
    "show",
    "create",
    "copy",
    "delete",
    "pull",
    "push",
    "ps",
    "version",
];

impl Adapter for Ollama {
    fn protocol(&self) -> &'static str {
        "ollama"
    }

    fn detects(&self, path: &str) -> bool {
        // Ollama's own endpoints only, not everything under `/api/`: other servers live there
        // too (OpenRouter's base URL is `…/api/v1`, so its `/api/v1/chat/completions` must fall
        // through to OpenAI Chat, which reads it).
        path.strip_prefix("/api/")
            .is_some_and(|rest| ENDPOINTS.contains(&rest) || rest.starts_with("blobs/"))
    }

    fn route(&self, path: &str) -> Option<Routed> {
        let (operation, reads) = if path.ends_with("/api/chat") {
            (Operation::Chat, true)
        } else if path.ends_with("/api/generate") {
            (Operation::TextCompletion, true)
        } else if path.ends_with("/api/embed") || path.ends_with("/api/embeddings") {
            (Operation::Embeddings, false)
        } else {
            (Operation::Other, false)
        };
        Some(Routed {
            provider: "ollama",
            operation,
            reads,
        })
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(Stream::default())
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        response::parse_json(body, r)
    }

    fn requested_stream(
        &self,
        _path: &str,
        _query: Option<&str>,
        body_stream: Option<bool>,
    ) -> bool {
        // Ollama streams unless told not to.
        body_stream.unwrap_or(true)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (Some("options"), "num_predict")
    }

    fn tool_results(&self, doc: crate::providers::Node<'_>, markers: &[String]) -> Vec<ToolResult> {
        // Chat messages in OpenAI's shape.
        openai_chat::tools::tool_results(doc, markers)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        OpenAiChat.input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        content::output_text(v, add)
    }
}

stream_reader!(Stream, line);

#[cfg(test)]
mod tests {
    use crate::providers::protocol::{classify, RouteProtocol};
    use crate::providers::Format;

    #[test]
    fn auto_claims_ollamas_endpoints_only() {
        for (path, operation) in [
            ("/api/chat", "chat"),
            ("/api/generate", "text_completion"),
            ("/api/embed", "embeddings"),
            ("/api/embeddings", "embeddings"),
            ("/api/tags", "other"),
            ("/api/blobs/sha256:29fdb92e57cf", "other"),
        ] {
            let c = classify(RouteProtocol::Auto, path);
            assert_eq!((c.provider, c.operation.as_str()), ("ollama", operation));
        }
        // OpenRouter's base URL ends in `/api/v1`: its chat path is OpenAI Chat's, read.
        let c = classify(RouteProtocol::Auto, "/api/v1/chat/completions");
        assert_eq!((c.provider, c.operation.as_str()), ("openai", "chat"));
        assert_eq!(c.format, Some(Format::OpenAiChat));
        let c = classify(RouteProtocol::Auto, "/api/v1/embeddings");
        assert_eq!(c.format, Some(Format::OpenAiChat));
    }
}
